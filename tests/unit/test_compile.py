"""torch.compile of a whole MPT training step (forward, loss, backward; inductor on CPU) with packed documents:
no recompiles when the document layout changes from step to step, and the eager losses and gradients.

FlexAttention cannot be in it on CPU: torch 2.14 has no CPU backward for it, eager or compiled (checked in
test_flex_has_no_cpu_backward, so this file notices the day it does)."""

from __future__ import annotations

import pytest
import torch

from llmfoundry.config import build
from llmfoundry.models import ModelConfig, build_model


def tiny(impl: str) -> torch.nn.Module:
    torch.manual_seed(0)
    model = build_model(build(ModelConfig, {
        "name": "mpt", "preset": "mpt-tiny", "d_model": 32, "n_layers": 1, "vocab_size": 128, "max_seq_len": 128,
        "attn_config": {"attn_impl": impl, "alibi": True, "attn_uses_sequence_id": True}}))
    model.init_weights()
    return model


def batches(n: int):
    g = torch.Generator().manual_seed(0)
    for _ in range(n):
        ids = torch.randint(0, 128, (2, 128), generator=g)
        documents = (torch.rand(2, 128, generator=g) < 0.04).long().cumsum(1)  # a new layout every step
        yield {"input_ids": ids, "labels": ids.roll(-1, 1), "sequence_id": documents}


def step(model, batch):
    model.zero_grad(set_to_none=True)
    loss = model(**batch)
    loss.backward()
    return loss.detach(), torch.cat([p.grad.flatten() for p in model.parameters()])


@pytest.mark.slow
def test_compiled_training_step_does_not_recompile_and_matches_eager():
    import torch._dynamo

    torch._dynamo.reset()
    model = tiny("sdpa")
    compiled = torch.compile(model)
    data = list(batches(8))
    step(compiled, data[0])  # warm-up: the one compilation
    with torch._dynamo.config.patch(error_on_recompile=True):
        for batch in data[1:]:
            loss, grads = step(compiled, batch)
            ref_loss, ref_grads = step(model, batch)
            assert abs(loss - ref_loss) <= 1e-5 * abs(ref_loss)
            assert (grads - ref_grads).abs().max() <= 1e-5 * ref_grads.abs().max()


def test_flex_has_no_cpu_backward():
    from torch.nn.attention.flex_attention import flex_attention

    q = torch.randn(1, 1, 16, 8, requires_grad=True)
    with pytest.raises(NotImplementedError, match="backward on CPU"):
        flex_attention(q, q, q)
