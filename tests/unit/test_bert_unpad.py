"""MosaicBERT's true unpadding (layers/varlen.py): training on the packed real tokens computes what the padded
model computes (loss and gradients), for every backend that runs here, and never re-pads inside the layers."""

from __future__ import annotations

import pytest
import torch

from llmfoundry.config import build
from llmfoundry.models import ModelConfig, build_model
from llmfoundry.models.layers import varlen


def make(**extra) -> torch.nn.Module:
    torch.manual_seed(0)
    raw = {"name": "bert", "preset": "bert-tiny", "vocab_size": 1000, "hidden_dropout": 0.0, "attn_dropout": 0.0,
           **extra}
    model = build_model(build(ModelConfig, raw))
    model.init_weights()
    return model


def batch(lengths=(48, 30, 7, 48, 19), t=48):
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(5, 1000, (len(lengths), t), generator=g)
    keep = torch.arange(t)[None] < torch.tensor(lengths)[:, None]
    labels = torch.where((torch.rand(ids.shape, generator=g) < 0.3) & keep, ids, -100)
    return ids, keep, labels


def loss_and_grads(model, unpad: bool, **inputs):
    model.bert.args.unpad = unpad
    model.zero_grad()
    loss = model(**inputs)
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("impl", ["sdpa", "torch"])
@pytest.mark.parametrize("classic", [False, True])
def test_unpadded_training_equals_padded(impl, classic):
    model = make(attn_impl=impl, classic=classic).train()
    ids, keep, labels = batch()
    padded, g_pad = loss_and_grads(model, False, input_ids=ids, attention_mask=keep, labels=labels)
    packed, g_packed = loss_and_grads(model, True, input_ids=ids, attention_mask=keep, labels=labels)
    count = (labels != -100).sum()
    assert abs(packed / count - padded / count) < 1e-6
    assert g_pad.keys() == g_packed.keys()
    for name in g_pad:
        assert (g_pad[name] - g_packed[name]).abs().max() < 1e-5, name


def test_unpadded_classifier_equals_padded():
    model = make(num_labels=3).train()
    ids, keep, _ = batch()
    labels = torch.tensor([0, 2, 1, 1, 0])
    padded, g_pad = loss_and_grads(model, False, input_ids=ids, attention_mask=keep, labels=labels)
    packed, g_packed = loss_and_grads(model, True, input_ids=ids, attention_mask=keep, labels=labels)
    assert abs(packed - padded) < 1e-5
    for name in g_pad:
        assert (g_pad[name] - g_packed[name]).abs().max() < 1e-5, name


def test_rows_are_first_fit_into_bins():
    ids, keep, _ = batch()  # lengths 48, 30, 7, 48, 19 in rows of 48: bins {48}, {48}, {30, 7}, {19}
    packed = varlen.Packed.from_mask(keep)
    bins = varlen.Bins.build(packed, "sdpa", None)
    assert bins.count == 4
    x = torch.randn(int(keep.sum()), 3)
    assert torch.equal(x[bins.source][bins.slot], x)  # every packed token has its own slot


def test_full_rows_match():
    model = make().train()
    ids, keep, labels = batch(lengths=(48,) * 4)
    padded, _ = loss_and_grads(model, False, input_ids=ids, attention_mask=keep, labels=labels)
    packed, _ = loss_and_grads(model, True, input_ids=ids, attention_mask=keep, labels=labels)
    assert abs(packed - padded) / padded < 1e-6


def test_flex_packed_forward_matches_padded_sdpa():
    pytest.importorskip("torch.nn.attention.flex_attention")
    model = make().eval()
    ids, keep, labels = batch()
    with torch.no_grad():
        model.bert.args.unpad = False
        ref = model(ids, attention_mask=keep, labels=labels)
        model.bert.args.unpad, model.bert.args.attn_impl = True, "flex"
        got = model(ids, attention_mask=keep, labels=labels)
    assert abs(got - ref) / ref < 1e-6


def test_layers_never_repad(monkeypatch):
    model = make().train()
    ids, keep, labels = batch()
    calls = []
    original = varlen.Packed.unpack
    monkeypatch.setattr(varlen.Packed, "unpack", lambda self, x: calls.append(x.shape) or original(self, x))
    model(ids, attention_mask=keep, labels=labels).backward()
    assert calls == []  # the MLM loss reads packed tokens; only logits without labels are re-padded, once
    model.eval()
    with torch.no_grad():
        logits = model(ids, attention_mask=keep)
    assert len(calls) == 1 and logits.shape[:2] == ids.shape


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("impl", ["flex", "flash"])
def test_gpu_packed_training_equals_padded(impl):
    from llmfoundry.models.layers.attention import available_impls

    if impl not in available_impls("cuda"):
        pytest.skip(f"{impl} unavailable")
    model = make(attn_impl="sdpa").cuda().train()
    ids, keep, labels = (x.cuda() for x in batch(lengths=(200, 130, 7, 256, 64), t=256))
    padded, g_pad = loss_and_grads(model, False, input_ids=ids, attention_mask=keep, labels=labels)
    model.bert.args.attn_impl = impl
    packed, g_packed = loss_and_grads(model, True, input_ids=ids, attention_mask=keep, labels=labels)
    assert abs(packed - padded) / padded < 1e-3
    for name in g_pad:
        assert (g_pad[name] - g_packed[name]).abs().max() <= 1e-2 * g_pad[name].abs().max() + 1e-6, name
