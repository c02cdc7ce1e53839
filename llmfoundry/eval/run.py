"""`foundry eval`: score models on ICL tasks and a gauntlet; print a table, write results.json and .csv."""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch

from llmfoundry.config.schema import TokenizerConfig
from llmfoundry.errors import UserError
from llmfoundry.eval.gauntlet import GauntletConfig, gauntlet_scores
from llmfoundry.eval.tasks import ICLTaskConfig, load_items


@dataclass
class EvalModelSpec:
    name: str = "hf_causal_lm"
    """hf_causal_lm (a local Hugging Face dir) or foundry (a run or checkpoint folder)."""
    pretrained_model_name_or_path: str | None = None
    """A local Hugging Face model directory (hf_causal_lm)."""
    load_path: str | None = None
    """A foundry run folder or checkpoint folder."""
    trust_remote_code: bool = False
    """Allow a modeling file shipped in the model directory."""

    def __post_init__(self) -> None:
        if (self.pretrained_model_name_or_path is None) == (self.load_path is None):
            raise UserError("model: set exactly one of pretrained_model_name_or_path (a Hugging Face dir) "
                            "or load_path (a foundry run/checkpoint)")


@dataclass
class EvalModel:
    model_name: str
    """Name of the model in result tables."""
    model: EvalModelSpec
    """Where the weights are."""
    tokenizer: TokenizerConfig | None = None
    """Tokenizer directory (default: the model directory, or the run's tokenizer)."""


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
    """Global seed."""
    save_folder: str | None = None
    """Where results.json and results.csv go (none: console only)."""


def load_section(value: Any, key: str, cls: type, base: Path) -> Any:
    from llmfoundry.config import build, load_config

    if isinstance(value, str):
        path = Path(value) if Path(value).is_absolute() else base / value
        loaded = load_config(path)
        if key not in loaded.data:
            raise UserError(f"{path}: has no '{key}' key")
        return build(cls, loaded.data[key], key=key, origin=loaded.origin)
    return value


def load_model(spec: EvalModel, device: torch.device) -> tuple[Any, Any]:
    from llmfoundry.data.tokenizer import load_tokenizer

    if spec.model.load_path is not None:
        from llmfoundry.checkpoint.reader import load_model_from_checkpoint

        model, config = load_model_from_checkpoint(spec.model.load_path)
        tok_dir = spec.tokenizer.name if spec.tokenizer else (config.get("tokenizer") or {}).get("name")
    else:
        from transformers import AutoModelForCausalLM

        path = Path(spec.model.pretrained_model_name_or_path)  # type: ignore[arg-type]
        if not (path / "config.json").exists():
            raise UserError(f"{path}: not a local Hugging Face model directory (no config.json)")
        model = AutoModelForCausalLM.from_pretrained(str(path), local_files_only=True,
                                                     trust_remote_code=spec.model.trust_remote_code)
        tok_dir = spec.tokenizer.name if spec.tokenizer else str(path)
    if tok_dir is None:
        raise UserError(f"models.{spec.model_name}: no tokenizer; set tokenizer.name")
    return model.to(device).eval(), load_tokenizer(tok_dir)


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


def evaluate(config_path: str | Path, overrides: list[str] | None = None) -> dict[str, dict[str, float]]:
    """Run the eval yaml; returns {model_name: metrics}."""
    from llmfoundry.config import load_typed
    from llmfoundry.distributed import init_distributed, shutdown
    from llmfoundry.eval.icl import evaluate_icl

    cfg, _ = load_typed(EvalConfig, config_path, overrides)
    base = Path(config_path).parent
    tasks: list[ICLTaskConfig] = load_section(cfg.icl_tasks, "icl_tasks", list[ICLTaskConfig], base)
    gauntlet = load_section(cfg.eval_gauntlet, "eval_gauntlet", GauntletConfig, base) if cfg.eval_gauntlet else None
    sizes = {t.label: len(load_items(t)) for t in tasks}  # validates every task file before any model loads
    dist = init_distributed()
    results: dict[str, dict[str, float]] = {}
    try:
        for spec in cfg.models:
            torch.manual_seed(cfg.seed)
            model, tokenizer = load_model(spec, dist.device)
            limit = model_max_len(model)
            seq = min(cfg.max_seq_len, limit) if limit else cfg.max_seq_len
            if dist.is_main and seq < cfg.max_seq_len:
                print(f"{spec.model_name}: the model accepts {limit} tokens; contexts are truncated to that")
            metrics = evaluate_icl(model, tokenizer, tasks, batch_size=cfg.device_eval_batch_size,
                                   max_seq_len=seq, device=dist.device, precision=cfg.precision)
            if gauntlet is not None:
                metrics.update(gauntlet_scores(gauntlet, metrics, sizes))
            results[spec.model_name] = metrics
        if dist.is_main:
            print(markdown_table(results))
            if cfg.save_folder:
                write_results(results, Path(cfg.save_folder))
    finally:
        shutdown()
    return results


def markdown_table(results: dict[str, dict[str, float]]) -> str:
    names = list(results)
    keys = sorted({k for m in results.values() for k in m})
    lines = ["| metric | " + " | ".join(names) + " |", "| --- |" + " --- |" * len(names)]
    for key in keys:
        lines.append(f"| {key} | " + " | ".join(f"{results[n].get(key, float('nan')):.4f}" for n in names) + " |")
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
