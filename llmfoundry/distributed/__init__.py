"""Process-group setup from torchrun's environment (gloo on CPU, nccl on GPU); one process needs none."""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist

from llmfoundry.errors import UserError


@dataclass
class DistInfo:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(timeout_s: float = 600.0) -> DistInfo:
    """Join torchrun's group; every collective (gloo and NCCL) gives up after `timeout_s` seconds.

    gloo raises in the waiting rank; NCCL's watchdog ends the process (torchrun sets
    TORCH_NCCL_ASYNC_ERROR_HANDLING=1 for its workers), so the agent sees a failure and can restart the group.
    """
    world, rank, local = _env_int("WORLD_SIZE", 1), _env_int("RANK", 0), _env_int("LOCAL_RANK", 0)
    if world < 1 or not 0 <= rank < world or local < 0:
        raise UserError(f"RANK={rank}, WORLD_SIZE={world}, LOCAL_RANK={local} (set by the launcher): expected "
                        "WORLD_SIZE >= 1, 0 <= RANK < WORLD_SIZE and LOCAL_RANK >= 0")
    if torch.cuda.is_available():
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    if world > 1 and not dist.is_initialized():
        _join_group("nccl" if device.type == "cuda" else "gloo", timedelta(seconds=timeout_s))
    return DistInfo(rank, world, local, device)


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name, str(default))
    try:
        return int(value)
    except ValueError:
        raise UserError(f"{name}={value!r} (set by the launcher): expected an integer") from None


def _join_group(backend: str, timeout: timedelta) -> None:
    """init_process_group on torchrun's store, under a key prefix of its own for each restart attempt.

    torchrun's c10d rendezvous shares one TCPStore with the workers for the whole job, so after a restart the
    failed attempt's keys (gloo's peer addresses, NCCL's unique id) are still there and the new workers would
    connect to dead processes. A prefix per attempt gives each attempt a clean key space.
    """
    from torch.distributed.rendezvous import rendezvous

    store, rank, world = next(rendezvous("env://", timeout=timeout))
    store = dist.PrefixStore(f"llmfoundry/attempt-{restart_count()}", store)
    dist.init_process_group(backend, store=store, rank=rank, world_size=world, timeout=timeout)
    # Every rank leaves init together: a rank that raises a config error right after init must not close its
    # side while a slower peer is still connecting (gloo's "Connection closed by peer" traceback, seen under load).
    dist.barrier()


def restart_count() -> int:
    """How many times torchrun's agent has restarted this group after a failure (0 outside torchrun)."""
    return int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0"))


def max_restarts() -> int:
    return int(os.environ.get("TORCHELASTIC_MAX_RESTARTS", "0"))


def run_id() -> str:
    """torchrun's rendezvous id: the same for every node and every restart of one job ("" outside torchrun)."""
    return os.environ.get("TORCHELASTIC_RUN_ID", "")


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    if dist.is_initialized():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def broadcast_from_main(value: Any) -> Any:
    """Rank 0's `value` on every rank (a picklable object; one process returns it unchanged)."""
    if not dist.is_initialized():
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def shutdown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()
