"""Checkpoint manifests: the size and xxh3-128 hash of every file, written before the checkpoint is published.

`manifest.json` sits inside each checkpoint folder; it is written into the temporary folder after all
ranks finished writing and before the rename and the `latest` update, so a published checkpoint always has
one. Loading verifies it first and names the first damaged file. xxh3-128 rather than sha256: it detects
accidental damage (bit flips, truncation, a bad copy) just as well, is not meant to resist tampering, and
hashes ~7x faster here (4.1 GB/s vs 0.6 GB/s for sha256 on one core), which keeps verifying a large
checkpoint cheap next to reading it.

Work is split across ranks by file: rank r hashes the files whose index in the sorted listing is r mod N, so
each rank reads about 1/N of the checkpoint both when saving and when verifying.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import xxhash

MANIFEST = "manifest.json"
ALGORITHM = "xxh3_128"
CHUNK = 8 << 20


def file_hash(path: Path) -> str:
    digest = xxhash.xxh3_128()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def checkpoint_files(folder: Path) -> list[str]:
    """The files a manifest covers: everything in the (flat) DCP folder except the manifest itself."""
    return sorted(p.name for p in folder.iterdir() if p.is_file() and p.name != MANIFEST
                  and not p.name.startswith(f".{MANIFEST}"))


def share(names: list[str], rank: int, world: int) -> list[str]:
    return names[rank::world]


def hash_share(folder: Path, rank: int = 0, world: int = 1) -> dict[str, dict[str, Any]]:
    """Size and hash of this rank's share of the folder's files."""
    return {name: {"size": (folder / name).stat().st_size, ALGORITHM: file_hash(folder / name)}
            for name in share(checkpoint_files(folder), rank, world)}


def write_manifest(folder: Path, entries: dict[str, dict[str, Any]]) -> None:
    """Write manifest.json atomically (a temporary name, fsync, rename)."""
    tmp = folder / f".{MANIFEST}.tmp"
    with open(tmp, "w") as f:
        json.dump({"algorithm": ALGORITHM, "files": dict(sorted(entries.items()))}, f, indent=1)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, folder / MANIFEST)


def read_manifest(folder: Path) -> dict[str, dict[str, Any]] | None:
    """The manifest's files; None for a checkpoint written before manifests existed; ValueError if unreadable."""
    path = folder / MANIFEST
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_bytes())
        files = data["files"]
        ok = data.get("algorithm") == ALGORITHM and isinstance(files, dict) and all(
            "/" not in name and name not in (".", "..") and isinstance(e, dict)  # flat: nothing outside the folder
            and isinstance(e.get("size"), int) and isinstance(e.get(ALGORITHM), str) for name, e in files.items())
    except (OSError, ValueError, KeyError, TypeError):
        ok = False
    if not ok:
        raise ValueError(f"{path}: unreadable or not a manifest")
    return files


def first_problem(folder: Path, rank: int = 0, world: int = 1) -> str | None:
    """'FILE: what is wrong' for the first damaged file in this rank's share of the manifest, or None if intact.

    A checkpoint without a manifest has nothing to verify (None); `has_manifest` tells the two apart.
    """
    try:
        files = read_manifest(folder)
    except ValueError as err:
        return str(err)
    if files is None:
        return None
    for name in share(sorted(files), rank, world):
        entry, path = files[name], folder / name
        if not path.is_file():
            return f"{path}: missing"
        size = path.stat().st_size
        if size != entry["size"]:
            return f"{path}: {size} bytes, the manifest says {entry['size']} (cut short or overwritten)"
        if file_hash(path) != entry[ALGORITHM]:
            return f"{path}: checksum mismatch"
    return None


def has_manifest(folder: Path) -> bool:
    return (folder / MANIFEST).exists()


def looks_intact(folder: Path) -> bool:
    """Cheap completeness check (no hashing): DCP metadata present and every manifest file at its size."""
    if not (folder / ".metadata").is_file():
        return False
    try:
        files = read_manifest(folder)
        return files is None or all((folder / n).stat().st_size == e["size"] for n, e in files.items())
    except (OSError, ValueError):
        return False
