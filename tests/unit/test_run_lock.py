"""The run lock and the heartbeat diagnosis, on real files and real (dead, live, reused) processes."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time

import pytest

from llmfoundry.distributed import heartbeat
from llmfoundry.errors import UserError
from llmfoundry.train.lock import LOCK_NAME, acquire_run_lock


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def write_lock(run, **fields) -> None:
    holder = {"host": socket.gethostname(), "pid": os.getpid(), "pid_start": "", "started": time.time(), "run_id": ""}
    (run / LOCK_NAME).write_text(json.dumps({**holder, **fields}))


def test_lock_is_exclusive_and_released(tmp_path):
    lock, note = acquire_run_lock(tmp_path)
    assert note is None and json.loads((tmp_path / LOCK_NAME).read_text())["pid"] == os.getpid()
    with pytest.raises(UserError, match=f"save_folder: {tmp_path} is in use by another run \\(pid {os.getpid()} on "):
        acquire_run_lock(tmp_path)
    lock.release()
    assert not (tmp_path / LOCK_NAME).exists()


def test_release_leaves_another_holders_lock(tmp_path):
    lock, _ = acquire_run_lock(tmp_path)
    write_lock(tmp_path, pid=1)
    lock.release()
    assert (tmp_path / LOCK_NAME).exists()


def test_stale_locks_are_taken_over_with_a_note(tmp_path, monkeypatch):
    pid = dead_pid()
    write_lock(tmp_path, pid=pid)
    lock, note = acquire_run_lock(tmp_path)
    assert f"its holder (pid {pid} on {socket.gethostname()}" in note and "no longer running" in note
    lock.release()
    write_lock(tmp_path, pid_start="1")  # this pid, but another process's start time: the pid was reused
    lock, note = acquire_run_lock(tmp_path)
    assert "no longer running" in note
    lock.release()


def test_a_restarted_job_takes_over_its_own_lock_from_another_node(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "job-42")
    write_lock(tmp_path, host="node-7", pid=12345, run_id="job-42")
    monkeypatch.setenv("TORCHELASTIC_RESTART_COUNT", "0")  # a new job with the same id is not a restart
    with pytest.raises(UserError, match="pid 12345 on node-7"):
        acquire_run_lock(tmp_path)
    monkeypatch.setenv("TORCHELASTIC_RESTART_COUNT", "1")
    lock, note = acquire_run_lock(tmp_path)
    assert "left by this job's previous attempt (pid 12345 on node-7" in note
    lock.release()
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "none")  # torchrun's default id names no job in particular
    write_lock(tmp_path, host="node-7", pid=12345, run_id="none")
    with pytest.raises(UserError, match="in use by another run"):
        acquire_run_lock(tmp_path)


def record(run, rank: int, **fields) -> None:
    folder = heartbeat.attempt_dir(run, 0)
    folder.mkdir(parents=True, exist_ok=True)
    base = {"rank": rank, "host": socket.gethostname(), "pid": os.getpid(), "attempt": 0, "step": 3,
            "status": "running", "message": None, "time": time.time()}
    (folder / f"rank-{rank:05d}.json").write_text(json.dumps({**base, **fields}))


def test_missing_peers_names_dead_and_stalled_ranks_only(tmp_path):
    now = time.time()
    pid = dead_pid()
    record(tmp_path, 0)
    record(tmp_path, 1, pid=pid, time=now - 1)
    record(tmp_path, 2, time=now - 30)  # alive pid, silent for 30 s: stopped (SIGSTOP)
    record(tmp_path, 3, status="failed", message="x", time=now - 30)  # exited and said so
    record(tmp_path, 4, time=now + 1)  # beat after the failure
    found = heartbeat.missing_peers(tmp_path, 0, 5, me=0, stale_after=10, since=now, poll=0.01)
    host = socket.gethostname()
    assert found[0] == f"rank 1 (pid {pid} on {host}) died" and len(found) == 2
    # the age is read at call time: 30 s, or a little more on a loaded machine
    assert re.fullmatch(rf"rank 2 \(pid {os.getpid()} on {host}\) stopped responding \(no heartbeat for 3[0-4]s\)",
                        found[1]), found[1]
    assert heartbeat.missing_peers(tmp_path, 0, 5, me=0, stale_after=10, since=now - 60, poll=0.01) == []


def test_a_live_heartbeat_keeps_its_rank_out_of_blame(tmp_path):
    beat = heartbeat.Heartbeat(tmp_path, rank=1, attempt=0, period=0.05)
    try:
        since = time.time()
        assert heartbeat.missing_peers(tmp_path, 0, 2, me=0, stale_after=5, since=since, poll=0.01) == []
    finally:
        beat.stop("done")
    assert heartbeat.read(tmp_path, 0)[1]["status"] == "done"
