"""Conversion on many machines: `convert-dataset --shard I/N` writes one part, `foundry merge-index` joins them.

A corpus the size of PubMed GPT's (50B tokens) is converted by a scheduler's array of jobs (SLURM array,
Kubernetes indexed job, a shell loop). Each job reads every input and keeps the documents whose stable hash
falls in its part (independent of the train/val hash, so every part gets its share of validation), writing

    OUT/train/part-0000I-of-0000N/   OUT/val/part-0000I-of-0000N/   (MDS directories)
    OUT/conversion/part-0000I-of-0000N.json                         (its summary, written last)

A local part is written under a temporary name inside OUT and moved into place when complete, its summary
last, so a part without a summary is incomplete. `merge-index OUT` checks that all N parts are complete and
agree (mode, tokenizer, sequence length), writes each split's `index.json` with mosaicml-streaming's own
`merge_index` (shards stay where they are, named `part-.../shard.*.mds`) and a `conversion.json` summing the
parts. Training then reads OUT like any other conversion.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from llmfoundry.errors import UserError

SUMMARIES = "conversion"
_SPEC = re.compile(r"^(\d+)/(\d+)$")


def parse_shard(spec: str) -> tuple[int, int]:
    """`I/N` (0-based I, as SLURM array and Kubernetes job indices are) -> (I, N)."""
    match = _SPEC.match(spec.strip())
    if not match:
        raise UserError(f"--shard: got {spec!r}, expected I/N with 0 <= I < N, e.g. 0/8")
    index, count = int(match.group(1)), int(match.group(2))
    if not 0 <= index < count:
        raise UserError(f"--shard: got {spec!r}, expected I/N with 0 <= I < N, e.g. 0/8")
    return index, count


def part_name(index: int, count: int) -> str:
    return f"part-{index:05d}-of-{count:05d}"


def part_of(text: str, count: int) -> int:
    """The part a document belongs to: a stable hash of its text, as for the train/val split, but salted
    differently so that the two choices are independent."""
    digest = hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=8, person=b"foundry-part").digest()
    return int.from_bytes(digest, "little") % count


@contextlib.contextmanager
def staged_part(out: str, part: str, splits: tuple[str, ...], overwrite: bool) -> Iterator[str]:
    """A scratch directory inside `out` for one part; its split folders and summary move into place at the end."""
    root = Path(out)
    if root.exists() and not root.is_dir():
        raise UserError(f"{out}: exists and is not a directory")
    done = [p for p in [root / SUMMARIES / f"{part}.json", *(root / s / part for s in splits)] if p.exists()]
    if done and not overwrite:
        raise UserError(f"{done[0]}: this part was already converted; pass --overwrite to redo it")
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UserError(f"{out}: cannot create it ({err.strerror})") from None
    tmp = root / f".tmp-{part}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        yield str(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _retire_merged(root, splits)
    for split in splits:  # the data first, the summary that marks the part complete last
        _replace(tmp / split / part, root / split / part)
    _replace(tmp / SUMMARIES / f"{part}.json", root / SUMMARIES / f"{part}.json")
    shutil.rmtree(tmp, ignore_errors=True)


def _replace(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    if dst.is_dir():
        shutil.rmtree(dst)
    os.replace(src, dst)


def _retire_merged(root: Path, splits: tuple[str, ...]) -> None:
    """A part that changes makes an earlier merge stale: remove its index files so nobody trains on it."""
    for stale in [root / "conversion.json", *(root / s / "index.json" for s in splits)]:
        stale.unlink(missing_ok=True)


def merge_index(out: str, splits: tuple[str, ...] = ("train", "val")) -> dict[str, Any]:
    """Join the N parts under `out` (local or s3://) into one dataset; returns the merged summary."""
    from streaming.base.util import merge_index as streaming_merge

    summaries = _read_summaries(out)
    count = summaries[0]["parts"]
    logging.disable(logging.WARNING)  # streaming logs a warning per temporary folder and existing directory
    try:
        for split in splits:
            target = f"{out.rstrip('/')}/{split}"
            indexes = [f"{target}/{part_name(i, count)}/index.json" for i in range(count)]
            if "://" not in out:  # merging again replaces the earlier merge (streaming refuses to overwrite it)
                (Path(target) / "index.json").unlink(missing_ok=True)
            streaming_merge(indexes, target, keep_local="://" not in out)
    finally:
        logging.disable(logging.NOTSET)
    merged = _merged_summary(summaries, out)
    _write_json(out, "conversion.json", merged)
    return merged


def _read_summaries(out: str) -> list[dict[str, Any]]:
    names = _list(out, SUMMARIES)
    found = sorted(n for n in names if re.fullmatch(r"part-\d{5}-of-\d{5}\.json", n))
    if not found:
        raise UserError(f"{out}: no converted parts ({SUMMARIES}/part-*.json); run `foundry convert-dataset ... "
                        f"--out {out} --shard I/N` for each I first")
    counts = {int(n[14:19]) for n in found}
    if len(counts) > 1:
        raise UserError(f"{out}/{SUMMARIES}: parts of different splittings ({', '.join(map(str, sorted(counts)))} "
                        "parts); convert again into an empty folder")
    count = counts.pop()
    missing = [i for i in range(count) if f"{part_name(i, count)}.json" not in found]
    if missing:
        raise UserError(f"{out}: {len(missing)} of {count} parts are missing or incomplete (e.g. --shard "
                        f"{missing[0]}/{count}); run them, then merge-index again")
    summaries = [json.loads(_read(out, f"{SUMMARIES}/{n}")) for n in found]
    for key in ("mode", "max_seq_len", "tokenizer", "tokenizer_vocab"):
        values = {json.dumps(s.get(key)) for s in summaries}
        if len(values) > 1:
            raise UserError(f"{out}: the parts were converted with different {key} ({', '.join(sorted(values))})")
    return summaries


def _merged_summary(summaries: list[dict[str, Any]], out: str) -> dict[str, Any]:
    merged = {k: summaries[0].get(k) for k in ("mode", "max_seq_len", "tokenizer", "tokenizer_vocab", "inputs")}
    merged["parts"] = len(summaries)
    merged["documents_read"] = summaries[0]["documents_read"]  # every part reads every document
    merged["documents_written"] = sum(s["documents_written"] for s in summaries)
    skipped: dict[str, int] = {}
    for s in summaries:
        for reason, n in s["skipped"].items():
            skipped[reason] = n  # every part sees the same bad records
    merged["skipped"] = skipped
    merged["splits"] = {split: {key: sum(s["splits"][split][key] for s in summaries)
                                for key in summaries[0]["splits"][split]} for split in summaries[0]["splits"]}
    merged["seconds"] = max(s["seconds"] for s in summaries)
    return merged


def _list(out: str, sub: str) -> list[str]:
    if "://" not in out:
        folder = Path(out) / sub
        return [p.name for p in folder.iterdir()] if folder.is_dir() else []
    from streaming.base.storage.upload import CloudUploader

    prefix = f"{out.rstrip('/')}/{sub}"
    return [Path(key).name for key in CloudUploader.get(out=prefix, exist_ok=True).list_objects() or []]


def _read(out: str, name: str) -> str:
    if "://" not in out:
        return (Path(out) / name).read_text()
    import tempfile

    from streaming.base.storage.download import CloudDownloader

    with tempfile.TemporaryDirectory() as tmp:
        local = Path(tmp) / "file"
        CloudDownloader.direct_download(f"{out.rstrip('/')}/{name}", str(local))
        return local.read_text()


def _write_json(out: str, name: str, data: dict[str, Any]) -> None:
    text = json.dumps(data, indent=2) + "\n"
    if "://" not in out:
        tmp = Path(out) / f".{name}.tmp"
        tmp.write_text(text)
        os.replace(tmp, Path(out) / name)
        return
    import tempfile

    from streaming.base.storage.upload import CloudUploader

    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / name).write_text(text)
        CloudUploader.get(out=(tmp, out), keep_local=True, exist_ok=True).upload_file(name)
