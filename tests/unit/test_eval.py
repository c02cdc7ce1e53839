"""ICL evaluation: exact expected scores from a model whose log-probs we set, formats, batching, errors."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

from llmfoundry.errors import UserError
from llmfoundry.eval.gauntlet import Benchmark, Category, GauntletConfig, gauntlet_scores
from llmfoundry.eval.icl import encode, evaluate_task, normalize_answer
from llmfoundry.eval.tasks import ICLTaskConfig, build_requests, load_items


class BigramLM(nn.Module):
    """A causal LM whose next-token log-probs depend only on the current token: scores are hand-computable.

    All logits are 0 except `boost[(current, next)]`, so log p(next | current) is known in closed form.
    """

    def __init__(self, vocab: int) -> None:
        super().__init__()
        self.vocab = vocab
        self.boost: dict[tuple[int, int], float] = {}

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        logits = torch.zeros(*input_ids.shape, self.vocab)
        for (current, nxt), value in self.boost.items():
            logits[..., nxt] += value * (input_ids == current)
        return logits


@pytest.fixture(scope="module")
def tok(gpt2_tokenizer_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(gpt2_tokenizer_dir))


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def ids(tok, text):
    return tok(text, add_special_tokens=False)["input_ids"]


def test_multiple_choice_scores_are_exact(tmp_path, tok):
    model = BigramLM(len(tok))
    # After " is", make " red" likely and " blue" unlikely; everything else uniform.
    is_id, red, blue = ids(tok, " is")[0], ids(tok, " red")[0], ids(tok, " blue")[0]
    model.boost[(is_id, red)] = 5.0
    rows = [{"query": "The sky is", "choices": ["red", "blue"], "gold": 0},
            {"query": "The sea is", "choices": ["red", "blue"], "gold": 1}]
    cfg = ICLTaskConfig(label="colors", dataset_uri=write_jsonl(tmp_path / "c.jsonl", rows),
                        icl_task_type="multiple_choice")
    metrics = evaluate_task(model, tok, cfg, batch_size=4, max_seq_len=64, device=torch.device("cpu"), precision="fp32")
    assert metrics["colors/0-shot/acc"] == 0.5  # "red" always wins: right on item 1, wrong on item 2
    # the exact log-prob the scorer uses for " red" after " is": 5 - logsumexp over the row
    v = len(tok)
    expected = 5.0 - math.log(math.exp(5.0) + v - 1)
    ctx, cont = encode(tok, "The sky is ", "red", 64)
    assert cont == [red]
    from llmfoundry.eval.icl import score

    got = score(model, [(ctx, cont)], batch_size=1, device=torch.device("cpu"), precision="fp32", pad_id=0)[0]
    assert got.logprob == pytest.approx(expected, rel=1e-5) and got.greedy  # fp32 logsumexp over 50k logits


def test_language_modeling_and_schema(tmp_path, tok):
    model = BigramLM(len(tok))
    a, b = ids(tok, " cat"), ids(tok, " sat")
    model.boost[(a[0], b[0])] = 10.0  # " cat" -> " sat" greedy
    lm = ICLTaskConfig(label="lm", icl_task_type="language_modeling", continuation_delimiter="",
                       dataset_uri=write_jsonl(tmp_path / "lm.jsonl", [{"context": "the cat", "continuation": " sat"},
                                                                        {"context": "the cat", "continuation": " ran"}]))
    m = evaluate_task(model, tok, lm, batch_size=2, max_seq_len=32, device=torch.device("cpu"), precision="fp32")
    assert m["lm/0-shot/acc"] == 0.5
    schema = ICLTaskConfig(label="wino", icl_task_type="schema",
                           dataset_uri=write_jsonl(tmp_path / "s.jsonl", [
                               {"context_options": ["the dog", "the cat"], "continuation": "sat", "gold": 1}]))
    m = evaluate_task(model, tok, schema, batch_size=2, max_seq_len=32, device=torch.device("cpu"), precision="fp32")
    assert m["wino/0-shot/acc"] == 1.0


def test_generation_exact_match(tmp_path, tok):
    model = BigramLM(len(tok))
    paris, nl = ids(tok, " Paris")[0], ids(tok, "\n")[0]
    colon = ids(tok, ":")[0]
    model.boost[(colon, paris)] = 10.0
    model.boost[(paris, nl)] = 10.0
    cfg = ICLTaskConfig(label="qa", icl_task_type="generation_task_with_answers",
                        dataset_uri=write_jsonl(tmp_path / "g.jsonl", [
                            {"context": "Capital of France:", "answer": "paris", "aliases": []},
                            {"context": "Capital of Spain:", "answer": "Madrid", "aliases": ["madrid city"]}]))
    m = evaluate_task(model, tok, cfg, batch_size=2, max_seq_len=32, device=torch.device("cpu"), precision="fp32")
    assert m["qa/0-shot/acc"] == 0.5
    assert normalize_answer("The  Paris!") == "paris"


def test_fewshot_is_deterministic_and_excludes_the_item(tmp_path):
    rows = [{"query": f"Q{i}", "choices": [f"a{i}", f"b{i}"], "gold": 0} for i in range(10)]
    cfg = ICLTaskConfig(label="t", icl_task_type="multiple_choice",
                        dataset_uri=write_jsonl(tmp_path / "t.jsonl", rows))
    items = load_items(cfg)
    first = build_requests(cfg, items, 3)
    assert [r.context for r in first] == [r.context for r in build_requests(cfg, items, 3)]
    for r in first:
        shots = r.context.split("\n")[:-1]
        assert len(shots) == 3 and f"Q{r.item} " not in shots
    with pytest.raises(UserError, match="needs more than 10 items"):
        build_requests(cfg, items, 10)


def test_truncation_keeps_the_continuation_and_boundary_matches_whole_text(tok):
    ctx, cont = encode(tok, "word " * 50 + "Answer: ", "photosynthesis", 12)
    assert len(ctx) + len(cont) == 12
    assert tok.decode(cont) == " photosynthesis"  # the space moved onto the continuation, as in whole-text BPE
    whole = ids(tok, "Answer: photosynthesis")
    c2, k2 = encode(tok, "Answer: ", "photosynthesis", 64)
    assert c2 + k2 == whole
    with pytest.raises(UserError, match="does not fit"):
        encode(tok, "x", "long " * 20, 8)


def test_batch_size_does_not_change_scores(tmp_path, tok, icl_dir):
    from llmfoundry.config import build
    from llmfoundry.models import ModelConfig, build_model

    torch.manual_seed(0)
    model = build_model(build(ModelConfig, {"name": "mpt", "preset": "mpt-tiny", "vocab_size": len(tok)}))
    model.init_weights()
    model.eval()
    lines = (icl_dir / "piqa.jsonl").read_text().splitlines()[:12]
    path = tmp_path / "piqa.jsonl"
    path.write_text("\n".join(lines) + "\n")
    cfg = ICLTaskConfig(label="piqa", dataset_uri=str(path), icl_task_type="multiple_choice",
                        continuation_delimiter="Answer: ", num_fewshot=[0, 1])
    from llmfoundry.eval.icl import score

    items = load_items(cfg)
    encoded = [encode(tok, r.context, r.continuation, 256) for r in build_requests(cfg, items, 1)]
    one = score(model, encoded, batch_size=1, device=torch.device("cpu"), precision="fp32", pad_id=tok.eos_token_id)
    many = score(model, encoded, batch_size=16, device=torch.device("cpu"), precision="fp32", pad_id=tok.eos_token_id)
    assert all(abs(a.logprob - b.logprob) < 1e-4 and a.greedy == b.greedy for a, b in zip(one, many))


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ('{"query": "q", "choices": ["a", "b"], "gold": 0}\n{broken\n', r"t\.jsonl:2: malformed JSON"),
        ('{"query": "q", "choices": ["a", "b"], "gold": 2}\n', r"t\.jsonl:1: gold=2 is out of range for 2 options"),
        ('{"query": "q", "gold": 0}\n', r"t\.jsonl:1: multiple_choice needs 'choices'"),
    ],
)
def test_bad_task_files(tmp_path, rows, message):
    (tmp_path / "t.jsonl").write_text(rows)
    cfg = ICLTaskConfig(label="t", dataset_uri=str(tmp_path / "t.jsonl"), icl_task_type="multiple_choice")
    with pytest.raises(UserError, match=message):
        load_items(cfg)


def test_gauntlet_subtracts_baseline_and_averages():
    cfg = GauntletConfig(categories=[
        Category("a", [Benchmark("x", 0, 0.5), Benchmark("y", 0, 0.25)]),
        Category("b", [Benchmark("z", 0, 0.0)]),
    ], averages={"only_a": ["a"]})
    metrics = {"x/0-shot/acc": 0.75, "y/0-shot/acc": 0.25, "z/0-shot/acc": 0.4}
    out = gauntlet_scores(cfg, metrics, {})
    assert out["gauntlet/a"] == pytest.approx((0.5 + 0.0) / 2)
    assert out["gauntlet/b"] == pytest.approx(0.4)
    assert out["gauntlet/average"] == pytest.approx(0.325)
    assert out["gauntlet/only_a"] == pytest.approx(0.25)
    with pytest.raises(UserError, match="needs q/0-shot/acc"):
        gauntlet_scores(GauntletConfig(categories=[Category("c", [Benchmark("q", 0)])]), metrics, {})
