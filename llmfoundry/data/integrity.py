"""Integrity of MDS data: the bytes on disk are what convert-dataset wrote, or the error names the file.

mosaicml-streaming trusts local files: it checks `validate_hash` only while downloading or decompressing, so
a shard cut in half trains silently on what is left, flipped bytes become out-of-range token ids (an
IndexError deep in the embedding), and a garbled index.json or a shard deleted mid-run surfaces as a
JSONDecodeError or "Background thread failed". So:

- `check_split` (before any work): index.json parses and has the expected shape, and every shard it lists
  exists with the size it records (a stat per shard: free);
- `CheckedStreamingDataset` (while reading): the first time a process touches a shard it hashes the whole
  file (xxh64, written by convert-dataset; about 1 GB/s, once per shard per process) and compares it with
  index.json; a shard that disappears later is one line naming it, not a retry loop and a thread traceback;
- `verify_split`: both at once, for readers that load a whole split at start (finetuning MDS).

Token ids are bound-checked against the vocabulary per batch by the collator (data/text.py), which names
the shard and sample from the `WHERE` key this dataset adds to each sample.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from streaming import StreamingDataset
from streaming.base.world import World

from llmfoundry.data.registration import registration_lock
from llmfoundry.errors import UserError

HASH = "xxh64"  # what convert-dataset writes: 5x faster than sha1 here, and streaming's validate_hash knows it
WHERE = "__where__"  # sample key: (shard file, index of the sample in it), for error messages


def check_split(split_dir: Path) -> None:
    """Refuse an MDS split whose index.json is damaged or whose shards are missing or of the wrong size."""
    index_path = split_dir / "index.json"
    try:
        index = json.loads(index_path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise UserError(f"{index_path}: is not UTF-8 JSON (garbled); re-run `foundry convert-dataset`") from None
    except json.JSONDecodeError as err:
        raise UserError(f"{index_path}: is not valid JSON ({err.msg} at line {err.lineno} column {err.colno}: "
                        "truncated or garbled); re-run `foundry convert-dataset`") from None
    except OSError as err:
        raise UserError(f"{index_path}: cannot be read ({err.strerror})") from None
    shards = index.get("shards") if isinstance(index, dict) else None
    if not isinstance(shards, list) or not shards:
        raise UserError(f"{index_path}: lists no shards (expected {{\"shards\": [...]}} as written by "
                        "`foundry convert-dataset`)")
    problems = [p for number, shard in enumerate(shards) if (p := _check_shard(split_dir, index_path, number, shard))]
    if problems:
        raise UserError(*problems)


def _check_shard(split_dir: Path, index_path: Path, number: int, shard: Any) -> str | None:
    try:
        raw, zipped = shard["raw_data"], shard.get("zip_data")
        files = [(raw["basename"], raw["bytes"])] + ([(zipped["basename"], zipped["bytes"])] if zipped else [])
    except (TypeError, KeyError):
        return f"{index_path}: shard {number} has no raw_data basename/bytes (garbled index)"
    present = [(split_dir / name, size) for name, size in files if (split_dir / name).is_file()]
    if not present:
        return f"{split_dir / files[0][0]}: missing (listed in {index_path.name}); re-run `foundry convert-dataset`"
    for path, size in present:
        actual = path.stat().st_size
        if actual != size:
            return (f"{path}: is {actual:,} bytes but {index_path.name} records {size:,} (truncated or replaced); "
                    "re-run `foundry convert-dataset`")
    return None


def verify_split(split_dir: Path) -> None:
    """check_split, then every shard's hash: for readers that load a whole split at start (finetuning MDS),
    where hashing it all costs one more read of data they read entirely anyway."""
    check_split(split_dir)
    index = json.loads((split_dir / "index.json").read_text(encoding="utf-8"))
    for shard in index["shards"]:
        expected = (shard["raw_data"].get("hashes") or {}).get(HASH)
        path = split_dir / shard["raw_data"]["basename"]
        if expected is not None and path.is_file() and _xxh64(path) != expected:
            raise UserError(f"{path}: content does not match its {HASH} hash in index.json (the shard is damaged); "
                            "re-run `foundry convert-dataset`")


def _xxh64(path: Path) -> str:
    import xxhash

    digest = xxhash.xxh64()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 24):
            digest.update(chunk)
    return digest.hexdigest()


class CheckedStreamingDataset(StreamingDataset):
    """StreamingDataset that verifies each shard's hash on first use and names the file when one goes bad."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        with registration_lock(World.detect().is_local_leader):
            super().__init__(*args, **kwargs)
        self._verified: set[int] = set()

    def shard_file(self, shard_id: int) -> Path:
        stream = self.streams[self.stream_per_shard[shard_id]]
        return Path(stream.local) / (stream.split or "") / self.shards[shard_id].raw_data.basename

    def prepare_shard(self, shard_id: int, blocking: bool = True) -> None:
        """A local-only shard that vanished has nothing to download from: leave it to get_item to name it
        (streaming would raise in its prefetch thread and print that thread's traceback)."""
        stream = self.streams[self.stream_per_shard[shard_id]]
        if stream.remote is None and not self._has_local_copy(shard_id):
            return
        super().prepare_shard(shard_id, blocking)

    def _has_local_copy(self, shard_id: int) -> bool:
        directory = self.shard_file(shard_id).parent
        names = [info.basename for pair in self.shards[shard_id].file_pairs for info in pair if info is not None]
        return any((directory / name).is_file() for name in names)

    def get_item(self, sample_id: int, retry: int = 7) -> Any:
        """The sample, after its shard's hash was checked: before decoding anything from a local shard (a
        garbled header must not become a decoding error), after the download for a remote one."""
        shard_id, offset = self.spanner[sample_id]
        local_only = self.streams[self.stream_per_shard[shard_id]].remote is None
        if local_only:
            if not self._has_local_copy(shard_id):
                raise UserError(f"{self.shard_file(shard_id)}: shard file is missing (deleted while training?); "
                                "restore it or re-run `foundry convert-dataset`")
            if shard_id not in self._verified and self.shard_file(shard_id).is_file():
                self._verify(shard_id)
        item = super().get_item(sample_id, retry)
        if shard_id not in self._verified:
            self._verify(shard_id)
        if isinstance(item, dict):
            item[WHERE] = (str(self.shard_file(shard_id)), offset)
        return item

    def _verify(self, shard_id: int) -> None:
        info = self.shards[shard_id].raw_data
        expected = (info.hashes or {}).get(HASH)
        path = self.shard_file(shard_id)
        if expected is not None and _xxh64(path) != expected:
            raise UserError(f"{path}: content does not match its {HASH} hash in index.json (the shard is "
                            "damaged); re-run `foundry convert-dataset`")
        self._verified.add(shard_id)

