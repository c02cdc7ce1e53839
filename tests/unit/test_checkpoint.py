"""Checkpoint integrity: manifests, the `latest` pointer, load-time checks, leftovers, disk errors, async saves.

Every checkpoint here is written by the real CheckpointManager (DCP underneath) from small real tensors, and
damaged the way disks and people damage them: flipped bytes, truncation, deleted files, bad pointers.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import traceback
from pathlib import Path

import pytest
import torch

from llmfoundry.checkpoint.manager import CheckpointManager
from llmfoundry.checkpoint.manifest import MANIFEST, first_problem, looks_intact
from llmfoundry.checkpoint.pointer import read_latest
from llmfoundry.checkpoint.reader import _file_damage, load_state, resolve_checkpoint, verify_checkpoint
from llmfoundry.errors import UserError
from tests.conftest import REPO


def state(seed: int) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {"model": {"w": torch.randn(64, 64, generator=g), "b": torch.randn(64, generator=g)},
            "optim": {"exp_avg": torch.randn(64, 64, generator=g)}, "train_state": {"step": seed, "note": "x"}}


def empty_like(s: dict) -> dict:
    return {k: (empty_like(v) if isinstance(v, dict) else torch.zeros_like(v) if isinstance(v, torch.Tensor) else v)
            for k, v in s.items()}


@pytest.fixture
def run(tmp_path: Path) -> Path:
    """A run folder with checkpoints at steps 3, 6 and 9 (latest = step-00000009)."""
    manager = CheckpointManager(tmp_path / "checkpoints", config_yaml="model: {}\n", keep=-1)
    for step in (3, 6, 9):
        manager.save(step, state(step))
    manager.close()
    return tmp_path


def ckpt(run: Path, step: int) -> Path:
    return run / "checkpoints" / f"step-{step:08d}"


def test_save_publishes_a_verified_checkpoint(run):
    folder = ckpt(run, 9)
    assert sorted(p.name for p in folder.iterdir()) == [".metadata", "__0_0.distcp", "config.yaml", MANIFEST]
    assert first_problem(folder) is None and verify_checkpoint(folder) == []
    assert (run / "checkpoints" / "latest").read_text() == "step-00000009\n"
    assert resolve_checkpoint(run) == folder
    loaded = empty_like(state(0))
    load_state(folder, loaded, where="test")
    assert torch.equal(loaded["model"]["w"], state(9)["model"]["w"]) and loaded["train_state"]["step"] == 9
    assert not list((run / "checkpoints").glob(".tmp-*"))


def flip(path: Path) -> None:
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle:middle + 64] = bytes(b ^ 0xFF for b in data[middle:middle + 64])
    path.write_bytes(bytes(data))


DAMAGE = {
    "flipped": (lambda f: flip(f / "__0_0.distcp"), "__0_0.distcp: checksum mismatch"),
    "truncated": (lambda f: (f / "__0_0.distcp").write_bytes((f / "__0_0.distcp").read_bytes()[:1000]),
                  "__0_0.distcp: 1000 bytes, the manifest says"),
    "deleted": (lambda f: (f / "config.yaml").unlink(), "config.yaml: missing"),
    "metadata": (lambda f: flip(f / ".metadata"), ".metadata: checksum mismatch"),
    "manifest": (lambda f: (f / MANIFEST).write_text("{not json"), "manifest.json: unreadable or not a manifest"),
    "escaping": (lambda f: (f / MANIFEST).write_text(json.dumps(
        {"algorithm": "xxh3_128", "files": {"../../x": {"size": 1, "xxh3_128": "0"}}})), "unreadable or not a manifest"),
}


@pytest.mark.parametrize("kind", sorted(DAMAGE))
def test_damage_is_named_and_the_previous_checkpoint_offered(run, kind):
    damage, message = DAMAGE[kind]
    folder = ckpt(run, 9)
    damage(folder)
    problem = first_problem(folder)
    assert problem is not None and message in problem
    with pytest.raises(UserError) as err:
        verify_checkpoint(folder, verb="resume from it")
    line = err.value.problems[0]
    assert str(folder) in line and "(the checkpoint is damaged)" in line
    assert line.endswith(f"the previous complete checkpoint is step-00000006: echo step-00000006 > "
                         f"{run / 'checkpoints' / 'latest'} to resume from it")


def test_a_checkpoint_without_manifest_loads_with_a_note(run):
    folder = ckpt(run, 9)
    (folder / MANIFEST).unlink()
    assert looks_intact(folder)
    notes = verify_checkpoint(folder)
    assert len(notes) == 1 and "no manifest.json" in notes[0] and "unverified" in notes[0]


LATEST_CASES = {
    b"\xff\xfe\x00garbage": "latest: not UTF-8 text",
    b"": "latest: empty",
    b"  \n": "latest: empty",
    b"../../other-run/checkpoints/step-00000009\n":
        "latest: names '../../other-run/checkpoints/step-00000009'; it must name a step-XXXXXXXX folder inside its "
        "own checkpoints folder",
    b"/abs/step-00000009": "must name a step-XXXXXXXX folder inside its own checkpoints folder",
    b"step-9": "must name a step-XXXXXXXX folder",
    b"step-00000012\n": "latest: names step-00000012, which does not exist",
}


@pytest.mark.parametrize("raw", sorted(LATEST_CASES), ids=range(len(LATEST_CASES)))
def test_a_broken_latest_is_named_and_an_intact_step_offered(run, raw):
    pointer = run / "checkpoints" / "latest"
    pointer.write_bytes(raw)
    for fn in (read_latest, lambda _: resolve_checkpoint(run)):  # one resolver for training and export
        with pytest.raises(UserError) as err:
            fn(run / "checkpoints")
        line = err.value.problems[0]
        assert line.startswith(str(pointer)) and LATEST_CASES[raw] in line, line
        assert "step-00000009: echo step-00000009 >" in line and "autoresume" not in line


def test_latest_naming_an_incomplete_checkpoint_offers_an_intact_older_one(run):
    (ckpt(run, 9) / ".metadata").unlink()  # as a copy cut short would leave it
    (ckpt(run, 6) / "__0_0.distcp").write_bytes(b"short")  # and the one before is cut short too
    with pytest.raises(UserError) as err:
        read_latest(run / "checkpoints")
    line = err.value.problems[0]
    assert "names step-00000009, which is incomplete or damaged" in line
    assert "the previous complete checkpoint is step-00000003" in line


def test_missing_latest(run, tmp_path):
    (run / "checkpoints" / "latest").unlink()
    with pytest.raises(UserError, match="latest: missing though the folder holds checkpoints; the newest complete "
                                        "checkpoint is step-00000009"):
        read_latest(run / "checkpoints")
    assert read_latest(tmp_path / "nothing" / "checkpoints") is None


def test_a_checkpoint_of_another_shape_or_optimizer_is_one_line(run):
    other = empty_like(state(0))
    other["model"]["w"] = torch.zeros(64, 32)
    with pytest.raises(UserError, match=r"autoresume: .*step-00000009 does not match this run: model.w is "
                                        r"\(64, 64\) there, \(64, 32\) here"):
        load_state(ckpt(run, 9), other, where="autoresume")
    other = empty_like(state(0))
    other["optim"]["exp_avg_sq"] = torch.zeros(64, 64)
    with pytest.raises(UserError, match="it lacks optim.exp_avg_sq"):
        load_state(ckpt(run, 9), other, where="autoresume")


def test_dcp_failures_from_damaged_files_become_one_line_and_ours_stay_loud(run):
    from torch.distributed.checkpoint import CheckpointException

    folder = ckpt(run, 9)
    (folder / MANIFEST).unlink()  # nothing to verify first: DCP itself meets the damage
    (folder / "__0_0.distcp").write_bytes((folder / "__0_0.distcp").read_bytes()[:5000])
    with pytest.raises(UserError) as err:
        load_state(folder, empty_like(state(0)), where="load_path")
    line = err.value.problems[0]
    assert line.startswith(f"load_path: {folder}: cannot read the checkpoint (") and "the files are damaged" in line
    assert "\n" not in line and "previous complete checkpoint is step-00000006" in line
    bug = CheckpointException("load", {0: (ValueError("our bug"), traceback.StackSummary())})
    assert _file_damage(bug) is None  # not caused by the files: re-raised as is
    assert _file_damage(KeyError("x")) is None


def test_leftovers_of_an_interrupted_save_are_removed_at_start(run):
    leftover = run / "checkpoints" / ".tmp-step-00000012"
    leftover.mkdir()
    (leftover / "__0_0.distcp").write_bytes(b"x" * 100)
    (run / "checkpoints" / ".latest.tmp").write_text("step-00000012")
    CheckpointManager(run / "checkpoints", config_yaml="", keep=-1).remove_leftovers()
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == [
        "latest", "step-00000003", "step-00000006", "step-00000009"]


def test_retention_keeps_the_newest(tmp_path):
    manager = CheckpointManager(tmp_path / "checkpoints", config_yaml="", keep=2)
    for step in (1, 2, 3):
        manager.save(step, state(step))
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["latest", "step-00000002", "step-00000003"]


def test_async_save_publishes_only_after_the_background_write(tmp_path):
    """`latest` and the final name appear only once the background work is done; the staged copy is the state
    as it was at save(), even though training changes the tensors in place right after."""
    manager = CheckpointManager(tmp_path / "checkpoints", config_yaml="model: {}\n", keep=-1, save_async=True)
    manager.save(1, state(1))
    manager.wait()
    gate = threading.Event()
    assert manager.executor is not None
    manager.executor.submit(gate.wait)  # occupies the one background thread: the commit of step 2 must queue
    live = state(2)
    checkpoints = tmp_path / "checkpoints"
    try:
        manager.save(2, live)
        for tensor in (live["model"]["w"], live["optim"]["exp_avg"]):
            tensor.add_(1.0)  # the next optimizer step
        assert (checkpoints / "latest").read_text() == "step-00000001\n"
        assert not (checkpoints / "step-00000002").exists() and (checkpoints / ".tmp-step-00000002").exists()
    finally:
        gate.set()
        manager.close()
    assert (checkpoints / "latest").read_text() == "step-00000002\n"
    folder = checkpoints / "step-00000002"
    assert first_problem(folder) is None
    loaded = empty_like(state(0))
    load_state(folder, loaded, where="test")
    expected = state(2)
    assert all(torch.equal(loaded[k][n], expected[k][n]) for k in ("model", "optim") for n in expected[k])


def test_async_and_sync_checkpoints_are_bitwise_equal(tmp_path):
    for mode in (False, True):
        manager = CheckpointManager(tmp_path / str(mode) / "checkpoints", config_yaml="c\n", keep=-1, save_async=mode)
        manager.save(5, state(5))
        manager.close()
    a, b = (tmp_path / str(m) / "checkpoints" / "step-00000005" for m in (False, True))
    la, lb = empty_like(state(0)), empty_like(state(0))
    load_state(a, la, where="t")
    load_state(b, lb, where="t")
    assert all(torch.equal(la[k][n], lb[k][n]) for k in ("model", "optim") for n in la[k])
    assert la["train_state"] == lb["train_state"]


FULL_DISK = """
import resource, signal, sys, torch
from pathlib import Path
from llmfoundry.checkpoint.manager import CheckpointManager
from llmfoundry.errors import UserError
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past the limit fail with EFBIG instead of killing us
resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, resource.RLIM_INFINITY))
manager = CheckpointManager(Path(sys.argv[1]), config_yaml="c\\n", keep=-1, save_async=sys.argv[2] == "async")
try:
    manager.save(4, {"model": {"w": torch.randn(256, 256)}})
    manager.close()
except UserError as err:
    print(err.problems[0])
"""


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_a_full_disk_is_one_line_and_leaves_nothing_behind(tmp_path, mode):
    checkpoints = tmp_path / "checkpoints"
    result = subprocess.run([sys.executable, "-c", FULL_DISK, str(checkpoints), mode], capture_output=True, text=True,
                            timeout=120, env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})
    assert result.returncode == 0, result.stderr
    line = result.stdout.strip()
    assert line.startswith(f"{checkpoints}/.tmp-step-00000004: cannot write the checkpoint (File too large"), line
    assert "it needs about 256.0 KB" in line and "the partial checkpoint was removed" in line
    assert sorted(p.name for p in checkpoints.iterdir()) == []
    manager = CheckpointManager(checkpoints, config_yaml="c\n", keep=-1)  # without the limit the next save works
    manager.save(4, {"model": {"w": torch.randn(256, 256)}})
    assert read_latest(checkpoints) == checkpoints / "step-00000004"
