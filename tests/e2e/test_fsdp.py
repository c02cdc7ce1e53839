"""FSDP2 as torchtitan groups it (embedding and head groups, explicit prefetch, last block kept gathered) and its
offload options train exactly like one process: 2 gloo processes against 1."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.conftest import REPO, _free_port
from tests.e2e.test_train import losses, train_in_process, workspace  # noqa: F401  (the shared fixture)

COMMON = ["max_duration=3ba", "save_interval=0", "optimizer.lr=0.001", "model.tie_word_embeddings=false"]


def two_processes(config, run, *overrides):
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={_free_port()}", "-m",
         "llmfoundry.cli", "train", str(config), f"save_folder={run}", "device_train_microbatch_size=4", *COMMON,
         *overrides], env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return losses(run)


@pytest.mark.slow
def test_grouped_prefetched_and_offloaded_fsdp_train_like_one_process(workspace):  # noqa: F811
    root, config = workspace
    one = root / "fsdp-one"
    train_in_process(config, f"save_folder={one}", *COMMON)
    reference = losses(one)
    grouped = two_processes(config, root / "fsdp-grouped")
    offloaded = two_processes(config, root / "fsdp-offload", "fsdp_config.cpu_offload=true",
                              "fsdp_config.activation_cpu_offload=true")
    assert sorted(reference) == sorted(grouped) == sorted(offloaded) == [1, 2, 3]
    assert all(abs(reference[s] - grouped[s]) < 1e-5 for s in reference)  # 1 vs 2 ranks: summation order only
    assert all(abs(grouped[s] - offloaded[s]) < 1e-6 for s in reference)
