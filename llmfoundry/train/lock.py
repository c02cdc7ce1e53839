"""One run per save_folder: a lock file taken atomically by rank 0 when training starts.

Two runs writing one folder interleave metrics.jsonl and overwrite each other's checkpoints. The first to start
creates `RUN/run.lock` with O_CREAT|O_EXCL (atomic on local filesystems and NFSv3+), holding its host, pid, the
pid's start time (so a reused pid is not mistaken for the holder) and torchrun's run id; a second run refuses with
one line naming the folder and the holder. A lock whose holder is gone is taken over with a note: a dead process on
this host, or this same torchrun job restarting after a failure (its rank 0 may now be on another node, where the
old pid means nothing). The lock is released on exit; a SIGKILLed run leaves it for the next start to take over.
"""

from __future__ import annotations

import json
import os
import socket
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path

from llmfoundry.distributed import restart_count, run_id
from llmfoundry.errors import UserError

LOCK_NAME = "run.lock"


@dataclass(frozen=True)
class Holder:
    """Who holds a run folder."""

    host: str
    pid: int
    pid_start: str  # the process's start time in clock ticks since boot (Linux), "" where unknown
    started: float  # wall-clock time the lock was taken
    run_id: str  # torchrun's TORCHELASTIC_RUN_ID, "" outside torchrun

    def describe(self) -> str:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.started))
        return f"pid {self.pid} on {self.host}, started {when}"


def _pid_start(pid: int) -> str:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    return stat.rsplit(")", 1)[1].split()[19]  # field 22, counted after the parenthesised command name


def _this_process() -> Holder:
    pid = os.getpid()
    return Holder(socket.gethostname(), pid, _pid_start(pid), time.time(), run_id())


def _running(holder: Holder) -> bool:
    try:
        os.kill(holder.pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return not holder.pid_start or _pid_start(holder.pid) in ("", holder.pid_start)


def _stale_because(holder: Holder, me: Holder) -> str | None:
    """Why the holder no longer owns the folder, or None when it may still be running."""
    if holder.run_id and holder.run_id not in ("none", "") and holder.run_id == me.run_id and restart_count() > 0:
        return f"left by this job's previous attempt ({holder.describe()})"
    if holder.host == me.host and not _running(holder):
        return f"its holder ({holder.describe()}) is no longer running"
    return None


def _read(path: Path) -> Holder | None:
    try:
        return Holder(**json.loads(path.read_text()))
    except FileNotFoundError:
        return None
    except (ValueError, TypeError):  # being written this instant, or not ours: report it as unknown
        return Holder("an unknown host", -1, "", path.stat().st_mtime, "")


@dataclass
class RunLock:
    """The lock this process holds; `release()` removes it only if it is still ours."""

    path: Path
    holder: Holder

    def release(self) -> None:
        if _read(self.path) == self.holder:
            self.path.unlink(missing_ok=True)


def acquire_run_lock(run_dir: Path) -> tuple[RunLock, str | None]:
    """Take `run_dir`'s lock; returns it and a note when a stale lock was taken over. UserError when held."""
    run_dir.mkdir(parents=True, exist_ok=True)
    path, me, note = run_dir / LOCK_NAME, _this_process(), None
    for _ in range(3):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            holder = _read(path)
            if holder is None:  # released between our open and our read
                continue
            reason = _stale_because(holder, me)
            if reason is None:
                raise UserError(f"save_folder: {run_dir} is in use by another run ({holder.describe()}; lock file "
                                f"{path}); wait for it to finish or use another save_folder (delete the lock file "
                                "only if that run is gone)") from None
            _take_over(path, holder)
            note = f"took over {path}: {reason}"
            continue
        with os.fdopen(fd, "w") as f:
            json.dump(asdict(me), f)
        return RunLock(path, me), note
    raise UserError(f"save_folder: {run_dir}: could not take {path}; several runs are starting on this folder at once")


def _take_over(path: Path, stale: Holder) -> None:
    """Move the stale lock aside atomically; if it changed hands meanwhile, put the new holder's lock back."""
    aside = path.with_name(f".{LOCK_NAME}.{uuid.uuid4().hex}")
    try:
        os.rename(path, aside)
    except FileNotFoundError:  # another starter took it over first; the next O_EXCL attempt decides
        return
    if _read(aside) != stale:
        try:
            os.link(aside, path)
        except FileExistsError:
            pass
    aside.unlink()
