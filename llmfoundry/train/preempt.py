"""Preemption: SIGTERM finishes the current step, writes a checkpoint and exits 0.

SLURM, Kubernetes and spot instances announce the end with SIGTERM and a grace period before SIGKILL (30 s by
default for Kubernetes, SLURM's KillWait and torchrun's --shutdown-timeout). The handler only sets a flag; the loop
looks at it after each step. Every rank must stop after the same step, because the checkpoint is collective, while
the signal may reach only some of them (one worker, or the agent that forwards it). So on N ranks the flags are
summed by one tiny all-reduce per step on a side gloo group (CPU, never in the way of the GPU stream), started
without waiting after step k and read after step k+1: the step never blocks on it and all ranks stop together one
step after the first signal. One process needs no collective at all.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType
from typing import Any

import torch
import torch.distributed as dist

SIGNALS = (signal.SIGTERM,)


class Preemption:
    """Catches SIGTERM while training runs (main thread only) and says when all ranks agree to stop."""

    def __init__(self, world_size: int) -> None:
        self.signal: signal.Signals | None = None
        self._previous: dict[int, Any] = {}
        if threading.current_thread() is threading.main_thread():
            for sig in SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        self._group = dist.new_group(backend="gloo") if world_size > 1 else None
        self._pending: tuple[Any, torch.Tensor] | None = None

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.signal = signal.Signals(signum)

    def should_stop(self) -> bool:
        """Called after every step by every rank: True on all ranks at once, one step after any rank's signal."""
        if self._group is None:
            return self.signal is not None
        agreed = False
        if self._pending is not None:
            work, flag = self._pending
            work.wait()
            agreed = bool(flag.item())
        if agreed:
            self._pending = None
            return True
        flag = torch.tensor([1 if self.signal is not None else 0], dtype=torch.int32)
        self._pending = (dist.all_reduce(flag, group=self._group, async_op=True), flag)
        return False

    def close(self, clean: bool) -> None:
        """Restore the previous handlers; after a clean finish, also complete the last all-reduce on every rank."""
        if clean and self._pending is not None:
            self._pending[0].wait()
        self._pending = None
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)
        self._previous = {}
