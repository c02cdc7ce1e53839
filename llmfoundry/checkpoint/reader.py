"""Read a model back from a run folder or one checkpoint folder, in a single process.

A checkpoint folder is a torch.distributed.checkpoint (DCP) directory holding `{"model": ..., ...}` plus the
run's resolved `config.yaml`; a run folder names its newest complete checkpoint in `checkpoints/latest`.
Sharded checkpoints written by any number of processes load here without a process group.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import yaml
from torch import nn

from llmfoundry.errors import UserError

LATEST = "latest"


def resolve_checkpoint(src: str | Path) -> Path:
    """The checkpoint `src` means: itself (a folder, or a Composer `.pt`), or what a run's checkpoints/latest names."""
    from llmfoundry.checkpoint.composer import format_load_path, is_composer_checkpoint

    path = Path(format_load_path(str(src)))
    if not path.exists():
        raise UserError(f"{src}: no such run or checkpoint folder")
    if (path / ".metadata").exists() or (path.is_file() and is_composer_checkpoint(path)):
        return path
    latest = path / "checkpoints" / LATEST
    if latest.exists():
        target = path / "checkpoints" / latest.read_text().strip()
        if not (target / ".metadata").exists():
            raise UserError(f"{latest}: names {target.name}, which is missing or incomplete")
        return target
    if (path / "checkpoints").is_dir():
        raise UserError(f"{src}: run folder has no complete checkpoint yet (no checkpoints/{LATEST})")
    raise UserError(f"{src}: not a checkpoint folder (no .metadata) nor a run folder (no checkpoints/{LATEST})")


def read_config(checkpoint: Path) -> dict[str, Any]:
    """The resolved config saved with a checkpoint (inside it, or in its run folder)."""
    for candidate in (checkpoint / "config.yaml", checkpoint.parent.parent / "config.yaml"):
        if candidate.exists():
            data = yaml.safe_load(candidate.read_text())
            if not isinstance(data, dict) or "model" not in data:
                raise UserError(f"{candidate}: has no 'model' section")
            return data
    raise UserError(f"{checkpoint}: no config.yaml beside the checkpoint")


def load_model_from_checkpoint(src: str | Path, *, merge_lora: bool = True) -> tuple[nn.Module, dict[str, Any]]:
    """Build the model the checkpoint's config describes and load its weights (CPU, fp32; LoRA merged unless asked)."""
    import torch.distributed.checkpoint as dcp

    from llmfoundry.checkpoint.composer import is_composer_checkpoint, load_composer_model
    from llmfoundry.config import build
    from llmfoundry.models import ModelConfig, build_model

    checkpoint = resolve_checkpoint(src)
    if is_composer_checkpoint(checkpoint):  # a Composer / LLM Foundry run's checkpoint
        return load_composer_model(checkpoint)
    config = read_config(checkpoint)
    args = build(ModelConfig, config["model"], key="model", origin=lambda _: str(checkpoint / "config.yaml"))
    model = build_model(args, device="meta")
    model.to_empty(device="cpu")
    peft = getattr(args, "peft_config", None)
    if peft is not None:  # a LoRA run's checkpoint holds the base weights and the adapters under these names
        from llmfoundry.models.lora import apply_lora

        apply_lora(model, peft)
    state = model.state_dict()
    try:
        with warnings.catch_warnings():  # "assuming the intent is to load in a single process": it is
            warnings.simplefilter("ignore", UserWarning)
            dcp.load({"model": state}, checkpoint_id=str(checkpoint))
    except Exception as err:  # DCP raises several types for a damaged or mismatched checkpoint
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UserError(f"{checkpoint}: cannot load the model weights ({first})") from None
    model.load_state_dict(state)
    if peft is not None and merge_lora:  # exports and evaluation get one plain model with the adapters folded in
        from llmfoundry.models.lora import merge_lora as merge

        merge(model)
    return model.eval(), config


def save_model_checkpoint(model: nn.Module, config: dict[str, Any], folder: str | Path) -> Path:
    """Write a weights-only checkpoint folder in the same format the trainer writes (model + config)."""
    import torch.distributed.checkpoint as dcp

    path = Path(folder)
    path.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        dcp.save({"model": {k: v.detach() for k, v in model.state_dict().items()}}, checkpoint_id=str(path))
    (path / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return path


__all__ = ["load_model_from_checkpoint", "resolve_checkpoint", "save_model_checkpoint"]
