"""LayerNorm and RMSNorm, each with an optional low-precision mode.

Low precision (MPT's `low_precision_layernorm`) runs the norm in the autocast dtype instead of letting
autocast upcast it to fp32: a few percent faster with bf16, and the same math in fp32.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

NormType = Literal["layernorm", "low_precision_layernorm", "rmsnorm", "low_precision_rmsnorm"]


def _autocast_dtype(x: torch.Tensor) -> torch.dtype | None:
    if torch.is_autocast_enabled(x.device.type):
        return torch.get_autocast_dtype(x.device.type)
    return None


class Norm(nn.Module):
    """LayerNorm (with or without bias) or RMSNorm over the last dimension."""

    def __init__(self, dim: int, kind: NormType = "layernorm", eps: float = 1e-5, bias: bool = True) -> None:
        super().__init__()
        self.rms = kind.endswith("rmsnorm")
        self.low_precision = kind.startswith("low_precision")
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))
        self.bias = nn.Parameter(torch.zeros(dim)) if bias and not self.rms else None

    def reset_parameters(self) -> None:
        nn.init.ones_(self.weight)
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = _autocast_dtype(x) if self.low_precision else None
        if dtype is not None:
            with torch.autocast(x.device.type, enabled=False):
                return self._norm(x.to(dtype), self.weight.to(dtype), None if self.bias is None else self.bias.to(dtype))
        return self._norm(x, self.weight, self.bias)

    def _norm(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        if self.rms:
            # fp32 statistics, as transformers' LlamaRMSNorm does, so exports match exactly
            x32 = x.float()
            normed = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
            return weight * normed.to(x.dtype)
        return F.layer_norm(x, (x.shape[-1],), weight, bias, self.eps)
