"""A table of damaged inputs and hostile disks: each is exit 1 with one line naming the damaged file or the
path that cannot be written, and nothing is lost (inputs intact, no half-written output, an earlier output
still whole). Runs through the real CLI entry in-process; full disks come from RLIMIT_FSIZE (with SIGXFSZ
ignored, writes past the limit fail with EFBIG) and, where this process may mount, small tmpfs mounts.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import resource
import shutil
import signal
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from llmfoundry.cli import app
from llmfoundry.errors import UserError
from tests.fuzz.conftest import record

SHARD = "shard.00000.mds"


def _invoke(*args: str) -> Any:
    return CliRunner().invoke(app, list(args))


def _one_line(result: Any, *names: str) -> str:
    assert isinstance(result.exception, SystemExit), f"not a clean exit: {result.exception!r}\n{result.output}"
    assert result.exit_code == 1, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for name in names:
        assert name in lines[0], (name, lines[0])
    return lines[0]


def _digest(root: Path) -> str:
    """One hash over every file under root (names and bytes): equal before and after means nothing was lost."""
    h = hashlib.sha1()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        h.update(str(path.relative_to(root)).encode() + path.read_bytes())
    return h.hexdigest()


# ---- damaged MDS data -------------------------------------------------------------------------------------
def _rewrite_index(split: Path, fn: Callable[[dict], Any]) -> None:
    index = json.loads((split / "index.json").read_text())
    (split / "index.json").write_text(json.dumps(fn(index)))


def _flip(split: Path) -> None:
    """Garble bytes in the second half of the shard (its size unchanged): only the hash can tell."""
    shard = split / SHARD
    data = bytearray(shard.read_bytes())
    for i in range(len(data) // 2, len(data), 7):
        data[i] ^= 0xFF
    shard.write_bytes(bytes(data))


def _foreign_tokens(split: Path) -> None:
    """A shard written by MDSWriter (hashes and sizes consistent) whose token ids lie past the vocabulary, as
    after converting with another tokenizer."""
    from streaming import MDSWriter

    for path in split.iterdir():
        path.unlink()
    with MDSWriter(out=str(split), columns={"tokens": "ndarray:int32"}, hashes=["xxh64"]) as writer:
        for i in range(40):
            writer.write({"tokens": np.full(32, 7 if i != 3 else 60_000, dtype=np.int32)})


DATA_CASES: dict[str, tuple[Callable[[Path], None], str]] = {
    "index garbled": (lambda s: (s / "index.json").write_text('{"shards": [ garbage'), "index.json"),
    "index truncated": (lambda s: (s / "index.json").write_text((s / "index.json").read_text()[:90]), "index.json"),
    "index not UTF-8": (lambda s: (s / "index.json").write_bytes(b'{"shards": "\xff\xfe"}'), "index.json"),
    "index is a list": (lambda s: (s / "index.json").write_text("[]"), "index.json"),
    "index empty": (lambda s: (s / "index.json").write_text(""), "index.json"),
    "index shard without raw_data": (lambda s: _rewrite_index(s, lambda i: {"shards": [{"samples": 3}]}), "index.json"),
    "shard cut in half": (lambda s: (s / SHARD).write_bytes((s / SHARD).read_bytes()[:1000]), SHARD),
    "shard grown": (lambda s: (s / SHARD).write_bytes((s / SHARD).read_bytes() + b"\0" * 100), SHARD),
    "shard deleted": (lambda s: (s / SHARD).unlink(), SHARD),
    "shard replaced by a directory": (lambda s: ((s / SHARD).unlink(), (s / SHARD).mkdir()), SHARD),
    "bytes flipped (hash)": (_flip, SHARD),
    "token ids out of range": (_foreign_tokens, SHARD),
}


@pytest.mark.parametrize("case", list(DATA_CASES))
def test_damaged_data_is_one_line_naming_the_file(case: str, tiny: dict[str, Path], tmp_path: Path) -> None:
    damage, name = DATA_CASES[case]
    data = tmp_path / "data"
    shutil.copytree(tiny["data"], data)
    damage(data / "train")
    run = tmp_path / "run"
    held = False
    try:
        result = _invoke("train", str(tiny["base"]), f"train_loader.dataset.local={data}", f"save_folder={run}")
        line = _one_line(result, name, str(data / "train"))
        if case == "token ids out of range":
            assert "sample 3: holds token id 60000" in line and "vocabulary" in line, line
        if case.startswith("shard cut") or case.startswith("shard grown"):
            assert "bytes but index.json records" in line, line  # found by size at start, before any hashing
        assert not list(run.glob("checkpoints/step-*")), "a checkpoint was written from damaged data"
        held = True
    finally:
        record("damaged-data", held)


def test_a_shard_deleted_mid_run_is_named(tiny: dict[str, Path], tmp_path: Path) -> None:
    """After the start-up checks passed: the sample read after the deletion names the file (streaming would
    retry, fail in its prefetch thread and print that thread's traceback)."""
    from llmfoundry.data.integrity import CheckedStreamingDataset

    data = tmp_path / "data"
    shutil.copytree(tiny["data"], data)
    dataset = CheckedStreamingDataset(local=str(data / "train"), batch_size=4, num_canonical_nodes=1)
    samples = iter(dataset)
    first = next(samples)
    assert first["__where__"] == (str(data / "train" / SHARD), 0)
    (data / "train" / SHARD).unlink()
    with pytest.raises(UserError, match=f"{data / 'train' / SHARD}: shard file is missing"):
        for _ in samples:
            pass
    record("damaged-data", True)


def test_damaged_finetuning_shards_are_named(tmp_path: Path) -> None:
    from llmfoundry.config.schema import FinetuneDatasetConfig
    from llmfoundry.data.convert_finetune import convert_finetuning
    from llmfoundry.data.finetune import read_records

    source = tmp_path / "ex.jsonl"
    source.write_text("".join(json.dumps({"prompt": f"q{i}", "response": f"a{i}"}) + "\n" for i in range(50)))
    convert_finetuning([str(source)], str(tmp_path / "mds"))
    shard = tmp_path / "mds" / "train" / SHARD
    _flip(shard.parent)
    with pytest.raises(UserError, match=f"{shard}: content does not match its xxh64 hash"):
        list(read_records(FinetuneDatasetConfig(local=str(tmp_path / "mds")), "train_loader.dataset"))
    record("damaged-data", True)


def test_samples_shorter_than_the_sequence_name_the_shard(tiny: dict[str, Path], tmp_path: Path) -> None:
    """Data converted elsewhere (no conversion.json) with samples shorter than max_seq_len: the collator's
    backstop names the shard instead of silently training on a shorter sequence than it counts."""
    data = tmp_path / "data"
    shutil.copytree(tiny["data"], data)
    (data / "conversion.json").unlink()
    result = _invoke("train", str(tiny["base"]), f"train_loader.dataset.local={data}",
                     f"eval_loader.dataset.local={data}", f"save_folder={tmp_path / 'run'}",
                     "train_loader.dataset.max_seq_len=48", "model.max_seq_len=48")
    line = _one_line(result, str(data / "train" / SHARD))
    assert "holds 32 tokens, fewer than the 48" in line


# ---- disks --------------------------------------------------------------------------------------------------
@contextlib.contextmanager
def file_size_limit(limit: int) -> Iterator[None]:
    """RLIMIT_FSIZE on this process (soft limit only, so it can be restored); SIGXFSZ ignored so a write past it
    fails with EFBIG, as on a full disk."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, previous)


@contextlib.contextmanager
def tmpfs(path: Path, options: str) -> Iterator[Path]:
    path.mkdir(parents=True, exist_ok=True)
    if subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here (needs root); the RLIMIT_FSIZE cases cover full disks")
    try:
        yield path
    finally:
        subprocess.run(["umount", str(path)], check=True)


def _leftovers(parent: Path, name: str) -> list[str]:
    return [p.name for p in parent.iterdir() if p.name.startswith(f".{name}.")]


def _convert(tiny: dict[str, Path], out: Path, *extra: str) -> Any:
    return _invoke("convert-dataset", str(tiny["corpus"]), "--out", str(out), "--tokenizer", str(tiny["tok"]),
                   "--max-seq-len", "32", *extra)


def test_full_disk_during_convert_keeps_the_earlier_output(tiny: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "mds"
    shutil.copytree(tiny["data"], out)
    before, inputs = _digest(out), _digest(tiny["corpus"])
    with file_size_limit(8 * 1024):
        result = _convert(tiny, out, "--overwrite")
    line = _one_line(result, str(out), "file-size limit")
    assert "free on" in line and "needs about" in line
    assert _digest(out) == before and _digest(tiny["corpus"]) == inputs
    assert _leftovers(tmp_path, "mds") == []
    record("disk", True)


def test_full_disk_during_export_leaves_nothing(tiny: dict[str, Path], trained_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "hf"
    with file_size_limit(16 * 1024):
        result = _invoke("inference-convert", str(trained_run), str(out))
    _one_line(result, str(out), "file-size limit")
    assert not out.exists() and _leftovers(tmp_path, "hf") == []
    record("disk", True)


def test_full_disk_during_tokenizer_training(tiny: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "tok"
    with file_size_limit(4 * 1024):
        result = _invoke("tokenizer", "train", "--input", str(tiny["corpus"]), "--out", str(out), "--vocab-size", "300")
    _one_line(result, str(out), "file-size limit")
    assert not out.exists() and _leftovers(tmp_path, "tok") == []
    record("disk", True)


def test_small_tmpfs_full_during_convert(tiny: dict[str, Path], tmp_path: Path) -> None:
    with tmpfs(tmp_path / "small", "size=16k") as small:
        line = _one_line(_convert(tiny, small / "mds"), str(small / "mds"), "disk is full")
        assert "16.0 KiB free" in line and list(small.iterdir()) == []
    record("disk", True)


def test_small_tmpfs_refuses_an_export_before_writing(trained_run: Path, tmp_path: Path) -> None:
    with tmpfs(tmp_path / "small", "size=16k") as small:
        line = _one_line(_invoke("inference-convert", str(trained_run), str(small / "hf")), str(small / "hf"))
        assert "needs about" in line and list(small.iterdir()) == []
    record("disk", True)


@pytest.mark.parametrize("verb", ["train", "convert-dataset", "inference-convert"])
def test_read_only_outputs(verb: str, tiny: dict[str, Path], trained_run: Path, tmp_path: Path) -> None:
    with tmpfs(tmp_path / "ro", "ro,size=1m") as ro:
        if verb == "train":
            result = _invoke("train", str(tiny["base"]), f"save_folder={ro / 'run'}")
        elif verb == "convert-dataset":
            result = _convert(tiny, ro / "out")
        else:
            result = _invoke("inference-convert", str(trained_run), str(ro / "hf"))
        _one_line(result, str(ro), "Read-only file system")
    record("disk", True)


def test_run_folder_without_room_for_a_checkpoint(tiny: dict[str, Path], tmp_path: Path) -> None:
    with tmpfs(tmp_path / "small", "size=16k") as small:
        line = _one_line(_invoke("train", str(tiny["base"]), f"save_folder={small / 'run'}"), "save_folder", str(small))
        assert "one checkpoint of this model needs about" in line and list(small.iterdir()) == []
    record("disk", True)


# ---- outputs that are inputs ----------------------------------------------------------------------------------
@pytest.mark.parametrize("layout", ["same", "out contains input", "input contains out"])
@pytest.mark.parametrize("verb", ["convert-dataset", "tokenizer"])
def test_out_overlapping_an_input_is_refused(verb: str, layout: str, tiny: dict[str, Path], tmp_path: Path) -> None:
    corpus = tmp_path / "c" / "inner"
    shutil.copytree(tiny["corpus"], corpus)
    before = _digest(tmp_path / "c")
    source, out = {"same": (corpus, corpus), "out contains input": (corpus / "docs.jsonl", tmp_path / "c"),
                   "input contains out": (tmp_path / "c", corpus / "out")}[layout]
    if verb == "convert-dataset":
        result = _invoke("convert-dataset", str(source), "--out", str(out), "--tokenizer", str(tiny["tok"]),
                         "--max-seq-len", "32", "--overwrite")
    else:
        result = _invoke("tokenizer", "train", "--input", str(source), "--out", str(out), "--vocab-size", "300",
                         "--overwrite")
    _one_line(result, "--out", str(out))
    assert _digest(tmp_path / "c") == before
    record("overlap", True)


@pytest.fixture(scope="module")
def trained_run(tiny: dict[str, Path], tmp_path_factory: Any) -> Path:
    """A real 2-step run of the base config (in-process), for the export cases."""
    run = tmp_path_factory.mktemp("trained") / "run"
    result = _invoke("train", str(tiny["base"]), f"save_folder={run}")
    assert result.exit_code == 0, result.output
    assert np.any([p.name.startswith("step-") for p in (run / "checkpoints").iterdir()])
    return run
