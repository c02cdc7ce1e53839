"""Run the real Trainer and record what its first step hands to the optimizer, for exact-gradient tests.

Usage (one process, or every rank under torchrun): python -m tests.e2e.grad_probe SPEC.json
SPEC: {"config": yaml path, "out": .pt path, "runs": {name: {"overrides": [key=value ...],
       "fp16_poison_rank": int (optional)}}}

Nothing of the Trainer is replaced. The optimizer's `step` is wrapped: before the first update it gathers every
gradient as a full tensor (`DTensor.full_tensor()` for FSDP2 shards), so tests compare raw gradients between
1 process, N processes and any microbatch split, which AdamW and clipping would hide; it also records on which
steps each rank really updated. With `fp16_poison_rank`, the run uses the loss scaler that amp_fp16 builds
(grads.build_scaler; amp_fp16 itself needs a GPU) and that rank writes a real inf into its own shard of the
largest gradient just before step 1's unscale, so tests see whether every rank skipped that step together.
Rank 0 saves {name: {"grads", "metrics", "stepped": per-rank step lists, "scales": per-rank scale lists}}.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import torch


def _full(tensor: torch.Tensor) -> torch.Tensor:
    from torch.distributed.tensor import DTensor

    return (tensor.full_tensor() if isinstance(tensor, DTensor) else tensor).detach().clone()


def _local(tensor: torch.Tensor) -> torch.Tensor:
    from torch.distributed.tensor import DTensor

    return tensor.to_local() if isinstance(tensor, DTensor) else tensor


def probe(config: str, overrides: list[str], fp16_poison_rank: int | None = None) -> dict[str, Any]:
    import torch.distributed as dist

    from llmfoundry.config import load_typed
    from llmfoundry.config.schema import TrainConfig
    from llmfoundry.train.grads import build_scaler
    from llmfoundry.train.loop import Trainer

    cfg, loaded = load_typed(TrainConfig, config, overrides)
    trainer = Trainer(cfg, loaded)
    names = {id(p): n for n, p in trainer.model.named_parameters()}
    grads: dict[str, torch.Tensor] = {}
    stepped: list[int] = []
    scales: list[float] = []
    real_step = trainer.optimizer.step

    def step(*args: Any, **kwargs: Any) -> Any:
        if not grads:
            for group in trainer.optimizer.param_groups:
                for p in group["params"]:
                    if p.grad is not None:
                        grads[names[id(p)]] = _full(p.grad)
        stepped.append(trainer.step + 1)
        return real_step(*args, **kwargs)

    trainer.optimizer.step = step  # type: ignore[method-assign]
    if fp16_poison_rank is not None:
        trainer.scaler = build_scaler(True, trainer.dist.device)
        scaler = trainer.scaler
        real_unscale, real_update = scaler.unscale_, scaler.update
        largest = max(trainer.model.parameters(), key=lambda p: p.numel())

        def unscale(optimizer: torch.optim.Optimizer) -> None:
            if trainer.step == 0 and trainer.dist.rank == fp16_poison_rank:
                _local(largest.grad).view(-1)[0] = float("inf")
            real_unscale(optimizer)

        def update(*args: Any) -> None:
            real_update(*args)
            scales.append(scaler.get_scale())

        scaler.unscale_, scaler.update = unscale, update  # type: ignore[method-assign]
    metrics = trainer.fit()
    per_rank = [None] * trainer.dist.world_size if dist.is_initialized() else None
    if per_rank is not None:
        dist.all_gather_object(per_rank, (stepped, scales))
    ranks = per_rank or [(stepped, scales)]
    return {"grads": grads, "metrics": metrics, "stepped": [r[0] for r in ranks], "scales": [r[1] for r in ranks]}


def main(spec_path: str) -> None:
    import torch.distributed as dist

    spec = json.loads(open(spec_path).read())
    results = {name: probe(spec["config"], run["overrides"], run.get("fp16_poison_rank"))
               for name, run in spec["runs"].items()}
    if not dist.is_initialized() or dist.get_rank() == 0:
        torch.save(results, spec["out"])
    if dist.is_initialized():
        dist.destroy_process_group()


if __name__ == "__main__":
    main(*sys.argv[1:])
