"""Schedules against their closed forms, optimizers against hand-computed steps, collators on real tokens."""

from __future__ import annotations

import math

import pytest
import torch

from llmfoundry.config.duration import Duration
from llmfoundry.config.schema import OptimizerConfig, SchedulerConfig
from llmfoundry.data.text import LMCollator, mask_tokens
from llmfoundry.train.optim import DecoupledAdamW, Lion, build_optimizer, param_groups
from llmfoundry.train.schedule import lr_multiplier, steps_for


def steps_of(d: Duration) -> int:
    return steps_for(d, max_steps=100, global_batch=8, seq_len=16, steps_per_epoch=50)


@pytest.mark.parametrize(
    ("name", "step", "expected"),
    [
        ("cosine_with_warmup", 0, 1 / 10),
        ("cosine_with_warmup", 9, 1.0),
        ("cosine_with_warmup", 10, 1.0),
        ("cosine_with_warmup", 55, 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 45 / 90))),
        ("cosine_with_warmup", 100, 0.1),
        ("cosine_with_warmup", 150, 0.1),
        ("linear_decay_with_warmup", 55, 1 - 0.9 * 45 / 90),
        ("constant_with_warmup", 80, 1.0),
        ("inverse_sqrt", 39, math.sqrt(10 / 40)),
        ("warmup_stable_decay", 70, 1.0),
        ("warmup_stable_decay", 90, 1 - 0.9 * 10 / 20),
    ],
)
def test_schedules_match_formulas(name, step, expected):
    cfg = SchedulerConfig(name=name, t_warmup=Duration(10, "ba"), alpha_f=0.1, t_cooldown=Duration(0.2, "dur"))
    assert lr_multiplier(cfg, 100, steps_of)(step) == pytest.approx(expected)


def test_duration_units_to_steps():
    assert steps_of(Duration(7, "ba")) == 7
    assert steps_of(Duration(20, "sp")) == 3  # 8 samples per step, rounded up
    assert steps_of(Duration(256, "tok")) == 2  # 128 tokens per step
    assert steps_of(Duration(2, "ep")) == 100
    assert steps_of(Duration(0.25, "dur")) == 25


def test_no_weight_decay_on_biases_norms_and_embeddings():
    model = torch.nn.Sequential(torch.nn.Embedding(10, 4), torch.nn.Linear(4, 4), torch.nn.LayerNorm(4))
    decay, no_decay = param_groups(model, 0.1)
    assert [p.shape for p in decay["params"]] == [torch.Size([4, 4])]
    assert len(no_decay["params"]) == 4 and no_decay["weight_decay"] == 0.0


def test_decoupled_adamw_step_by_hand():
    p = torch.nn.Parameter(torch.tensor([1.0, -2.0]))
    opt = DecoupledAdamW([{"params": [p], "weight_decay": 0.1}], lr=0.01, betas=(0.9, 0.95), eps=1e-8)
    for group in opt.param_groups:
        group["lr"] = 0.005  # half-way down a schedule: decay is scaled by lr / initial_lr = 0.5
    p.grad = torch.tensor([0.5, 0.5])
    opt.step()
    decayed = torch.tensor([1.0, -2.0]) * (1 - 0.5 * 0.1)
    # first Adam step: m_hat = g, v_hat = g^2 -> update = lr * sign(g) (up to eps)
    expected = decayed - 0.005 * torch.tensor([1.0, 1.0])
    assert torch.allclose(p.detach(), expected, atol=1e-6)


def test_lion_step_by_hand():
    p = torch.nn.Parameter(torch.tensor([1.0, -1.0]))
    opt = Lion([p], lr=0.1, betas=(0.9, 0.99))
    p.grad = torch.tensor([0.3, -0.2])
    opt.step()
    assert torch.allclose(p.detach(), torch.tensor([0.9, -0.9]))
    assert torch.allclose(opt.state[p]["exp_avg"], torch.tensor([0.003, -0.002]))
    assert isinstance(build_optimizer(torch.nn.Linear(2, 2), OptimizerConfig(name="lion", lr=1e-4)), Lion)


def test_lm_collator_labels_and_sequence_ids(gpt2_tokenizer_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(gpt2_tokenizer_dir))
    eos = tok.eos_token_id
    row = [5, 6, eos, 7, 8, 9, eos, 10]
    import numpy as np

    batch = LMCollator(tok, 8)([{"tokens": np.array(row, dtype=np.int32)}])
    assert batch["labels"].tolist() == [[6, eos, 7, 8, 9, eos, 10, -100]]
    assert batch["sequence_id"].tolist() == [[0, 0, 0, 1, 1, 1, 1, 2]]
    assert "attention_mask" not in batch
    text = LMCollator(tok, 8)([{"text": "hello world"}])
    n = len(tok("hello world").input_ids)
    assert text["attention_mask"][0].sum() == n + 1 and text["labels"][0, n] == -100
    assert text["sequence_id"][0, n + 1:].eq(-1).all()


def test_mlm_masking_rates_and_determinism():
    ids = torch.randint(5, 1000, (64, 128))
    keep = torch.ones_like(ids, dtype=torch.bool)
    keep[:, 100:] = False
    special = torch.zeros_like(keep)
    special[:, 0] = True
    out = mask_tokens(ids, keep, special, 0.3, mask_id=4, vocab=1000, seed=1)
    chosen = out["labels"] != -100
    assert not chosen[:, 0].any() and not chosen[:, 100:].any()
    rate = chosen.float().sum() / (keep & ~special).sum()
    assert 0.28 < rate < 0.32
    masked = (out["input_ids"] == 4) & chosen
    unchanged = (out["input_ids"] == ids) & chosen
    assert 0.77 < masked.sum() / chosen.sum() < 0.83
    assert 0.07 < unchanged.sum() / chosen.sum() < 0.13
    again = mask_tokens(ids, keep, special, 0.3, mask_id=4, vocab=1000, seed=1)
    assert torch.equal(again["input_ids"], out["input_ids"])
