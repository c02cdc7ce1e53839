"""FlexAttention parts: a BlockMask built from block-level document ranges, ALiBi as a score_mod.

`torch.nn.attention.flex_attention.create_block_mask` evaluates the mask_mod on every (query, key) pair:
uncompiled, that materializes [B, 1, T, T] booleans plus int64 index temporaries (tens of GB at 65k
tokens); compiled, it recompiles for every new length and costs a minute of inductor time on a CPU.
A causal document mask needs neither: which 128x128 tiles are empty, partial or full follows from each
tile's smallest and largest document id, so the BlockMask is built eagerly from [B, T/128, T/128] tiles
(kilobytes at 65k tokens, no compilation, nothing that can recompile). The element-wise mask_mod is
still attached and applied by the kernel inside partial tiles, so the result is exact for any layout:
a tile is called empty only when the id ranges of its queries and keys are disjoint (no pair can match),
and full only when every query and key of it lies in one document (and, causally, below the diagonal).
Documents are `segments`: [B, T] ids, padding given an id of its own (see attention.py).
"""

from __future__ import annotations

import math
from typing import Any, Callable

import torch
import torch.nn.functional as F

from llmfoundry.models.layers.cache import static_cache

BLOCK = 128  # FlexAttention's default sparse block size


def _causal(b: Any, h: Any, q_idx: Any, kv_idx: Any) -> Any:
    return q_idx >= kv_idx


def _document_mod(segments: torch.Tensor, causal: bool) -> Callable:
    def mask_mod(b: Any, h: Any, q_idx: Any, kv_idx: Any) -> Any:
        same = segments[b, q_idx] == segments[b, kv_idx]
        return same & (q_idx >= kv_idx) if causal else same

    return mask_mod


def _tile_ranges(segments: torch.Tensor, tiles: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Smallest and largest id per tile of BLOCK tokens ([B, tiles] each); the tail repeats the last id."""
    padded = F.pad(segments, (0, tiles * BLOCK - segments.shape[1]), mode="replicate") \
        if segments.shape[1] % BLOCK else segments
    view = padded.view(segments.shape[0], tiles, BLOCK)
    return view.amin(-1), view.amax(-1)


def _ordered(tiles: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """[B, Q, K] bool tiles -> (count [B,1,Q], kv tile indices [B,1,Q,K], the kept ones first) in int32."""
    counts = tiles.sum(-1, dtype=torch.int32)
    k = tiles.shape[-1]
    column = torch.arange(k, dtype=torch.int32, device=tiles.device)
    indices = torch.where(tiles, column, k).sort(dim=-1).values  # listed tiles in order, then k (unused slots)
    return counts[:, None], indices.masked_fill_(indices == k, 0)[:, None]


def flex_block_mask(segments: torch.Tensor | None, seq_len: int, device: torch.device, causal: bool) -> Any:
    """The BlockMask of causal and/or same-document attention over `seq_len` tokens (None: attend to all)."""
    if segments is None:
        return _static_causal_mask(seq_len, device) if causal else None
    return _build(segments, seq_len, device, causal)


@static_cache(maxsize=4)
def _static_causal_mask(seq_len: int, device: torch.device) -> Any:
    return _build(None, seq_len, device, causal=True)


def _build(segments: torch.Tensor | None, seq_len: int, device: torch.device, causal: bool) -> Any:
    from torch.nn.attention.flex_attention import BlockMask

    tiles = math.ceil(seq_len / BLOCK)
    if segments is None:
        may = torch.ones(1, tiles, tiles, dtype=torch.bool, device=device)
        full = may.clone()
        mask_mod = _causal
    else:
        lo, hi = _tile_ranges(segments, tiles)
        may = (lo[:, :, None] <= hi[:, None, :]) & (lo[:, None, :] <= hi[:, :, None])
        single = lo == hi
        full = single[:, :, None] & single[:, None, :] & (lo[:, :, None] == lo[:, None, :])
        mask_mod = _document_mod(segments, causal)
    if causal:
        q_tile = torch.arange(tiles, device=device)[:, None]
        k_tile = torch.arange(tiles, device=device)[None, :]
        may = may & (k_tile <= q_tile)
        full = full & (k_tile < q_tile)
    if seq_len % BLOCK:  # a tile that runs past the end is never called full: the kernel masks its tail
        full[:, -1, :] = False
        full[:, :, -1] = False
    partial_n, partial_i = _ordered(may & ~full)
    full_n, full_i = _ordered(full)
    return BlockMask.from_kv_blocks(partial_n, partial_i, full_n, full_i, BLOCK_SIZE=BLOCK, mask_mod=mask_mod,
                                    seq_lengths=(seq_len, seq_len))


def alibi_score_mod(slopes: torch.Tensor, causal: bool) -> Callable:
    """ALiBi as a score_mod: slope[h] times the (negative) key-query distance, as in the dense bias."""

    def score_mod(score: Any, b: Any, h: Any, q_idx: Any, kv_idx: Any) -> Any:
        dist = (kv_idx - q_idx) if causal else -torch.abs(q_idx - kv_idx)
        return score + slopes[h] * dist

    return score_mod


_compiled: Callable | None = None


def flex(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, block: Any, score_mod: Callable | None,
         scale: float) -> torch.Tensor:
    """flex_attention, compiled once on CUDA (the fused kernel); eager elsewhere (a no-grad reference path)."""
    global _compiled
    from torch.nn.attention.flex_attention import flex_attention

    fn = flex_attention
    if q.device.type == "cuda":
        if _compiled is None:
            _compiled = torch.compile(flex_attention, dynamic=False)
        fn = _compiled
    return fn(q, k, v, score_mod=score_mod, block_mask=block, scale=scale, enable_gqa=k.shape[1] != q.shape[1])
