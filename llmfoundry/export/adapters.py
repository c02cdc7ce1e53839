"""LoRA adapters on their own, in PyPI `peft`'s format: a few MB to share instead of a whole finetuned model.

`save_adapters` writes `adapter_model.safetensors` + `adapter_config.json` keyed by the module names of the
transformers class the base model exports to (`foundry inference-convert` without `--adapters-only`), so
`PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(BASE_EXPORT), ADAPTERS)` gives the finetuned
model with peft alone. `load_adapters` reads the same directory back onto our model. Our fused `Wqkv` becomes
peft's separate q/k/v adapters exactly: the shared A is repeated and B's rows are split like the weight's.
GPT-2's Conv1D layers store weights transposed, which peft's `fan_in_fan_out` flag covers; A and B keep their
shapes. Models that export with our own modeling code have no peft-loadable base; for them, export merged.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch
from torch import nn

from llmfoundry.errors import UserError
from llmfoundry.io import atomic_directory
from llmfoundry.models.lora import LoraConfig, LoraLinear, apply_lora

ADAPTER_WEIGHTS = "adapter_model.safetensors"
ADAPTER_CONFIG = "adapter_config.json"
PREFIX = "base_model.model."  # peft's names for the wrapped transformers model


def save_adapters(model: nn.Module, cfg: LoraConfig, out: str | Path) -> Path:
    """Write `model`'s adapters as a peft LoRA directory for the transformers export of its base model."""
    from safetensors.torch import save_file

    adapted = {name: m for name, m in model.named_modules() if isinstance(m, LoraLinear)}
    if not adapted:
        raise UserError("the model has no LoRA adapters to save (its config has no model.peft_config)")
    theirs, target = _their_modules(model, list(adapted))
    q_rows = getattr(getattr(model, "args", None), "d_model", None)
    tensors: dict[str, torch.Tensor] = {}
    for name, module in adapted.items():
        kind, names = theirs[name]
        a, b = module.lora_A.detach().cpu(), module.lora_B.detach().cpu()
        if kind == "qkv":
            kv = (b.shape[0] - q_rows) // 2
            parts = b.split([q_rows, kv, kv], dim=0)
        else:
            parts = (b,)
        for their, part in zip(names, parts):
            tensors[f"{PREFIX}{their}.lora_A.weight"] = a.clone()  # q, k, v each own a copy
            tensors[f"{PREFIX}{their}.lora_B.weight"] = part.contiguous()
    modules = sorted(n for kind_names in theirs.values() for n in kind_names[1])
    config = {
        "peft_type": "LORA", "task_type": "CAUSAL_LM" if target != "bert" else None, "r": cfg.r,
        "lora_alpha": cfg.lora_alpha, "lora_dropout": cfg.lora_dropout, "bias": "none",
        "fan_in_fan_out": target == "gpt2", "inference_mode": True, "base_model_name_or_path": None,
        # exact module names (peft full-matches a string): a leaf name alone could catch layers we left alone
        "target_modules": "|".join(re.escape(n) for n in modules),
    }
    with atomic_directory(out, overwrite=True) as tmp:
        save_file(tensors, str(tmp / ADAPTER_WEIGHTS), metadata={"format": "pt"})
        (tmp / ADAPTER_CONFIG).write_text(json.dumps(config, indent=2) + "\n")
    return Path(out)


def load_adapters(model: nn.Module, directory: str | Path) -> LoraConfig:
    """Adapt `model` with a peft LoRA directory written for its transformers export (every tensor must fit)."""
    from safetensors.torch import load_file

    path = Path(directory)
    if not (path / ADAPTER_CONFIG).exists() or not (path / ADAPTER_WEIGHTS).exists():
        raise UserError(f"{path}: not an adapter directory (expected {ADAPTER_CONFIG} and {ADAPTER_WEIGHTS})")
    saved = json.loads((path / ADAPTER_CONFIG).read_text())
    if saved.get("peft_type") != "LORA":
        raise UserError(f"{path / ADAPTER_CONFIG}: peft_type {saved.get('peft_type')!r}; only LORA adapters load")
    tensors = load_file(str(path / ADAPTER_WEIGHTS))
    linears = [name for name, m in model.named_modules() if isinstance(m, nn.Linear)]
    theirs, _ = _their_modules(model, linears, strict=False)
    present = {k.removeprefix(PREFIX).removesuffix(".lora_A.weight") for k in tensors if k.endswith(".lora_A.weight")}
    ours = [name for name, (_, names) in theirs.items() if present.intersection(names)]
    missing = [n for name in ours for n in theirs[name][1] if n not in present]
    if missing or len(ours) == 0:
        raise UserError(f"{path}: adapters do not fit this model (first unmatched module: "
                        f"{missing[0] if missing else sorted(present)[0] if present else '(none)'})")
    cfg = LoraConfig(r=int(saved["r"]), lora_alpha=float(saved["lora_alpha"]),
                     lora_dropout=float(saved.get("lora_dropout") or 0.0), target_modules=ours)
    apply_lora(model, cfg, where=str(path / ADAPTER_CONFIG))
    state: dict[str, torch.Tensor] = {}
    for name in ours:
        names = theirs[name][1]
        a = [tensors[f"{PREFIX}{n}.lora_A.weight"] for n in names]
        if any(not torch.equal(a[0], other) for other in a[1:]):
            raise UserError(f"{path}: {', '.join(names)} have different lora_A; the fused {name} needs one "
                            "shared A (adapters trained on separate q/k/v layers do not fold into it)")
        state[f"{name}.lora_A"] = a[0]
        state[f"{name}.lora_B"] = torch.cat([tensors[f"{PREFIX}{n}.lora_B.weight"] for n in names], dim=0)
    mine = {k: v for k, v in model.state_dict().items() if k in state}
    wrong = [k for k in state if state[k].shape != mine[k].shape]
    if wrong:
        raise UserError(f"{path}: {wrong[0]} has shape {tuple(state[wrong[0]].shape)}, this model needs "
                        f"{tuple(mine[wrong[0]].shape)}")
    model.load_state_dict(state, strict=False)
    return cfg


def _their_modules(model: nn.Module, ours: list[str], strict: bool = True) -> tuple[dict[str, tuple[str, list[str]]], str]:
    """Our module names -> (kind, module names in the transformers class the model exports to)."""
    from llmfoundry.export.hf import native_target
    from llmfoundry.export.names import mapping
    from llmfoundry.models.hf import HFCausalLM

    if isinstance(model, HFCausalLM):  # its transformers model sits at `.model`
        return {name: ("same", [name.removeprefix("model.")]) for name in ours}, "hf"
    target, reason = native_target(model)
    if target is None:
        raise UserError(f"LoRA adapters in peft's format need a transformers class for the base model, and this "
                        f"model has none ({reason}); export the merged model instead (without --adapters-only)")
    out: dict[str, tuple[str, list[str]]] = {}
    for name in ours:
        try:
            kind, names = mapping([f"{name}.weight"], target)[f"{name}.weight"]
        except KeyError:
            if strict:
                raise UserError(f"LoRA adapter on {name}: no {target} module to carry it") from None
            continue
        out[name] = (kind, [n.removesuffix(".weight") for n in names])
    return out, target
