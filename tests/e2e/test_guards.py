"""Guards that keep a run's checkpoints good: the loss-spike guard on a real poisoned batch, and exact RNG on resume."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.conftest import run_cli
from tests.e2e.test_train import losses, train_in_process, weights, workspace  # noqa: F401

POISONED_STEP = 7  # with shuffle off, step k trains on samples 8(k-1) .. 8k-1
GUARD = ["spike_guard.window=3", "spike_guard.factor=3"]


def _write_mds(out: Path, samples: list[np.ndarray]) -> None:
    from streaming import MDSWriter

    with MDSWriter(out=str(out / "train"), columns={"tokens": "ndarray:int32"}, progress_bar=False) as writer:
        for tokens in samples:
            writer.write({"tokens": tokens})


@pytest.fixture(scope="module")
def poisoned(workspace):  # noqa: F811
    """The workspace's training samples in file order, once with step 7's 8 samples replaced by tokens the
    tokenizer never produces (ids 400-511: their loss after 6 steps is ~8.6 against ~1-2), once without them."""
    from streaming import LocalDataset

    root, config = workspace
    clean = [np.asarray(s["tokens"]) for s in LocalDataset(str(root / "data"), split="train")]
    bad = range(8 * (POISONED_STEP - 1), 8 * POISONED_STEP)
    rng = np.random.default_rng(0)
    _write_mds(root / "poisoned", [rng.integers(400, 512, t.shape).astype(np.int32) if i in bad else t
                                   for i, t in enumerate(clean)])
    _write_mds(root / "without", [t for i, t in enumerate(clean) if i not in bad])
    args = ["train_loader.dataset.shuffle=false", "eval_loader=null", "max_duration=10ba", "save_interval=2ba",
            "console_log_interval=4ba", "autoresume=false", "save_num_checkpoints_to_keep=-1"]
    return root, config, args


def test_spike_guard_stops_on_the_poisoned_batch(poisoned):
    root, config, args = poisoned
    run = root / "spike-stop"
    result = run_cli("train", str(config), f"save_folder={run}", f"variables.data_local={root}/poisoned", *args,
                     *GUARD, "spike_guard.action=stop")
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith("error: step 7: loss 8.") and "x the mean" in line and line.endswith(
        "(spike_guard); stopping (step-00000006 is the last good checkpoint)"), line
    # found at step 8 (a log and save step): no checkpoint after the spike was written
    assert (run / "checkpoints" / "latest").read_text().strip() == "step-00000006"
    assert not (run / "checkpoints" / "step-00000008").exists()


@pytest.mark.slow
def test_spike_guard_rolls_back_and_skips_exactly_the_poisoned_batch(poisoned):
    root, config, args = poisoned
    run, reference = root / "spike-rollback", root / "spike-reference"
    result = run_cli("train", str(config), f"save_folder={run}", f"variables.data_local={root}/poisoned", *args,
                     *GUARD)
    assert result.returncode == 0, result.stderr
    assert "rolled back to step-00000006 and skipped the batches of steps 7-7 (8 samples; rollback 1 of at most 3)" \
        in result.stdout, result.stdout
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [4, 8, 10] and records[-1]["spike/rollbacks"] == 1
    # the same run on the data without the poisoned batch: bitwise the same weights and losses
    train_in_process(config, f"save_folder={reference}", f"variables.data_local={root}/without", *args)
    got, want = weights(run), weights(reference)
    assert all(torch.isfinite(v).all() for v in got.values())
    assert all(torch.equal(got[k], want[k]) for k in want)
    assert losses(run) == losses(reference)


def test_dropout_run_resumed_from_a_checkpoint_equals_the_uninterrupted_run(workspace):  # noqa: F811
    """With attention, residual and embedding dropout, the random stream must be restored exactly on resume."""
    root, config = workspace
    straight, resumed = root / "dropout-straight", root / "dropout-resumed"
    args = ["model.attn_config.attn_pdrop=0.1", "model.resid_pdrop=0.1", "model.emb_pdrop=0.1", "max_duration=4ba",
            "save_interval=2ba", "save_num_checkpoints_to_keep=-1", "autoresume=true", "eval_loader=null"]
    train_in_process(config, f"save_folder={straight}", *args)
    (resumed / "checkpoints").mkdir(parents=True)
    shutil.copytree(straight / "checkpoints" / "step-00000002", resumed / "checkpoints" / "step-00000002")
    (resumed / "checkpoints" / "latest").write_text("step-00000002\n")
    train_in_process(config, f"save_folder={resumed}", *args)
    a, b = weights(straight), weights(resumed)
    assert all(torch.equal(a[k], b[k]) for k in a)  # bitwise
    assert losses(resumed) == {s: v for s, v in losses(straight).items() if s > 2}


def test_skipping_batches_lands_where_an_uninterrupted_iteration_would(workspace):  # noqa: F811
    """StepBatches.skip (rollback's data skip), also across an epoch boundary (34 steps per epoch) with shuffling."""
    from dataclasses import replace

    from llmfoundry.config import load_typed
    from llmfoundry.config.schema import TrainConfig
    from llmfoundry.train.loop import Trainer

    root, config = workspace
    cfg, loaded = load_typed(TrainConfig, config, [f"save_folder={root}/skip", "eval_loader=null"])
    data = Trainer(cfg, loaded).data
    assert data.steps_per_epoch == 34
    positions, firsts = [], []
    for batch in _steps(data, 40):
        positions.append(replace(data.position))
        firsts.append(batch[0]["input_ids"][0])
    for done, skipped in [(5, 1), (30, 6), (33, 3), (34, 2)]:
        data.position.epoch = positions[done - 1].epoch
        data.position.samples_in_epoch = positions[done - 1].samples_in_epoch
        data.skip(skipped)
        batch = next(iter(data))
        assert torch.equal(batch[0]["input_ids"][0], firsts[done + skipped]), (done, skipped)


def _steps(data, n):
    for i, batch in enumerate(data):
        if i == n:
            return
        yield batch
