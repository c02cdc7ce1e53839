"""What keeps one run healthy around the loop: the run lock, heartbeats, SIGTERM, and naming a missing rank.

Made first thing in the trainer (before the run folder is read or written) and closed last, with the run's
outcome, which goes into this rank's final heartbeat for the launcher and for the next attempt after a restart.
"""

from __future__ import annotations

from pathlib import Path

from llmfoundry.distributed import DistInfo, broadcast_from_main, max_restarts, restart_count
from llmfoundry.distributed import heartbeat
from llmfoundry.errors import RunFailure, UserError
from llmfoundry.train.lock import RunLock, acquire_run_lock
from llmfoundry.train.preempt import Preemption


def one_line(error: BaseException) -> str:
    if isinstance(error, (UserError, RunFailure)):
        return "; ".join(error.problems)
    text = str(error).strip().splitlines()
    if not text:
        return type(error).__name__
    return f"{type(error).__name__}: {text[0].split('. ')[0]}"  # torch's messages go on with advice after the fact


class RunGuard:
    """Rank 0 locks the run folder (all ranks refuse together if it is held); every rank beats and catches SIGTERM."""

    def __init__(self, run_dir: Path, dist: DistInfo, dist_timeout: float) -> None:
        self.run_dir, self.dist, self.dist_timeout = run_dir, dist, dist_timeout
        self.attempt = restart_count()
        self.created = not run_dir.exists()  # a run that fails before writing anything leaves no folder behind
        lock: RunLock | None = None
        error = note = None
        if dist.is_main:
            try:
                lock, note = acquire_run_lock(run_dir)
            except UserError as refused:
                error = refused.problems[0]
            else:
                if self.attempt == 0:
                    heartbeat.clear(run_dir)
        error, note = broadcast_from_main((error, note))
        if error is not None:
            raise UserError(error)
        self.lock = lock
        self.notes = [note] if note and dist.is_main else []
        if self.attempt > 0 and dist.is_main:
            self.notes.append(f"restart {self.attempt} of {max_restarts()}: attempt {self.attempt} ended with "
                              f"{heartbeat.previous_failure(run_dir, self.attempt - 1)}")
        self.heartbeat = heartbeat.Heartbeat(run_dir, dist.rank, self.attempt, period=min(max(dist_timeout / 4, 0.25), 30))
        self.preemption = Preemption(dist.world_size)

    def peer_failure(self, error: BaseException, since: float) -> RunFailure | None:
        """A one-line failure naming the ranks that died or stalled, if `error` (a failed collective) is theirs."""
        if self.dist.world_size == 1:
            return None
        missing = heartbeat.missing_peers(self.run_dir, self.attempt, self.dist.world_size, self.dist.rank,
                                          stale_after=self.dist_timeout / 2, since=since,
                                          poll=self.heartbeat.period / 2)
        if not missing:
            return None
        return RunFailure(f"{'; '.join(missing)}; rank {self.dist.rank}'s collective failed (dist_timeout "
                          f"{self.dist_timeout:g}s): {one_line(error)}")

    def close(self, status: str, message: str | None = None) -> None:
        self.heartbeat.stop(status, message)
        self.preemption.close(clean=status != "failed")
        if self.lock is not None:
            self.lock.release()
        leftovers = {p.name for p in self.run_dir.iterdir()} if self.run_dir.exists() else set()
        if status == "failed" and self.created and self.dist.world_size == 1 and leftovers <= {heartbeat.FOLDER}:
            heartbeat.clear(self.run_dir)
            self.run_dir.rmdir()
