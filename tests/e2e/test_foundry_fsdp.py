"""LLM Foundry's FSDP1 keys with their FSDP2 meaning, in 2 gloo processes against 1 process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO, _free_port
from tests.e2e.test_foundry_callbacks import train, workspace  # noqa: F401 - the shared tiny run


def losses(run: Path) -> dict[int, float]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["loss/train"] for r in rows if "loss/train" in r}


@pytest.mark.slow
@pytest.mark.parametrize("fsdp", [
    # HSDP (a 2-D mesh: 2 replicas x 1 shard, the ZeRO-2 flavour), explicit prefetch both ways, parameters and
    # optimizer state in host memory, activations offloaded, and FSDP1-only keys (reported as ignored)
    ["fsdp_config.sharding_strategy=_HYBRID_SHARD_ZERO2", "fsdp_config.data_parallel_shard_degree=1",
     "fsdp_config.forward_prefetch=true", "fsdp_config.backward_prefetch=BACKWARD_POST",
     "fsdp_config.backward_prefetch_limit=2", "fsdp_config.cpu_offload=true", "fsdp_config.activation_cpu_offload=true",
     "fsdp_config.limit_all_gathers=true", "fsdp_config.activation_checkpointing_reentrant=false"],
])
def test_foundry_fsdp_keys_in_two_processes_match_one(workspace, tmp_path, fsdp):  # noqa: F811
    _, config = workspace
    one, two = tmp_path / "one", tmp_path / "two"
    common = ["max_duration=3ba", "optimizer.lr=0.001", "console_log_interval=1ba"]
    train(config, f"save_folder={one}", *common)
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={_free_port()}", "-m",
         "llmfoundry.cli", "train", str(config), f"save_folder={two}", "device_train_microbatch_size=2", *common,
         *fsdp], env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    l1, l2 = losses(one), losses(two)
    assert sorted(l1) == sorted(l2) == [1, 2, 3]
    assert all(abs(l1[s] - l2[s]) < 1e-5 for s in l1), (l1, l2)
    out = result.stdout + result.stderr
    assert "fsdp_config: ignored, no FSDP2 meaning: limit_all_gathers" in out
    assert "fsdp_config: _HYBRID_SHARD_ZERO2 over a 2 x 1 mesh (replicate x shard)" in out
