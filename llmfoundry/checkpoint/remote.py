"""Checkpoints on S3-compatible storage: a run folder mirrored to `s3://bucket/run`.

The layout under the prefix is the local one (`config.yaml`, `metrics.jsonl`, `checkpoints/step-XXXXXXXX/...`,
`checkpoints/latest`). A checkpoint is uploaded only after it is complete locally (renamed, manifest
inside); `checkpoints/latest` is uploaded last, so a reader of the bucket never sees a pointer to a partial
upload. Downloads go to a temporary sibling folder renamed when complete, and are verified against their
manifest when loaded. S3_ENDPOINT_URL selects a non-AWS endpoint (the one client in `llmfoundry.io`).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from collections.abc import Callable
from typing import Any

from llmfoundry.checkpoint.pointer import LATEST, STEP_NAME, parse_pointer
from llmfoundry.errors import UserError
from llmfoundry.io import s3_client, split_s3


def cache_dir(url: str) -> Path:
    """Where a remote run or checkpoint is kept locally by default: ~/.cache/llmfoundry/s3/BUCKET/PREFIX."""
    bucket, prefix = split_s3(url)
    root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return root / "llmfoundry" / "s3" / bucket / prefix


class RemoteFolder:
    """One s3:// prefix, read and written as a folder; every S3 failure becomes a line naming the URL."""

    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/")
        self.bucket, self.prefix = split_s3(url)
        self.client = s3_client()

    def key(self, relative: str) -> str:
        return "/".join(p for p in (self.prefix, relative) if p)

    def where(self, relative: str = "") -> str:
        return f"{self.url}/{relative}" if relative else self.url

    def _call(self, what: str, relative: str, fn: Callable[[], Any]) -> Any:
        from boto3.exceptions import S3UploadFailedError
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return fn()
        except ClientError as err:
            code = err.response.get("Error", {}).get("Code", "")
            raise UserError(f"{self.where(relative)}: cannot {what} ({code or err})") from None
        except (BotoCoreError, S3UploadFailedError) as err:
            raise UserError(f"{self.where(relative)}: cannot {what} ({err})") from None

    def read(self, relative: str) -> bytes | None:
        """The object's bytes, None if there is no such object."""
        from botocore.exceptions import ClientError

        def get() -> bytes | None:
            try:
                return self.client.get_object(Bucket=self.bucket, Key=self.key(relative))["Body"].read()
            except ClientError as err:
                if err.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                    return None
                raise

        return self._call("read it", relative, get)

    def write(self, relative: str, data: bytes) -> None:
        self._call("upload it", relative,
                   lambda: self.client.put_object(Bucket=self.bucket, Key=self.key(relative), Body=data))

    def upload_file(self, local: Path, relative: str) -> None:
        self._call("upload it", relative, lambda: self.client.upload_file(str(local), self.bucket, self.key(relative)))

    def list(self, relative: str) -> list[str]:
        """Keys under `relative/` (the whole prefix for ""), relative to it."""
        base = self.key(relative)
        base = base + "/" if base else ""
        names: list[str] = []
        token: dict[str, str] = {}
        while True:
            page = self._call("list it", relative, lambda: self.client.list_objects_v2(
                Bucket=self.bucket, Prefix=base, **token))
            names += [obj["Key"][len(base):] for obj in page.get("Contents", [])]
            if not page.get("IsTruncated"):
                return names
            token = {"ContinuationToken": page["NextContinuationToken"]}

    def delete(self, relative: str) -> None:
        """Remove every object under `relative/`."""
        keys = [self.key(f"{relative}/{name}") for name in self.list(relative)]
        for i in range(0, len(keys), 1000):
            batch = {"Objects": [{"Key": k} for k in keys[i:i + 1000]], "Quiet": True}
            self._call("delete it", relative, lambda: self.client.delete_objects(Bucket=self.bucket, Delete=batch))

    def download_folder(self, relative: str, target: Path) -> Path:
        """Copy the files directly under `relative/` into `target` (a temporary sibling renamed when complete)."""
        names = [n for n in self.list(relative) if n and "/" not in n]
        if not names:
            raise UserError(f"{self.where(relative)}: no such checkpoint in the bucket")
        tmp = target.parent / f".{target.name}.download-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        try:
            for name in names:
                source = self.key(f"{relative}/{name}" if relative else name)
                self._call("download it", f"{relative}/{name}",
                           lambda: self.client.download_file(self.bucket, source, str(tmp / name)))
            shutil.rmtree(target, ignore_errors=True)
            os.rename(tmp, target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return target

    # -- run folders ----------------------------------------------------------------------------------------
    def latest(self) -> str | None:
        """The checkpoint name `checkpoints/latest` holds, None without a pointer (validated like a local one)."""
        raw = self.read(f"checkpoints/{LATEST}")
        return None if raw is None else parse_pointer(raw, self.where(f"checkpoints/{LATEST}"))

    def steps(self) -> list[str]:
        return sorted({n.split("/", 1)[0] for n in self.list("checkpoints") if STEP_NAME.fullmatch(n.split("/", 1)[0])})

    def upload_checkpoint(self, folder: Path, extras: dict[str, bytes]) -> None:
        """A complete local checkpoint, then the run's small files, then `checkpoints/latest` last."""
        name = folder.name
        for path in sorted(folder.iterdir()):
            self.upload_file(path, f"checkpoints/{name}/{path.name}")
        for relative, data in extras.items():
            self.write(relative, data)
        self.write(f"checkpoints/{LATEST}", (name + "\n").encode())

    def keep_only(self, names: list[str]) -> None:
        """Remote retention: delete the step prefixes not in `names` (after `latest` moved)."""
        for step in self.steps():
            if step not in names:
                self.delete(f"checkpoints/{step}")


def fetch_checkpoint(url: str, cache: Path | None = None) -> Path:
    """The local copy of the checkpoint an s3:// URL means (a run folder via its `latest`, or one checkpoint).

    Downloaded once into the cache; a copy already there is reused when complete (loading verifies it).
    """
    from llmfoundry.checkpoint.manifest import looks_intact

    remote = RemoteFolder(url)
    local = cache or cache_dir(url)
    name = remote.latest()
    if name is not None:
        relative, target = f"checkpoints/{name}", local / "checkpoints" / name
    elif remote.read(".metadata") is not None:
        relative, target = "", local
    else:
        raise UserError(f"{url}: no checkpoint there (neither checkpoints/{LATEST} nor a checkpoint's .metadata)")
    if not looks_intact(target):
        target.parent.mkdir(parents=True, exist_ok=True)
        remote.download_folder(relative, target)
    return target
