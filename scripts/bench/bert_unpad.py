"""Benchmark: MosaicBERT training throughput unpadded (every layer on the packed real tokens) vs padded, on
batches with 50% padding, on CPU (fp32). Target (issue 13): >= 1.5x, the same loss.

Same weights, same batch; `unpad` toggled. Row lengths are spread evenly over [T/4, 3T/4] (half the tokens
are padding). The two variants alternate step by step so machine load hits both alike; the table gives the
median step time of each, the ratio (also the median of per-pair ratios), and the two losses of the last step.

    .venv/bin/python scripts/bench/bert_unpad.py                        # mosaicbert-base width, 4 layers
    .venv/bin/python scripts/bench/bert_unpad.py --layers 12 --batch 32 --seq 128
    .venv/bin/python scripts/bench/bert_unpad.py --device cuda --layers 12 --batch 64   # bf16 autocast
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from llmfoundry.config import build
from llmfoundry.models import ModelConfig, build_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="mosaicbert-base")
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--impl", default="sdpa", help="attn_impl (auto: flash if installed on CUDA)")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    torch.manual_seed(0)
    model = build_model(build(ModelConfig, {"name": "bert", "preset": args.preset, "n_layers": args.layers,
                                            "attn_impl": args.impl, "hidden_dropout": 0.0, "attn_dropout": 0.0}))
    model.init_weights()
    model.to(device).train()
    b, t = args.batch, args.seq
    lengths = torch.linspace(t // 4, 3 * t // 4, b).round().long()
    keep = (torch.arange(t)[None] < lengths[:, None]).to(device)
    ids = torch.randint(5, 30000, (b, t), device=device)
    labels = torch.where((torch.rand(b, t, device=device) < 0.15) & keep, ids, -100)
    times: dict[bool, list[float]] = {False: [], True: []}
    losses: dict[bool, float] = {}
    for step in range(args.steps + 1):
        for unpad in (False, True):
            model.bert.args.unpad = unpad
            model.zero_grad(set_to_none=True)
            start = time.perf_counter()
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cuda):
                loss = model(ids, attention_mask=keep, labels=labels)
            loss.backward()
            if cuda:
                torch.cuda.synchronize()
            elapsed = time.perf_counter() - start
            if step:  # the first step of each warms up allocators and caches
                times[unpad].append(elapsed)
            losses[unpad] = loss.item() / int((labels != -100).sum())
    padded, packed = statistics.median(times[False]), statistics.median(times[True])
    paired = statistics.median(a / b for a, b in zip(times[False], times[True]))  # each pair saw the same load
    real = int(keep.sum())
    print(f"{args.preset} ({args.layers} layers), batch {b} x {t}, {100 * (1 - real / (b * t)):.0f}% padding, "
          f"attn_impl {args.impl}, " + ("bf16, CUDA" if cuda else f"fp32, CPU ({torch.get_num_threads()} threads)"))
    print("| layout | step time | real tokens/s | mean MLM loss |\n| --- | --- | --- | --- |")
    print(f"| padded | {1000 * padded:,.0f} ms | {real / padded:,.0f} | {losses[False]:.9f} |")
    print(f"| unpadded | {1000 * packed:,.0f} ms | {real / packed:,.0f} | {losses[True]:.9f} |")
    print(f"unpadded / padded throughput: {padded / packed:.2f}x (median of paired steps {paired:.2f}x); "
          f"loss difference {abs(losses[True] - losses[False]):.1e}")


if __name__ == "__main__":
    main()
