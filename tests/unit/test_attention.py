"""Every attention backend computes the same function as a hand-written float64 reference."""

from __future__ import annotations

import math

import pytest
import torch

from llmfoundry.errors import UserError
from llmfoundry.models.layers.alibi import alibi_slopes
from llmfoundry.models.layers.attention import attention, available_impls, build_mask, check_impl
from llmfoundry.models.layers.loss import chunked_cross_entropy


def naive_float64(q, k, v, *, causal, slopes=None, sequence_id=None, padding=None):
    """Loops over positions: the definition, with no masking tricks, in float64."""
    q, k, v = (t.double() for t in (q, k, v))
    b, h, t, d = q.shape
    rep = h // k.shape[1]
    out = torch.zeros_like(q)
    for bi in range(b):
        for hi in range(h):
            for i in range(t):
                scores = []
                for j in range(t):
                    ok = (not causal or j <= i)
                    ok = ok and (sequence_id is None or sequence_id[bi, i] == sequence_id[bi, j])
                    ok = ok and (padding is None or bool(padding[bi, j]))
                    if not ok:
                        scores.append(-math.inf)
                        continue
                    s = float(q[bi, hi, i] @ k[bi, hi // rep, j]) / math.sqrt(d)
                    if slopes is not None:
                        s += float(slopes[hi]) * (-(i - j) if causal else -abs(i - j))
                    scores.append(s)
                p = torch.softmax(torch.tensor(scores, dtype=torch.float64), 0)
                out[bi, hi, i] = p @ v[bi, hi // rep]
    return out


CASES = [
    dict(causal=True),
    dict(causal=True, alibi=True),
    dict(causal=True, alibi=True, seq=True),
    dict(causal=True, gqa=2, seq=True),
    dict(causal=True, gqa=1, alibi=True),
    dict(causal=False, alibi=True, padding=True),
    dict(causal=False),
]


def make_inputs(case, dtype=torch.float32, b=2, h=4, t=12, d=8):
    g = torch.Generator().manual_seed(hash(str(case)) % 1000)
    kv = case.get("gqa", h)
    q = torch.randn(b, h, t, d, generator=g, dtype=dtype)
    k = torch.randn(b, kv, t, d, generator=g, dtype=dtype)
    v = torch.randn(b, kv, t, d, generator=g, dtype=dtype)
    slopes = alibi_slopes(h) if case.get("alibi") else None
    cut1, cut2 = t * 5 // 12, t * 9 // 12
    seq = torch.tensor([[0] * cut1 + [1] * (cut2 - cut1) + [2] * (t - cut2), [0] * t]) if case.get("seq") else None
    pad = torch.tensor([[True] * cut2 + [False] * (t - cut2), [True] * t]) if case.get("padding") else None
    return q, k, v, slopes, seq, pad


@pytest.mark.parametrize("case", CASES, ids=[str(c) for c in CASES])
@pytest.mark.parametrize("impl", ["torch", "sdpa", "flex"])
def test_backend_matches_float64_reference(case, impl):
    if impl not in available_impls("cpu", training=False):
        pytest.skip(f"{impl} unavailable")
    q, k, v, slopes, seq, pad = make_inputs(case)
    expected = naive_float64(q, k, v, causal=case["causal"], slopes=slopes, sequence_id=seq, padding=pad)
    mask = build_mask(impl, batch=q.shape[0], seq_len=q.shape[2], device=q.device, causal=case["causal"],
                      alibi=(q.shape[1], 8.0) if case.get("alibi") else None, sequence_id=seq, key_padding_mask=pad)
    with torch.no_grad():
        got = attention(q, k, v, mask)
    rows = pad if pad is not None else torch.ones(q.shape[0], q.shape[2], dtype=torch.bool)
    diff = (got.double() - expected).abs().permute(0, 2, 1, 3)[rows]  # padded query rows are don't-care
    assert diff.max() < 2e-6


@pytest.mark.parametrize("case", CASES[:4], ids=[str(c) for c in CASES[:4]])
def test_torch_backend_in_float64_is_exact(case):
    q, k, v, slopes, seq, pad = make_inputs(case, dtype=torch.float64)
    expected = naive_float64(q, k, v, causal=case["causal"], slopes=slopes, sequence_id=seq, padding=pad)
    mask = build_mask("torch", batch=2, seq_len=12, device=q.device, causal=case["causal"],
                      alibi=(4, 8.0) if case.get("alibi") else None, sequence_id=seq, key_padding_mask=pad)
    assert (attention(q, k, v, mask) - expected).abs().max() < 1e-12


def test_sdpa_gradients_match_torch_backend():
    case = dict(causal=True, alibi=True, seq=True, gqa=2)
    grads = []
    for impl in ("torch", "sdpa"):
        q, k, v, slopes, seq, _ = make_inputs(case)
        for t in (q, k, v):
            t.requires_grad_(True)
        mask = build_mask(impl, batch=2, seq_len=12, device=q.device, causal=True, alibi=(4, 8.0),
                          sequence_id=seq)
        attention(q, k, v, mask).square().sum().backward()
        grads.append([t.grad for t in (q, k, v)])
    for a, b in zip(*grads):
        assert (a - b).abs().max() < 1e-4


def test_alibi_slopes_match_mpt_for_non_power_of_two_heads():
    from transformers.models.mpt.modeling_mpt import build_mpt_alibi_tensor

    for heads in (4, 12, 20):
        bias_at_distance_one = build_mpt_alibi_tensor(heads, 2)[:, 0, 0]  # = -slope per head
        assert torch.equal(-bias_at_distance_one, alibi_slopes(heads))


def test_unavailable_backend_is_a_clear_error():
    with pytest.raises(UserError, match=r"attn_impl: 'flash' cannot run on cpu .*use one of torch, sdpa"):
        check_impl("flash", "cpu", training=True)
    with pytest.raises(UserError, match="FlexAttention's backward needs CUDA"):
        check_impl("flex", "cpu", training=True)
    with pytest.raises(UserError, match="expected one of"):
        check_impl("xformers", "cpu", training=False)


@pytest.mark.parametrize("z_loss", [0.0, 1e-4])
def test_chunked_loss_equals_cross_entropy(z_loss):
    g = torch.Generator().manual_seed(0)
    hidden = torch.randn(50, 16, generator=g, requires_grad=True)
    weight = torch.randn(101, 16, generator=g, requires_grad=True)
    labels = torch.randint(0, 101, (50,), generator=g)
    labels[::7] = -100
    got = chunked_cross_entropy(hidden, weight, labels, chunk_size=8, z_loss=z_loss)
    logits = hidden @ weight.t()
    ref = torch.nn.functional.cross_entropy(logits, labels, ignore_index=-100, reduction="sum")
    if z_loss:
        ref = ref + z_loss * (torch.logsumexp(logits, -1).pow(2) * (labels != -100)).sum()
    assert abs(got.item() - ref.item()) <= 1e-6 * abs(ref.item())
    g1 = torch.autograd.grad(got, (hidden, weight))
    g2 = torch.autograd.grad(ref, (hidden, weight))
    for a, b in zip(g1, g2):
        assert (a - b).abs().max() < 1e-5


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("impl", ["flex", "flash"])
@pytest.mark.parametrize("padding", [False, True])
def test_gpu_backends_train_like_torch(impl, padding):
    if impl not in available_impls("cuda"):
        pytest.skip(f"{impl} unavailable")
    case = dict(causal=True, alibi=True, seq=True, gqa=2, padding=padding)
    outs = []
    for name in ("torch", impl):
        q, k, v, slopes, seq, pad = (x.cuda() if x is not None else None for x in make_inputs(case, t=300, d=64))
        for t in (q, k, v):
            t.requires_grad_(True)
        mask = build_mask(name, batch=2, seq_len=300, device=q.device, causal=True, alibi=(4, 8.0),
                          sequence_id=seq, key_padding_mask=pad)
        out = attention(q, k, v, mask)
        rows = pad if pad is not None else torch.ones(2, 300, dtype=torch.bool, device=q.device)
        out.permute(0, 2, 1, 3)[rows].square().sum().backward()  # padded query rows are don't-care
        outs.append((out.permute(0, 2, 1, 3)[rows], q.grad))
    assert (outs[0][0] - outs[1][0]).abs().max() < 1e-3
    assert (outs[0][1] - outs[1][1]).abs().max() < 1e-2


def test_chunked_loss_with_bias_matches():
    g = torch.Generator().manual_seed(1)
    hidden = torch.randn(30, 8, generator=g, requires_grad=True)
    weight = torch.randn(50, 8, generator=g, requires_grad=True)
    bias = torch.randn(50, generator=g, requires_grad=True)
    labels = torch.randint(0, 50, (30,), generator=g)
    got = chunked_cross_entropy(hidden, weight, labels, bias=bias, chunk_size=7)
    ref = torch.nn.functional.cross_entropy(hidden @ weight.t() + bias, labels, reduction="sum")
    assert abs(got.item() - ref.item()) <= 1e-5 * abs(ref.item())
    for a, b in zip(torch.autograd.grad(got, (hidden, weight, bias)), torch.autograd.grad(ref, (hidden, weight, bias))):
        assert (a - b).abs().max() < 1e-5


def test_auto_picks_flash_then_flex_on_cuda_and_sdpa_on_cpu(monkeypatch):
    from llmfoundry.models.layers import attention as attn

    assert attn.resolve_impl("auto", "cpu") == "sdpa"
    monkeypatch.setattr(attn, "_has_flash", lambda: False)
    assert attn.resolve_impl("auto", "cuda") == "flex"
    assert attn.resolve_impl("auto", "cuda", dropout=True) == "sdpa"  # flex has no attention dropout
    monkeypatch.setattr(attn, "_has_flash", lambda: True)
    assert attn.resolve_impl("auto", "cuda", dropout=True) == "flash"
    assert attn.resolve_impl("torch", "cuda") == "torch"
    check_impl("auto", "cpu", training=True)  # always runnable


def test_static_masks_are_built_once_and_survive_inference_mode():
    """A bias first built under inference_mode (ICL eval) is reused by a training step that saves it for backward."""
    device = torch.device("cpu")
    with torch.inference_mode():
        first = build_mask("sdpa", batch=1, seq_len=20, device=device, causal=True, alibi=(4, 8.0))
    again = build_mask("sdpa", batch=1, seq_len=20, device=device, causal=True, alibi=(4, 8.0))
    assert again.bias is first.bias and again.alibi_slopes is alibi_slopes(4, 8.0, device)
    q = torch.randn(1, 4, 20, 8, requires_grad=True)
    attention(q, q, q, again).sum().backward()  # an inference tensor here could not be saved for backward
    assert q.grad is not None
