"""Benchmark: torch.compile (inductor, CPU) of a whole MPT training step with packed documents whose layout
changes every step: recompiles after warm-up, compiled vs eager losses, compile and step times.

Rows:
- `sdpa` train: forward + loss + backward compiled (the model compiled whole; the document bias is built
  inside the graph from sequence_id, a graph input, so a new layout is new data, not a new graph);
- `flex` eval: the same model compiled whole with FlexAttention, forward only under no_grad. torch 2.14 has
  no CPU backward for FlexAttention (eager or compiled), so a CPU training step with flex cannot exist; on CUDA
  the trainer compiles flex (layers/flex.py) and gpu.sh measures it.
Recompiles are counted as the graphs dynamo compiled after the warm-up step (torch._dynamo.utils.counters).

    .venv/bin/python scripts/bench/compile_step.py                    # 20 steps, d_model 64, 2 layers, seq 256
    .venv/bin/python scripts/bench/compile_step.py --rows sdpa        # the training row only
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from llmfoundry.config import build
from llmfoundry.models import ModelConfig, build_model


def run(impl: str, args: argparse.Namespace) -> str:
    import torch._dynamo
    import torch._inductor.exc
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    torch.manual_seed(0)
    model = build_model(build(ModelConfig, {
        "name": "mpt", "preset": "mpt-tiny", "d_model": args.d_model, "n_layers": args.layers, "vocab_size": 512,
        "max_seq_len": args.seq, "attn_config": {"attn_impl": impl, "alibi": True, "attn_uses_sequence_id": True}}))
    model.init_weights()
    compiled = torch.compile(model)
    train = impl != "flex"
    g = torch.Generator().manual_seed(0)

    def one(m: torch.nn.Module, batch: dict) -> tuple[float, float]:
        m.zero_grad(set_to_none=True)
        start = time.perf_counter()
        with torch.set_grad_enabled(train):
            loss = m(**batch)
            if train:
                loss.backward()
        return loss.item(), time.perf_counter() - start

    worst, times, eager_times, graphs_after_warmup = 0.0, [], [], 0
    for i in range(args.steps):
        ids = torch.randint(0, 512, (args.batch, args.seq), generator=g)
        documents = (torch.rand(args.batch, args.seq, generator=g) < 4 / args.seq).long().cumsum(1)
        batch = {"input_ids": ids, "labels": ids.roll(-1, 1), "sequence_id": documents}
        try:
            loss, elapsed = one(compiled, batch)
        except (NotImplementedError, torch._dynamo.exc.TorchDynamoException,
                torch._inductor.exc.InductorError) as error:  # report what this torch cannot compile
            return f"| {impl} | {'train' if train else 'eval'} | fails: {type(error).__name__}: " \
                   f"{str(error).splitlines()[0][:120]} | | | |"
        ref, eager = one(model, batch)
        worst = max(worst, abs(loss - ref) / abs(ref))
        if i == 0:
            compile_s, graphs_after_warmup = elapsed, counters["stats"]["unique_graphs"]
        else:
            times.append(elapsed)
            eager_times.append(eager)
    recompiles = counters["stats"]["unique_graphs"] - graphs_after_warmup
    return (f"| {impl} | {'train' if train else 'eval'} | {recompiles} | {worst:.1e} | {compile_s:.0f} s | "
            f"{1000 * statistics.median(times):.0f} ms vs eager {1000 * statistics.median(eager_times):.0f} ms |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--seq", type=int, default=256)
    parser.add_argument("--d-model", type=int, default=64)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--rows", nargs="+", default=["sdpa", "flex"])
    args = parser.parse_args()
    print(f"mpt (d_model {args.d_model}, {args.layers} layers, ALiBi), {args.steps} steps of {args.batch} x {args.seq} "
          "tokens, a new document layout every step, CPU inductor")
    print("| attn_impl | step | recompiles after warm-up | max relative loss diff vs eager | first step "
          "(compile) | step time |\n| --- | --- | --- | --- | --- | --- |")
    for impl in args.rows:
        print(run(impl, args), flush=True)


if __name__ == "__main__":
    main()
