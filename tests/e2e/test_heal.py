"""Runs that heal themselves, tried for real: a SIGKILLed worker, a SIGSTOPped worker, SIGTERM, two runs on one
folder, two torchrun agents as two nodes (through scripts/slurm/train.sbatch with srun stubbed).

Every wait is on a condition (a checkpoint named by `latest`, a heartbeat file, a process exit), never a fixed
sleep. Results are compared with uninterrupted runs, bitwise where the number of ranks is the same.
"""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tests.conftest import REPO, run_cli
from tests.e2e.test_train import losses, train_in_process, weights, workspace  # noqa: F401 (fixture)

# lr 0.001 as in test_train's 2-process test; micro 4 so that 2 processes split the global batch of 8.
COMMON = ["max_duration=10ba", "save_interval=2ba", "optimizer.lr=0.001", "device_train_microbatch_size=4"]
ENV = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}


def foundry(*args: str, **kwargs) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "llmfoundry.cli", *args], env=ENV, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kwargs)


def wait_for(condition, what: str, proc: subprocess.Popen | None = None, timeout: float = 400) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if condition():
            return
        if proc is not None and proc.poll() is not None:
            out, err = proc.communicate()
            raise AssertionError(f"exited ({proc.returncode}) while waiting for {what}:\n{out[-2000:]}\n{err[-3000:]}")
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def latest_step(run: Path) -> int:
    pointer = run / "checkpoints" / "latest"
    try:
        return int(pointer.read_text().strip()[5:])
    except (OSError, ValueError):
        return 0


def beat(run: Path, rank: int, attempt: int = 0) -> dict | None:
    try:
        return json.loads((run / ".heartbeat" / f"attempt-{attempt}" / f"rank-{rank:05d}.json").read_text())
    except (OSError, ValueError):
        return None


def finish(proc: subprocess.Popen, timeout: float = 600) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


def assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = weights(a), weights(b)
    assert all(torch.equal(wa[k], wb[k]) for k in wa), "weights differ"  # bitwise


def release(pids: list[int]) -> None:
    """Test cleanup: let stopped processes go and end any we left behind."""
    for pid in pids:
        for sig in (signal.SIGCONT, signal.SIGKILL):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass


@pytest.fixture(scope="module")
def two_process_reference(workspace):  # noqa: F811
    """The uninterrupted 2-process run every interrupted one must reproduce bitwise."""
    root, config = workspace
    run = root / "reference-2"
    code, out, err = finish(foundry("train", str(config), "--nproc", "2", f"save_folder={run}", *COMMON))
    assert code == 0, err[-3000:]
    return run


@pytest.mark.slow
def test_sigterm_one_process_checkpoints_and_resumes_bitwise(workspace):  # noqa: F811
    root, config = workspace
    straight, run = root / "term-straight", root / "term-1"
    args = ["train", str(config), *COMMON, "save_interval=3ba", "autoresume=true"]
    assert finish(foundry(*args, f"save_folder={straight}"))[0] == 0  # same interpreter settings as the run below
    args.append(f"save_folder={run}")
    proc = foundry(*args)
    wait_for(lambda: latest_step(run) >= 3, "the first checkpoint", proc)
    proc.send_signal(signal.SIGTERM)
    code, out, err = finish(proc)
    stopped = latest_step(run)
    assert code == 0, err
    assert f"preempted (SIGTERM): stopped after step {stopped} of 10" in out and 3 <= stopped < 10
    assert beat(run, 0)["status"] == "preempted" and not (run / "run.lock").exists()
    code, out, err = finish(foundry(*args))
    assert code == 0 and f"resumed at step {stopped}" in out, err
    assert_same_weights(straight, run)
    assert all(losses(straight)[s] == v for s, v in losses(run).items())


@pytest.mark.slow
def test_sigterm_two_processes_all_ranks_stop_at_one_step(workspace, two_process_reference):  # noqa: F811
    """SIGTERM to one worker only, then to the launcher: every rank stops after the same step, checkpointed."""
    root, config = workspace
    run = root / "term-2"
    args = ["train", str(config), "--nproc", "2", f"save_folder={run}", *COMMON, "autoresume=true"]
    proc = foundry(*args)
    wait_for(lambda: latest_step(run) >= 2 and beat(run, 1) is not None, "a checkpoint", proc)
    os.kill(beat(run, 1)["pid"], signal.SIGTERM)  # rank 0 never got the signal: the all-reduced flag tells it
    code, out, err = finish(proc)
    first = latest_step(run)
    assert code == 0, err
    assert {beat(run, r)["status"] for r in (0, 1)} == {"preempted"}
    assert beat(run, 0)["step"] == beat(run, 1)["step"] == first < 10
    assert f"stopped after step {first} of 10" in out

    proc = foundry(*args)
    wait_for(lambda: latest_step(run) > first, "a checkpoint after the resume", proc)
    proc.send_signal(signal.SIGTERM)  # the launcher: torchrun's agent forwards it to both workers
    code, out, err = finish(proc)
    second = latest_step(run)
    assert code == 0, err
    assert f"resumed at step {first}" in out
    if second < 10:  # it may have reached the end before the signal landed
        assert f"stopped after step {second} of 10" in out

    code, out, err = finish(foundry(*args))
    assert code == 0, err
    assert_same_weights(two_process_reference, run)


@pytest.mark.slow
def test_killed_worker_restarts_and_finishes_bitwise(workspace, two_process_reference):  # noqa: F811
    """SIGKILL rank 0 (the lock holder) at a random checkpoint; torchrun restarts, the run resumes by itself."""
    root, config = workspace
    run = root / "killed"
    proc = foundry("train", str(config), "--nproc", "2", "--max-restarts", "2", f"save_folder={run}", *COMMON)
    target = random.choice([2, 4, 6])  # no autoresume: a restarted attempt resumes anyway
    wait_for(lambda: latest_step(run) >= target and beat(run, 0) is not None, f"checkpoint {target}", proc)
    killed_pid, killed_at, killed_time = beat(run, 0)["pid"], latest_step(run), time.time()
    os.kill(killed_pid, signal.SIGKILL)
    try:
        wait_for(lambda: (beat(run, 0, attempt=1) or {}).get("step", 0) > killed_at or proc.poll() is not None,
                 "the restarted attempt's first step")
        recovered = time.time() - killed_time
        code, out, err = finish(proc)
    finally:
        release([killed_pid])
    assert code == 0, err[-3000:]
    print(f"\nkilled rank 0 (pid {killed_pid}) after checkpoint step-{killed_at}; the restarted attempt trained past it "
          f"{recovered:.1f}s later")
    assert f"resumed at step {latest_step_before(out)}" in out
    assert "restart 1 of 2" in out and "took over" in out and not (run / "run.lock").exists()
    assert_same_weights(two_process_reference, run)


def latest_step_before(out: str) -> int:
    """The step the restarted attempt resumed at, from its start line."""
    marker = "resumed at step "
    return int(out[out.index(marker) + len(marker):].split()[0])


@pytest.mark.slow
def test_stalled_rank_restarts_then_is_named_in_one_line(workspace):  # noqa: F811
    """SIGSTOP rank 1: the collective times out after dist_timeout and the group restarts; SIGSTOP rank 0 of the
    restarted group: no restarts are left, so the run exits 1 with one line naming rank 0."""
    root, config = workspace
    run = root / "stalled"
    proc = foundry("train", str(config), "--nproc", "2", "--max-restarts", "1", f"save_folder={run}", *COMMON,
                   "max_duration=40ba", "dist_timeout=10")
    stopped: list[int] = []
    try:
        wait_for(lambda: latest_step(run) >= 2 and beat(run, 1) is not None, "a checkpoint", proc)
        stopped.append(beat(run, 1)["pid"])
        os.kill(stopped[-1], signal.SIGSTOP)
        resumed_at = latest_step(run)
        wait_for(lambda: (beat(run, 0, attempt=1) or {}).get("step", 0) > resumed_at, "the restarted group", proc)
        assert beat(run, 0, attempt=0)["status"] == "failed"
        assert f"rank 1 (pid {stopped[0]} on " in beat(run, 0, attempt=0)["message"]
        stopped.append(beat(run, 0, attempt=1)["pid"])
        os.kill(stopped[-1], signal.SIGSTOP)
        code, out, err = finish(proc)
    finally:
        release(stopped)
    assert code == 1
    lines = [line for line in err.splitlines() if line.startswith("error:")]  # (and no torchrun report)
    assert len(lines) == 1, err
    assert lines[0].startswith(f"error: rank 0 (pid {stopped[1]} on ") and "stopped responding" in lines[0]
    assert "(after 1 restart)" in lines[0] and "Traceback" not in err and "ChildFailedError" not in err
    assert "restart 1 of 1" in out


@pytest.mark.slow
def test_errors_under_nproc_are_one_line(workspace, tmp_path):  # noqa: F811
    root, config = workspace
    code, out, err = finish(foundry("train", str(config), "--nproc", "2", f"save_folder={tmp_path}/run",
                                    "device_train_microbatch_size=8"))
    assert code == 1
    assert err.strip().splitlines() == ["error: command line: device_train_microbatch_size: 8 does not divide the "
                                        "per-process batch 4 (global_train_batch_size 8 / 2 processes)"], err


def test_second_run_on_a_folder_refuses_and_a_stale_lock_is_taken_over(workspace, tmp_path):  # noqa: F811
    root, config = workspace
    run = tmp_path / "run"
    run.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    try:
        lock = {"host": socket.gethostname(), "pid": holder.pid, "pid_start": "", "started": time.time(), "run_id": ""}
        (run / "run.lock").write_text(json.dumps(lock))
        result = run_cli("train", str(config), f"save_folder={run}", "max_duration=1ba", "save_interval=0")
        assert result.returncode == 1
        assert result.stderr.strip().splitlines() == [line for line in result.stderr.splitlines() if line.strip()]
        assert len(result.stderr.strip().splitlines()) == 1
        assert f"save_folder: {run} is in use by another run (pid {holder.pid} on {socket.gethostname()}" in result.stderr
        assert not (run / "metrics.jsonl").exists() and not (run / "config.yaml").exists()
    finally:
        holder.kill()
        holder.wait()
    result = run_cli("train", str(config), f"save_folder={run}", "max_duration=1ba", "save_interval=0")
    assert result.returncode == 0, result.stderr
    assert f"took over {run / 'run.lock'}: its holder (pid {holder.pid} on" in result.stdout
    assert not (run / "run.lock").exists()  # released on exit


def test_dist_timeout_must_be_positive(workspace, tmp_path):  # noqa: F811
    root, config = workspace
    result = run_cli("train", str(config), f"save_folder={tmp_path}/run", "dist_timeout=0")
    assert result.returncode == 1 and "dist_timeout: got 0.0, expected a number > 0" in result.stderr
    result = run_cli("train", str(config), "--max-restarts", "2")
    assert result.returncode == 1 and "--max-restarts: needs --nproc N" in result.stderr


FINETUNE = ["train_loader={name: finetuning, dataset: {local: %s, max_seq_len: 32}}", "eval_loader=null"]


@pytest.mark.slow
def test_two_nodes_through_the_sbatch_script_match_one_process(workspace, tmp_path):  # noqa: F811
    """scripts/slurm/train.sbatch with srun/scontrol stubbed: two torchrun agents (--nnodes 2, one process each,
    c10d rendezvous on 127.0.0.1) really train; losses and weights match one process.

    The data is a jsonl finetuning set: two "nodes" on one host would share /dev/shm, where mosaicml-streaming
    keeps one registry per node, so its MDS datasets cannot run as two nodes on one machine (real nodes are fine).
    """
    root, config = workspace
    data = tmp_path / "sft"
    data.mkdir()
    docs = [json.loads(line)["text"] for line in (root / "corpus" / "docs.jsonl").read_text().splitlines()]
    (data / "train.jsonl").write_text("".join(json.dumps({"prompt": d[:20], "response": d[20:60]}) + "\n"
                                              for d in docs[:200]))
    common = [*COMMON, "max_duration=4ba", "save_interval=0", FINETUNE[0] % data, FINETUNE[1]]
    one = tmp_path / "one"
    train_in_process(config, f"save_folder={one}", *common[:-1], "device_train_microbatch_size=8", common[-1])

    bin_dir, logs = tmp_path / "bin", tmp_path / "logs"
    bin_dir.mkdir()
    logs.mkdir()
    (bin_dir / "srun").write_text(SRUN_STUB)
    (bin_dir / "scontrol").write_text('#!/bin/bash\nfor _ in $(seq "$SLURM_JOB_NUM_NODES"); do echo 127.0.0.1; done\n')
    for stub in bin_dir.iterdir():
        stub.chmod(0o755)
    script = REPO / "scripts" / "slurm" / "train.sbatch"
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**ENV, "PATH": f"{bin_dir}:{Path(sys.executable).parent}:{os.environ['PATH']}", "STUB_LOGS": str(logs),
           "SLURM_JOB_NUM_NODES": "2", "SLURM_JOB_NODELIST": "node[1-2]", "SLURM_JOB_ID": "4242",
           "NPROC_PER_NODE": "1", "MAX_RESTARTS": "0", "RDZV_PORT": str(port)}
    two = tmp_path / "two-nodes"
    result = subprocess.run(["bash", str(script), str(config), f"save_folder={two}", *common], env=env,
                            capture_output=True, text=True, timeout=600)
    node_logs = "\n".join(p.read_text()[-2000:] for p in sorted(logs.iterdir()))
    assert result.returncode == 0, node_logs
    assert "on 2 x cpu" in (logs / "node-0.log").read_text() + (logs / "node-1.log").read_text()
    l1, l2 = losses(one), losses(two)
    assert sorted(l1) == sorted(l2) == [1, 2, 3, 4]
    assert all(abs(l1[s] - l2[s]) < 1e-5 for s in l1), (l1, l2)
    w1, w2 = weights(one), weights(two)
    assert max((w1[k] - w2[k]).abs().max().item() for k in w1) < 1e-5


SRUN_STUB = """#!/bin/bash
# stand-in for srun: runs the command once per node of the job, all on this machine
while [[ "$1" == --* ]]; do shift; done
pids=()
for ((node = 0; node < SLURM_JOB_NUM_NODES; node++)); do
  SLURM_NODEID=$node SLURM_PROCID=$node "$@" > "$STUB_LOGS/node-$node.log" 2>&1 &
  pids+=($!)
done
rc=0
for pid in "${pids[@]}"; do wait "$pid" || rc=$?; done
exit $rc
"""
