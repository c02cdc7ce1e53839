"""Heartbeats: which rank is missing when a collective fails.

A collective that times out (gloo raises after dist_timeout) or breaks (a peer's socket closed) does not say which
peer is missing. Each rank therefore rewrites `RUN/.heartbeat/attempt-K/rank-RRRRR.json` (host, pid, step, wall
time) every `period` seconds from a daemon thread, and once more with its final status when it exits (done,
preempted or failed, with the one-line reason). A peer whose pid is gone on this host died; a peer whose file has
not been rewritten for half the timeout stopped (SIGSTOP, a hung host, a wedged driver). This costs one small file
write per period and nothing per step. The files live in the run folder because every node sees it (checkpoints
are written there by all ranks); one folder per torchrun attempt keeps a restarted group's files apart from the
failed one's, which the next attempt reads to say why it was restarted.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import threading
import time
from pathlib import Path
from typing import Any

FOLDER = ".heartbeat"


def attempt_dir(run_dir: Path, attempt: int) -> Path:
    return run_dir / FOLDER / f"attempt-{attempt}"


def clear(run_dir: Path) -> None:
    """Remove the heartbeats of earlier jobs (rank 0, holding the run lock, before any rank starts beating)."""
    shutil.rmtree(run_dir / FOLDER, ignore_errors=True)


class Heartbeat:
    """This rank's heartbeat file, kept fresh by a daemon thread until `stop()`."""

    def __init__(self, run_dir: Path, rank: int, attempt: int, period: float) -> None:
        self.dir = attempt_dir(run_dir, attempt)
        self.path = self.dir / f"rank-{rank:05d}.json"
        self.period = period
        self.record: dict[str, Any] = {"rank": rank, "host": socket.gethostname(), "pid": os.getpid(),
                                       "attempt": attempt, "step": 0, "status": "running", "message": None}
        self.step = 0  # the loop sets this after every step; the thread copies it into the file
        self._stopped = threading.Event()
        self.dir.mkdir(parents=True, exist_ok=True)
        self._write()
        self._thread = threading.Thread(target=self._beat, name="llmfoundry-heartbeat", daemon=True)
        self._thread.start()

    def _write(self) -> None:
        self.record.update(step=self.step, time=time.time())
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.record))
        os.replace(tmp, self.path)

    def _beat(self) -> None:
        while not self._stopped.wait(self.period):
            self._write()

    def stop(self, status: str, message: str | None = None) -> None:
        """Write the final status (done, preempted, failed) and stop beating."""
        self._stopped.set()
        self._thread.join()
        self.record.update(status=status, message=message)
        self._write()


def read(run_dir: Path, attempt: int) -> dict[int, dict[str, Any]]:
    """Every rank's last record in one attempt, by rank."""
    records = {}
    for path in attempt_dir(run_dir, attempt).glob("rank-*.json"):
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError):  # replaced while we read it; the next look sees the new one
            continue
        records[record["rank"]] = record
    return records


def last_attempt(run_dir: Path) -> int | None:
    attempts = [int(p.name.split("-")[1]) for p in (run_dir / FOLDER).glob("attempt-*")]
    return max(attempts) if attempts else None


def _alive_here(record: dict[str, Any]) -> bool | None:
    """Whether the record's process is running, when it is on this host (None elsewhere)."""
    if record["host"] != socket.gethostname():
        return None
    try:
        os.kill(record["pid"], 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def who(record: dict[str, Any]) -> str:
    return f"rank {record['rank']} (pid {record['pid']} on {record['host']})"


def missing_peers(run_dir: Path, attempt: int, world_size: int, me: int, stale_after: float, since: float,
                  poll: float) -> list[str]:
    """Ranks that died or stopped responding, each described in a few words; [] when every peer is accounted for.

    `since` is when this rank's collective began to fail. A peer is blamed at once if its pid is gone on this host
    or its heartbeat is older than `stale_after`; a peer that beats after `since` or reports a final status is
    alive. Peers still undecided (on another host, last seen recently) are watched until `since + stale_after`.
    """
    deadline = since + stale_after
    while True:
        records, now = read(run_dir, attempt), time.time()
        blamed, undecided = [], []
        for rank in range(world_size):
            record = records.get(rank)
            if rank == me:
                continue
            if record is None:
                (blamed if now - since > stale_after else undecided).append(f"rank {rank} (never started)")
            elif record["status"] != "running" or record["time"] > since:
                continue
            elif _alive_here(record) is False:
                blamed.append(f"{who(record)} died")
            elif now - record["time"] > stale_after:
                blamed.append(f"{who(record)} stopped responding (no heartbeat for {now - record['time']:.0f}s)")
            else:
                undecided.append(who(record))
        if blamed or not undecided:
            return blamed
        if now >= deadline:
            return [f"{name} stopped responding" for name in undecided]
        time.sleep(poll)


def previous_failure(run_dir: Path, attempt: int) -> str:
    """Why attempt `attempt` ended, in one line, from its ranks' final records (read by the next attempt)."""
    records = read(run_dir, attempt)
    messages = list(dict.fromkeys(r["message"] for r in sorted(records.values(), key=lambda r: r["rank"])
                                  if r["status"] == "failed" and r["message"]))
    if messages:
        return "; ".join(messages)
    silent = [who(r) for r in records.values() if r["status"] == "running"]
    if silent:
        return f"{', '.join(silent)} ended without a word (killed?)"
    return "no rank reported an error"
