"""foundry serve against the real `openai` client on loopback, and foundry chat through a pseudo-terminal.

The model is a tiny MPT exported by our own export path (MptForCausalLM, the GPT-2 tokenizer), initialized with
a wide normal init so that greedy continuations vary from prompt to prompt (a default-initialized tiny model
repeats one token, which would let a batching mix-up go unnoticed). References: `foundry generate --greedy`'s
text (a separate process) and transformers' `generate` on each prompt alone.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch

from tests.conftest import REPO, run_cli

PROMPTS = [f"{word} {i}" for i, word in enumerate(
    ["Aspirin reduces", "The heart", "Patients with", "In this study", "Daily doses of", "We report", "Risk of",
     "A randomized trial"] * 4)]  # 32 distinct prompts


def _export(out: Path, tokenizer_dir: Path, **extra) -> Path:
    from llmfoundry.config import build
    from llmfoundry.export.hf import export_model
    from llmfoundry.models import ModelConfig, build_model

    torch.manual_seed(0)
    raw = {"name": "mpt", "preset": "mpt-tiny", "vocab_size": 50257,
           "init_config": {"name": "normal_", "init_std": 0.1}, **extra}
    model = build_model(build(ModelConfig, raw))
    model.init_weights()
    export_model(model.eval(), out, tokenizer_dir=tokenizer_dir)
    return out


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory, gpt2_tokenizer_dir) -> Path:
    return _export(tmp_path_factory.mktemp("serve") / "tiny-mpt", gpt2_tokenizer_dir)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(hf_dir):
    """`foundry serve` in a subprocess on a free loopback port, ready when /v1/models answers."""
    import httpx

    port = _free_port()
    log = open(hf_dir.parent / "server.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "llmfoundry.cli", "serve", str(hf_dir), "--port", str(port)],
                            env={**os.environ, "PYTHONPATH": str(REPO)}, stdout=log,
                            stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.time() + 300
        while True:
            assert proc.poll() is None, (hf_dir.parent / "server.log").read_text()
            try:
                if httpx.get(f"{base}/models", timeout=5).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.time() < deadline, "server did not come up"
            time.sleep(0.2)
        yield base, proc
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()


@pytest.fixture(scope="module")
def client(server):
    from openai import OpenAI

    return OpenAI(base_url=server[0], api_key="unused", timeout=300, max_retries=0)


def _references(hf_dir: Path, prompts: list[str], max_new_tokens: int) -> list[str]:
    """transformers' greedy generate on each prompt alone."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(str(hf_dir), local_files_only=True).eval()
    tok = AutoTokenizer.from_pretrained(str(hf_dir), local_files_only=True)
    texts = []
    for prompt in prompts:
        ids = torch.tensor([tok(prompt)["input_ids"]])
        with torch.no_grad():
            out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens,
                                 do_sample=False, pad_token_id=tok.eos_token_id)
        texts.append(tok.decode(out[0, ids.shape[1]:], skip_special_tokens=True))
    return texts


@pytest.mark.slow
def test_completions_plain_and_streamed_equal_foundry_generate(hf_dir, client):
    expected = run_cli("generate", str(hf_dir), "--prompt", "Aspirin reduces", "--greedy", "--max-new-tokens", "12")
    assert expected.returncode == 0, expected.stderr
    want = expected.stdout.rstrip("\n")
    model = client.models.list().data[0].id
    assert model == hf_dir.name
    plain = client.completions.create(model=model, prompt="Aspirin reduces", max_tokens=12, temperature=0)
    assert plain.choices[0].text == want and plain.choices[0].finish_reason == "length"
    assert plain.usage.completion_tokens == 12
    streamed = client.completions.create(model=model, prompt="Aspirin reduces", max_tokens=12, temperature=0,
                                         stream=True)
    pieces = [c.choices[0].text for c in streamed]
    assert len([p for p in pieces if p]) > 1 and "".join(pieces) == want  # really streamed, same text


@pytest.mark.slow
def test_chat_completions_stream_and_stop(hf_dir, client):
    model = hf_dir.name
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What does aspirin do?"}]
    plain = client.chat.completions.create(model=model, messages=messages, max_tokens=10, temperature=0)
    text = plain.choices[0].message.content
    assert plain.choices[0].message.role == "assistant" and len(text) > 0
    chunks = list(client.chat.completions.create(model=model, messages=messages, max_tokens=10, temperature=0,
                                                 stream=True))
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == text
    assert chunks[-1].choices[0].finish_reason == "length"
    # a stop string cuts the text before it (and is not included)
    stop = text[len(text) // 2:][:3]
    cut = client.chat.completions.create(model=model, messages=messages, max_tokens=10, temperature=0, stop=[stop])
    assert cut.choices[0].message.content == text[:text.index(stop)]
    assert cut.choices[0].finish_reason == "stop"


@pytest.mark.slow
def test_seeded_sampling_is_reproducible(hf_dir, client):
    ask = dict(model=hf_dir.name, prompt="The heart", max_tokens=12, temperature=1.0, top_p=0.9)
    first = client.completions.create(seed=7, **ask).choices[0].text
    assert client.completions.create(seed=7, **ask).choices[0].text == first
    others = {client.completions.create(seed=s, **ask).choices[0].text for s in (8, 9, 10)}
    assert others != {first}


@pytest.mark.slow
def test_32_concurrent_clients_are_batched_and_each_correct(hf_dir, client, server):
    def ask(prompt: str) -> str:
        return client.completions.create(model=hf_dir.name, prompt=prompt, max_tokens=8, temperature=0).choices[0].text

    with ThreadPoolExecutor(32) as pool:
        answers = list(pool.map(ask, PROMPTS))
    assert answers == _references(hf_dir, PROMPTS, 8)
    assert len(set(answers)) > 16  # the prompts really get different continuations
    log = (hf_dir.parent / "server.log").read_text()
    assert "Traceback" not in log


@pytest.mark.slow
def test_bad_requests_get_4xx_json_and_the_server_keeps_serving(hf_dir, client, server):
    import httpx

    base, proc = server
    model = hf_dir.name
    cases = [
        (b"{not json", 400, None),
        (json.dumps({"model": "nope", "prompt": "hi"}).encode(), 404, "model_not_found"),
        (json.dumps({"model": model, "prompt": "hi " * 300, "max_tokens": 16}).encode(), 400,
         "context_length_exceeded"),
        (json.dumps({"model": model, "prompt": "hi", "max_tokens": -1}).encode(), 400, None),
        (json.dumps({"model": model, "prompt": "hi", "temperature": "hot"}).encode(), 400, None),
        (json.dumps({"prompt": "hi"}).encode(), 400, None),
    ]
    for body, status, code in cases:
        r = httpx.post(f"{base}/completions", content=body, headers={"content-type": "application/json"}, timeout=60)
        assert r.status_code == status, (body, r.text)
        error = r.json()["error"]
        assert error["message"] and error["type"] == "invalid_request_error"
        if code is not None:
            assert error["code"] == code
    r = httpx.post(f"{base}/chat/completions", json={"model": model, "messages": []}, timeout=60)
    assert r.status_code == 400 and "messages" in r.json()["error"]["message"]
    assert proc.poll() is None
    ok = client.completions.create(model=model, prompt="Aspirin reduces", max_tokens=4, temperature=0)
    assert ok.choices[0].text  # still serving


def test_serve_binds_loopback_by_default():
    from typer.testing import CliRunner

    from llmfoundry.cli import app

    result = CliRunner().invoke(app, ["serve", "--help"])
    assert "127.0.0.1" in result.output
