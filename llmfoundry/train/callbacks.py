"""LLM Foundry / Composer callbacks that act on a run: `hf_checkpointer` and `early_stopper`.

They read the trainer's state and never change its internals; the loop calls `Callbacks.after_step` once per
step, after evaluation and before the checkpoint, and stops (with a final checkpoint) when it returns True.
The monitors (speed, lr, memory, runtime) are the loop's own metrics; `nan_monitor` is always on (a NaN
loss stops the run); `kill_loss_spike` maps to `spike_guard` in config/foundry_compat.py.
"""

from __future__ import annotations

import math
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from llmfoundry.config.duration import Duration
from llmfoundry.config.schema import EarlyStopperConfig, HFCheckpointerConfig, TrainConfig
from llmfoundry.errors import UserError

DTYPES = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16"}
FOUNDRY_METRICS = {"LanguageCrossEntropy": "loss/val", "LanguagePerplexity": "perplexity/val"}


class Callbacks:
    """The run's acting callbacks; `after_step` is the loop's one hook."""

    def __init__(self, cfg: TrainConfig, steps_of: Any) -> None:
        cb = cfg.callbacks
        self.hf = HFCheckpointer(cb.hf_checkpointer, cfg, steps_of) if cb.hf_checkpointer else None
        self.stopper = EarlyStopper(cb.early_stopper, steps_of) if cb.early_stopper else None

    def after_step(self, trainer: Any, step: int, is_last: bool, evaluated: dict[str, float] | None) -> bool:
        """Run the callbacks for `step` (`evaluated`: this step's eval metrics, if it evaluated); True = stop."""
        stop = self.stopper is not None and evaluated is not None and self.stopper.should_stop(step, evaluated)
        if self.hf is not None and (self.hf.due(step) or is_last or stop):
            self.hf.export(trainer, step)
        return stop


class HFCheckpointer:
    """Foundry's HuggingFaceCheckpointer: `{save_folder}/huggingface/ba{step}` exports while training."""

    def __init__(self, cfg: HFCheckpointerConfig, train: TrainConfig, steps_of: Any) -> None:
        self.cfg, self.train = cfg, train
        self.every = max(steps_of(cfg.save_interval), 1)
        self.folder = cfg.save_folder.replace("{run_name}", train.run_name)

    def due(self, step: int) -> bool:
        return step % self.every == 0

    def export(self, trainer: Any, step: int) -> None:
        """Gather the full weights (a collective: every rank calls this), then rank 0 writes the export."""
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        full = get_model_state_dict(trainer.model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        if not trainer.dist.is_main:
            return
        name = self.cfg.huggingface_folder_name.replace("{batch}", str(step))
        remote = self.folder.startswith("s3://")
        target = f"{self.folder.rstrip('/')}/huggingface/{name}"
        with tempfile.TemporaryDirectory(prefix="hf-export-") as tmp:
            local = Path(tmp) / name if remote else Path(target)
            _write_export(_unsharded_copy(self.train, full), local, self.train, DTYPES[self.cfg.precision],
                          overwrite=self.cfg.overwrite)
            if remote:
                _upload(local, target)
        if trainer.log is not None:
            trainer.log.message(f"step {step}: Hugging Face export in {target}")


def _unsharded_copy(cfg: TrainConfig, full: dict[str, torch.Tensor]) -> nn.Module:
    """A plain CPU model of the run's architecture holding `full` (LoRA adapters merged in)."""
    from llmfoundry.models import build_model

    model = build_model(cfg.model, device="meta")
    model.to_empty(device="cpu")
    peft = getattr(cfg.model, "peft_config", None)
    if peft is not None:
        from llmfoundry.models.lora import apply_lora

        apply_lora(model, peft)
    model.load_state_dict(full)
    if peft is not None:
        from llmfoundry.models.lora import merge_lora

        merge_lora(model)
    return model.eval()


def _write_export(model: nn.Module, out: Path, cfg: TrainConfig, dtype: str, *, overwrite: bool) -> None:
    from llmfoundry.models.hf import HFCausalLM

    if not isinstance(model, HFCausalLM):
        from llmfoundry.export.hf import export_model

        export_model(model, out, tokenizer_dir=cfg.tokenizer.name, dtype=dtype, overwrite=overwrite)
        return
    from llmfoundry.data.tokenizer import load_tokenizer
    from llmfoundry.export.hf import DTYPES as TORCH_DTYPES
    from llmfoundry.io import atomic_directory

    with atomic_directory(out, overwrite=overwrite) as tmp:  # the transformers class itself, as Foundry exports
        model.model.to(TORCH_DTYPES[dtype]).save_pretrained(str(tmp))
        load_tokenizer(cfg.tokenizer.name).save_pretrained(str(tmp))


def _upload(local: Path, remote: str) -> None:
    """Every file of the export to `remote` (s3://; S3_ENDPOINT_URL selects an S3-compatible store), config last
    so a reader that finds config.json finds the weights."""
    from streaming.base.storage.upload import CloudUploader

    uploader = CloudUploader.get(out=(str(local), remote), keep_local=True, exist_ok=True)
    files = sorted((p for p in local.rglob("*") if p.is_file()), key=lambda p: p.name == "config.json")
    for path in files:
        uploader.upload_file(str(path.relative_to(local)))


@dataclass
class EarlyStopper:
    """Composer's EarlyStopper: stop after `patience` evaluations (or that much time) without improvement."""

    cfg: EarlyStopperConfig
    steps_of: Any
    best: float | None = None
    best_step: int = 0
    stale: int = 0

    def metric(self) -> str:
        name = FOUNDRY_METRICS.get(self.cfg.monitor, self.cfg.monitor)
        label = self.cfg.dataloader_label
        return name if label == "eval" else f"{name}/{label}"  # several eval_loaders log loss/val/<label>

    def should_stop(self, step: int, metrics: dict[str, float]) -> bool:
        key = self.metric()
        if key not in metrics:
            raise UserError(f"callbacks.early_stopper.monitor: evaluation logs no {key!r} "
                            f"(it logs {', '.join(sorted(metrics))})")
        value = metrics[key]
        lower = self.cfg.comp in ("lt", "lower") or (self.cfg.comp is None and ("loss" in key or "perplexity" in key))
        improved = self.best is None or (value < self.best - self.cfg.min_delta if lower
                                         else value > self.best + self.cfg.min_delta)
        if improved and math.isfinite(value):
            self.best, self.best_step, self.stale = value, step, 0
            return False
        self.stale += 1
        patience = self.cfg.patience
        if isinstance(patience, Duration):
            return step - self.best_step >= self.steps_of(patience)
        return self.stale >= patience

