"""Attention over packed (unpadded) tokens: MosaicBERT's unpadding, end to end.

The real tokens of a padded [B, T] batch are gathered once into [N, ...] rows (`Packed`); embeddings, every
linear layer, the norms and the MLM head run on those N tokens, and nothing is re-padded to [B, T] until the
output. Attention keeps each batch row to itself:
- `flash`: flash-attn's varlen kernel over cu_seqlens (CUDA), straight on the packed tokens;
- `sdpa` / `torch` / `flex`: the rows are first-fit packed into bins of T slots (`Bins`: typically
  ceil(N / T) bins, against B padded rows) and attention runs once, batched, over the bins with a
  same-row mask (a dense bias, or flex's BlockMask), so its work follows the real tokens too. One batched
  call matters on CPU: per-row calls cost more in dispatch than padding saves at BERT lengths.
ALiBi distances count the real tokens of a row in order; every collator pads at one end, where that is the
padded model's distance exactly.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import torch
import torch.nn.functional as F

from llmfoundry.errors import UserError
from llmfoundry.models.layers.alibi import alibi_slopes
from llmfoundry.models.layers.attention import AttentionMask, attention, build_mask


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


@dataclass
class Bins:
    """The packed rows first-fit into bins of `seq_len` slots: `source` [bins*T] packed token per slot (0 in
    empty slots, which the mask hides), `slot` [N] where each packed token sits, `mask` the same-row mask."""

    count: int
    source: torch.Tensor
    slot: torch.Tensor
    mask: AttentionMask

    @classmethod
    def build(cls, packed: Packed, impl: str, alibi: tuple[int, float] | None) -> Bins:
        t, device = packed.seq_len, packed.keep.device
        lengths = packed.keep.sum(1).tolist()  # the host decides the bins: one sync per forward
        starts = [0]
        for n in lengths[:-1]:
            starts.append(starts[-1] + n)
        free: list[int] = []  # room left per bin
        placed = [(0, 0)] * len(lengths)  # (bin, offset) per row
        for row in sorted(range(len(lengths)), key=lambda r: -lengths[r]):  # first-fit decreasing
            n = lengths[row]
            b = next((i for i, room in enumerate(free) if room >= n), len(free))
            if b == len(free):
                free.append(t)
            placed[row] = (b, t - free[b])
            free[b] -= n
        source = torch.zeros(len(free) * t, dtype=torch.long)
        segment = torch.full((len(free) * t,), -1, dtype=torch.long)
        slot = torch.empty(sum(lengths), dtype=torch.long)
        for row, ((b, offset), n) in enumerate(zip(placed, lengths)):
            at = b * t + offset
            source[at:at + n] = torch.arange(starts[row], starts[row] + n)
            segment[at:at + n] = row
            slot[starts[row]:starts[row] + n] = torch.arange(at, at + n)
        mask = build_mask(impl, batch=len(free), seq_len=t, device=device, causal=False, alibi=alibi,
                          sequence_id=segment.view(len(free), t).to(device))
        return cls(len(free), source.to(device), slot.to(device), mask)


def packed_attention(qkv: torch.Tensor, packed: Packed, bins: Bins | None, impl: str, *,
                     alibi: tuple[int, float] | None, softmax_scale: float | None = None,
                     dropout_p: float = 0.0) -> torch.Tensor:
    """Bidirectional attention of qkv [N, 3, H, D] within each row of `packed`; returns [N, H, D].

    `bins`: Bins.build(packed, impl, alibi) for every impl but flash (built once per forward by the caller)."""
    if impl == "flash":
        try:  # (a try block keeps exported remote-code files loadable where flash-attn is absent)
            from flash_attn import flash_attn_varlen_func
        except ImportError:
            raise UserError("attn_impl: 'flash' needs the flash-attn package; use sdpa or flex") from None

        scale = softmax_scale if softmax_scale is not None else qkv.shape[-1] ** -0.5
        slopes = alibi_slopes(alibi[0], alibi[1], qkv.device).float() if alibi is not None else None
        cu, t = packed.cu_seqlens, packed.seq_len  # t bounds every row: flash sizes its grid by it, no sync
        return flash_attn_varlen_func(*qkv.unbind(1), cu, cu, t, t, dropout_p=dropout_p, softmax_scale=scale,
                                      causal=False, alibi_slopes=slopes)
    assert bins is not None
    t = packed.seq_len
    binned = qkv[bins.source].view(bins.count, t, *qkv.shape[1:])  # [bins, T, 3, H, D]
    q, k, v = (x.transpose(1, 2) for x in binned.unbind(2))  # [bins, H, T, D]
    out = attention(q, k, v, bins.mask, softmax_scale=softmax_scale, dropout_p=dropout_p)
    return out.transpose(1, 2).reshape(bins.count * t, *out.shape[1:2], out.shape[-1])[bins.slot]
