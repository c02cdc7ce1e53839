"""Rotary position embeddings in the Hugging Face Llama convention (rotate the two halves of each head).

Using the same convention as `LlamaForCausalLM` is what lets a RoPE MPT export to it with no weight permutes.
The cos/sin tables are cached per (length, head_dim, theta, device).
"""

from __future__ import annotations

import torch

from llmfoundry.models.layers.cache import static_cache


@static_cache()
def rotary_cos_sin(seq_len: int, head_dim: int, theta: float, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin tables of shape [seq_len, head_dim] (float32; cached: read-only)."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.int64, device=device).float() / head_dim))
    positions = torch.arange(seq_len, dtype=torch.float32, device=device)
    freqs = torch.outer(positions, inv_freq)
    emb = torch.cat([freqs, freqs], dim=-1)
    return emb.cos(), emb.sin()


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate x [B, H, T, D] by position; computed in x's dtype like the reference implementation."""
    half = x.shape[-1] // 2
    rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
    return x * cos.to(x.dtype) + rotated * sin.to(x.dtype)
