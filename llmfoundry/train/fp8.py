"""`precision: amp_fp8`: torchao float8 training (dynamic tensorwise scaling) of the blocks' linear layers.

The matmuls of every eligible nn.Linear run in float8 (e4m3 forward, e5m2 gradients) through torch._scaled_mm;
everything else runs under bf16 autocast, as amp_bf16. That needs fp8 tensor cores: compute capability 8.9+
(H100/H200/GH200, L4, L40S, B200). Anywhere else it is a one-line error, never a silent bf16 run.
Float8Linear subclasses nn.Linear, so parameter names, checkpoints and exports do not change.
"""

from __future__ import annotations

import importlib.util

import torch
from torch import nn

from llmfoundry.errors import UserError


def check_fp8(device: torch.device) -> None:
    """Raise a UserError unless float8 training can run on `device`."""
    if importlib.util.find_spec("torchao") is None:
        raise UserError("precision: amp_fp8 needs the torchao package (pip install torchao); or use amp_bf16")
    if device.type != "cuda":
        raise UserError(f"precision: amp_fp8 needs an fp8 GPU (H100-class, compute capability 8.9+); this is "
                        f"{device.type}: use amp_bf16 or fp32")
    major, minor = torch.cuda.get_device_capability(device)
    if (major, minor) < (8, 9):
        raise UserError(f"precision: amp_fp8 needs compute capability 8.9+ (H100-class); "
                        f"{torch.cuda.get_device_name(device)} is {major}.{minor}: use amp_bf16")


def _eligible(module: nn.Module, fqn: str) -> bool:
    """fp8 GEMMs need both dimensions divisible by 16; LoRA adapters stay in bf16."""
    return isinstance(module, nn.Linear) and module.in_features % 16 == 0 and module.out_features % 16 == 0 \
        and "lora" not in fqn


def apply_fp8(model: nn.Module) -> int:
    """Swap the eligible linear layers of `model.blocks` for torchao's Float8Linear; returns how many."""
    from torchao.float8 import convert_to_float8_training
    from torchao.float8.float8_linear import Float8Linear

    for block in model.blocks:  # type: ignore[union-attr]
        convert_to_float8_training(block, module_filter_fn=_eligible)
    return sum(isinstance(m, Float8Linear) for m in model.modules())
