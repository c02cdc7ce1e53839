"""`foundry train --nproc N [--max-restarts K]`: torchrun's elastic agent in this process, and a one-line summary.

Plain torchrun shows a mistake N + 1 times: once per worker, then in its own ChildFailedError traceback. Here the
agent runs in-process through `torch.distributed.run.run` (so rendezvous, restarts, signal forwarding and every
flag behave exactly as torchrun's), the workers put their one-line error into torchelastic's error file instead of
printing it (`LAUNCHED` in their environment), the agent's own log lines are silenced unless --debug, and this
launcher prints each distinct error once. After SIGTERM (forwarded by the agent to the workers, which checkpoint
and stop) it exits 0 when every rank stopped cleanly, as their final heartbeats say.
"""

from __future__ import annotations

import logging
import os
import signal
from pathlib import Path
from typing import Any

import typer

from llmfoundry.distributed import heartbeat
from llmfoundry.errors import LAUNCHED, UserError


def _quiet_agent_logs() -> None:
    for name in list(logging.root.manager.loggerDict):
        if name.startswith(("torch.distributed.elastic", "torch.distributed.run", "torch.distributed.launcher")):
            logging.getLogger(name).setLevel(logging.CRITICAL)


def launch_train(nproc: int, max_restarts: int, train_args: list[str], run_dir: Path, *, debug: bool) -> int:
    """Run `foundry train TRAIN_ARGS` on `nproc` local processes under torchrun's agent; returns the exit code."""
    from torch.distributed import run as torchrun
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError

    check_devices(nproc)
    args = torchrun.parse_args([f"--nproc-per-node={nproc}", f"--max-restarts={max_restarts}", "-m", "llmfoundry.cli",
                                *(["--debug"] if debug else []), "train", *train_args])
    os.environ[LAUNCHED] = "1"
    if not debug:
        _quiet_agent_logs()
    try:
        torchrun.run(args)
    except ChildFailedError as failed:
        for line in _summary(failed.failures, max_restarts):
            typer.echo(f"error: {line}", err=True)
        return 1
    except SignalException as stopped:
        return _after_signal(stopped.sigval, run_dir, nproc, args.shutdown_timeout)
    return 0


def check_devices(nproc: int) -> None:
    """On a GPU machine each process needs a GPU of its own; on CPU, `--nproc N` runs N gloo processes."""
    import torch

    if torch.cuda.is_available() and nproc > torch.cuda.device_count():
        raise UserError(f"--nproc {nproc}: this machine has {torch.cuda.device_count()} GPU(s); use at most that "
                        "many (one process per GPU), or launch on more nodes with torchrun")


def _summary(failures: dict[int, Any], max_restarts: int) -> list[str]:
    """Each distinct one-line error the ranks reported, else what killed them."""
    ordered = sorted(failures.items(), key=lambda item: item[1].timestamp)
    reported = [f.message for _, f in ordered if os.path.isfile(f.error_file) and isinstance(f.message, str)]
    if reported:
        lines = list(dict.fromkeys(reported))
    else:
        lines = [f"rank {rank} (pid {f.pid}) was killed by {f.signal_name()}" if f.exitcode < 0 else
                 f"rank {rank} (pid {f.pid}) exited with code {f.exitcode}; its traceback is above"
                 for rank, f in ordered]
    if max_restarts:
        lines[-1] += f" (after {max_restarts} restart{'s' * (max_restarts > 1)})"
    return lines


def _after_signal(sig: signal.Signals, run_dir: Path, nproc: int, shutdown_timeout: Any) -> int:
    """The agent forwarded `sig` to the workers and waited for them: 0 if all stopped cleanly (checkpointed)."""
    attempt = heartbeat.last_attempt(run_dir)
    records = heartbeat.read(run_dir, attempt) if attempt is not None else {}
    unfinished = [heartbeat.who(records[r]) if r in records else f"rank {r}" for r in range(nproc)
                  if records.get(r, {}).get("status") not in ("preempted", "done")]
    if not unfinished:
        return 0
    if sig == signal.SIGINT:
        return 130
    timeout = shutdown_timeout if shutdown_timeout is not None else os.environ.get("TORCH_ELASTIC_SHUTDOWN_TIMEOUT", 30)
    typer.echo(f"error: stopped by {sig.name}: {', '.join(unfinished)} did not stop cleanly within the "
               f"{timeout}s shutdown timeout (torchrun --shutdown-timeout); the last complete checkpoint is kept",
               err=True)
    return 1
