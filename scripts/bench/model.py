"""Benchmark: forward+backward tokens/s of our models vs the transformers class with the same weights.

For each model, every attention backend that can train on this device runs the same batch as the matching
transformers class (MptForCausalLM, GPT2LMHeadModel, BertForMaskedLM) holding identical weights, in the
same process, alternating, and prints median tokens/s and the ratio. Target on CPU: ratio >= 1.0.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from llmfoundry.config import build
from llmfoundry.export.hf import hf_config, hf_state, native_target
from llmfoundry.models import ModelConfig, build_model
from llmfoundry.models.layers.attention import available_impls

MODELS = {
    "mpt-tiny": {"name": "mpt", "preset": "mpt-tiny"},
    "mpt-125m": {"name": "mpt", "preset": "mpt-125m"},
    "gpt2-small": {"name": "gpt2", "preset": "gpt2-small"},
    "bert-base": {"name": "bert", "preset": "bert-base", "hidden_dropout": 0.0, "attn_dropout": 0.0},
}


def step_time(fn, reps: int) -> float:
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["mpt-tiny", "mpt-125m", "gpt2-small", "bert-base"])
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--seq", type=int, default=256)
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default="fp32", choices=["fp32", "bf16"])
    args = parser.parse_args()
    import transformers

    device = torch.device(args.device)
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[args.dtype]
    print(f"device {device}, {args.dtype}, batch {args.batch} x seq {args.seq}, median of {args.reps} steps")
    print(f"{'model':12s} {'ours':>6s} {'tokens/s':>10s} {'transformers':>14s} {'ratio':>6s}")
    for name in args.models:
        torch.manual_seed(0)
        model_args = build(ModelConfig, MODELS[name])
        ours = build_model(model_args)
        ours.init_weights()
        target, _ = native_target(ours)
        cls = getattr(transformers, {"mpt": "MptForCausalLM", "gpt2": "GPT2LMHeadModel", "bert": "BertForMaskedLM"}[target])
        theirs = cls(hf_config(ours, target))
        theirs.load_state_dict(hf_state(ours, target), strict=False)
        ours.to(device, dtype).train()
        theirs.to(device, dtype).train()
        ids = torch.randint(0, 1000, (args.batch, args.seq), device=device)
        labels = ids.clone()

        def run_theirs() -> None:
            theirs(input_ids=ids, labels=labels).loss.backward()

        base = step_time(run_theirs, 1) and step_time(run_theirs, args.reps)
        for impl in available_impls(device):
            if hasattr(ours.args, "attn_config"):
                ours.args.attn_config.attn_impl = impl
            else:
                ours.args.attn_impl = impl

            def run_ours() -> None:
                ours(ids, labels=labels).backward()

            step_time(run_ours, 1)
            ours_s = step_time(run_ours, args.reps)
            tokens = args.batch * args.seq
            print(f"{name:12s} {impl:>6s} {tokens / ours_s:10,.0f} {tokens / base:14,.0f} {base / ours_s:6.2f}")


if __name__ == "__main__":
    main()
