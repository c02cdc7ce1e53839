"""One attention entry point with several backends (`attn_impl`), all computing the same function.

- `torch`: plain matmul + softmax in fp32: the reference every other backend is tested against.
- `sdpa`: `F.scaled_dot_product_attention` (default). ALiBi, causality, document boundaries (sequence ids)
  and key padding become one additive float mask, built once per forward and shared by all layers.
- `flex`: FlexAttention; ALiBi is a score_mod and causal + same-document a BlockMask built once per batch.
  Training needs CUDA (its backward does not run on CPU); a no-grad forward also runs on CPU.
- `flash`: flash-attn (varlen + alibi_slopes), only when the `flash_attn` package is importable on CUDA.

A backend that cannot run is an error naming the ones that can: never a silent fallback.
Tensors are [batch, heads, seq, head_dim]; keys/values may have fewer heads (grouped-query attention).
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from typing import Any, Callable, Literal

import torch
import torch.nn.functional as F

from llmfoundry.errors import UserError

AttnImpl = Literal["torch", "sdpa", "flex", "flash"]
IMPLS: tuple[str, ...] = ("torch", "sdpa", "flex", "flash")


def _has_flex() -> bool:
    return importlib.util.find_spec("torch.nn.attention.flex_attention") is not None


def _has_flash() -> bool:
    return importlib.util.find_spec("flash_attn") is not None


def available_impls(device: torch.device | str, *, training: bool = True) -> list[str]:
    """Backends that can run on `device` (training: forward and backward)."""
    kind = torch.device(device).type
    impls = ["torch", "sdpa"]
    if _has_flex() and (kind == "cuda" or not training):
        impls.append("flex")
    if _has_flash() and kind == "cuda":
        impls.append("flash")
    return impls


def check_impl(impl: str, device: torch.device | str, *, training: bool) -> None:
    """Raise a UserError if `impl` cannot run here, naming the backends that can."""
    if impl not in IMPLS:
        raise UserError(f"attn_impl: got {impl!r}, expected one of {', '.join(IMPLS)}")
    usable = available_impls(device, training=training)
    if impl in usable:
        return
    why = {
        "flex": "FlexAttention's backward needs CUDA" if _has_flex() else "this torch has no FlexAttention",
        "flash": "flash-attn is not installed" if not _has_flash() else "flash-attn needs a CUDA device",
    }[impl]
    raise UserError(f"attn_impl: {impl!r} cannot run on {torch.device(device).type} ({why}); use one of {', '.join(usable)}")


@dataclass
class AttentionMask:
    """Everything about which keys a query may see, built once per forward and reused by every layer."""

    impl: str
    causal: bool
    alibi_slopes: torch.Tensor | None = None
    bias: torch.Tensor | None = None  # torch/sdpa: additive [B|1, H|1, T, T]
    block_mask: Any = None  # flex
    score_mod: Callable | None = None  # flex
    varlen: tuple[torch.Tensor, torch.Tensor, int] | None = None  # flash: (token index, cu_seqlens, max_seqlen)
    _cast: dict[torch.dtype, torch.Tensor] = field(default_factory=dict)

    def bias_as(self, dtype: torch.dtype) -> torch.Tensor | None:
        if self.bias is None or self.bias.dtype == dtype:
            return self.bias
        if dtype not in self._cast:
            self._cast[dtype] = self.bias.to(dtype)
        return self._cast[dtype]


def build_mask(
    impl: str,
    *,
    batch: int,
    seq_len: int,
    device: torch.device,
    causal: bool,
    alibi_slopes: torch.Tensor | None = None,
    sequence_id: torch.Tensor | None = None,
    key_padding_mask: torch.Tensor | None = None,
) -> AttentionMask:
    """Prepare the per-batch masking state for `impl` (sequence_id: [B,T] document index; padding mask: [B,T] bool)."""
    mask = AttentionMask(impl=impl, causal=causal, alibi_slopes=alibi_slopes)
    if impl in ("torch", "sdpa"):
        if alibi_slopes is not None or sequence_id is not None or key_padding_mask is not None or impl == "torch":
            mask.bias = _dense_bias(seq_len, device, causal, alibi_slopes, sequence_id, key_padding_mask)
    elif impl == "flex":
        mask.block_mask, mask.score_mod = _flex_parts(batch, seq_len, device, causal, alibi_slopes, sequence_id,
                                                      key_padding_mask)
    elif impl == "flash":
        mask.varlen = _varlen_segments(batch, seq_len, device, sequence_id, key_padding_mask)
    return mask


def _allowed(seq_len: int, device: torch.device, causal: bool, sequence_id: torch.Tensor | None,
             key_padding_mask: torch.Tensor | None) -> torch.Tensor:
    allowed = torch.ones(1, 1, seq_len, seq_len, dtype=torch.bool, device=device)
    if causal:
        allowed = allowed.tril()
    if sequence_id is not None:
        allowed = allowed & (sequence_id[:, None, :, None] == sequence_id[:, None, None, :])
    if key_padding_mask is not None:
        allowed = allowed & key_padding_mask[:, None, None, :].bool()
        # A padding query may have no allowed key at all; letting it see itself keeps its (ignored) output
        # finite instead of NaN, which would otherwise leak into loss sums as NaN * 0. Real queries always see
        # themselves already, so nothing they compute changes.
        allowed = allowed | torch.eye(seq_len, dtype=torch.bool, device=device)
    return allowed


def _dense_bias(seq_len: int, device: torch.device, causal: bool, alibi_slopes: torch.Tensor | None,
                sequence_id: torch.Tensor | None, key_padding_mask: torch.Tensor | None) -> torch.Tensor:
    allowed = _allowed(seq_len, device, causal, sequence_id, key_padding_mask)
    bias = torch.zeros(allowed.shape, dtype=torch.float32, device=device).masked_fill(~allowed, float("-inf"))
    if alibi_slopes is not None:
        bias = bias + alibi_slopes.float().view(1, -1, 1, 1) * _alibi_distance(seq_len, device, causal)
    return bias


def _alibi_distance(seq_len: int, device: torch.device, causal: bool) -> torch.Tensor:
    pos = torch.arange(seq_len, device=device, dtype=torch.float32)
    dist = pos[None, :] - pos[:, None]  # key - query: <= 0 for every key a causal query sees
    return dist if causal else -dist.abs()


def _flex_parts(batch: int, seq_len: int, device: torch.device, causal: bool, alibi_slopes: torch.Tensor | None,
                sequence_id: torch.Tensor | None, key_padding_mask: torch.Tensor | None) -> tuple[Any, Callable | None]:
    from torch.nn.attention.flex_attention import create_block_mask

    def mask_mod(b: Any, h: Any, q_idx: Any, kv_idx: Any) -> Any:
        keep = q_idx >= kv_idx if causal else q_idx == q_idx
        if sequence_id is not None:
            keep = keep & (sequence_id[b, q_idx] == sequence_id[b, kv_idx])
        if key_padding_mask is not None:
            keep = keep & key_padding_mask[b, kv_idx]
        return keep

    per_batch = sequence_id is not None or key_padding_mask is not None
    block_mask = create_block_mask(mask_mod, batch if per_batch else None, None, seq_len, seq_len, device=device)
    score_mod = None
    if alibi_slopes is not None:
        slopes = alibi_slopes.float()

        def score_mod(score: Any, b: Any, h: Any, q_idx: Any, kv_idx: Any) -> Any:
            dist = (kv_idx - q_idx) if causal else -torch.abs(q_idx - kv_idx)
            return score + slopes[h] * dist

    return block_mask, score_mod


def _varlen_segments(batch: int, seq_len: int, device: torch.device, sequence_id: torch.Tensor | None,
                     key_padding_mask: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor, int] | None:
    """Flatten (row, document) segments into flash-attn's varlen layout: kept token index + cu_seqlens."""
    if sequence_id is None and key_padding_mask is None:
        return None
    seg = sequence_id if sequence_id is not None else torch.zeros(batch, seq_len, dtype=torch.long, device=device)
    keep = key_padding_mask.bool() if key_padding_mask is not None else seg >= 0
    flat_keep = keep.flatten()
    index = flat_keep.nonzero().squeeze(1)
    rows = torch.arange(batch, device=device).repeat_interleave(seq_len)
    key = (rows * (seq_len + 1) + seg.flatten())[index]
    starts = torch.ones_like(key, dtype=torch.bool)
    starts[1:] = key[1:] != key[:-1]
    boundaries = starts.nonzero().squeeze(1)
    cu = torch.cat([boundaries, torch.tensor([key.numel()], device=device)]).to(torch.int32)
    return index, cu, int((cu[1:] - cu[:-1]).max())


_compiled_flex: Callable | None = None


def _flex(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: AttentionMask, scale: float) -> torch.Tensor:
    global _compiled_flex
    from torch.nn.attention.flex_attention import flex_attention

    fn = flex_attention
    if q.device.type == "cuda":
        if _compiled_flex is None:
            _compiled_flex = torch.compile(flex_attention, dynamic=False)
        fn = _compiled_flex
    return fn(q, k, v, score_mod=mask.score_mod, block_mask=mask.block_mask, scale=scale,
              enable_gqa=k.shape[1] != q.shape[1])


def _flash(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: AttentionMask, scale: float,
           dropout_p: float) -> torch.Tensor:
    try:  # (a try block also keeps exported remote-code files loadable where flash-attn is absent)
        from flash_attn import flash_attn_func, flash_attn_varlen_func
    except ImportError:
        raise UserError("attn_impl: 'flash' needs the flash-attn package; use sdpa or flex") from None

    slopes = None if mask.alibi_slopes is None else mask.alibi_slopes.float()
    qt, kt, vt = (t.transpose(1, 2) for t in (q, k, v))  # flash wants [B, T, H, D]
    if mask.varlen is None:
        out = flash_attn_func(qt, kt, vt, dropout_p=dropout_p, softmax_scale=scale, causal=mask.causal,
                              alibi_slopes=slopes)
        return out.transpose(1, 2)
    index, cu, max_len = mask.varlen
    b, t = q.shape[0], q.shape[2]
    flat = [x.reshape(b * t, *x.shape[2:])[index] for x in (qt, kt, vt)]
    out = flash_attn_varlen_func(*flat, cu, cu, max_len, max_len, dropout_p=dropout_p, softmax_scale=scale,
                                 causal=mask.causal, alibi_slopes=slopes)
    full = out.new_zeros(b * t, *out.shape[1:])
    full[index] = out
    return full.view(b, t, *out.shape[1:]).transpose(1, 2)


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: AttentionMask, *,
              softmax_scale: float | None = None, dropout_p: float = 0.0) -> torch.Tensor:
    """Attention of q [B,H,T,D] over k, v [B,Hkv,T,D] under `mask`; returns [B,H,T,D]."""
    scale = softmax_scale if softmax_scale is not None else q.shape[-1] ** -0.5
    impl = mask.impl
    if impl == "sdpa":
        bias = mask.bias_as(q.dtype)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=bias, dropout_p=dropout_p,
                                              is_causal=mask.causal and bias is None, scale=scale,
                                              enable_gqa=k.shape[1] != q.shape[1])
    if impl == "flex":
        if dropout_p:
            raise UserError("attn_pdrop: FlexAttention has no attention dropout; set attn_pdrop: 0 or use sdpa")
        return _flex(q, k, v, mask, scale)
    if impl == "flash":
        return _flash(q, k, v, mask, scale, dropout_p)
    return reference_attention(q, k, v, mask.bias_as(torch.float32), scale, dropout_p)


def reference_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor | None, scale: float,
                        dropout_p: float = 0.0) -> torch.Tensor:
    """Textbook attention with scores and softmax in (at least) fp32."""
    if k.shape[1] != q.shape[1]:
        repeat = q.shape[1] // k.shape[1]
        k, v = k.repeat_interleave(repeat, dim=1), v.repeat_interleave(repeat, dim=1)
    work = torch.promote_types(q.dtype, torch.float32)
    scores = torch.matmul(q.to(work), k.to(work).transpose(-1, -2)) * scale
    if bias is not None:
        scores = scores + bias.to(work)
    probs = torch.softmax(scores, dim=-1)
    if dropout_p:
        probs = F.dropout(probs, p=dropout_p)
    return torch.matmul(probs, v.to(work)).to(q.dtype)
