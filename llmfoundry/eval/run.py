"""`foundry eval`: score models on ICL tasks and a gauntlet; print tables, write results.json and .csv."""

from __future__ import annotations

import csv
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch

from llmfoundry.errors import UserError
from llmfoundry.eval.gauntlet import GauntletConfig, gauntlet_scores
from llmfoundry.eval.icl import TaskResult
from llmfoundry.eval.models import EvalModel
from llmfoundry.eval.tasks import ICLTaskConfig, load_items


@dataclass
class EvalConfig:
    models: list[EvalModel]
    """Models to score."""
    icl_tasks: list[ICLTaskConfig] | str
    """Tasks, or a path to a yaml whose `icl_tasks` key lists them."""
    eval_gauntlet: GauntletConfig | str | None = None
    """Gauntlet, or a path to a yaml whose `eval_gauntlet` key holds it."""
    device_eval_batch_size: int = 16
    """Requests per forward pass."""
    precision: Literal["fp32", "amp_bf16", "amp_fp16"] = "fp32"
    """Compute precision."""
    max_seq_len: int = 1024
    """Context budget; contexts are left-truncated, continuations never cut."""
    seed: int = 17
    """Global seed (fresh initializations of models without weights)."""
    save_folder: str | None = None
    """Where results.json and results.csv go (none: console only)."""
    icl_subset_num_batches: int | None = None
    """Score only the first this-many batches of each task (per category), as LLM Foundry: a quick look."""
    fsdp_config: dict[str, Any] | None = None
    """LLM Foundry's sharding block: accepted; evaluation keeps a whole model per process and splits the
    items across processes instead (a note says so)."""
    dist_timeout: float = 600.0
    """Seconds a process waits for the others (process-group timeout)."""


def load_section(value: Any, key: str, cls: type, base: Path) -> Any:
    from llmfoundry.config import build, load_config

    if isinstance(value, str):
        path = Path(value) if Path(value).is_absolute() else base / value
        loaded = load_config(path)
        if key not in loaded.data:
            raise UserError(f"{path}: has no '{key}' key")
        return build(cls, loaded.data[key], key=key, origin=loaded.origin)
    return value


def model_max_len(model: Any) -> int | None:
    """The longest sequence the model accepts, when its config says (HF MPT builds ALiBi for max_seq_len)."""
    config = getattr(model, "config", None)
    if config is None:
        args = getattr(model, "args", None)
        learned = getattr(args, "learned_pos_emb", False) or getattr(args, "classic", False)
        return getattr(args, "max_seq_len", None) if learned else None
    for name in ("max_seq_len", "n_positions", "max_position_embeddings"):
        if getattr(config, name, None):
            return int(getattr(config, name))
    return None


def prepare(config_path: str | Path, overrides: list[str] | None = None) -> tuple[EvalConfig, Any, list, Any, list]:
    """Load and validate everything a run needs before any model loads: (cfg, loaded, tasks, gauntlet, specs)."""
    from llmfoundry.config import load_typed
    from llmfoundry.eval.models import spec_of

    cfg, loaded = load_typed(EvalConfig, config_path, overrides)
    base = Path(config_path).parent
    tasks: list[ICLTaskConfig] = load_section(cfg.icl_tasks, "icl_tasks", list[ICLTaskConfig], base)
    gauntlet = load_section(cfg.eval_gauntlet, "eval_gauntlet", GauntletConfig, base) if cfg.eval_gauntlet else None
    specs = [spec_of(m, f"models[{i}].model", loaded.origin) for i, m in enumerate(cfg.models)]
    return cfg, loaded, tasks, gauntlet, specs


def evaluate(config_path: str | Path, overrides: list[str] | None = None, *, limit: int | None = None,
             strict: bool = False) -> dict[str, dict[str, float]]:
    """Run the eval yaml; returns {model_name: metrics}. `limit`: at most this many items per task (and category)."""
    from llmfoundry.distributed import init_distributed, shutdown
    from llmfoundry.eval.icl import evaluate_icl
    from llmfoundry.eval.models import load_model

    cfg, _, tasks, gauntlet, specs = prepare(config_path, overrides)
    sizes = {t.label: len(load_items(t)) for t in tasks}  # validates every task file before any model loads
    headline = {t.label: t.metrics[0] for t in tasks}
    dist = init_distributed(cfg.dist_timeout)
    notes: list[str] = []
    if cfg.fsdp_config is not None:
        notes.append("fsdp_config: evaluation keeps a whole model per process and splits the items across "
                     "processes (no sharding)")
    results: dict[str, dict[str, float]] = {}
    try:
        for entry, spec in zip(cfg.models, specs):
            torch.manual_seed(cfg.seed)
            model, tokenizer = load_model(entry, spec, dist.device, cfg.seed, notes)
            limit_len = model_max_len(model)
            seq = min(cfg.max_seq_len, limit_len) if limit_len else cfg.max_seq_len
            if seq < cfg.max_seq_len:
                notes.append(f"{entry.model_name}: the model accepts {limit_len} tokens; windows are that long")
            _flush(notes, dist.is_main)
            by_task = evaluate_icl(model, tokenizer, tasks, batch_size=cfg.device_eval_batch_size, max_seq_len=seq,
                                   device=dist.device, precision=cfg.precision, limit=limit, strict=strict,
                                   subset_batches=cfg.icl_subset_num_batches)
            metrics = {k: v for r in by_task.values() for k, v in r.metrics.items()}
            if gauntlet is not None:
                metrics.update(gauntlet_scores(gauntlet, metrics, sizes, headline, notes))
            for label, r in by_task.items():
                metrics.update({f"{label}/{s}-shot/skipped": float(len(v)) for s, v in r.skipped.items()})
            if dist.is_main:
                print(summary(entry.model_name, by_task, seq), file=sys.stderr)
            _flush(notes, dist.is_main)
            results[entry.model_name] = metrics
        if dist.is_main:
            from llmfoundry.eval.tables import foundry_tables, metric_table

            print(metric_table(results))
            print()
            print(foundry_tables(results, tasks, gauntlet))
            if cfg.save_folder:
                write_results(results, Path(cfg.save_folder))
                print(f"results: {Path(cfg.save_folder) / 'results.json'} and results.csv", file=sys.stderr)
            else:
                print("results not saved (set save_folder to write results.json and results.csv)", file=sys.stderr)
    finally:
        shutdown()
    return results


def _flush(notes: list[str], main: bool) -> None:
    if main:
        for line in notes:
            print(f"note: {line}", file=sys.stderr)
    notes.clear()


def summary(model_name: str, by_task: dict[str, TaskResult], seq: int) -> str:
    """One line per task and num_fewshot: items scored, skipped (listed) and truncated."""
    lines = []
    for label, r in by_task.items():
        for shots, skipped in r.skipped.items():
            line = f"{model_name} {label} {shots}-shot: {r.scored[shots]:,} items scored"
            if skipped:
                shown = ", ".join(str(i + 1) for i in skipped[:10]) + (", ..." if len(skipped) > 10 else "")
                line += f", {len(skipped):,} skipped (do not fit the {seq}-token window: items {shown})"
            if r.truncated[shots]:
                line += f", {r.truncated[shots]:,} prompts truncated on the left"
            lines.append(line)
    return "\n".join(lines)


def write_results(results: dict[str, dict[str, float]], folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / ".results.json.tmp"
    tmp.write_text(json.dumps(results, indent=2) + "\n")
    tmp.replace(folder / "results.json")
    rows = []
    for model, metrics in results.items():
        for key, value in sorted(metrics.items()):
            parts = key.split("/")
            if parts[0] == "gauntlet":
                rows.append({"model": model, "task": "gauntlet", "num_fewshot": "", "metric": "/".join(parts[1:]),
                             "value": value})
            else:
                rows.append({"model": model, "task": parts[0], "num_fewshot": parts[1].removesuffix("-shot"),
                             "metric": "/".join(parts[2:]), "value": value})
    tmp = folder / ".results.csv.tmp"
    with open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["model", "task", "num_fewshot", "metric", "value"])
        writer.writeheader()
        writer.writerows(rows)
    tmp.replace(folder / "results.csv")
