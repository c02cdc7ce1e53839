"""Attention over packed (unpadded) tokens: MosaicBERT's unpadding, end to end.

The real tokens of a padded [B, T] batch are gathered once into [N, ...] rows (`Packed`), every layer runs
on them, and nothing is re-padded in between. Attention keeps each batch row to itself:
- `flash`: flash-attn's varlen kernel over cu_seqlens (CUDA);
- `flex`: one packed [1, H, N, D] sequence with a same-row BlockMask (flex.py) and ALiBi as a score_mod;
- `sdpa` / `torch`: one call per batch row (work proportional to sum of L_i^2, and it trains on CPU), or
  one batched call when every row has the same length.
ALiBi distances count the real tokens of a row in order; every collator pads at one end, where that is
the padded model's distance exactly.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import torch
import torch.nn.functional as F

from llmfoundry.models.layers import flex as flex_parts
from llmfoundry.models.layers.alibi import alibi_slopes
from llmfoundry.models.layers.attention import reference_attention, static_bias


@dataclass
class Packed:
    """Where the real tokens of a [B, T] batch are: `indices` into B*T, in row order."""

    batch: int
    seq_len: int
    keep: torch.Tensor
    indices: torch.Tensor

    @classmethod
    def from_mask(cls, keep: torch.Tensor) -> Packed:
        """One host sync (the number of real tokens), once per forward; every layer shares the result."""
        b, t = keep.shape
        return cls(b, t, keep, keep.flatten().nonzero().squeeze(1))

    @cached_property
    def cu_seqlens(self) -> torch.Tensor:
        return F.pad(self.keep.sum(1).cumsum(0), (1, 0)).to(torch.int32)

    @cached_property
    def lengths(self) -> list[int]:
        """Real tokens per row, on the host (the per-row backends only; one more sync)."""
        return self.keep.sum(1).tolist()

    def pack(self, x: torch.Tensor) -> torch.Tensor:
        """[B, T, ...] -> [N, ...]."""
        return x.reshape(self.batch * self.seq_len, *x.shape[2:])[self.indices]

    def unpack(self, x: torch.Tensor) -> torch.Tensor:
        """[N, ...] -> [B, T, ...] with zeros at padding."""
        out = x.new_zeros(self.batch * self.seq_len, *x.shape[1:])
        out[self.indices] = x
        return out.view(self.batch, self.seq_len, *x.shape[1:])

    def first_tokens(self, x: torch.Tensor) -> torch.Tensor:
        """The first real token of each row ([CLS] for BERT), [B, ...]."""
        return x[self.cu_seqlens[:-1].long()]


def packed_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, packed: Packed, impl: str, *,
                     alibi: tuple[int, float] | None, softmax_scale: float | None = None,
                     dropout_p: float = 0.0) -> torch.Tensor:
    """Bidirectional attention of q, k, v [N, H, D] within each row of `packed`; returns [N, H, D]."""
    scale = softmax_scale if softmax_scale is not None else q.shape[-1] ** -0.5
    slopes = alibi_slopes(alibi[0], alibi[1], q.device) if alibi is not None else None
    if impl == "flash":
        from flash_attn import flash_attn_varlen_func

        cu, t = packed.cu_seqlens, packed.seq_len  # t bounds every row: flash sizes its grid by it, no sync
        return flash_attn_varlen_func(q, k, v, cu, cu, t, t, dropout_p=dropout_p, softmax_scale=scale,
                                      causal=False, alibi_slopes=slopes)
    if impl == "flex":
        rows = (packed.indices // packed.seq_len)[None]  # a row id per packed token: no sync
        block = flex_parts.block_mask(rows, q.shape[0], q.device, causal=False)
        score_mod = flex_parts.alibi_score_mod(slopes, causal=False) if slopes is not None else None
        out = flex_parts.flex(*(x.transpose(0, 1)[None] for x in (q, k, v)), block, score_mod, scale)
        return out[0].transpose(0, 1)
    return _per_row(q, k, v, packed, impl, alibi, scale, dropout_p)


def _per_row(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, packed: Packed, impl: str,
             alibi: tuple[int, float] | None, scale: float, dropout_p: float) -> torch.Tensor:
    lengths = packed.lengths
    bias = None
    if alibi is not None or impl == "torch":  # the row length's bias, sliced to each row (it is shift-invariant)
        dtype = q.dtype if impl == "sdpa" else torch.float32
        bias = static_bias(packed.seq_len, q.device, False, alibi, dtype)

    def one(qi: torch.Tensor, ki: torch.Tensor, vi: torch.Tensor) -> torch.Tensor:  # [R, L, H, D]
        qi, ki, vi = (x.transpose(1, 2) for x in (qi, ki, vi))
        n = qi.shape[2]
        b = None if bias is None else bias[..., :n, :n]
        if impl == "torch":
            out = reference_attention(qi, ki, vi, b, scale, dropout_p)
        else:
            out = F.scaled_dot_product_attention(qi, ki, vi, attn_mask=b, dropout_p=dropout_p, scale=scale)
        return out.transpose(1, 2)

    if len(set(lengths)) == 1:  # no padding: one batched call
        rows = [x.view(packed.batch, lengths[0], *x.shape[1:]) for x in (q, k, v)]
        return one(*rows).reshape(q.shape)
    rows = zip(*(x.split(lengths) for x in (q, k, v)))
    return torch.cat([one(*(x[None] for x in row))[0] for row in rows if row[0].shape[0]])
