"""Parallelism applied from outside an unmodified model, as an ordered list of pure `apply_*` steps.

Gradients are reduced by SUM whatever the sharding (the loss is normalized by the global token count).
Activation checkpointing and compile work per block (`model.blocks`) without renaming parameters, so
checkpoints and exports see the same names whatever was applied.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

import torch
import torch.distributed as dist
from torch import nn

from llmfoundry.config.schema import FSDPConfig

if TYPE_CHECKING:
    from torch.distributed.device_mesh import DeviceMesh


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


def apply_fsdp(model: nn.Module, cfg: FSDPConfig, device: torch.device,
               compute_dtype: torch.dtype | None) -> DeviceMesh | None:
    """FSDP2 over all ranks (a 2-D mesh for HYBRID_SHARD), grouped as torchtitan does (_shard_groups), with
    explicit prefetching between blocks; gradients are summed. `cpu_offload` keeps the shards, their gradients
    and the optimizer step on the host (CPUOffloadPolicy).

    With a low-precision `precision`, parameters are all-gathered in that dtype (DEFAULT and PURE) and
    gradients reduced in fp32 (DEFAULT) or in that dtype (PURE); FULL keeps everything in fp32.
    """
    from torch.distributed.fsdp import MixedPrecisionPolicy

    if cfg.sharding_strategy == "NO_SHARD":  # plain data parallelism: replicate and all-reduce gradients
        from torch.distributed._composable.replicate import replicate

        replicate(model, device_ids=[device.index] if device.type == "cuda" else None)
        model.register_comm_hook(None, _sum_hook)  # type: ignore[operator]
        return None
    mesh = fsdp_mesh(cfg, device)
    keep = cfg.sharding_strategy in ("SHARD_GRAD_OP", "_HYBRID_SHARD_ZERO2")
    reshard = cfg.reshard_after_forward if cfg.reshard_after_forward is not None else not keep
    low = compute_dtype if cfg.mixed_precision != "FULL" else None
    policy = MixedPrecisionPolicy(param_dtype=low, reduce_dtype=low if cfg.mixed_precision == "PURE" else torch.float32)
    blocks = _shard_groups(model, reshard, mesh=mesh, mp_policy=policy, offload_policy=_offload_policy(cfg, device))
    apply_prefetch(blocks, cfg)
    disable_gradient_division(model)
    return mesh


def _offload_policy(cfg: FSDPConfig, device: torch.device) -> object:
    from torch.distributed.fsdp import CPUOffloadPolicy, OffloadPolicy

    return CPUOffloadPolicy(pin_memory=device.type == "cuda") if cfg.cpu_offload else OffloadPolicy()


def _shard_groups(model: nn.Module, reshard: bool, **common: object) -> list[nn.Module]:
    """torchtitan's grouping: an untied input embedding and the final norm + output head get groups of their own
    (only their shard is held outside their use), each block one group, the root the rest. The last block is
    kept gathered after forward (backward needs it first) and so is the output head. Returns the blocks.

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
    return blocks


def fsdp_mesh(cfg: FSDPConfig, device: torch.device) -> DeviceMesh:
    """1-D over all ranks, or for HYBRID_SHARD 2-D (replicate x shard): FSDP2's HSDP."""
    import os

    from torch.distributed.device_mesh import init_device_mesh

    from llmfoundry.errors import UserError

    world = torch.distributed.get_world_size()
    if not cfg.sharding_strategy.lstrip("_").startswith("HYBRID_SHARD"):
        return init_device_mesh(device.type, (world,))
    shard = cfg.data_parallel_shard_degree
    if shard == -1:
        shard = int(os.environ.get("LOCAL_WORLD_SIZE", world))
    replicate = cfg.data_parallel_replicate_degree if cfg.data_parallel_replicate_degree != -1 else world // shard
    if shard < 1 or replicate * shard != world:
        raise UserError(f"fsdp_config: data_parallel_replicate_degree {replicate} x data_parallel_shard_degree "
                        f"{shard} must equal the {world} processes")
    return init_device_mesh(device.type, (replicate, shard), mesh_dim_names=("replicate", "shard"))


def apply_prefetch(blocks: list[nn.Module], cfg: FSDPConfig) -> None:
    """FSDP1's forward_prefetch / backward_prefetch as FSDP2's explicit prefetching between blocks."""
    for i, block in enumerate(blocks):
        if cfg.forward_prefetch and i + 1 < len(blocks):
            block.set_modules_to_forward_prefetch(blocks[i + 1:i + 1 + cfg.forward_prefetch_limit])  # type: ignore[operator]
        if cfg.backward_prefetch is not None and i > 0:
            block.set_modules_to_backward_prefetch(  # type: ignore[operator]
                blocks[max(i - cfg.backward_prefetch_limit, 0):i][::-1])


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
