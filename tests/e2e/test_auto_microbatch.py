"""`device_train_microbatch_size: auto` against real out-of-memory errors.

CPU tensors run out of memory for real when the process's address space is capped (RLIMIT_AS): the allocator
raises exactly what it raises on a full machine. The trainer is built first, then the cap is set a little above
what it holds (until training ends: the run report is drawn uncapped), so a 16-sequence microbatch of 256-token
rows with materialized attention cannot fit and the step must be redone with smaller ones. The reference is the
same run without a cap and without splitting.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from llmfoundry.checkpoint.reader import load_model_from_checkpoint
from tests.conftest import REPO, toy_corpus

CONFIG = """
base: {base}
variables:
  data_local: {data}
  tokenizer: {tok}
  max_seq_len: 256
  run_name: auto-micro
model:
  name: mpt
  preset: mpt-tiny
  d_model: 64
  vocab_size: 512
  attn_config:
    attn_impl: torch
max_duration: 2ba
global_train_batch_size: 16
device_train_microbatch_size: auto
precision: fp32
eval_interval: 0
eval_loader: null
save_interval: 0
console_log_interval: 1ba
progress_bar: false
optimizer:
  lr: 0.001
"""

CAPPED_TRAIN = """
import resource, sys
from llmfoundry.config import load_typed
from llmfoundry.config.schema import TrainConfig
from llmfoundry.train.loop import Trainer

from llmfoundry.loggers import MetricLoggers

cfg, loaded = load_typed(TrainConfig, sys.argv[1], sys.argv[3:])
trainer = Trainer(cfg, loaded)
finish = MetricLoggers.finish


def uncapped_finish(self, *args):  # the cap is for training: matplotlib's Agg can spin when malloc fails
    resource.setrlimit(resource.RLIMIT_AS, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
    finish(self, *args)


MetricLoggers.finish = uncapped_finish
if int(sys.argv[2]):
    status = open("/proc/self/status").read().splitlines()
    size = int(next(line for line in status if line.startswith("VmSize")).split()[1]) * 1024
    resource.setrlimit(resource.RLIMIT_AS, (size + int(sys.argv[2]) * 2**20, resource.RLIM_INFINITY))
trainer.fit()
"""


@pytest.fixture(scope="module")
def long_rows(tmp_path_factory) -> Path:
    from llmfoundry.data.convert import convert_dataset

    root = tmp_path_factory.mktemp("auto_micro")
    corpus, _ = toy_corpus(root)
    convert_dataset([str(corpus)], str(root / "data"), tokenizer=str(root / "tok"), max_seq_len=256,
                    val_fraction=0.0, progress=False)
    config = root / "auto.yaml"
    config.write_text(CONFIG.format(base=REPO / "yamls" / "pretrain" / "_base.yaml", data=root / "data",
                                    tok=root / "tok"))
    (root / "capped_train.py").write_text(CAPPED_TRAIN)
    return root


def _train(root: Path, run: str, headroom_mb: int, *overrides: str) -> str:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "MALLOC_ARENA_MAX": "1"}
    result = subprocess.run([sys.executable, str(root / "capped_train.py"), str(root / "auto.yaml"), str(headroom_mb),
                             f"save_folder={root / run}", *overrides], env=env, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    return result.stdout


def _metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_auto_microbatch_retries_the_step_after_out_of_memory(long_rows):
    _train(long_rows, "whole", 0, "device_train_microbatch_size=16")
    out = _train(long_rows, "auto", 120)

    assert "out of memory with a microbatch of 16; retrying the step with 8" in out
    whole, auto = _metrics(long_rows / "whole"), _metrics(long_rows / "auto")
    assert [m["step"] for m in auto] == [1, 2]  # no step lost or repeated
    assert auto[-1]["trainer/device_train_microbatch_size"] < 16
    for a, b in zip(whole, auto):
        assert abs(a["loss/train"] - b["loss/train"]) < 1e-6
    w1, w2 = (load_model_from_checkpoint(long_rows / r)[0].state_dict() for r in ("whole", "auto"))
    assert max((w1[k] - w2[k]).abs().max().item() for k in w1) < 1e-6


@pytest.mark.slow
def test_auto_microbatch_gives_up_clearly_when_one_row_does_not_fit(long_rows):
    # 48 layers x 64 heads of materialized 256 x 256 attention: one row needs far more than the cap allows
    with pytest.raises(AssertionError, match="out of memory even with a microbatch of 1 sequence"):
        _train(long_rows, "huge", 120, "model.n_layers=48", "model.n_heads=64")
    assert not (long_rows / "huge" / "checkpoints").exists() or not any((long_rows / "huge" / "checkpoints").iterdir())
