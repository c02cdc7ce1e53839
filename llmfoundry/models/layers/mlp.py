"""Feed-forward blocks: plain (`up -> act -> down`) or gated (`down(act(gate(x)) * up(x))`: GeGLU, SwiGLU)."""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

Activation = Literal["gelu", "gelu_tanh", "silu", "relu"]


def activate(x: torch.Tensor, name: Activation) -> torch.Tensor:
    if name == "gelu":
        return F.gelu(x)
    if name == "gelu_tanh":  # GPT-2's "gelu_new"
        return F.gelu(x, approximate="tanh")
    if name == "silu":
        return F.silu(x)
    return F.relu(x)


class MLP(nn.Module):
    """The transformer feed-forward; parameter names follow MPT/Llama (up_proj, gate_proj, down_proj)."""

    def __init__(self, d_model: int, hidden: int, activation: Activation, *, gated: bool, bias: bool) -> None:
        super().__init__()
        self.activation = activation
        self.gate_proj = nn.Linear(d_model, hidden, bias=bias) if gated else None
        self.up_proj = nn.Linear(d_model, hidden, bias=bias)
        self.down_proj = nn.Linear(hidden, d_model, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.gate_proj is None:
            return self.down_proj(activate(self.up_proj(x), self.activation))
        return self.down_proj(activate(self.gate_proj(x), self.activation) * self.up_proj(x))
