"""Parameter counting shared by every family (model sizes, MFU)."""

from __future__ import annotations

from torch import nn


def count_params(model: nn.Module, exclude_embeddings: bool = False) -> int:
    """All parameters, or all but embedding tables (lookups cost no FLOPs)."""
    total = sum(p.numel() for p in model.parameters())
    if exclude_embeddings:
        total -= sum(m.weight.numel() for m in model.modules() if isinstance(m, nn.Embedding))
    return total
