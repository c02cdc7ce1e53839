"""The 2-step version of `make experiments` (QUICK=1: same scripts and foundry commands, tiny sizes), end to end.

One run of scripts/experiments/all.sh into a temporary folder; each test reads what one experiment left there.
The full runs are a benchmark (README, "Experiments"), not a test.
"""

import json
import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.slow, pytest.mark.experiments]


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    from tests.conftest import asset

    asset("gpt2")  # skips without the installed assets
    exp = tmp_path_factory.mktemp("experiments")
    env = {**os.environ, "QUICK": "1", "EXP": str(exp), "PYTHONPATH": str(REPO)}
    done = subprocess.run(["bash", "scripts/experiments/all.sh"], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=2400)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return exp, done.stdout + done.stderr


def _scores(path: Path) -> dict:
    return json.loads(path.read_text())["scores"][0]


def test_a_domain_scores_every_arm_on_the_same_held_out_bytes(quick):
    exp, _ = quick
    scores = {arm: _scores(exp / "a_domain" / "scores" / f"{arm}.json") for arm in ("pubmed-bpe", "general-bpe",
                                                                                     "pubmed-gpt2")}
    assert len({(s["documents"], s["bytes"]) for s in scores.values()}) == 1
    assert all(0 < s["bits_per_byte"] < 16 for s in scores.values())
    medqa = json.loads((exp / "a_domain" / "medqa" / "results.json").read_text())
    assert set(medqa) == set(scores) and all("medqa/0-shot/acc" in m for m in medqa.values())


def test_b_bert_logs_held_out_mlm_loss_for_both_arms(quick):
    exp, _ = quick
    for arm in ("mosaicbert", "classic"):
        lines = [json.loads(x) for x in (exp / "b_bert" / "runs" / arm / "metrics.jsonl").read_text().splitlines()]
        assert any("loss/val" in x for x in lines) and any("throughput/tokens_per_sec" in x for x in lines)


def test_c_context_gpt2_stops_with_one_line_and_the_others_extend(quick):
    exp, _ = quick
    scores = exp / "c_context" / "scores"
    error = (scores / "gpt2-256.error").read_text().strip().splitlines()
    assert len(error) == 1 and "learned positions (n_positions=128) cannot score 256-token windows" in error[0]
    assert (scores / "gpt2-128.json").is_file() and not (scores / "gpt2-256.json").exists()
    for arm in ("alibi", "rope"):
        assert _scores(scores / f"{arm}-256.json")["seq_len"] == 256


def test_d_size_and_the_report(quick):
    exp, _ = quick
    for size in ("small", "medium", "large"):
        assert _scores(exp / "d_size" / "scores" / f"{size}.json")["tokens"] > 0
        assert json.loads((exp / "d_size" / "plan" / f"{size}.json").read_text())["chinchilla_tokens"] > 0
    page = (exp / "report.html").read_text()
    assert "Not run" not in page and page.count("<img") == 4
    assert {p.name for p in (exp / "report").glob("*.png")} == {"a_domain.png", "b_bert.png", "c_context.png",
                                                                 "d_size.png"}
