"""Run the real Trainer and save the gradients of its first step exactly as the optimizer receives them.

Usage (one process or under torchrun): python -m tests.e2e.grad_probe OUT.pt CONFIG [key=value ...]

The optimizer's `step` is wrapped (nothing of the Trainer is replaced): just before the first update it gathers
every parameter's gradient as a full tensor (`DTensor.full_tensor()` for FSDP2 shards), so tests compare raw
gradients between 1 process, N processes and any microbatch split, which AdamW and clipping would hide.
Rank 0 writes {"grads": {name: tensor}, "grad_norm": float} after fit() has run the whole configured duration.
"""

from __future__ import annotations

import sys
from typing import Any

import torch


def _full(tensor: torch.Tensor) -> torch.Tensor:
    from torch.distributed.tensor import DTensor

    return (tensor.full_tensor() if isinstance(tensor, DTensor) else tensor).detach().clone()


def main(out: str, config: str, *overrides: str) -> None:
    from llmfoundry.config import load_typed
    from llmfoundry.config.schema import TrainConfig
    from llmfoundry.distributed import shutdown
    from llmfoundry.train.loop import Trainer

    cfg, loaded = load_typed(TrainConfig, config, list(overrides))
    trainer = Trainer(cfg, loaded)
    names = {id(p): n for n, p in trainer.model.named_parameters()}
    real_step = trainer.optimizer.step
    grads: dict[str, torch.Tensor] = {}

    def step(*args: Any, **kwargs: Any) -> Any:
        if not grads:
            for group in trainer.optimizer.param_groups:
                for p in group["params"]:
                    if p.grad is not None:
                        grads[names[id(p)]] = _full(p.grad)
        return real_step(*args, **kwargs)

    trainer.optimizer.step = step  # type: ignore[method-assign]
    metrics = trainer.fit()
    if trainer.dist.is_main:
        torch.save({"grads": grads, "metrics": metrics}, out)
    shutdown()


if __name__ == "__main__":
    main(*sys.argv[1:])
