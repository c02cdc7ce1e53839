"""Metric sinks: metrics.jsonl and the console always; TensorBoard, MLflow and W&B when enabled in yaml.

The console is a rich progress bar on a terminal and plain `key=value` lines otherwise (logs, CI, nohup).
Optional sinks import their package only when enabled, and say which pip package is missing if it is.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from llmfoundry.config.schema import LoggersConfig
from llmfoundry.errors import UserError


def _need(module: str, package: str, key: str) -> None:
    if importlib.util.find_spec(module) is None:
        raise UserError(f"loggers.{key}: enabled but `{package}` is not installed (pip install {package})")


class MetricLoggers:
    """Fan one dict of metrics per log step out to every enabled sink (rank 0 only)."""

    def __init__(self, run_dir: Path, cfg: LoggersConfig, *, run_name: str, config: dict[str, Any],
                 total_steps: int, progress_bar: bool, log_to_console: bool) -> None:
        self.jsonl = open(run_dir / "metrics.jsonl", "a")  # noqa: SIM115
        self.total = total_steps
        self.log_to_console = log_to_console
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
        self.progress = None
        if progress_bar and sys.stdout.isatty():
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self.progress = Progress(TextColumn("train"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                                     TextColumn("{task.description}"))
            self.task = self.progress.add_task("", total=total_steps)
            self.progress.start()

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
        short = "  ".join(f"{label}={_fmt(metrics[key])}" for key, label in _CONSOLE.items() if key in metrics)
        if self.progress is not None:
            self.progress.update(self.task, completed=step, description=short)
        elif self.log_to_console:
            print(f"[step {step}/{self.total}] {short}", flush=True)

    def message(self, text: str) -> None:
        if self.progress is not None:
            self.progress.console.print(text)
        else:
            print(text, flush=True)

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()
        self.jsonl.close()
        for kind, sink in self.sinks:
            if kind == "tb":
                sink.close()
            elif kind == "mlflow":
                sink.end_run()
            else:
                sink.finish()


_CONSOLE = {"loss/train": "loss", "grad_norm": "grad_norm", "loss/val": "val_loss", "perplexity/val": "val_ppl",
            "lr": "lr", "tokens": "tokens", "throughput/tokens_per_sec": "tok/s", "throughput/mfu": "mfu",
            "time/remaining_s": "eta_s", "spike/rollbacks": "rollbacks"}


def _flatten(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Dotted keys with scalar values, as MLflow params want them (lists are kept as their text)."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _fmt(value: float) -> str:
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1e5 else f"{value:.3e}"
    return str(value)
