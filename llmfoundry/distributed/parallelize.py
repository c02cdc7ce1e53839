"""Parallelism applied from outside an unmodified model, as an ordered list of pure `apply_*` steps.

Gradients are reduced by SUM whatever the sharding (the loss is normalized by the global token count).
Activation checkpointing and compile work per block (`model.blocks`) without renaming parameters, so
checkpoints and exports see the same names whatever was applied.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.distributed as dist
from torch import nn

from llmfoundry.config.schema import FSDPConfig


def apply_ac(model: nn.Module, mode: bool | Literal["none", "full", "selective"]) -> None:
    """Recompute block activations in backward: every block (full) or every other block (selective)."""
    from torch.distributed._composable import checkpoint

    if mode in (False, "none"):
        return
    for i, block in enumerate(model.blocks):  # type: ignore[union-attr]
        if mode in (True, "full") or i % 2 == 0:
            checkpoint(block)


def apply_compile(model: nn.Module) -> None:
    for block in model.blocks:  # type: ignore[union-attr]
        block.compile()


def apply_fsdp(model: nn.Module, cfg: FSDPConfig, device: torch.device, compute_dtype: torch.dtype | None) -> None:
    """FSDP2: shard each block, then the root (embeddings, final norm) over all ranks; gradients are summed.

    With a low-precision `precision`, parameters are all-gathered in that dtype (DEFAULT and PURE) and
    gradients reduced in fp32 (DEFAULT) or in that dtype (PURE); FULL keeps everything in fp32.
    """
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    if cfg.sharding_strategy == "NO_SHARD":  # plain data parallelism: replicate and all-reduce gradients
        from torch.distributed._composable.replicate import replicate

        replicate(model, device_ids=[device.index] if device.type == "cuda" else None)
        model.register_comm_hook(None, _sum_hook)  # type: ignore[operator]
        return
    mesh = init_device_mesh(device.type, (torch.distributed.get_world_size(),))
    reshard = cfg.reshard_after_forward if cfg.reshard_after_forward is not None \
        else cfg.sharding_strategy == "FULL_SHARD"
    low = compute_dtype if cfg.mixed_precision != "FULL" else None
    policy = MixedPrecisionPolicy(param_dtype=low, reduce_dtype=low if cfg.mixed_precision == "PURE" else torch.float32)
    for block in model.blocks:  # type: ignore[union-attr]
        fully_shard(block, mesh=mesh, reshard_after_forward=reshard, mp_policy=policy)
    fully_shard(model, mesh=mesh, reshard_after_forward=reshard, mp_policy=policy)
    disable_gradient_division(model)


def disable_gradient_division(model: nn.Module) -> None:
    """Make every FSDP2 group reduce gradients by a plain SUM instead of the mean over ranks.

    The training loss is already divided by the target-token count of the whole global batch, so the true
    gradient is the sum of the ranks' gradients; FSDP2's default average makes it 1/N of that (clipping would
    act at N x its threshold, Adam's eps would be N x too large). A divide factor of 1 alone becomes a
    PREMUL_SUM, which gloo lacks; forcing sum-only collectives makes it a SUM on every backend.
    """
    from torch.distributed.fsdp import FSDPModule

    for module in model.modules():
        if isinstance(module, FSDPModule):
            module.set_gradient_divide_factor(1.0)
            module.set_force_sum_reduction_for_comms(True)


def _sum_hook(group, bucket):  # type: ignore[no-untyped-def]  # DDP rejects the string annotations of this file
    """DDP communication hook (NO_SHARD): all-reduce each bucket by SUM; DDP's own reducer would average."""
    work = dist.all_reduce(bucket.buffer(), group=group, async_op=True)
    return work.get_future().then(lambda fut: fut.value()[0])  # type: ignore[union-attr]
