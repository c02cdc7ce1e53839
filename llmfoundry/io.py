"""Atomic output directories (an interrupted command never leaves something that looks complete) and the S3 client."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
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


@contextmanager
def atomic_directory(out: str | Path, *, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary sibling directory; on success it replaces `out` by rename, on failure it is removed."""
    path = check_output_dir(out, overwrite=overwrite)
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


def write_atomic(path: str | Path, data: bytes | str) -> None:
    """Write a file under a temporary sibling name and rename it: readers see the old file or the whole new one."""
    path = Path(path)
    tmp = path.parent / f".{path.name}.tmp-{os.getpid()}"
    try:
        tmp.write_bytes(data.encode() if isinstance(data, str) else data)
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
