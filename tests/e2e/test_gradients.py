"""Exact gradients: the real Trainer's first-step gradients (full tensors) agree between microbatch splits,
1 process and 2 gloo processes under every sharding strategy, and fp16 loss scaling skips steps on all ranks
together. AdamW and clipping hide a constant factor in losses and weights, so these compare raw gradients.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from tests.conftest import REPO, _free_port
from tests.e2e.grad_probe import probe
from tests.e2e.test_train import workspace  # noqa: F401  (the module-scoped tiny MPT + MDS data fixture)

ONE_STEP = ["max_duration=1ba", "save_interval=0", "algorithms.gradient_clipping=null", "autoresume=false"]
CLIPPED = [*ONE_STEP[:2], "algorithms.gradient_clipping.clipping_threshold=0.01", *ONE_STEP[3:]]


def _max_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert sorted(a) == sorted(b)
    return max((a[k] - b[k]).abs().max().item() for k in a)


def _norm(grads: dict[str, torch.Tensor]) -> float:
    return sum((g.double() ** 2).sum() for g in grads.values()).sqrt().item()


@pytest.fixture(scope="module")
def one_process(workspace):  # noqa: F811
    """1 process on the whole global batch of 8, as 1 microbatch of 8, 4 of 2 and 8 of 1."""
    root, config = workspace
    return {micro: probe(str(config), [*ONE_STEP, f"save_folder={root}/grad1-{micro}",
                                       f"device_train_microbatch_size={micro}"])
            for micro in (8, 2, 1)}


def test_microbatch_splits_give_the_same_gradients(one_process):
    whole = one_process[8]["grads"]
    assert _norm(whole) > 0.1  # a real gradient, not zeros
    for micro in (2, 1):  # 4 x 2 and 8 x 1 against 1 x 8
        assert _max_diff(whole, one_process[micro]["grads"]) < 1e-6, micro


@pytest.mark.slow
def test_two_processes_give_the_one_process_gradients(workspace, one_process, tmp_path):  # noqa: F811
    """FULL_SHARD (1 and 2 microbatches per rank), SHARD_GRAD_OP and NO_SHARD on 2 gloo processes; the logged
    grad_norm; clipping by the global norm; and fp16 scaling with an inf in one rank's shard."""
    root, config = workspace
    runs = {
        "FULL_SHARD": ["fsdp_config.sharding_strategy=FULL_SHARD", "device_train_microbatch_size=4"],
        "FULL_SHARD-2x2": ["fsdp_config.sharding_strategy=FULL_SHARD", "device_train_microbatch_size=2"],
        "SHARD_GRAD_OP": ["fsdp_config.sharding_strategy=SHARD_GRAD_OP", "device_train_microbatch_size=4"],
        "NO_SHARD": ["fsdp_config.sharding_strategy=NO_SHARD", "device_train_microbatch_size=4"],
    }
    spec = {"config": str(config), "out": str(tmp_path / "two.pt"), "runs": {
        **{name: {"overrides": [*ONE_STEP, f"save_folder={root}/grad2-{name}", *extra]}
           for name, extra in runs.items()},
        "clipped": {"overrides": [*CLIPPED, f"save_folder={root}/grad2-clipped", "device_train_microbatch_size=4"]},
        **{f"fp16-{strategy}": {"overrides": [f"save_folder={root}/grad2-fp16-{strategy}", "max_duration=2ba",
                                               "save_interval=0", "autoresume=false", "device_train_microbatch_size=4",
                                               f"fsdp_config.sharding_strategy={strategy}"], "fp16_poison_rank": 1}
           for strategy in ("FULL_SHARD", "NO_SHARD")},
    }}
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={_free_port()}",
         "-m", "tests.e2e.grad_probe", str(tmp_path / "spec.json")],
        env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    two = torch.load(tmp_path / "two.pt")
    true = one_process[8]
    for name in runs:
        assert _max_diff(true["grads"], two[name]["grads"]) < 1e-6, name
        # the logged pre-clip norm is the global one (all shards), equal to the 1-process norm
        assert abs(two[name]["metrics"]["grad_norm"] - _norm(true["grads"])) < 1e-5 * _norm(true["grads"]), name
    # clipping by the global norm: the clipped gradient is the true one scaled to norm 0.01 (a per-shard norm
    # or an averaged gradient would give another factor)
    clipped = two["clipped"]["grads"]
    assert abs(_norm(clipped) - 0.01) < 1e-6
    factor = 0.01 / (_norm(true["grads"]) + 1e-6)
    assert _max_diff({k: v * factor for k, v in true["grads"].items()}, clipped) < 1e-8
    # fp16 scaling: an inf in rank 1's gradients (after the reduction) at step 1 makes both ranks skip step 1 and
    # halve the scale. Under FULL_SHARD torch's DTensor already max-reduces the found-inf flag; under NO_SHARD
    # only ShardedGradScaler's all-reduce makes rank 0 (whose gradients are finite) skip too.
    for strategy in ("FULL_SHARD", "NO_SHARD"):
        fp16 = two[f"fp16-{strategy}"]
        assert fp16["stepped"] == [[2], [2]], strategy
        assert fp16["scales"] == [[2.0**15, 2.0**15], [2.0**15, 2.0**15]], strategy
