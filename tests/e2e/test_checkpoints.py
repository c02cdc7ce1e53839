"""foundry train / inference-convert with damaged checkpoints, async saves, S3 run folders and a full disk.

References: an uninterrupted local run (bitwise equal weights), a synchronous run (bitwise equal checkpoints),
the CLI's one-line error contract. Training runs in-process (the verbs are functions) except where the CLI
itself or a process limit is what is tested.
"""

from __future__ import annotations

import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

from tests.conftest import REPO, _free_port, run_cli
from llmfoundry.errors import UserError
from tests.e2e.test_train import losses, train_in_process, weights, workspace  # noqa: F401  (a fixture)


def tensors(checkpoint: Path) -> dict[str, torch.Tensor]:
    """Every tensor of a DCP checkpoint (model and optimizer), read with DCP itself."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint import FileSystemReader

    meta = FileSystemReader(str(checkpoint)).read_metadata().state_dict_metadata
    out = {k: torch.empty(tuple(v.size), dtype=v.properties.dtype) for k, v in meta.items() if hasattr(v, "size")}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        dcp.load(out, checkpoint_id=str(checkpoint))
    return out


def flip_optimizer_state(checkpoint: Path) -> Path:
    """Flip 64 bytes in the middle of the largest Adam moment: the damage that once resumed silently."""
    from torch.distributed.checkpoint import FileSystemReader

    storage = FileSystemReader(str(checkpoint)).read_metadata().storage_data
    key = max((k for k in storage if k.fqn.startswith("optim.state") and "exp_avg" in k.fqn),
              key=lambda k: storage[k].length)
    info = storage[key]
    path = checkpoint / info.relative_path
    data = bytearray(path.read_bytes())
    start = info.offset + info.length // 2
    data[start:start + 64] = bytes(b ^ 0xFF for b in data[start:start + 64])
    path.write_bytes(bytes(data))
    return path


def one_error_line(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 1, result.stderr[-3000:]
    lines = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, result.stderr
    return lines[0]


def test_a_damaged_checkpoint_is_refused_by_resume_and_export(workspace, tmp_path):  # noqa: F811
    root, config = workspace
    run = tmp_path / "run"
    train_in_process(config, f"save_folder={run}", "max_duration=6ba", "save_interval=3ba")
    damaged = flip_optimizer_state(run / "checkpoints" / "step-00000006")
    latest = run / "checkpoints" / "latest"
    offer = f"the previous complete checkpoint is step-00000003: echo step-00000003 > {latest}"
    resume = [f"save_folder={run}", "max_duration=8ba", "save_interval=3ba", "autoresume=true"]
    with pytest.raises(UserError) as err:
        train_in_process(config, *resume)
    damage = f"{damaged}: checksum mismatch (the checkpoint is damaged)"
    assert err.value.problems == [f"{damage}; {offer} to resume from it"]
    line = one_error_line(run_cli("inference-convert", str(run), str(tmp_path / "hf")))
    assert line == f"error: {damaged}: checksum mismatch (the checkpoint is damaged); {offer} to use it"
    assert not (tmp_path / "hf").exists()
    latest.write_text("step-00000003\n")  # what the message says to do
    train_in_process(config, *resume)
    assert max(losses(run)) == 8 and (latest.read_text() == "step-00000008\n")


def test_an_async_saving_run_writes_the_checkpoints_of_a_sync_run(workspace, tmp_path):  # noqa: F811
    root, config = workspace
    common = ["max_duration=6ba", "save_interval=2ba", "save_num_checkpoints_to_keep=-1"]
    sync, background = tmp_path / "sync", tmp_path / "async"
    train_in_process(config, f"save_folder={sync}", *common)
    train_in_process(config, f"save_folder={background}", *common, "save_async=true")
    names = ["step-00000002", "step-00000004", "step-00000006"]
    for folder in (sync, background):
        assert sorted(p.name for p in (folder / "checkpoints").iterdir()) == ["latest", *names]
        assert (folder / "checkpoints" / "latest").read_text() == "step-00000006\n"
    for name in names:
        a, b = tensors(sync / "checkpoints" / name), tensors(background / "checkpoints" / name)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name
    assert losses(sync) == losses(background)


@pytest.mark.slow
def test_s3_run_folder_autoresumes_from_the_bucket(workspace, s3_server, tmp_path, monkeypatch):  # noqa: F811
    """A run saving to s3://, continued by a second invocation on a "new machine" (empty staging and cache),
    ends bitwise equal to an uninterrupted local run; load_path and inference-convert read the bucket too."""
    root, config = workspace
    # a constant schedule, so that a 3-step run is the first half of the 6-step run
    common = ["scheduler.name=constant_with_warmup", "save_interval=3ba", "save_num_checkpoints_to_keep=1"]
    straight = tmp_path / "straight"
    train_in_process(config, *common, f"save_folder={straight}", "max_duration=6ba")
    url = "s3://corpus/runs/tiny"
    train_in_process(config, *common, f"save_folder={url}", "max_duration=3ba",
                     f"save_staging_folder={tmp_path / 'first-machine'}")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # the second machine's default staging
    result = run_cli("train", str(config), *common, f"save_folder={url}", "max_duration=6ba", "autoresume=true")
    assert result.returncode == 0, result.stderr
    assert "resumed at step 3 from step-00000003" in result.stdout
    keys = sorted(o["Key"] for o in s3_server.list_objects_v2(Bucket="corpus", Prefix="runs/tiny/")["Contents"])
    assert keys == [f"runs/tiny/{k}" for k in (
        "checkpoints/latest", "checkpoints/step-00000006/.metadata", "checkpoints/step-00000006/__0_0.distcp",
        "checkpoints/step-00000006/config.yaml", "checkpoints/step-00000006/manifest.json", "config.yaml",
        "metrics.jsonl")]  # retention applied in the bucket too
    body = s3_server.get_object(Bucket="corpus", Key="runs/tiny/checkpoints/latest")["Body"].read()
    assert body == b"step-00000006\n"
    staged = tmp_path / "cache" / "llmfoundry" / "s3" / "corpus" / "runs" / "tiny"
    a = weights(straight)
    assert losses(straight) == losses(staged)  # metrics.jsonl came back from the bucket and continued
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache2"))  # export and warm start download afresh
    b = weights(url)
    assert all(torch.equal(a[k], b[k]) for k in a)
    train_in_process(config, *common, f"save_folder={tmp_path / 'warm'}", "max_duration=1ba", f"load_path={url}")
    with pytest.raises(UserError, match=r"^s3://corpus/nothing/here: no checkpoint there \(neither "
                                        r"checkpoints/latest nor a checkpoint's .metadata\)$"):
        weights("s3://corpus/nothing/here")


def test_a_full_disk_during_a_save_is_one_line_and_the_next_run_continues(workspace, tmp_path):  # noqa: F811
    """RLIMIT_FSIZE makes every write past 1 MB fail (EFBIG, with SIGXFSZ ignored), as a full disk would."""
    root, config = workspace
    run = tmp_path / "run"
    args = ["train", str(config), f"save_folder={run}", "max_duration=4ba", "save_interval=2ba", "autoresume=true"]
    limited = ("import resource, signal, sys; signal.signal(signal.SIGXFSZ, signal.SIG_IGN); "
               "resource.setrlimit(resource.RLIMIT_FSIZE, (1_000_000, resource.RLIM_INFINITY)); "
               "from llmfoundry.cli import main; sys.argv = ['foundry', *sys.argv[1:]]; main()")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    result = subprocess.run([sys.executable, "-c", limited, *args], env=env, capture_output=True, text=True,
                            timeout=600)
    line = one_error_line(result)
    assert line.startswith(f"error: {run}/checkpoints/.tmp-step-00000002: cannot write the checkpoint (File too "
                           "large"), line
    assert "the partial checkpoint was removed" in line
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == []
    train_in_process(config, *args[2:])
    assert (run / "checkpoints" / "latest").read_text() == "step-00000004\n"


@pytest.mark.slow
def test_two_processes_save_in_the_background_and_verify_their_shares(workspace, tmp_path):  # noqa: F811
    """2 gloo ranks: async checkpoints equal sync ones bitwise; a damaged file is named on resume by all ranks."""
    root, config = workspace
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}

    def torchrun(*overrides: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={_free_port()}",
             "-m", "llmfoundry.cli", "train", str(config), "device_train_microbatch_size=4", "max_duration=4ba",
             "save_interval=2ba", *overrides], env=env, capture_output=True, text=True, timeout=600)

    def rank0(result: subprocess.CompletedProcess) -> str:  # where a crash starts: rank 1 only sees it end
        lines = [line for line in result.stderr.splitlines() if "[rank0]" in line][:60]
        return "\n".join(lines) or result.stderr[-3000:]

    sync, background = tmp_path / "sync", tmp_path / "async"
    result = torchrun(f"save_folder={sync}")
    assert result.returncode == 0, rank0(result)
    result = torchrun(f"save_folder={background}", "save_async=true")
    assert result.returncode == 0, rank0(result)
    for name in ("step-00000002", "step-00000004"):
        a, b = tensors(sync / "checkpoints" / name), tensors(background / "checkpoints" / name)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name
    files = sorted(p.name for p in (background / "checkpoints" / "step-00000004").glob("*.distcp"))
    assert files == ["__0_0.distcp", "__1_0.distcp"]  # each rank wrote its shard; the manifest covers both
    damaged = flip_optimizer_state(background / "checkpoints" / "step-00000004")
    result = torchrun(f"save_folder={background}", "max_duration=6ba", "autoresume=true")
    assert result.returncode != 0
    assert f"error: {damaged}: checksum mismatch (the checkpoint is damaged)" in result.stderr
