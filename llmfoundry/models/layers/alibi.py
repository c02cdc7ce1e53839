"""ALiBi slopes (Press et al.), computed exactly as MPT and its transformers port do.

For a head count that is not a power of two, MPT takes the slopes of the next power of two and interleaves
them (odd positions first); matching that ordering is what makes an exported model bit-compatible.
The slopes are cached per (heads, bias_max, device): a forward reuses them instead of rebuilding them.
"""

from __future__ import annotations

import math

import torch

from llmfoundry.models.layers.cache import static_cache


@static_cache()
def alibi_slopes(n_heads: int, bias_max: float = 8.0, device: torch.device | str | None = None) -> torch.Tensor:
    """One negative-distance slope per head, float32 (cached: read-only)."""
    n_pow2 = 2 ** math.ceil(math.log2(n_heads))
    exponents = torch.arange(1, n_pow2 + 1, dtype=torch.float32, device=device) * (bias_max / n_pow2)
    slopes = 1.0 / torch.pow(2.0, exponents)
    if n_pow2 != n_heads:
        slopes = torch.cat([slopes[1::2], slopes[::2]])[:n_heads]
    return slopes
