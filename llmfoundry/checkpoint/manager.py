"""Saving training checkpoints: one DCP folder per save, complete and verified before it appears under its name.

A save writes `checkpoints/.tmp-step-XXXXXXXX` (the resolved config first, then DCP's files), hashes every
file into `manifest.json`, renames the folder to `step-XXXXXXXX`, and only then rewrites `checkpoints/latest`
(a temporary file and an atomic rename), applies retention, and, for an s3:// save_folder, uploads the
checkpoint, the run's config.yaml and metrics.jsonl, and `latest` last. A run killed at any moment leaves
`latest` naming a complete checkpoint; the partial folder it leaves is removed at the next start or save.

`save_async: true` hands the write to DCP's `async_save`: the state is first copied into one staging buffer
(reused by every save, so the copy is bounded by one checkpoint's size), training continues while a
background thread writes the files and then commits (manifest, rename, `latest`, upload) exactly as above.
At most one save is in flight: the next save, and the end of training, wait for it, and a failure in the
background is raised there. With several processes the background work talks over its own gloo group, so
it never interleaves with the training's collectives.
"""

from __future__ import annotations

import os
import shutil
import warnings
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import torch
import torch.distributed as dist

from llmfoundry.checkpoint.manifest import hash_share, looks_intact, write_manifest
from llmfoundry.checkpoint.pointer import (LATEST, PREFIX, STEP_NAME, TMP_PREFIX, checkpoint_name, read_latest,
                                           write_latest)
from llmfoundry.checkpoint.remote import RemoteFolder
from llmfoundry.distributed import barrier
from llmfoundry.errors import UserError

T = TypeVar("T")
# One process saves without a process group, and DCP says so on every save, also from the background thread
# (where warnings.catch_warnings, being process-wide and not thread-safe, cannot be used).
warnings.filterwarnings("ignore", message="torch.distributed is disabled, unavailable or uninitialized, assuming "
                        "the intent is to save in a single process", category=UserWarning)


def _rank_world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def on_main(fn: Callable[[], T]) -> T | None:
    """Run `fn` on rank 0 only; a UserError there is raised on every rank (so no rank waits for a dead one)."""
    rank, world = _rank_world()
    problems: list[str] | None = None
    result = None
    if rank == 0:
        try:
            result = fn()
        except UserError as err:
            problems = err.problems
    if world > 1:
        box = [problems]
        dist.broadcast_object_list(box, src=0)
        problems = box[0]
    if problems:
        raise UserError(*problems)
    return result


def _state_bytes(state: Any) -> int:
    """Bytes of tensor data in a (nested) state dict: about what this rank writes."""
    if isinstance(state, torch.Tensor):
        local = state.to_local() if hasattr(state, "to_local") else state
        return local.numel() * local.element_size()
    if isinstance(state, dict):
        return sum(_state_bytes(v) for v in state.values())
    if isinstance(state, (list, tuple)):
        return sum(_state_bytes(v) for v in state)
    return 0


def _size(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1024 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError


def _write_error(err: BaseException) -> BaseException | None:
    """The failed write behind a DCP save error (an OSError, or torch's zip writer's RuntimeError when a write
    came up short: that is how a full disk or a file size limit shows there), None if it is something else."""
    from torch.distributed.checkpoint import CheckpointException

    causes = [exc for exc, _ in err.failures.values()] if isinstance(err, CheckpointException) else [err]
    for exc in causes:
        if isinstance(exc, OSError) or (isinstance(exc, RuntimeError) and "inline_container.cc" in str(exc)):
            return exc
    return None


def _why(err: BaseException, folder: Path, need: int) -> str:
    """The OS's reason, or for torch's writer (which loses errno) the limit that explains it."""
    if isinstance(err, OSError) and err.strerror:
        return err.strerror
    import resource

    try:
        if shutil.disk_usage(folder).free < need:
            return "No space left on device"
    except OSError:
        pass
    soft, _ = resource.getrlimit(resource.RLIMIT_FSIZE)
    if soft != resource.RLIM_INFINITY and soft < need:
        return f"File too large: files are limited to {_size(soft)} (ulimit -f)"
    return "a write failed"


def local_run_dir(save_folder: str, staging: str | None) -> Path:
    """Where a run's files live on this machine: save_folder, or for an s3:// one its local staging folder."""
    from llmfoundry.checkpoint.remote import cache_dir
    from llmfoundry.io import is_s3

    return Path(staging or cache_dir(save_folder)) if is_s3(save_folder) else Path(save_folder)


class CheckpointManager:
    """The checkpoints of one run: where resumption starts, and writing new ones (in the foreground or background)."""

    def __init__(self, ckpt_dir: Path, *, config_yaml: str, keep: int, save_async: bool = False,
                 remote: RemoteFolder | None = None) -> None:
        self.ckpt_dir = ckpt_dir
        self.run_dir = ckpt_dir.parent
        self.config_yaml = config_yaml
        self.keep = keep
        self.remote = remote
        self.rank, self.world = _rank_world()
        self.is_main = self.rank == 0
        self.pending: Future[None] | None = None
        self.group: Any = None
        self.stager: Any = None
        self.executor: ThreadPoolExecutor | None = None
        if save_async:
            from torch.distributed.checkpoint.staging import DefaultStager, StagingOptions

            if self.world > 1:  # every rank creates it, in the same order: new_group is itself a collective
                self.group = dist.new_group(backend="gloo")
            cuda = torch.cuda.is_available()
            self.stager = DefaultStager(StagingOptions(use_pinned_memory=cuda, use_shared_memory=False,
                                                       use_async_staging=False, use_non_blocking_copy=False))
            self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="checkpoint")

    @classmethod
    def for_run(cls, save_folder: str, *, staging: str | None, config_yaml: str, keep: int,
                save_async: bool) -> CheckpointManager:
        """Checkpoints under save_folder, or for an s3:// save_folder under a local staging folder mirrored there."""
        from llmfoundry.io import is_s3

        remote = RemoteFolder(save_folder) if is_s3(save_folder) else None
        run_dir = local_run_dir(save_folder, staging)
        return cls(run_dir / "checkpoints", config_yaml=config_yaml, keep=keep, save_async=save_async, remote=remote)

    # -- starting ---------------------------------------------------------------------------------------
    def remove_leftovers(self) -> None:
        """Partial folders of an interrupted save (or download) must not block the next one, e.g. on a full disk."""
        if self.is_main and self.ckpt_dir.is_dir():
            for path in self.ckpt_dir.iterdir():
                if path.name.startswith((TMP_PREFIX, f".{LATEST}.tmp")) or ".download-" in path.name:
                    if path.is_dir():
                        shutil.rmtree(path, ignore_errors=True)
                    else:
                        path.unlink(missing_ok=True)
        barrier()

    def has_checkpoints(self) -> bool:
        local = self.ckpt_dir.is_dir() and any(STEP_NAME.fullmatch(p.name) for p in self.ckpt_dir.iterdir())
        return local or bool(self.remote is not None and on_main(self.remote.steps))

    def resume_point(self) -> Path | None:
        """The checkpoint autoresume continues from (fetched from the bucket for an s3:// save_folder), or None."""
        if self.remote is not None:
            on_main(self._fetch_remote_latest)
        return read_latest(self.ckpt_dir)

    def _fetch_remote_latest(self) -> None:
        remote = self.remote
        assert remote is not None
        name = remote.latest()
        if name is None:
            steps = remote.steps()
            if steps:
                raise UserError(f"{remote.where(f'checkpoints/{LATEST}')}: missing though the bucket holds "
                                f"checkpoints (newest {steps[-1]}); upload a latest naming one of them to resume")
            return
        target = self.ckpt_dir / name
        self.ckpt_dir.mkdir(parents=True, exist_ok=True)
        if not looks_intact(target):
            remote.download_folder(f"checkpoints/{name}", target)
        write_latest(self.ckpt_dir, name)
        metrics = self.run_dir / "metrics.jsonl"
        if not metrics.exists() and (data := remote.read("metrics.jsonl")) is not None:
            metrics.write_bytes(data)

    # -- saving -----------------------------------------------------------------------------------------
    def save(self, step: int, state: dict[str, Any]) -> None:
        """Write a checkpoint of `state` for `step` (in the background with save_async; waits for the previous one)."""
        import torch.distributed.checkpoint as dcp

        self.wait()
        name = checkpoint_name(step)
        tmp = self.ckpt_dir / f".tmp-{name}"
        need = _state_bytes(state) * self.world
        extras = self._extras() if self.remote is not None and self.is_main else {}
        if self.is_main:
            try:
                self.ckpt_dir.mkdir(parents=True, exist_ok=True)
                shutil.rmtree(tmp, ignore_errors=True)
                tmp.mkdir()
                (tmp / "config.yaml").write_text(self.config_yaml)
            except OSError as err:
                raise self._disk_failure(err, tmp, need) from None
        barrier()
        try:
            if self.executor is None:
                dcp.save(state, checkpoint_id=str(tmp))
            else:
                upload = dcp.async_save(state, checkpoint_id=str(tmp), process_group=self.group,
                                        async_stager=self.stager)
        except BaseException as err:  # CheckpointException is a BaseException; only disk errors are ours to word
            failure = _write_error(err)
            if failure is None:
                raise
            raise self._disk_failure(failure, tmp, need) from None
        if self.executor is None:
            self._commit(name, tmp, extras, need, group=None)
            barrier()
        else:
            self.pending = self.executor.submit(self._finish, upload, name, tmp, extras, need)

    def _finish(self, upload: Future[Any], name: str, tmp: Path, extras: dict[str, bytes], need: int) -> None:
        """Background thread: wait for DCP's write, then commit; the rename and `latest` never precede the write."""
        try:
            upload.result()
        except BaseException as err:
            failure = _write_error(err)
            if failure is None:
                raise
            raise self._disk_failure(failure, tmp, need) from None
        self._commit(name, tmp, extras, need, group=self.group)

    def _commit(self, name: str, tmp: Path, extras: dict[str, bytes], need: int, group: Any) -> None:
        """Manifest (each rank hashes its share of the files), rename, `latest`, retention, upload."""
        try:
            entries = hash_share(tmp, self.rank, self.world)
            if self.world > 1:
                shares: list[dict[str, Any] | None] = [None] * self.world
                dist.all_gather_object(shares, entries, group=group)
                entries = {k: v for part in shares if part for k, v in part.items()}
            if not self.is_main:
                return
            write_manifest(tmp, entries)
            final = self.ckpt_dir / name
            shutil.rmtree(final, ignore_errors=True)
            os.rename(tmp, final)
            write_latest(self.ckpt_dir, name)
            kept = self._retain()
        except OSError as err:
            raise self._disk_failure(err, tmp, need) from None
        if self.remote is not None:
            self.remote.upload_checkpoint(final, extras)
            if self.keep > 0:
                self.remote.keep_only(kept)

    def _retain(self) -> list[str]:
        saved = sorted(p for p in self.ckpt_dir.iterdir() if p.name.startswith(PREFIX) and STEP_NAME.fullmatch(p.name))
        if self.keep > 0:
            for old in saved[:-self.keep]:
                shutil.rmtree(old, ignore_errors=True)
            saved = saved[-self.keep:]
        return [p.name for p in saved]

    def _extras(self) -> dict[str, bytes]:
        """The run's small files as they are now (uploaded beside the checkpoint, before `latest`)."""
        out = {}
        for name in ("config.yaml", "metrics.jsonl"):
            path = self.run_dir / name
            if path.exists():
                out[name] = path.read_bytes()
        return out

    def _disk_failure(self, err: BaseException, tmp: Path, need: int) -> UserError:
        """One line naming the path, the reason and the space needed; the partial folder is removed."""
        if self.is_main:
            shutil.rmtree(tmp, ignore_errors=True)
        try:
            free = f"{_size(shutil.disk_usage(self.ckpt_dir).free)} free there"
        except OSError:
            free = "free space unknown"
        where = getattr(err, "filename", None) or tmp
        return UserError(f"{where}: cannot write the checkpoint ({_why(err, self.ckpt_dir, need)}); it needs about "
                         f"{_size(need)} ({free}); the partial checkpoint was removed")

    # -- waiting ----------------------------------------------------------------------------------------
    def wait(self) -> None:
        """Block until the save in flight (if any) is committed; its failure is raised here."""
        pending, self.pending = self.pending, None
        if pending is not None:
            pending.result()

    def close(self) -> None:
        """Wait for the save in flight and release the staging buffer and the background thread."""
        try:
            self.wait()
        finally:
            if self.stager is not None:
                self.stager.close()
                self.stager = None
            if self.executor is not None:
                self.executor.shutdown(wait=True)
                self.executor = None
