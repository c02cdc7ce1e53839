"""Cross-entropy over the output projection, in chunks of tokens.

Full fp32 logits for a batch are large (8 x 2048 tokens x 50k vocab x 4 bytes = 3.3 GB). Here each chunk
of tokens is projected, scored and reduced, and under autograd each chunk is recomputed in backward
(activation checkpointing), so at most one chunk's logits exist at a time. Returns the SUM over
non-ignored positions: the trainer divides by the token count of the whole global batch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

IGNORE_INDEX = -100


def _chunk_loss(hidden: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor, logit_scale: float | None,
                z_loss: float) -> torch.Tensor:
    logits = F.linear(hidden, weight).float()
    if logit_scale is not None:
        logits = logits * logit_scale
    loss = F.cross_entropy(logits, labels, ignore_index=IGNORE_INDEX, reduction="sum")
    if z_loss:
        lse = torch.logsumexp(logits, dim=-1)
        loss = loss + z_loss * (lse.pow(2) * (labels != IGNORE_INDEX)).sum()
    return loss


def chunked_cross_entropy(hidden: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor, *,
                          logit_scale: float | None = None, z_loss: float = 0.0,
                          chunk_size: int = 4096) -> torch.Tensor:
    """Sum of CE (+ z_loss * logsumexp^2) of `hidden` [N, d] @ weight [V, d]^T against labels [N]."""
    hidden = hidden.reshape(-1, hidden.shape[-1])
    labels = labels.reshape(-1)
    total = hidden.new_zeros((), dtype=torch.float32)
    recompute = torch.is_grad_enabled() and (hidden.requires_grad or weight.requires_grad)
    for start in range(0, hidden.shape[0], chunk_size):
        args = (hidden[start : start + chunk_size], weight, labels[start : start + chunk_size], logit_scale, z_loss)
        if recompute:
            total = total + checkpoint(_chunk_loss, *args, use_reentrant=False)
        else:
            total = total + _chunk_loss(*args)
    return total
