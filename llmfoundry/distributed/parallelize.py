"""Parallelism applied from outside an unmodified model, as an ordered list of pure `apply_*` steps.

Activation checkpointing and compile work per block (`model.blocks`) without renaming parameters, so
checkpoints and exports see the same names whatever was applied.
"""

from __future__ import annotations

from typing import Literal

import torch
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


def apply_activation_offload(model: nn.Module, device: torch.device) -> None:
    """Keep the activations each block saves for backward in host memory (LLM Foundry's
    `activation_cpu_offload`): they come back in backward; pinned on CUDA so the copies overlap compute."""
    for block in model.blocks:  # type: ignore[union-attr]
        block.register_forward_pre_hook(_offload_enter)
        block.register_forward_hook(_offload_exit)
        block._offload_pin = device.type == "cuda"  # type: ignore[assignment]


def _offload_enter(block: nn.Module, args: object) -> None:
    context = torch.autograd.graph.save_on_cpu(pin_memory=block._offload_pin)  # type: ignore[arg-type]
    context.__enter__()
    block._offload_context = context  # type: ignore[assignment]


def _offload_exit(block: nn.Module, args: object, output: object) -> None:
    block._offload_context.__exit__(None, None, None)  # type: ignore[union-attr]
    del block._offload_context


def apply_compile(model: nn.Module) -> None:
    for block in model.blocks:  # type: ignore[union-attr]
        block.compile()


def apply_fsdp(model: nn.Module, cfg: FSDPConfig, device: torch.device, compute_dtype: torch.dtype | None) -> None:
    """FSDP2 over all ranks, grouped as torchtitan does (_shard_groups); `cpu_offload` keeps the shards, their
    gradients and the optimizer step on the host (CPUOffloadPolicy).

    With a low-precision `precision`, parameters are all-gathered in that dtype (DEFAULT and PURE) and
    gradients reduced in fp32 (DEFAULT) or in that dtype (PURE); FULL keeps everything in fp32.
    """
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import MixedPrecisionPolicy

    if cfg.sharding_strategy == "NO_SHARD":  # plain data parallelism: replicate and all-reduce gradients
        from torch.distributed._composable.replicate import replicate

        replicate(model, device_ids=[device.index] if device.type == "cuda" else None)
        return
    mesh = init_device_mesh(device.type, (torch.distributed.get_world_size(),))
    reshard = cfg.reshard_after_forward if cfg.reshard_after_forward is not None \
        else cfg.sharding_strategy == "FULL_SHARD"
    low = compute_dtype if cfg.mixed_precision != "FULL" else None
    policy = MixedPrecisionPolicy(param_dtype=low, reduce_dtype=low if cfg.mixed_precision == "PURE" else torch.float32)
    _shard_groups(model, reshard, mesh=mesh, mp_policy=policy, offload_policy=_offload_policy(cfg))


def _offload_policy(cfg: FSDPConfig) -> object:
    from torch.distributed.fsdp import CPUOffloadPolicy, OffloadPolicy

    return CPUOffloadPolicy(pin_memory=torch.cuda.is_available()) if cfg.cpu_offload else OffloadPolicy()


def _shard_groups(model: nn.Module, reshard: bool, **common: object) -> None:
    """torchtitan's grouping: an untied input embedding and the final norm + output head get groups of their own
    (only their shard is held outside their use), each block one group, the root the rest. The last block is
    kept gathered after forward (backward needs it first) and so is the output head; each block prefetches the
    next one's all-gather in forward and the previous one's in backward.

    A tied embedding stays in the root: its weight is used again by the loss, outside the embedding's forward.
    """
    from torch.distributed.fsdp import fully_shard

    from llmfoundry.models.mpt import MPT

    untied = isinstance(model, MPT) and model.lm_head is not None
    if untied:
        fully_shard(model.transformer["wte"], reshard_after_forward=reshard, **common)  # type: ignore[index]
    blocks = list(model.blocks)  # type: ignore[union-attr]
    for i, block in enumerate(blocks):
        fully_shard(block, reshard_after_forward=reshard and i < len(blocks) - 1, **common)
    if untied:
        fully_shard([model.transformer["norm_f"], model.lm_head], reshard_after_forward=False,  # type: ignore[index]
                    **common)
    fully_shard(model, reshard_after_forward=reshard, **common)
    for before, after in zip(blocks, blocks[1:]):
        before.set_modules_to_forward_prefetch([after])  # type: ignore[operator]
        after.set_modules_to_backward_prefetch([before])  # type: ignore[operator]
