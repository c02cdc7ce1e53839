"""Benchmark: peak memory and time of one mpt-125m training step (forward + backward) at seq 2048, per attention
backend: what the dense ALiBi/document bias costs. CPU (fp32) by default; `--device cuda` (bf16 autocast) adds
flex (and flash where installed) and measures torch.cuda.max_memory_allocated instead of RSS.

Rows: `sdpa` without ALiBi (is_causal, no mask: the baseline), `sdpa` with ALiBi (one cached [1,H,T,T] fp32
bias), `sdpa` with ALiBi and packed documents (a [B,H,T,T] bias built per batch), and the `torch` reference.
FlexAttention cannot train on CPU (torch 2.14 has no CPU backward, eager or compiled); on CUDA it needs no
dense mask at all (scripts/bench/blockmask.py). Each row runs in a fresh process; memory is the growth of
peak RSS over the step (after the model and batch exist), time the second of two steps.

    .venv/bin/python scripts/bench/attn_memory.py                # mpt-125m, seq 2048, microbatch 1
    .venv/bin/python scripts/bench/attn_memory.py --batch 2 --layers 4
    .venv/bin/python scripts/bench/attn_memory.py --device cuda --batch 8   # in scripts/bench/gpu.sh
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

CHILD = r"""
import json, resource, sys, time
import torch
from llmfoundry.config import build
from llmfoundry.models import ModelConfig, build_model
impl, alibi, docs, batch, seq, layers = sys.argv[1], sys.argv[2] == "1", sys.argv[3] == "1", *map(int, sys.argv[4:7])
device = torch.device(sys.argv[7])
cuda = device.type == "cuda"
raw = {"name": "mpt", "preset": "mpt-125m", "max_seq_len": seq, "vocab_size": 50257,
       "attn_config": {"attn_impl": impl, "alibi": alibi, "attn_uses_sequence_id": docs}}
if layers:
    raw["n_layers"] = layers
torch.manual_seed(0)
model = build_model(build(ModelConfig, raw))
model.init_weights()
model.to(device)
ids = torch.randint(0, 50257, (batch, seq), device=device)
inputs = {"input_ids": ids, "labels": ids.roll(-1, 1)}
if docs:
    inputs["sequence_id"] = (torch.arange(seq, device=device) // 500).expand(batch, seq)  # ~500-token documents
if cuda:
    peak = lambda: torch.cuda.max_memory_allocated() / 2**20
else:
    peak = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10  # MiB
base = peak()
for step in range(3 if cuda else 2):  # (on CUDA the first step compiles flex)
    model.zero_grad(set_to_none=True)
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = peak()
    start = time.perf_counter()
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cuda):
        loss = model(**inputs)
    loss.backward()
    if cuda:
        torch.cuda.synchronize()
    elapsed = time.perf_counter() - start
print(json.dumps({"mib": peak() - base, "s": elapsed}))
"""

ROWS = [("sdpa", False, False), ("sdpa", True, False), ("sdpa", True, True), ("torch", True, False),
        ("torch", True, True)]
CUDA_ROWS = [("sdpa", False, False), ("sdpa", True, False), ("sdpa", True, True), ("flex", True, False),
             ("flex", True, True), ("flash", True, True)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--seq", type=int, default=2048)
    parser.add_argument("--layers", type=int, default=0, help="override n_layers (0: the preset's 12)")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    cuda = args.device.startswith("cuda")
    what = "bf16, CUDA, peak allocated" if cuda else "fp32, CPU, peak RSS growth"
    print(f"mpt-125m{f' ({args.layers} layers)' if args.layers else ''}, seq {args.seq}, microbatch {args.batch}, "
          f"{what}\n| attn_impl | ALiBi | documents | peak memory | step time |\n| --- | --- | --- | --- | --- |")
    base = None
    for impl, alibi, docs in CUDA_ROWS if cuda else ROWS:
        out = subprocess.run([sys.executable, "-c", CHILD, impl, str(int(alibi)), str(int(docs)), str(args.batch),
                              str(args.seq), str(args.layers), args.device], capture_output=True, text=True, cwd=REPO,
                             env={**os.environ, "PYTHONPATH": str(REPO)})
        if out.returncode != 0:
            print(f"| {impl} | {alibi} | {docs} | failed: {out.stderr.strip().splitlines()[-1][:80]} | |")
            continue
        r = json.loads(out.stdout.strip().splitlines()[-1])
        base = base or r
        print(f"| {impl} | {'yes' if alibi else 'no'} | {'yes' if docs else 'no'} | {r['mib']:,.0f} MiB "
              f"({r['mib'] / base['mib']:.2f}x) | {r['s']:.2f} s ({r['s'] / base['s']:.2f}x) |", flush=True)


if __name__ == "__main__":
    main()
