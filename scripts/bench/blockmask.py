"""Benchmark: building the FlexAttention BlockMask of a causal document mask at T = 4k, 16k, 65k tokens on CPU.

- before: `create_block_mask` uncompiled (what attention.py did): evaluates the mask_mod on all T x T pairs.
- compiled: `torch.compile(create_block_mask)` (torchtitan's way): fused, but compiles once per length.
- after: layers/flex.py, tiles classified from per-tile document-id ranges ([B, T/128, T/128]).
Each cell runs in a fresh process; memory is the growth of peak RSS during the build, time the median of
`--reps` builds after one warm-up build (the compiled column prints its first-call compile time apart).
Documents are ~1000 tokens, as packed pretraining data. `before` is skipped above --max-dense tokens (its
[T, T] int64 temporaries alone need 8*T^2 bytes: 34 GB at 65k) and printed as that estimate.

    .venv/bin/python scripts/bench/blockmask.py            # all three columns
    .venv/bin/python scripts/bench/blockmask.py --no-compiled
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

CHILD = r"""
import json, resource, statistics, sys, time
import torch
from llmfoundry.models.layers import flex as flex_parts
from torch.nn.attention.flex_attention import create_block_mask
method, t, reps = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
segments = (torch.arange(t) // 1000)[None]
def mod(b, h, q, kv):
    return (q >= kv) & (segments[b, q] == segments[b, kv])
if method == "after":
    build = lambda: flex_parts.flex_block_mask(segments, t, torch.device("cpu"), causal=True)
elif method == "before":
    build = lambda: create_block_mask(mod, 1, None, t, t, device="cpu")
else:
    compiled = torch.compile(create_block_mask)
    build = lambda: compiled(mod, 1, None, t, t, device="cpu")
rss = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10  # MiB
base = rss()
start = time.perf_counter(); mask = build(); first = time.perf_counter() - start
times = []
for _ in range(reps):
    start = time.perf_counter(); mask = build(); times.append(time.perf_counter() - start)
listed = int((mask.kv_num_blocks + mask.full_kv_num_blocks).sum())
print(json.dumps({"mib": rss() - base, "s": statistics.median(times), "first_s": first, "tiles": listed}))
"""


def cell(method: str, t: int, reps: int) -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD, method, str(t), str(reps)], capture_output=True, text=True,
                         cwd=REPO, env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "2"})
    if out.returncode != 0:
        return {"error": out.stderr.strip().splitlines()[-1] if out.stderr.strip() else str(out.returncode)}
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lengths", nargs="+", type=int, default=[4096, 16384, 65536])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--max-dense", type=int, default=16384, help="longest T for the uncompiled builder")
    parser.add_argument("--no-compiled", action="store_true", help="skip torch.compile(create_block_mask)")
    args = parser.parse_args()
    methods = ["before"] + ([] if args.no_compiled else ["compiled"]) + ["after"]
    print("| T | builder | peak RSS growth | build time | first call | tiles listed |\n| --- | --- | --- | --- | --- | --- |")
    for t in args.lengths:
        results = {}
        for method in methods:
            if method == "before" and t > args.max_dense:
                print(f"| {t} | before | not run: ~{8 * t * t / 2**30:.0f} GiB of int64 [T,T] temporaries | | | |")
                continue
            r = results[method] = cell(method, t, args.reps)
            if "error" in r:
                print(f"| {t} | {method} | failed: {r['error'][:80]} | | | |")
                continue
            print(f"| {t} | {method} | {r['mib']:,.1f} MiB | {1000 * r['s']:,.2f} ms | {r['first_s']:,.2f} s | "
                  f"{r['tiles']:,} |", flush=True)
        base = results.get("before")
        after = results.get("after")
        if base and after and "error" not in base and "error" not in after:
            print(f"| {t} | before/after | {base['mib'] / max(after['mib'], 0.1):,.0f}x memory | "
                  f"{base['s'] / after['s']:,.0f}x time | | |")


if __name__ == "__main__":
    main()
