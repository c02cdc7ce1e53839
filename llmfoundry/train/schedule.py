"""Learning-rate schedules as pure functions of the step (nothing to checkpoint but the step itself).

`lr(step) = peak * multiplier(step)`; warmup is linear from 0 over `t_warmup`; the decay runs from the end
of warmup to `t_max` and ends at `alpha_f`:
- cosine_with_warmup: alpha_f + (1 - alpha_f) * (1 + cos(pi * tau)) / 2, tau = progress through the decay
- linear_decay_with_warmup: 1 - (1 - alpha_f) * tau
- constant_with_warmup: 1
- inverse_sqrt: sqrt(t_warmup / step) after warmup (never below alpha_f)
- warmup_stable_decay: 1 until the last `t_cooldown`, then linear to alpha_f
- inv_sqrt_with_warmup (LLM Foundry's InverseSquareRootWithWarmupScheduler, same formula):
  alpha_f_decay + (1 - alpha_f_decay) / sqrt((t - t_warmup + t_scale) / t_scale) until the last
  `t_cooldown`, then linear from there to alpha_f_cooldown; t = optimizer steps done
"""

from __future__ import annotations

import math
from typing import Callable

from llmfoundry.config.duration import Duration
from llmfoundry.config.schema import SchedulerConfig


def lr_multiplier(cfg: SchedulerConfig, max_steps: int, steps_of: Callable[[Duration], int]) -> Callable[[int], float]:
    """multiplier(step) for optimizer step `step` (0-based: the lr used by the step that makes it step+1)."""
    warmup = steps_of(cfg.t_warmup)
    t_max = max(steps_of(cfg.t_max), warmup + 1)
    cooldown = steps_of(cfg.t_cooldown)
    alpha = cfg.alpha_f

    def multiplier(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if cfg.name == "constant_with_warmup":
            return 1.0
        if cfg.name == "inv_sqrt_with_warmup":
            return _inv_sqrt(step, warmup, steps_of(cfg.t_scale), cooldown, t_max, cfg.alpha_f_decay,
                             cfg.alpha_f_cooldown)
        if cfg.name == "inverse_sqrt":
            return max(alpha, math.sqrt(max(warmup, 1) / (step + 1)))
        if cfg.name == "warmup_stable_decay":
            start = max(t_max - cooldown, warmup)
            if step < start:
                return 1.0
            tau = min((step - start) / max(t_max - start, 1), 1.0)
            return 1 - (1 - alpha) * tau
        tau = min((step - warmup) / (t_max - warmup), 1.0)
        if cfg.name == "linear_decay_with_warmup":
            return 1 - (1 - alpha) * tau
        return alpha + (1 - alpha) * 0.5 * (1 + math.cos(math.pi * tau))

    return multiplier


def _inv_sqrt(t: int, warmup: int, scale: int, cooldown: int, t_max: int, alpha_decay: float,
              alpha_cooldown: float) -> float:
    def decayed(at: int) -> float:
        return alpha_decay + (1 - alpha_decay) / math.sqrt((at - warmup + scale) / scale)

    start = max(t_max - cooldown, warmup)
    if t < start:
        return decayed(t)
    if cooldown == 0:
        return decayed(start)
    frac = min(1.0, (t - start) / cooldown)
    return decayed(start) + frac * (alpha_cooldown - decayed(start))


def steps_for(duration: Duration, *, max_steps: int | None, global_batch: int, seq_len: int,
              steps_per_epoch: int) -> int:
    """Optimizer steps a duration spans (rounded up; `dur` is a fraction of max_steps)."""
    if duration.unit == "ba":
        return int(duration.value)
    if duration.unit == "sp":
        return math.ceil(duration.value / global_batch)
    if duration.unit == "tok":
        return math.ceil(duration.value / (global_batch * seq_len))
    if duration.unit == "ep":
        return int(duration.value * steps_per_epoch)
    if max_steps is None:
        raise ValueError("a 'dur' fraction needs max_duration first")
    return math.ceil(duration.value * max_steps)
