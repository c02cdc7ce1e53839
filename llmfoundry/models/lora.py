"""LoRA (Hu et al. 2021): train a low-rank update B·A of chosen linear layers while their weights stay frozen.

`LoraLinear` subclasses nn.Linear and keeps the base layer's `weight`/`bias` under the same names, so a
pretrained checkpoint loads into an adapted model unchanged and exports see the usual names; only `lora_A`
[r, in] and `lora_B` [out, r] are added. B starts at zero, so an adapted model computes exactly what its base
does until training moves B. `merge_lora` folds `scaling * B @ A` into the weights and puts plain nn.Linear
layers back, which is what inference-convert exports: the merged model has the base architecture and needs no
LoRA code to run.

Training does not wrap models with PyPI `peft`: it renames the base parameters (`base_layer.weight`), which
would change checkpoint, FSDP and export names, and it would be a second code path beside our own families.
Adapters are written in peft's format instead (export/adapters.py), and the tests check that peft, loading
them onto the transformers export, computes what this module computes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from llmfoundry.errors import UserError


@dataclass
class LoraConfig:
    r: int = 8
    """Rank of the update B·A."""
    lora_alpha: float = 16.0
    """Scale: the update is multiplied by lora_alpha / r (so changing r keeps the update's magnitude)."""
    lora_dropout: float = 0.0
    """Dropout on the adapter's input (the frozen path sees the undropped input)."""
    target_modules: list[str] = field(default_factory=lambda: ["Wqkv"])
    """Linear layers to adapt, by name: `Wqkv` matches every `...attn.Wqkv`; a dotted suffix like
    `attn.out_proj` or a full name also works. MPT/GPT: Wqkv, out_proj, up_proj, down_proj, gate_proj;
    Llama-style hf_causal_lm: q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj."""
    peft_type: Literal["LORA"] = "LORA"
    """LLM Foundry / peft compatibility: only LoRA is supported."""
    task_type: Literal["CAUSAL_LM", "SEQ_CLS"] | None = None
    """LLM Foundry / peft compatibility; the model family already fixes the task."""

    def __post_init__(self) -> None:
        if self.r < 1:
            raise UserError(f"r: must be at least 1, got {self.r}")
        if not 0 <= self.lora_dropout < 1:
            raise UserError(f"lora_dropout: must be in [0, 1), got {self.lora_dropout}")
        if not self.target_modules:
            raise UserError("target_modules: name at least one linear layer to adapt (e.g. [Wqkv])")

    @property
    def scaling(self) -> float:
        return self.lora_alpha / self.r


class LoraLinear(nn.Linear):
    """A frozen nn.Linear plus a trainable low-rank update: y = x W^T + b + scaling * dropout(x) A^T B^T."""

    def __init__(self, base: nn.Linear, r: int, scaling: float, dropout: float) -> None:
        nn.Module.__init__(self)
        self.in_features, self.out_features = base.in_features, base.out_features
        self.weight = base.weight
        self.bias = base.bias
        self.weight.requires_grad_(False)
        if self.bias is not None:
            self.bias.requires_grad_(False)
        kw = {"device": base.weight.device, "dtype": base.weight.dtype}
        self.lora_A = nn.Parameter(torch.empty(r, base.in_features, **kw))
        self.lora_B = nn.Parameter(torch.empty(base.out_features, r, **kw))
        self.scaling = scaling
        self.lora_dropout = nn.Dropout(dropout)
        for attr in ("_is_residual",):  # init markers some families put on their linears
            if hasattr(base, attr):
                setattr(self, attr, getattr(base, attr))
        self.reset_adapter()

    def reset_adapter(self) -> None:
        """A like nn.Linear's default init, B = 0: the adapted layer starts equal to its base."""
        with torch.no_grad():
            nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
            nn.init.zeros_(self.lora_B)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.linear(x, self.weight, self.bias)
        update = F.linear(F.linear(self.lora_dropout(x), self.lora_A), self.lora_B)
        return out + update * self.scaling

    def merged(self) -> nn.Linear:
        """A plain nn.Linear computing the same function (weights W + scaling * B @ A)."""
        layer = nn.Linear(self.in_features, self.out_features, bias=self.bias is not None,
                          device=self.weight.device, dtype=self.weight.dtype)
        with torch.no_grad():
            work = torch.promote_types(self.weight.dtype, torch.float32)  # bf16 weights merge in fp32
            delta = (self.lora_B.to(work) @ self.lora_A.to(work)) * self.scaling
            layer.weight.copy_((self.weight.to(work) + delta).to(self.weight.dtype))
            if self.bias is not None:
                layer.bias.copy_(self.bias)
        for attr in ("_is_residual",):
            if hasattr(self, attr):
                setattr(layer, attr, getattr(self, attr))
        return layer

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, r={self.lora_A.shape[0]}, scaling={self.scaling:g}"


def _matches(name: str, targets: list[str]) -> bool:
    return any(name == t or name.endswith("." + t) for t in targets)


def apply_lora(model: nn.Module, cfg: LoraConfig, where: str = "model.peft_config") -> list[str]:
    """Freeze every parameter of `model` and put adapters on the target linears; returns the adapted names.

    Call it after the base weights are initialized or loaded (adapters are initialized here) and before
    sharding or building the optimizer, which then sees only the adapters as trainable.
    """
    targets = [(name, m) for name, m in model.named_modules() if name and _matches(name, cfg.target_modules)]
    if not targets:
        linears = sorted({name.rsplit(".", 1)[-1] for name, m in model.named_modules() if isinstance(m, nn.Linear)})
        raise UserError(f"{where}.target_modules: {cfg.target_modules} match no layer of this model; "
                        f"its linear layers are named {', '.join(linears) or '(none)'}")
    wrong = [f"{name} ({type(m).__name__})" for name, m in targets if not isinstance(m, nn.Linear)]
    if wrong:
        raise UserError(f"{where}.target_modules: LoRA adapts nn.Linear layers only; {wrong[0]} is not one")
    for p in model.parameters():
        p.requires_grad_(False)
    for name, module in targets:
        if isinstance(module, LoraLinear):
            continue
        _replace(model, name, LoraLinear(module, cfg.r, cfg.scaling, cfg.lora_dropout))
    return [name for name, _ in targets]


def merge_lora(model: nn.Module) -> nn.Module:
    """Fold every adapter into its base weight in place (plain nn.Linear again); returns the model."""
    for name, module in list(model.named_modules()):
        if isinstance(module, LoraLinear):
            _replace(model, name, module.merged())
    return model


def adapter_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """Only the adapter tensors (`...lora_A`, `...lora_B`); export/adapters.py saves them on their own."""
    return {k: v for k, v in model.state_dict().items() if is_adapter_key(k)}


def is_adapter_key(key: str) -> bool:
    return key.endswith((".lora_A", ".lora_B"))


def trainable_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def _replace(model: nn.Module, dotted: str, new: nn.Module) -> None:
    parent_name, _, child = dotted.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)
