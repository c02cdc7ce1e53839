"""LoRA adapters on their own: a few MB to share or keep instead of a whole finetuned model.

`save_adapters` writes `adapters.safetensors` (our parameter names, e.g. `transformer.blocks.0.attn.Wqkv.lora_A`)
and `adapter_config.json` (the `model.peft_config` that made them); `load_adapters` adapts a base model the
same way and loads them, giving exactly the finetuned model (`foundry inference-convert --adapters-only`).
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

from torch import nn

from llmfoundry.config import build
from llmfoundry.errors import UserError
from llmfoundry.io import atomic_directory
from llmfoundry.models.lora import LoraConfig, adapter_state_dict, apply_lora

ADAPTER_WEIGHTS = "adapters.safetensors"
ADAPTER_CONFIG = "adapter_config.json"


def save_adapters(model: nn.Module, cfg: LoraConfig, out: str | Path) -> Path:
    """Write only the adapters (`adapters.safetensors`, our parameter names) and `adapter_config.json`.

    A few MB instead of the whole model: `load_adapters` puts them back on the same base model.
    """
    from safetensors.torch import save_file

    tensors = {k: v.detach().contiguous().cpu() for k, v in adapter_state_dict(model).items()}
    if not tensors:
        raise UserError("the model has no LoRA adapters to save (its config has no model.peft_config)")
    with atomic_directory(out, overwrite=True) as tmp:
        save_file(tensors, str(tmp / ADAPTER_WEIGHTS))
        (tmp / ADAPTER_CONFIG).write_text(json.dumps(asdict(cfg), indent=2) + "\n")
    return Path(out)


def load_adapters(model: nn.Module, directory: str | Path) -> LoraConfig:
    """Adapt `model` as `save_adapters` recorded and load the adapter weights (strict: every one must fit)."""
    from safetensors.torch import load_file

    path = Path(directory)
    if not (path / ADAPTER_CONFIG).exists() or not (path / ADAPTER_WEIGHTS).exists():
        raise UserError(f"{path}: not an adapter directory (expected {ADAPTER_CONFIG} and {ADAPTER_WEIGHTS})")
    cfg = build(LoraConfig, json.loads((path / ADAPTER_CONFIG).read_text()), key="adapter_config",
                origin=lambda _: str(path / ADAPTER_CONFIG))
    apply_lora(model, cfg)
    tensors = load_file(str(path / ADAPTER_WEIGHTS))
    mine = adapter_state_dict(model)
    wrong = sorted(set(tensors) ^ set(mine)) or [k for k in mine if mine[k].shape != tensors[k].shape]
    if wrong:
        raise UserError(f"{path}: adapters do not fit this model (first mismatch: {wrong[0]})")
    model.load_state_dict(tensors, strict=False)
    return cfg
