"""Gradient-side parts of a training step that must agree across ranks: the global norm and fp16 loss scaling.

Under FSDP2 each rank holds only shards of the gradients (DTensors), so a per-rank norm or a per-rank inf check
would be a different number on every rank: ranks would clip by different factors, or one rank would skip an
update that another applies, and the shards of one model would silently diverge. Both are computed here over
the whole model (one all-reduce each) so every rank takes the same decision.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn


def global_grad_norm(params: Iterable[nn.Parameter]) -> torch.Tensor:
    """The 2-norm of all gradients of the model (all ranks' shards together), as a device scalar (no host sync)."""
    from torch.distributed.tensor import DTensor

    grads = [p.grad for p in params if p.grad is not None]
    norm = torch.nn.utils.get_total_norm(grads, norm_type=2.0, foreach=True)
    return norm.full_tensor() if isinstance(norm, DTensor) else norm


def clip_to_norm(params: Iterable[nn.Parameter], threshold: float, norm: torch.Tensor) -> None:
    """Scale gradients so their global norm is at most `threshold`, given that norm (from `global_grad_norm`)."""
    torch.nn.utils.clip_grads_with_norm_(list(params), threshold, norm, foreach=True)


def build_scaler(enabled: bool, device: torch.device) -> torch.amp.GradScaler:
    """fp16 dynamic loss scaling with one inf/nan decision for the whole model.

    On several ranks torch's ShardedGradScaler all-reduces the found-inf flags in `unscale_` (one scalar
    all-reduce per step), so an overflow in any rank's gradients makes every rank skip the step and back off
    the scale by the same factor, whatever the sharding. (torch 2.14's DTensor also max-reduces the flag of
    FSDP2 shards by itself; the plain GradScaler alone would trust each rank's local check for plain tensors.)
    """
    import torch.distributed as dist

    if enabled and dist.is_initialized() and dist.get_world_size() > 1:
        from torch.distributed.fsdp.sharded_grad_scaler import ShardedGradScaler

        return ShardedGradScaler(device=device.type)
    return torch.amp.GradScaler(device.type, enabled=enabled)
