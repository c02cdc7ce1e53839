"""The loss-spike guard's bookkeeping: which step, if any, was a spike (see `SpikeGuardConfig` for the rule).

Step losses are recorded as device scalars and read back together only when `first_spike` is called (at log
and save steps), so the guard adds no host synchronization to the steps in between. The history of accepted
losses survives a rollback (the guard stays armed); a new process starts with an empty history.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

import torch

from llmfoundry.config.schema import SpikeGuardConfig


@dataclass(frozen=True)
class Spike:
    step: int
    loss: float
    mean: float | None  # the running mean it was compared with; None when the loss was not finite


class SpikeGuard:
    def __init__(self, cfg: SpikeGuardConfig) -> None:
        self.cfg = cfg
        self.history: deque[float] = deque(maxlen=cfg.window)
        self.pending: list[tuple[int, torch.Tensor]] = []
        self.rollbacks = 0

    def record(self, step: int, loss: torch.Tensor) -> None:
        """Remember step `step`'s mean loss (a device scalar) for the next check."""
        self.pending.append((step, loss.detach()))

    def first_spike(self) -> Spike | None:
        """Check the recorded steps in order (one host sync); return the first spike, forgetting the steps after it."""
        if not self.pending:
            return None
        steps = [step for step, _ in self.pending]
        losses = torch.stack([loss.float() for _, loss in self.pending]).tolist()
        self.pending.clear()
        for step, loss in zip(steps, losses):
            if not math.isfinite(loss):
                return Spike(step, loss, None)
            if len(self.history) == self.cfg.window:
                mean = sum(self.history) / len(self.history)
                if loss > self.cfg.factor * mean:
                    return Spike(step, loss, mean)
            self.history.append(loss)
        return None
