"""Benchmark: `foundry serve` at concurrency 1, 8 and 32 against sequential transformers `generate`, same model.

The model is an MPT (d_model 512, 4 layers, the GPT-2 tokenizer's 50k vocabulary; random weights with a wide
init so completions do not collapse to one repeated token) exported by `foundry inference-convert`'s code. Each
request asks for `--tokens` greedy tokens of a distinct prompt. The server runs in its own process on a free
loopback port; clients are threads using the real `openai` client. The baseline is transformers'
`model.generate` called once per prompt, one after another, in this process with the server stopped (the way a
script without a server would do it), measured before and after the server's runs: on a shared machine the two
bracket the load drift. Printed: requests/s, generated tokens/s, and the ratio to the baseline.
Run: make bench-serve (11 minutes on 2 shared cores at load 3-11; --concurrency 1 8 --requests 1 for a quicker run).
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

from llmfoundry.assets import asset_path

REPO = Path(__file__).resolve().parents[2]
WORDS = ["Aspirin", "The heart", "Patients with", "In this study", "Daily doses of", "We report", "Risk of",
         "A randomized trial of", "Blood pressure", "The kidney"]


def prompts(n: int) -> list[str]:
    return [f"{WORDS[i % len(WORDS)]} {i}" for i in range(n)]


def export(out: Path) -> Path:
    from llmfoundry.config import build
    from llmfoundry.export.hf import export_model
    from llmfoundry.models import ModelConfig, build_model

    torch.manual_seed(0)
    raw = {"name": "mpt", "preset": "mpt-tiny", "d_model": 512, "n_heads": 8, "n_layers": 4, "vocab_size": 50257,
           "max_seq_len": 512, "init_config": {"name": "normal_", "init_std": 0.05}}
    model = build_model(build(ModelConfig, raw))
    model.init_weights()
    export_model(model.eval(), out, tokenizer_dir=asset_path("gpt2"))
    return out


def baseline(model_dir: Path, texts: list[str], tokens: int) -> tuple[float, float]:
    """(requests/s, tokens/s) of sequential transformers generate."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(model_dir), local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), local_files_only=True).eval()
    made = 0
    start = time.perf_counter()
    for text in texts:
        ids = tok(text, return_tensors="pt")
        with torch.inference_mode():
            out = model.generate(**ids, max_new_tokens=tokens, do_sample=False, pad_token_id=tok.eos_token_id)
        made += out.shape[1] - ids["input_ids"].shape[1]
    seconds = time.perf_counter() - start
    return len(texts) / seconds, made / seconds


def start_server(model_dir: Path) -> tuple[subprocess.Popen, str]:
    import httpx

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "llmfoundry.cli", "serve", str(model_dir), "--port", str(port)],
                            env={**os.environ, "PYTHONPATH": str(REPO)}, stdout=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}/v1"
    deadline = time.time() + 600
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("foundry serve exited")
        try:
            if httpx.get(f"{base}/models", timeout=5).status_code == 200:
                return proc, base
        except httpx.HTTPError:
            time.sleep(0.5)
    raise RuntimeError("foundry serve did not come up")


def served(base: str, model: str, texts: list[str], tokens: int, concurrency: int) -> tuple[float, float]:
    from openai import OpenAI

    client = OpenAI(base_url=base, api_key="unused", timeout=900, max_retries=0)

    def ask(text: str) -> int:
        reply = client.completions.create(model=model, prompt=text, max_tokens=tokens, temperature=0)
        return reply.usage.completion_tokens

    ask(texts[0])  # warm-up
    start = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        made = sum(pool.map(ask, texts))
    seconds = time.perf_counter() - start
    return len(texts) / seconds, made / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", type=int, default=32, help="Tokens generated per request.")
    parser.add_argument("--requests", type=int, default=2, help="Requests per client at each concurrency.")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32], help="Client counts to measure.")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = export(Path(tmp) / "bench-mpt")
        before = baseline(model_dir, prompts(8), args.tokens)
        print(f"sequential transformers generate (before): {before[0]:.2f} requests/s, {before[1]:.1f} tokens/s",
              flush=True)
        proc, base = start_server(model_dir)
        rows = []
        try:
            for concurrency in args.concurrency:
                texts = prompts(max(concurrency * args.requests, 8))
                rows.append((concurrency, *served(base, model_dir.name, texts, args.tokens, concurrency)))
                print(f"concurrency {concurrency:2}: {rows[-1][1]:6.2f} requests/s, {rows[-1][2]:7.1f} tokens/s",
                      flush=True)
        finally:
            proc.terminate()
            proc.wait(timeout=60)
        after = baseline(model_dir, prompts(8), args.tokens)
    print(f"sequential transformers generate (after): {after[0]:.2f} requests/s, {after[1]:.1f} tokens/s\n")
    base_tps = (before[1] + after[1]) / 2  # the machine is shared: the two baselines bracket its load drift
    print("| client concurrency | requests/s | tokens/s | vs sequential transformers generate (mean of before/after) |")
    print("| --- | --- | --- | --- |")
    for concurrency, rps, tps in rows:
        print(f"| {concurrency} | {rps:.2f} | {tps:.1f} | {tps / base_tps:.2f}x |")


if __name__ == "__main__":
    main()
