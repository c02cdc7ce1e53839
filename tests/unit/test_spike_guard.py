"""spike_guard's rule and config checks, and clipping_threshold's; the guard's end-to-end behaviour on a poisoned
batch is in tests/e2e/test_guards.py."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from llmfoundry.config import load_typed
from llmfoundry.config.schema import SpikeGuardConfig, TrainConfig
from llmfoundry.errors import UserError
from llmfoundry.train.spike import Spike, SpikeGuard
from tests.unit.test_config import MINIMAL, write


def _check(guard: SpikeGuard, losses: dict[int, float]) -> Spike | None:
    for step, loss in losses.items():
        guard.record(step, torch.tensor(loss))
    return guard.first_spike()


def test_spike_is_judged_against_the_mean_of_the_previous_window_steps():
    guard = SpikeGuard(SpikeGuardConfig(window=2, factor=2.0))
    assert _check(guard, {1: 9.0, 2: 4.0}) is None  # not armed before 2 steps: a high early loss is no spike
    assert _check(guard, {3: 13.0}) is None  # exactly 2 x mean(9, 4) is not above it
    assert _check(guard, {4: 1.0, 5: 1.0, 6: 1.5}) is None  # 1.5 < 2 x mean(1, 1)
    spike = _check(guard, {7: 2.75, 8: 5.0})  # 2.75 > 2 x mean(1, 1.5) = 2.5; the first spike wins
    assert spike == Spike(7, 2.75, 1.25)
    assert guard.pending == [] and list(guard.history) == [1.0, 1.5]  # spikes never enter the history


def test_a_non_finite_loss_is_a_spike_even_before_the_guard_arms():
    guard = SpikeGuard(SpikeGuardConfig(window=5))
    spike = _check(guard, {1: 3.0, 2: float("nan")})
    assert spike is not None and spike.step == 2 and math.isnan(spike.loss) and spike.mean is None


@pytest.mark.parametrize(("override", "message"), [
    ("algorithms.gradient_clipping.clipping_threshold=0", "algorithms.gradient_clipping.clipping_threshold: must be "
                                                          "positive, got 0.0"),
    ("algorithms.gradient_clipping.clipping_threshold=-1", "clipping_threshold: must be positive, got -1.0"),
    ("spike_guard.factor=1", "spike_guard.factor: must be greater than 1, got 1.0"),
    ("spike_guard.window=0", "spike_guard.window: must be at least 1 step, got 0"),
    ("spike_guard.max_rollbacks=-1", "spike_guard.max_rollbacks: must be 0 or more, got -1"),
    ("spike_guard.action=retry", "spike_guard.action: got 'retry', expected one of 'stop', 'rollback'"),
])
def test_bad_guard_and_clipping_values_name_the_key(tmp_path: Path, override: str, message: str):
    with pytest.raises(UserError) as info:
        load_typed(TrainConfig, write(tmp_path / "a.yaml", MINIMAL), [override])
    assert message in info.value.problems[0]


def test_spike_guard_is_off_by_default(tmp_path: Path):
    cfg, _ = load_typed(TrainConfig, write(tmp_path / "a.yaml", MINIMAL))
    assert cfg.spike_guard is None
    cfg, _ = load_typed(TrainConfig, write(tmp_path / "a.yaml", MINIMAL), ["spike_guard.action=stop"])
    assert cfg.spike_guard == SpikeGuardConfig(window=20, factor=2.0, action="stop", max_rollbacks=3)
