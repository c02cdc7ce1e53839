"""Metric sinks: metrics.jsonl and the console always; TensorBoard, MLflow and W&B when enabled in yaml.

The console (loggers/console.py) is a rich progress bar on a terminal and plain `key=value` lines otherwise
(logs, CI, nohup). Optional sinks import their package only when enabled, and say which pip package is
missing if it is. When the run ends, `finish` writes the run report (llmfoundry/report) and prints the summary.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from llmfoundry.config.schema import LoggersConfig
from llmfoundry.errors import UserError
from llmfoundry.loggers import console


def _need(module: str, package: str, key: str) -> None:
    if importlib.util.find_spec(module) is None:
        raise UserError(f"loggers.{key}: enabled but `{package}` is not installed (pip install {package})")


class MetricLoggers:
    """Fan one dict of metrics per log step out to every enabled sink (rank 0 only)."""

    def __init__(self, run_dir: Path, cfg: LoggersConfig, *, run_name: str, config: dict[str, Any],
                 total_steps: int, progress_bar: bool, log_to_console: bool) -> None:
        self.jsonl = open(run_dir / "metrics.jsonl", "a")  # noqa: SIM115
        self.run_dir = run_dir
        self.start = time.perf_counter()
        self.sinks: list[Any] = []
        if cfg.tensorboard is not None:
            _need("tensorboard", "tensorboard", "tensorboard")
            from torch.utils.tensorboard import SummaryWriter

            writer = SummaryWriter(cfg.tensorboard.log_dir or str(run_dir / "tensorboard"))
            writer.add_text("config", "```json\n" + json.dumps(config, indent=2) + "\n```")
            self.sinks.append(("tb", writer))
        if cfg.mlflow is not None:
            _need("mlflow", "mlflow", "mlflow")
            import mlflow

            if cfg.mlflow.tracking_uri is None:
                # MLflow 3 keeps the file store (no server, no database) behind an explicit opt-in
                os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
            mlflow.set_tracking_uri(cfg.mlflow.tracking_uri or (run_dir / "mlruns").resolve().as_uri())
            mlflow.set_experiment(cfg.mlflow.experiment_name)
            mlflow.start_run(run_name=run_name)
            mlflow.log_params(_flatten(config))
            mlflow.log_dict(config, "config.yaml")
            self.sinks.append(("mlflow", mlflow))
        if cfg.wandb is not None:
            _need("wandb", "wandb", "wandb")
            import wandb

            wandb.init(project=cfg.wandb.project, entity=cfg.wandb.entity, mode=cfg.wandb.mode, name=run_name,
                       config=config, dir=str(run_dir))
            self.sinks.append(("wandb", wandb))
        self.console = console.ConsoleView(total_steps, progress_bar=progress_bar, log_to_console=log_to_console)

    def log(self, step: int, metrics: dict[str, float]) -> None:
        record = {"step": step, **{k: v for k, v in metrics.items()}}
        self.jsonl.write(json.dumps(record) + "\n")
        self.jsonl.flush()
        for kind, sink in self.sinks:
            if kind == "tb":
                for key, value in metrics.items():
                    sink.add_scalar(key, value, step)
            elif kind == "mlflow":
                sink.log_metrics(metrics, step=step)
            else:
                sink.log(metrics, step=step)
        self.console.log(step, metrics)

    def message(self, text: str) -> None:
        self.console.message(text)

    def finish(self, step: int, checkpoint: Path | None) -> None:
        """After the final checkpoint: close the sinks, print `done`, write the report, print the summary."""
        self.close()
        self.console.finish(step)
        report = self.write_report()
        self.console.summary(summary_lines(self.run_dir, time.perf_counter() - console.started_at(self.start),
                                           checkpoint, report))

    def write_report(self) -> Path | None:
        """RUN/report.html; a failure (a bug, or no memory left to load the plotting library: the report
        reads only what this run wrote) is printed whole, traceback included, and does not fail a run whose
        checkpoint is already saved. The report's own tests call llmfoundry.report directly, where it raises."""
        try:
            from llmfoundry.report import write_run_report
            from llmfoundry.report.runs import load_run

            return write_run_report([load_run(self.run_dir)], self.run_dir / "report.html")
        except Exception:  # noqa: BLE001 - see the docstring: printed in full, never hidden
            traceback.print_exc()
            print(f"warning: the run is complete but its report failed (traceback above); retry with: "
                  f"foundry report {self.run_dir}", file=sys.stderr, flush=True)
            return None

    def close(self) -> None:
        self.jsonl.close()
        for kind, sink in self.sinks:
            if kind == "tb":
                sink.close()
            elif kind == "mlflow":
                sink.end_run()
            else:
                sink.finish()


def _flatten(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Dotted keys with scalar values, as MLflow params want them (lists are kept as their text)."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def summary_lines(run_dir: Path, elapsed: float, checkpoint: Path | None, report: Path | None) -> list[str]:
    """The end-of-run summary: final losses and perplexities, time, throughput, MFU, memory, where things are."""
    from llmfoundry.report.runs import load_run
    from llmfoundry.report.summary import run_numbers

    numbers = run_numbers(load_run(run_dir))
    steps, tokens = numbers.pop("steps", "0"), numbers.pop("tokens", "0")
    lines = [f"summary: {steps} steps, {tokens} tokens; {console.hms(elapsed)} since the command started"]
    numbers["checkpoint"] = str(checkpoint) if checkpoint else "(none)"
    numbers["report"] = str(report) if report else f"(failed; foundry report {run_dir})"
    numbers["export"] = f"foundry inference-convert {run_dir} {run_dir}-hf"
    width = max(map(len, numbers))
    return lines + [f"  {label:<{width}}  {text}" for label, text in numbers.items()]
