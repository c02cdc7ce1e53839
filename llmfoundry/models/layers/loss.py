"""Cross-entropy over the output projection, in chunks of tokens, with its gradient computed on the way.

Full fp32 logits for a batch are large (8 x 2048 tokens x 50k vocab x 4 bytes = 3.3 GB). Here each chunk
of tokens is projected and scored, and while its logits exist the gradients with respect to the hidden
states and the projection weight are computed too (softmax - one-hot is known in forward). So at most one
chunk's logits exist at a time and nothing is recomputed in backward: the same FLOPs as the plain loss with
a fraction of its memory. Returns the SUM over non-ignored positions: the trainer divides by the token
count of the whole global batch.
"""

from __future__ import annotations

from typing import Any

import torch

IGNORE_INDEX = -100


def _chunk(hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, labels: torch.Tensor,
           logit_scale: float | None, z_loss: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Loss sum of one chunk, plus what its gradient needs: logits (fp32), logsumexp, valid mask."""
    logits = torch.matmul(hidden, weight.t()).float()
    if bias is not None:
        logits = logits + bias.float()
    if logit_scale is not None:
        logits = logits * logit_scale
    lse = torch.logsumexp(logits, dim=-1)
    valid = labels != IGNORE_INDEX
    target = logits.gather(1, labels.clamp(min=0)[:, None]).squeeze(1)
    loss = ((lse - target) * valid).sum()
    if z_loss:
        loss = loss + z_loss * (lse.pow(2) * valid).sum()
    return loss, logits, lse, valid


class _LinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, labels: torch.Tensor,
                logit_scale: float | None, z_loss: float, chunk_size: int) -> torch.Tensor:
        total = torch.zeros((), dtype=torch.float32, device=hidden.device)
        grad_hidden = torch.empty_like(hidden) if ctx.needs_input_grad[0] else None
        grad_weight = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device) \
            if ctx.needs_input_grad[1] else None
        grad_bias = torch.zeros(bias.shape, dtype=torch.float32, device=bias.device) \
            if bias is not None and ctx.needs_input_grad[2] else None
        for start in range(0, hidden.shape[0], chunk_size):
            h, y = hidden[start : start + chunk_size], labels[start : start + chunk_size]
            loss, logits, lse, valid = _chunk(h, weight, bias, y, logit_scale, z_loss)
            total += loss
            # d loss / d logits = softmax * (1 + 2 z lse) - onehot(target), on valid rows only
            grad = logits.sub_(lse[:, None]).exp_()
            if z_loss:
                grad.mul_(1 + 2 * z_loss * lse[:, None])
            grad[torch.arange(grad.shape[0], device=grad.device), y.clamp(min=0)] -= 1
            grad.mul_(valid[:, None])
            if logit_scale is not None:
                grad.mul_(logit_scale)
            if grad_bias is not None:
                grad_bias += grad.sum(0)
            grad = grad.to(h.dtype)
            if grad_hidden is not None:
                grad_hidden[start : start + chunk_size] = torch.matmul(grad, weight.to(grad.dtype))
            if grad_weight is not None:
                grad_weight += torch.matmul(grad.t(), h.to(grad.dtype)).float()
        ctx.save_for_backward(grad_hidden, grad_weight, grad_bias)
        ctx.dtypes = (weight.dtype, None if bias is None else bias.dtype)
        return total

    @staticmethod
    def backward(ctx: Any, grad_output: torch.Tensor) -> tuple[Any, ...]:
        grad_hidden, grad_weight, grad_bias = ctx.saved_tensors
        gh = grad_hidden * grad_output if grad_hidden is not None else None
        gw = (grad_weight * grad_output).to(ctx.dtypes[0]) if grad_weight is not None else None
        gb = (grad_bias * grad_output).to(ctx.dtypes[1]) if grad_bias is not None else None
        return gh, gw, gb, None, None, None, None


def chunked_cross_entropy(hidden: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor, *,
                          bias: torch.Tensor | None = None, logit_scale: float | None = None, z_loss: float = 0.0,
                          chunk_size: int = 4096) -> torch.Tensor:
    """Sum of CE (+ z_loss * logsumexp^2) of `hidden` [N, d] @ weight [V, d]^T (+ bias) against labels [N]."""
    hidden = hidden.reshape(-1, hidden.shape[-1])
    labels = labels.reshape(-1)
    grads = hidden.requires_grad or weight.requires_grad or (bias is not None and bias.requires_grad)
    if torch.is_grad_enabled() and grads:
        return _LinearCrossEntropy.apply(hidden, weight, bias, labels, logit_scale, z_loss, chunk_size)
    total = torch.zeros((), dtype=torch.float32, device=hidden.device)
    for start in range(0, hidden.shape[0], chunk_size):
        total += _chunk(hidden[start : start + chunk_size], weight, bias, labels[start : start + chunk_size],
                        logit_scale, z_loss)[0]
    return total
