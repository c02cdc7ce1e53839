"""What `foundry train` shows on the console.

On a terminal: a status line with a spinner while the run starts (loading the config, importing torch,
building the model and opening the data take 15-45 s before step 1), then a progress bar at the run's real
step (a resumed run starts where it resumed) with the ETA as h:mm:ss in its own column; each evaluation is
printed as its own line above the bar, so the last validation result stays visible; `done` follows the final
bar. Elsewhere (logs, CI, nohup): plain `[step N/M] key=value` lines and no spinner.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any

EVAL_PREFIXES = ("loss/val", "perplexity/val", "metrics/val/", "icl/", "gauntlet/")
CONSOLE_KEYS = {"loss/train": "loss", "loss/val": "val_loss", "perplexity/val": "val_ppl", "lr": "lr",
                "grad_norm": "grad_norm", "tokens": "tokens", "throughput/tokens_per_sec": "tok/s",
                "throughput/mfu": "mfu", "spike/rollbacks": "rollbacks"}

_startup: Any = None  # the rich Status shown until the progress bar takes over
_started: list[float] = []  # when the first start-up phase was announced (perf_counter)


def _is_main_on_terminal() -> bool:
    return sys.stdout.isatty() and os.environ.get("RANK", "0") == "0"


def startup(phase: str) -> None:
    """Say what the run is doing before its first step (a spinner line on a terminal; nothing elsewhere)."""
    global _startup
    if not _started:
        _started.append(time.perf_counter())
    if not _is_main_on_terminal():
        return
    if _startup is None:
        from rich.console import Console

        _startup = Console().status(f"starting: {phase}", spinner="dots")
        _startup.start()
    else:
        _startup.update(f"starting: {phase}")


def end_startup() -> None:
    """Remove the start-up line (before the bar, an error message, or an exec of torchrun)."""
    global _startup
    if _startup is not None:
        _startup.stop()
        _startup = None


def started_at(default: float) -> float:
    """When the command announced its first start-up phase, or `default` (perf_counter) if it never did."""
    return _started[0] if _started else default


def hms(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1e5 else f"{value:.3e}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def eval_line(step: int, total: int, metrics: dict[str, Any]) -> str | None:
    """`[step N/M] eval: val_loss=... val_ppl=... icl/...=...`, or None when `metrics` holds no eval result."""
    keys = [k for k in metrics if k.startswith(EVAL_PREFIXES)]
    if not keys:
        return None
    return f"[step {step}/{total}] eval: " + "  ".join(f"{CONSOLE_KEYS.get(k, k)}={fmt(metrics[k])}" for k in keys)


class ConsoleView:
    """The progress bar (terminal) or plain lines; created on rank 0 when training starts."""

    def __init__(self, total_steps: int, *, progress_bar: bool, log_to_console: bool) -> None:
        self.total = total_steps
        self.log_to_console = log_to_console
        self.progress: Any = None
        self.bar_wanted = progress_bar and sys.stdout.isatty()
        if not self.bar_wanted:
            end_startup()
        else:
            startup("first steps (the bar appears at the first log step)")

    def _bar(self, step: int) -> Any:
        """The bar, started lazily at the first logged step so that it starts at the real step."""
        if self.progress is None:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, TextColumn
            from rich.text import Text

            class Eta(ProgressColumn):
                def render(self, task: Any) -> Text:
                    eta = task.fields.get("eta")
                    return Text(f"ETA {hms(eta) if eta is not None else '-:--:--'}", style="cyan")

            end_startup()
            self.progress = Progress(TextColumn("train"), BarColumn(), MofNCompleteColumn(), Eta(),
                                     TextColumn("{task.description}"))
            self.task = self.progress.add_task("", total=self.total, completed=step, eta=None)
            self.progress.start()
        return self.progress

    def log(self, step: int, metrics: dict[str, Any]) -> None:
        line = eval_line(step, self.total, metrics)
        short = "  ".join(f"{label}={fmt(metrics[key])}" for key, label in CONSOLE_KEYS.items()
                          if key in metrics and not key.startswith(EVAL_PREFIXES))
        if self.bar_wanted:
            bar = self._bar(step)
            if line is not None:
                bar.console.print(line, markup=False, highlight=False)
            eta = 0.0 if step >= self.total else metrics.get("time/remaining_s")
            bar.update(self.task, completed=step, description=short, eta=eta)
        elif self.log_to_console:  # an eval record repeats its step's train metrics: print only the eval line
            print(line if line is not None else f"[step {step}/{self.total}] {short}", flush=True)

    def message(self, text: str) -> None:
        if self.progress is not None:
            self.progress.console.print(text, markup=False, highlight=False)
        elif _startup is not None:
            _startup.console.print(text, markup=False, highlight=False)
        else:
            print(text, flush=True)

    def finish(self, step: int) -> None:
        """The final bar at `step` (also for a run that had nothing left to train), then `done`."""
        if self.bar_wanted:
            bar = self._bar(step)
            bar.update(self.task, completed=step, eta=0.0)
            bar.stop()
        end_startup()
        print("done", flush=True)

    def summary(self, lines: list[str]) -> None:
        print("\n".join(lines), flush=True)
