"""Output paths: atomic directories and files, disks that fill up or are read-only, outputs that overlap inputs,
and the one S3 client.

An interrupted or failed command never leaves something that looks complete: outputs are written under a
temporary name and renamed when whole. A full disk (ENOSPC, or EFBIG under a file-size limit), an exceeded
quota or a read-only file system is the user's to fix, so it becomes one line naming the path, the free
space there and, where known, the space needed; the temporary output is removed first, so a retry is not
blocked by our own leftovers.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from llmfoundry.errors import UserError


def check_output_dir(out: str | Path, *, overwrite: bool) -> Path:
    """Fail early (before heavy work) if `out` cannot be written or would clobber data."""
    path = Path(out)
    if path.exists() and not path.is_dir():
        raise UserError(f"{out}: exists and is not a directory")
    if path.is_dir() and any(path.iterdir()) and not overwrite:
        raise UserError(f"{out}: exists and is not empty; pass --overwrite to replace it")
    parent = path.parent if str(path.parent) else Path(".")
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UserError(f"{out}: cannot create its parent directory ({err.strerror})") from None
    try:  # os.access lies for root on read-only mounts; a real probe does not
        os.rmdir(tempfile.mkdtemp(prefix=f".{path.name}.probe-", dir=parent))
    except OSError as err:
        raise UserError(f"{out}: parent directory {parent} is not writable ({err.strerror})") from None
    return path


DISK_ERRORS = {
    errno.ENOSPC: "the disk is full",
    errno.EFBIG: "a file-size limit (ulimit -f) was reached",
    errno.EDQUOT: "the disk quota is exceeded",
    errno.EROFS: "the file system is read-only",
}  # not EACCES: inside a writing block an unreadable *input* would be blamed on the output (permissions on the
#    output itself are probed by check_output_dir before any work)
_RUST_OS_ERROR = re.compile(r"\(os error (\d+)\)")  # what Rust writers' errors carry (safetensors, tokenizers)


def disk_errno(err: BaseException) -> int | None:
    """The errno of a full/read-only-disk failure (an OSError, or the text of a Rust writer's error), else None."""
    if isinstance(err, OSError):
        return err.errno if err.errno in DISK_ERRORS else None
    rust = type(err).__name__ == "SafetensorError" or type(err) is Exception  # tokenizers raises a bare Exception
    if rust and (match := _RUST_OS_ERROR.search(str(err))):
        code = int(match.group(1))
        return code if code in DISK_ERRORS else None
    return None


def disk_message(path: str | Path, code: int, need: int | None = None) -> str:
    """One line: the path, what happened, the free space there and, when known, the space needed."""
    where = next((p for p in [Path(path), *Path(path).parents] if p.exists()), Path("."))
    free = shutil.disk_usage(where).free
    needed = f"; it needs about {human_bytes(need)}" if need else ""
    return f"{path}: cannot write ({DISK_ERRORS[code]}); {human_bytes(free)} free on {where}{needed}"


def human_bytes(size: float) -> str:
    """1536 -> '1.5 KiB'; sizes far beyond any disk stay readable ('8.7e+09 PiB')."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024:
            return f"{size:,.1f} {unit}"
        size /= 1024
    return f"{size:,.3g} PiB"


@contextmanager
def disk_errors(path: str | Path, need: int | None = None) -> Iterator[None]:
    """Translate a full/read-only-disk failure while writing under `path` into one UserError line."""
    try:
        yield
    except OSError as err:
        if disk_errno(err) is None:
            raise
        raise UserError(disk_message(path, err.errno, need)) from None
    except Exception as err:  # only Rust writers' I/O errors (safetensors, tokenizers: errno as text) translated
        code = disk_errno(err)
        if code is None:
            raise
        raise UserError(disk_message(path, code, need)) from None


def write_atomic(path: str | Path, data: bytes | str) -> None:
    """Write a whole file or nothing: a temporary sibling renamed over `path` (readers see the old file or the
    whole new one); removed if the write fails; a full or read-only disk is one line."""
    path = Path(path)
    tmp = path.parent / f".{path.name}.tmp-{os.getpid()}"
    try:
        with disk_errors(path):
            tmp.write_bytes(data.encode() if isinstance(data, str) else data)
            os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def check_disjoint(out: str | Path, inputs: Iterable[str | Path], flag: str = "--out") -> None:
    """Refuse an output that is, contains or lies inside an input: --overwrite would delete the inputs, and a
    later run would read the output as input."""
    target = Path(out).resolve()
    for raw in inputs:
        source = Path(raw).resolve()
        if source == target or target in source.parents:
            raise UserError(f"{flag} {out}: holds the input {raw}; write the output somewhere else")
        if source.is_dir() and source in target.parents:
            raise UserError(f"{flag} {out}: lies inside the input directory {raw}; write the output somewhere else")


@contextmanager
def atomic_directory(out: str | Path, *, overwrite: bool = False, need: int | None = None,
                     estimate: int | None = None) -> Iterator[Path]:
    """Yield a temporary sibling directory; on success it replaces `out` by rename, on failure it is removed.

    `need` (bytes, when the caller knows it) is checked against the free space first; it, or a rougher
    `estimate`, is named in the message if the disk fills up anyway.
    """
    path = check_output_dir(out, overwrite=overwrite)
    if need is not None and need > shutil.disk_usage(path.parent).free:
        raise UserError(f"{out}: needs about {human_bytes(need)} and {path.parent} has "
                        f"{human_bytes(shutil.disk_usage(path.parent).free)} free; free space or write elsewhere")
    with disk_errors(out, need or estimate):
        with _staged(path) as tmp:
            yield tmp


@contextmanager
def _staged(path: Path) -> Iterator[Path]:
    tmp = path.parent / f".{path.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if path.exists():
        old = path.parent / f".{path.name}.old-{os.getpid()}"
        path.rename(old)
        tmp.rename(path)
        shutil.rmtree(old, ignore_errors=True)
    else:
        tmp.rename(path)


def is_s3(location: str | Path) -> bool:
    return str(location).startswith("s3://")


def split_s3(url: str) -> tuple[str, str]:
    """`s3://bucket/a/b/` -> ("bucket", "a/b"): the bucket and the key prefix without slashes at its ends."""
    bucket, _, prefix = url.removeprefix("s3://").partition("/")
    if not bucket:
        raise UserError(f"{url}: an s3:// URL needs a bucket (s3://BUCKET/PATH)")
    return bucket, prefix.strip("/")


def s3_client() -> Any:
    """The one S3 client of the package: boto3, with S3_ENDPOINT_URL selecting an S3-compatible store."""
    import boto3

    return boto3.client("s3", endpoint_url=os.environ.get("S3_ENDPOINT_URL") or None)

