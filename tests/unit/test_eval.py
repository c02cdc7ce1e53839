"""ICL evaluation: exact expected scores from a model whose log-probs we set; LLM Foundry's prompt and scoring
rules item by item; batching, skipping, subsets, categories, gauntlet, errors."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

from llmfoundry.errors import UserError
from llmfoundry.eval.gauntlet import Benchmark, Category, GauntletConfig, gauntlet_scores
from llmfoundry.eval.generate import exact_match, final_answer, normalize_answer
from llmfoundry.eval.icl import Encoder, evaluate_task, score, subset_size
from llmfoundry.eval.tasks import ICLTaskConfig, PromptBuilder, Request, fewshot_indices, load_items


class BigramLM(nn.Module):
    """A causal LM whose next-token log-probs depend only on the current token: scores are hand-computable.

    All logits are 0 except `boost[(current, next)]`, so log p(next | current) is known in closed form.
    """

    def __init__(self, vocab: int) -> None:
        super().__init__()
        self.vocab = vocab
        self.boost: dict[tuple[int, int], float] = {}

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
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


CPU = torch.device("cpu")


def run_task(model, tok, cfg, seq=64, **kw):
    return evaluate_task(model, tok, cfg, batch_size=4, max_seq_len=seq, device=CPU, precision="fp32", **kw)


def test_multiple_choice_scores_are_exact(tmp_path, tok):
    model = BigramLM(len(tok))
    # After " is", make " red" likely and " blue" unlikely; everything else uniform.
    is_id, red = ids(tok, " is")[0], ids(tok, " red")[0]
    model.boost[(is_id, red)] = 5.0
    rows = [{"query": "The sky is", "choices": ["red", "blue"], "gold": 0},
            {"query": "The sea is", "choices": ["red", "blue"], "gold": 1}]
    cfg = ICLTaskConfig(label="colors", dataset_uri=write_jsonl(tmp_path / "c.jsonl", rows),
                        icl_task_type="multiple_choice")
    metrics = run_task(model, tok, cfg).metrics
    assert metrics["colors/0-shot/acc"] == 0.5  # "red" always wins: right on item 1, wrong on item 2
    assert metrics["colors/0-shot/acc_norm_token"] == 0.5 and cfg.metrics[0] == "acc_norm_token"
    # the exact log-prob the scorer uses for " red" after " is": 5 - logsumexp over the row
    v = len(tok)
    expected = 5.0 - math.log(math.exp(5.0) + v - 1)
    ctx, cont, _ = Encoder(tok).encode(Request(0, 0, "", "The sky is", " red"), 64)
    assert cont == [red]
    got = score(model, [(ctx, cont)], batch_size=1, device=CPU, precision="fp32", pad_id=0)[0]
    assert got.logprob == pytest.approx(expected, rel=1e-5) and got.greedy  # fp32 logsumexp over 50k logits


def test_language_modeling_and_schema(tmp_path, tok):
    model = BigramLM(len(tok))
    a, b = ids(tok, " cat"), ids(tok, " sat")
    model.boost[(a[0], b[0])] = 10.0  # " cat" -> " sat" greedy
    lm = ICLTaskConfig(label="lm", icl_task_type="language_modeling",
                       dataset_uri=write_jsonl(tmp_path / "lm.jsonl", [{"context": "the cat", "continuation": " sat"},
                                                                        {"context": "the cat", "continuation": " ran"}]))
    assert run_task(model, tok, lm, seq=32).metrics["lm/0-shot/acc"] == 0.5
    schema = ICLTaskConfig(label="wino", icl_task_type="schema",
                           dataset_uri=write_jsonl(tmp_path / "s.jsonl", [
                               {"context_options": ["the dog", "the cat"], "continuation": "sat", "gold": 1}]))
    assert run_task(model, tok, schema, seq=32).metrics["wino/0-shot/acc"] == 1.0


def prompts(tok, kind, rows, tmp_path, shots=0, **kw):
    cfg = ICLTaskConfig(label="t", icl_task_type=kind, dataset_uri=write_jsonl(tmp_path / "t.jsonl", rows), **kw)
    return PromptBuilder(cfg, load_items(cfg), prefix_space=True).requests(shots)


def test_prompts_follow_foundry_rules(tmp_path, tok):
    """The differences issue 11 measured against LLM Foundry 0.22, each pinned to Foundry's rule."""
    # multiple choice: the query stripped, the delimiter's trailing space stripped off the prompt, one space
    # before a choice (never a second one when the choice has it already)
    mc = prompts(tok, "multiple_choice", [{"query": "  Q?  ", "choices": [" yes", "no"], "gold": 0}], tmp_path,
                 continuation_delimiter="\nAnswer: ")
    assert [(r.preamble, r.context, r.continuation) for r in mc] == [("", "Q?\nAnswer:", " yes"),
                                                                       ("", "Q?\nAnswer:", " no")]
    # language modeling honours continuation_delimiter (lambada's word is not glued to the context)
    lm = prompts(tok, "language_modeling", [{"context": "A b", "continuation": "c"}], tmp_path,
                 continuation_delimiter="\nAnswer: ")
    assert (lm[0].context, lm[0].continuation) == ("A b\nAnswer:", " c")
    # schema with few-shot: examples "[delimiter]option delimiter continuation"; the item's options end with the
    # delimiter right-stripped and the continuation carries the space
    rows = [{"context_options": [f"o{i}a", f"o{i}b"], "continuation": f"c{i}", "gold": i % 2} for i in range(3)]
    sc = prompts(tok, "schema", rows, tmp_path, shots=1)
    picked = sc[0].preamble
    assert picked in ("o1b c1", "o2a c2") and sc[0].context == "\no0a" and sc[0].continuation == " c0"
    # generation: question_prelimiter before every context, chain of thought + cot_delimiter in examples
    rows = [{"context": f"q{i}", "answer": f"{i}", "chain_of_thought": f"think{i}."} for i in range(3)]
    gen = prompts(tok, "generation_task_with_answers", rows, tmp_path, shots=1, question_prelimiter="Q: ",
                  continuation_delimiter="\nA: ", cot_delimiter=" The answer is ")
    example = gen[0].preamble
    assert example in ("Q: q1\nA: think1. The answer is 1", "Q: q2\nA: think2. The answer is 2")
    assert gen[0].context == "\nQ: q0\nA:"


def test_token_ids_are_preamble_context_continuation_tokenized_apart(tok):
    enc = Encoder(tok)
    ctx, cont, truncated = enc.encode(Request(0, 0, "Shot one.\n", "Question:", " answer"), 64)
    assert ctx == ids(tok, "Shot one.\n") + ids(tok, "Question:") and cont == ids(tok, " answer") and not truncated
    ctx, cont, truncated = enc.encode(Request(0, 0, "", "word " * 50 + "Answer:", " photosynthesis"), 12)
    assert len(ctx) + len(cont) == 12 and truncated and tok.decode(cont) == " photosynthesis"
    assert enc.encode(Request(0, 0, "", "x", " long" * 20), 8) is None  # cannot fit: skipped, not fatal
    assert enc.encode(Request(0, 0, "", "x" * 40, ""), 8, reserve=7)[0] == ids(tok, "x" * 40)[-1:]


def test_items_that_do_not_fit_are_skipped_and_counted(tmp_path, tok):
    model = BigramLM(len(tok))
    rows = [{"context": "a", "continuation": " b"}, {"context": "a", "continuation": " long" * 40},
            {"context": "c", "continuation": " d"}]
    cfg = ICLTaskConfig(label="lm", icl_task_type="language_modeling", dataset_uri=write_jsonl(tmp_path / "l.jsonl", rows))
    result = run_task(model, tok, cfg, seq=16)
    assert result.skipped == {0: [1]} and result.scored == {0: 2}
    with pytest.raises(UserError, match="item 2 of .* does not fit the 16-token window"):
        run_task(model, tok, cfg, seq=16, strict=True)


def test_fewshot_draws_are_foundrys(tmp_path):
    import random

    rng = random.Random(1234)
    draws = [fewshot_indices(10, 3, i, rng) for i in range(10)]
    assert all(len(d) == 3 and i not in d for i, d in enumerate(draws))
    rng = random.Random(1234)
    assert draws == [fewshot_indices(10, 3, i, rng) for i in range(10)]  # sequential: a function of the seed only
    rows = [{"query": f"Q{i}", "choices": [f"a{i}", f"b{i}"], "gold": 0} for i in range(10)]
    reqs = prompts(None, "multiple_choice", rows, tmp_path, shots=3)
    first = {r.item: r.preamble for r in reqs}
    assert first == {r.item: r.preamble for r in prompts(None, "multiple_choice", rows, tmp_path, shots=3)}
    assert all(f"Q{i} a{i}" not in first[i] and first[i].count("\n") == 2 for i in first)  # 3 examples, 2 delimiters


def test_subsets_and_categories(tmp_path, tok):
    model = BigramLM(len(tok))
    rows = [{"query": f"Q{i}", "choices": ["a", "b", "c", "d"], "gold": i % 4, "category": "xy"[i % 2]}
            for i in range(20)]
    cfg = ICLTaskConfig(label="mc", icl_task_type="multiple_choice", has_categories=True,
                        dataset_uri=write_jsonl(tmp_path / "m.jsonl", rows))
    items = load_items(cfg)
    assert subset_size(cfg, items, batches=2, batch_size=8) == 4  # Foundry: batch_size // choices items per batch
    result = run_task(model, tok, cfg, subset_batches=1)  # batch 4 -> 1 item per category
    assert result.scored == {0: 2}
    m = run_task(model, tok, cfg).metrics
    assert m["mc/0-shot/acc"] == pytest.approx((m["mc/0-shot/x/acc"] + m["mc/0-shot/y/acc"]) / 2)
    assert run_task(model, tok, cfg, limit=3).scored == {0: 6}


def test_generation_scored_as_foundry(tmp_path, tok):
    assert final_answer("so 3 + 4 = 7. The answer is 7\n\nQuestion: next", stops=["\n\n", "Question:"],
                        cot_delimiter="The answer is ", label="t") == "7"
    assert exact_match(" 7 apples", {"7"}, normalize=False)  # Foundry: the answer starts with a label
    assert not exact_match("17", {"7"}, normalize=False)
    assert normalize_answer("The  Paris_France!") == "paris france"  # underscores and punctuation become spaces
    with pytest.raises(UserError, match="early_stopping_criteria: not a valid regular expression"):
        final_answer("x", stops=["("], cot_delimiter="", label="t")
    model = BigramLM(len(tok))
    paris, nl, colon = ids(tok, " Paris")[0], ids(tok, "\n")[0], ids(tok, ":")[0]
    model.boost[(colon, paris)] = 10.0
    model.boost[(paris, nl)] = 10.0
    cfg = ICLTaskConfig(label="qa", icl_task_type="generation_task_with_answers", early_stopping_criteria=["\n"],
                        dataset_uri=write_jsonl(tmp_path / "g.jsonl", [
                            {"context": "Capital of France:", "answer": "paris", "aliases": []},
                            {"context": "Capital of Spain:", "answer": "Madrid", "aliases": ["madrid city"]}]))
    assert run_task(model, tok, cfg, seq=32).metrics["qa/0-shot/acc"] == 0.5


def test_generation_window_equal_to_the_model_length_leaves_room_for_the_answer(tmp_path, tok):
    """Issue 11: a prompt as long as the model's window crashed (513 vs 512); Foundry truncates it from the left."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(n_embd=16, n_head=2, n_layer=1, n_positions=64)).eval()
    rows = [{"context": "word " * 200, "answer": "x"}, {"context": "short", "answer": "y"}]
    cfg = ICLTaskConfig(label="g", icl_task_type="generation_task_with_answers", max_new_tokens=8,
                        dataset_uri=write_jsonl(tmp_path / "g.jsonl", rows))
    result = run_task(model, tok, cfg, seq=64)
    assert result.scored == {0: 2} and result.truncated == {0: 1} and result.skipped == {0: []}


def test_batched_kv_cache_generation_equals_one_at_a_time_without_cache(tok):
    """Left padding + attention mask + the library's cache give the text of the plain per-request decoder."""
    from transformers import GPT2Config, GPT2LMHeadModel

    from llmfoundry.eval.generate import _greedy_no_cache, generate

    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(n_embd=32, n_head=2, n_layer=2, n_positions=128)).eval()
    prompts_ = [ids(tok, t) for t in ("The quick brown fox", "Hi", "A much longer prompt about the weather today")]
    fast = generate(model, tok, prompts_, max_new_tokens=10, stops=[], batch_size=3, device=CPU, precision="fp32")
    slow = [_greedy_no_cache(model, tok, p, 10, [], CPU, "fp32") for p in prompts_]
    assert [f[0] for f in fast] == slow and all(len(s) > 0 for s in slow)
    stopped = generate(model, tok, prompts_, max_new_tokens=10, stops=[slow[0][3:6]], batch_size=3, device=CPU,
                       precision="fp32")
    assert slow[0][3:6] in stopped[0][0] and len(stopped[0][0]) <= len(slow[0])


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
    notes = []
    out = gauntlet_scores(GauntletConfig(categories=[Category("c", [Benchmark("q", 0)]), Category("b", [Benchmark("z", 0)])]),
                          metrics, {}, notes=notes)
    assert "gauntlet/c" not in out and out["gauntlet/average"] == pytest.approx(0.4)  # Foundry: left out, not fatal
    assert notes == ["eval_gauntlet: category c left out: no result for q/0-shot/acc"]


def test_gauntlet_uses_the_headline_metric_and_foundrys_log_weights():
    cfg = GauntletConfig(categories=[Category("a", [Benchmark("x", 0), Benchmark("y", 0)])], weighting="LOG_SAMPLE_SZ",
                         subtract_random_baseline=False, rescale_accuracy=False)
    metrics = {"x/0-shot/acc": 0.0, "x/0-shot/acc_norm_token": 1.0, "y/0-shot/acc": 0.0}
    out = gauntlet_scores(cfg, metrics, {"x": 8, "y": 1}, headline={"x": "acc_norm_token", "y": "acc"})
    assert out["gauntlet/a"] == pytest.approx(3 / 4)  # weights log2(8)=3 and max(log2(1), 1)=1


def test_batch_size_and_ranks_do_not_change_scores(tmp_path, tok, icl_dir):
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
                        continuation_delimiter="\nAnswer: ", num_fewshot=[0, 1])
    enc = Encoder(tok)
    encoded = [enc.encode(r, 256)[:2] for r in PromptBuilder(cfg, load_items(cfg), True).requests(1)]
    one = score(model, encoded, batch_size=1, device=CPU, precision="fp32", pad_id=tok.eos_token_id)
    many = score(model, encoded, batch_size=16, device=CPU, precision="fp32", pad_id=tok.eos_token_id)
    assert all(abs(a.logprob - b.logprob) < 1e-4 and a.greedy == b.greedy for a, b in zip(one, many))
