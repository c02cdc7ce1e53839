"""Benchmark: how long a checkpoint stops training, synchronous vs `save_async`, and what hashing costs.

One process trains an MPT (default: mpt-125m, fp32, AdamW) on random tokens with the trainer's own state
dicts (model + optimizer + train state) and the real CheckpointManager, in one run:
  none    step time without saving (the baseline)
  sync    a step, then a synchronous save: write, manifest, rename, `latest`
  async   a step, then save_async's part in the foreground (the copy into the staging buffer), then the steps
          that run while the background thread writes and commits, until it is done
Printed: the pause per checkpoint (how long the save call blocks the loop) for sync and async and their
ratio, the step time while a background save runs relative to the baseline, the checkpoint size and the
manifest's hashing rate (xxh3-128) on the real files.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))


def build(preset: str, seq: int) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    from llmfoundry.config import build as build_config
    from llmfoundry.models import ModelConfig, build_model

    args = build_config(ModelConfig, {"name": "mpt", "preset": preset, "max_seq_len": seq, "vocab_size": 50368},
                        key="model")
    torch.manual_seed(0)
    model = build_model(args, device="meta")
    model.to_empty(device="cpu")
    with torch.no_grad():
        model.init_weights()
    return model, torch.optim.AdamW(model.parameters(), lr=1e-4, foreach=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="mpt-125m")
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3, help="saves per mode")
    parser.add_argument("--smoke", action="store_true", help="a tiny model, to check the script quickly")
    opts = parser.parse_args()
    if opts.smoke:
        opts.preset, opts.rounds = "mpt-tiny", 1
    from torch.distributed.checkpoint.state_dict import get_model_state_dict, get_optimizer_state_dict

    from llmfoundry.checkpoint.manager import CheckpointManager
    from llmfoundry.checkpoint.manifest import file_hash

    model, optimizer = build(opts.preset, opts.seq)
    torch.set_num_threads(torch.get_num_threads())
    tokens = torch.randint(0, 50000, (opts.batch, opts.seq))
    step_no = 0

    def step() -> float:
        nonlocal step_no
        start = time.perf_counter()
        loss = model(input_ids=tokens, labels=tokens)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        step_no += 1
        return time.perf_counter() - start

    def state() -> dict:
        return {"model": get_model_state_dict(model), "optim": get_optimizer_state_dict(model, optimizer),
                "train_state": {"step": step_no}}

    for _ in range(2):  # warm-up: allocator, optimizer state
        step()
    params = sum(p.numel() for p in model.parameters())
    print(f"{opts.preset}: {params / 1e6:.1f}M parameters, batch {opts.batch} x {opts.seq}, "
          f"{torch.get_num_threads()} threads")
    with tempfile.TemporaryDirectory(prefix="bench-ckpt-", dir=REPO / "runs" if (REPO / "runs").is_dir() else None) \
            as tmp:
        baseline = statistics.median(step() for _ in range(5))
        sync_pause, async_pause, during = [], [], []
        for mode in ("sync", "async"):
            manager = CheckpointManager(Path(tmp) / mode / "checkpoints", config_yaml="bench\n", keep=1,
                                        save_async=mode == "async")
            for _ in range(opts.rounds):
                step()
                start = time.perf_counter()
                manager.save(step_no, state())
                (sync_pause if mode == "sync" else async_pause).append(time.perf_counter() - start)
                if mode == "async":
                    while manager.pending is not None and not manager.pending.done():
                        during.append(step())
                    manager.wait()
            manager.close()
        folder = max((Path(tmp) / "sync" / "checkpoints").glob("step-*"))
        size = sum(p.stat().st_size for p in folder.iterdir())
        start = time.perf_counter()
        for path in folder.iterdir():
            file_hash(path)
        hashing = size / (time.perf_counter() - start)
    sync_s, async_s = statistics.median(sync_pause), statistics.median(async_pause)
    print(f"checkpoint: {size / 2**30:.2f} GiB; manifest hashing (xxh3-128) {hashing / 1e9:.1f} GB/s "
          f"= {size / hashing:.2f} s per checkpoint")
    print(f"step without saving: {baseline:.3f} s")
    print(f"pause per checkpoint: sync {sync_s:.2f} s, async {async_s:.2f} s -> async pauses "
          f"{sync_s / async_s:.1f}x less ({sync_s / baseline:.2f} vs {async_s / baseline:.2f} steps)")
    if during:
        print(f"steps during a background save: {len(during) / opts.rounds:.1f} per save, "
              f"{statistics.median(during) / baseline:.2f}x the step time without saving")
    else:
        print("steps during a background save: none (the write finished within the step that saved)")


if __name__ == "__main__":
    main()
