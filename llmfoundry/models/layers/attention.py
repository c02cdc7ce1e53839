"""One attention entry point with several backends (`attn_impl`), all computing the same function.

- `auto` (default): flash where installed on CUDA, else flex on CUDA, sdpa on CPU (`resolve_impl`).
- `torch`: plain matmul + softmax in fp32: the reference every other backend is tested against.
- `sdpa`: `F.scaled_dot_product_attention`. ALiBi, causality, document boundaries (sequence ids) and key
  padding become one additive float mask [B|1, H, T, T], built once per forward and shared by all layers
  (cached across steps when it depends on the shape only). O(T^2) memory: the CPU choice, not CUDA's.
- `flex`: FlexAttention; ALiBi is a score_mod, causal + same-document a BlockMask built from 128-token tiles
  (flex.py: no dense mask, no compilation). Training needs CUDA (its backward does not run on CPU, eager or
  compiled, in torch 2.14); a no-grad forward also runs on CPU.
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
from llmfoundry.models.layers.flex import alibi_score_mod, flex, flex_block_mask
from llmfoundry.models.layers.alibi import alibi_slopes
from llmfoundry.models.layers.cache import static_cache

AttnImpl = Literal["auto", "torch", "sdpa", "flex", "flash"]
IMPLS: tuple[str, ...] = ("auto", "torch", "sdpa", "flex", "flash")


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
    if impl == "auto":
        return
    usable = available_impls(device, training=training)
    if impl in usable:
        return
    why = {
        "flex": "FlexAttention's backward needs CUDA" if _has_flex() else "this torch has no FlexAttention",
        "flash": "flash-attn is not installed" if not _has_flash() else "flash-attn needs a CUDA device",
    }[impl]
    raise UserError(f"attn_impl: {impl!r} cannot run on {torch.device(device).type} ({why}); use one of {', '.join(usable)}")


def resolve_impl(impl: str, device: torch.device | str, *, dropout: bool = False) -> str:
    """`auto` -> the fastest backend that runs here: on CUDA flash-attn when installed, else FlexAttention
    (no dense mask; sdpa when attention dropout is on, which flex lacks); on CPU sdpa (scripts/bench/attn_memory.py
    measures the choices). Any other name is returned as it is."""
    if impl != "auto":
        return impl
    if torch.device(device).type == "cuda":
        if _has_flash():
            return "flash"
        return "sdpa" if dropout or not _has_flex() else "flex"
    return "sdpa"


@dataclass
class AttentionMask:
    """Everything about which keys a query may see, built once per forward and reused by every layer."""

    impl: str
    causal: bool
    alibi_slopes: torch.Tensor | None = None
    bias: torch.Tensor | None = None  # torch/sdpa: additive [B|1, H|1, T, T]
    block_mask: Any = None  # flex
    score_mod: Callable | None = None  # flex
    varlen: torch.Tensor | None = None  # flash: cu_seqlens over all B*T tokens (documents and padding runs)
    static_key: tuple | None = None  # the bias depends on the shape only: cached per dtype
    _cast: dict[torch.dtype, torch.Tensor] = field(default_factory=dict)

    def bias_as(self, dtype: torch.dtype) -> torch.Tensor | None:
        if self.bias is None or self.bias.dtype == dtype:
            return self.bias
        if self.static_key is not None:
            return static_bias(*self.static_key, dtype)
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
    alibi: tuple[int, float] | None = None,
    sequence_id: torch.Tensor | None = None,
    key_padding_mask: torch.Tensor | None = None,
) -> AttentionMask:
    """Prepare the per-batch masking state for a resolved `impl` (see resolve_impl).

    alibi: (n_heads, alibi_bias_max); sequence_id: [B,T] document index; key_padding_mask: [B,T] bool, given only
    when the batch has padding (the collators leave it out otherwise, so no host sync is needed to find out).
    Nothing here reads a value back to the host except flash's cu_seqlens (one sync per forward).
    """
    slopes = alibi_slopes(alibi[0], alibi[1], device) if alibi is not None else None
    mask = AttentionMask(impl=impl, causal=causal, alibi_slopes=slopes)
    segments = _segments(sequence_id, key_padding_mask)
    if impl in ("torch", "sdpa"):
        if segments is None and (impl == "torch" or alibi is not None):
            mask.static_key = (seq_len, device, causal, alibi)
            mask.bias = static_bias(*mask.static_key, torch.float32)
        elif segments is not None:
            mask.bias = _dense_bias(seq_len, device, causal, slopes, segments)
    elif impl == "flex":
        mask.block_mask = flex_block_mask(segments, seq_len, device, causal)
        mask.score_mod = alibi_score_mod(slopes.float(), causal) if slopes is not None else None
    elif impl == "flash" and segments is not None:
        mask.varlen = _cu_seqlens(segments)
    return mask


def _segments(sequence_id: torch.Tensor | None, key_padding_mask: torch.Tensor | None) -> torch.Tensor | None:
    """One [B,T] id per token: its document (0 without sequence ids), or -1 for padding.

    A query attends to keys of its own id only, so real tokens never see padding and a padding token sees
    other padding (at least itself: its output stays finite, and nothing reads it).
    """
    if key_padding_mask is None:
        return sequence_id
    keep = key_padding_mask.bool()
    base = sequence_id if sequence_id is not None else torch.zeros(keep.shape, dtype=torch.long, device=keep.device)
    return base.masked_fill(~keep, -1)


@static_cache(maxsize=4)
def static_bias(seq_len: int, device: torch.device, causal: bool, alibi: tuple[int, float] | None,
                 dtype: torch.dtype) -> torch.Tensor:
    """The [1, H|1, T, T] bias of a batch without documents or padding: the same every step, so built once."""
    slopes = alibi_slopes(alibi[0], alibi[1], device) if alibi is not None else None
    return _dense_bias(seq_len, device, causal, slopes, None).to(dtype)


def _dense_bias(seq_len: int, device: torch.device, causal: bool, alibi_slopes: torch.Tensor | None,
                segments: torch.Tensor | None) -> torch.Tensor:
    allowed = torch.ones(1, 1, seq_len, seq_len, dtype=torch.bool, device=device)
    if causal:
        allowed = allowed.tril()
    if segments is not None:
        allowed = allowed & (segments[:, None, :, None] == segments[:, None, None, :])
    bias = torch.zeros(allowed.shape, dtype=torch.float32, device=device).masked_fill(~allowed, float("-inf"))
    if alibi_slopes is not None:
        bias = bias + alibi_slopes.float().view(1, -1, 1, 1) * _alibi_distance(seq_len, device, causal)
    return bias


def _alibi_distance(seq_len: int, device: torch.device, causal: bool) -> torch.Tensor:
    pos = torch.arange(seq_len, device=device, dtype=torch.float32)
    dist = pos[None, :] - pos[:, None]  # key - query: <= 0 for every key a causal query sees
    return dist if causal else -dist.abs()


def _cu_seqlens(segments: torch.Tensor) -> torch.Tensor:
    """flash-attn's varlen layout over all B*T tokens: each run of one id in a row is a sequence.

    Padding runs become sequences of their own (their outputs are ignored), so no token is gathered or
    scattered; the one host sync is the number of runs. (A document id split by another id counts as two
    documents; no collator makes such rows.)
    """
    b, t = segments.shape
    rows = torch.arange(b, device=segments.device)[:, None]
    key = (rows * (t + 1) + segments + 1).flatten()
    _, counts = torch.unique_consecutive(key, return_counts=True)
    return F.pad(counts.cumsum(0), (1, 0)).to(torch.int32)


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
    b, t = q.shape[0], q.shape[2]
    flat = [x.reshape(b * t, *x.shape[2:]) for x in (qt, kt, vt)]
    # max_seqlen: the row length bounds every run; flash only sizes its grid by it (no sync for the true max)
    out = flash_attn_varlen_func(*flat, mask.varlen, mask.varlen, t, t, dropout_p=dropout_p, softmax_scale=scale,
                                 causal=mask.causal, alibi_slopes=slopes)
    return out.view(b, t, *out.shape[1:]).transpose(1, 2)


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
        return flex(q, k, v, mask.block_mask, mask.score_mod, scale)
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
