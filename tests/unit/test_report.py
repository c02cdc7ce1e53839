"""llmfoundry.report on metrics it is handed: folding resumed runs, overlays, eval results, CLI errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llmfoundry.errors import UserError
from llmfoundry.report import report, write_eval_report
from llmfoundry.report.plots import RUN_PLOTS, drawn, run_figure
from llmfoundry.report.runs import fold, load_run
from tests.conftest import run_cli


def write_run(folder: Path, records: list[dict], tail: str = "") -> Path:
    folder.mkdir(parents=True)
    (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records) + tail)
    (folder / "config.yaml").write_text("max_duration: 6ba\n")
    return folder


def train_record(step: int, loss: float, **extra: float) -> dict:
    return {"step": step, "loss/train": loss, "lr": 0.1 * step, "tokens": 100 * step,
            "throughput/tokens_per_sec": 1000.0 + step, "memory/peak_rss_gb": 1.0, **extra}


def test_fold_merges_eval_records_and_keeps_the_resumed_segment():
    killed = [train_record(1, 9.0), train_record(2, 8.0), {**train_record(2, 8.0), "loss/val": 8.5},
              train_record(3, 7.0), train_record(4, 6.0), train_record(5, 5.0)]  # killed at 5, saved at 2
    resumed = [train_record(3, 7.1), train_record(4, 6.1), {**train_record(4, 6.1), "loss/val": 6.6}]  # killed at 4
    records = fold(killed + resumed)
    assert [r["step"] for r in records] == [1, 2, 3, 4]
    assert [r["loss/train"] for r in records] == [9.0, 8.0, 7.1, 6.1]
    assert records[1]["loss/val"] == 8.5 and records[3]["loss/val"] == 6.6


def test_a_line_cut_by_a_kill_is_ignored_and_a_bad_line_is_a_user_error(tmp_path):
    run = write_run(tmp_path / "cut", [train_record(1, 2.0)], tail='{"step": 2, "loss/tr')
    assert [r["step"] for r in load_run(run).records] == [1]
    bad = write_run(tmp_path / "bad", [train_record(1, 2.0)], tail="not json\n" + json.dumps(train_record(2, 1.0)) + "\n")
    with pytest.raises(UserError, match=r"bad/metrics.jsonl:2: not a JSON line"):
        load_run(bad)


def test_overlay_draws_each_run_in_its_own_color_with_its_values(tmp_path):
    a = write_run(tmp_path / "a", [train_record(s, 10 - s, grad_norm=0.5 * s) for s in (1, 2, 3)]
                  + [{**train_record(3, 7.0), "loss/val": 7.5, "icl/piqa/0-shot/acc": 0.55}])
    b = write_run(tmp_path / "b", [train_record(s, 20 - s) for s in (2, 4)])
    runs = [load_run(a), load_run(b)]
    figures = {p.name: run_figure(p, runs) for p in RUN_PLOTS}
    assert figures["mfu"] is None  # nobody logged MFU
    loss = {(line["run"], line["key"]): line for line in drawn(figures["loss"])}
    assert set(loss) == {("a", "loss/train"), ("a", "loss/val"), ("b", "loss/train")}
    assert (loss["a", "loss/train"]["x"], loss["a", "loss/train"]["y"]) == ([100.0, 200.0, 300.0], [9.0, 8.0, 7.0])
    assert (loss["b", "loss/train"]["x"], loss["b", "loss/train"]["y"]) == ([200.0, 400.0], [18.0, 16.0])
    assert drawn(figures["grad_norm"]) == [{"run": "a", "key": "grad_norm", "x": [1.0, 2.0, 3.0], "y": [0.5, 1.0, 1.5]}]
    assert drawn(figures["eval"])[0]["y"] == [0.55]
    colors = {line.get_label(): line.get_color() for line in figures["loss"].axes[0].get_lines()}
    assert colors["a: loss/train"] == colors["a: loss/val"] != colors["b: loss/train"]
    page = report([a, b], tmp_path / "cmp.html")
    assert page.read_text().count("data:image/png;base64,") == 6  # loss lr throughput memory grad_norm eval
    assert set(json.loads((tmp_path / "cmp" / "series.json").read_text())) == \
        {"loss", "lr", "throughput", "memory", "grad_norm", "eval"}


def test_eval_report_draws_tasks_categories_and_gauntlet_from_results_json(tmp_path):
    from llmfoundry.eval.run import write_results

    results = {"small": {"piqa/0-shot/acc": 0.6, "piqa/0-shot/acc_norm": 0.62, "mmlu/0-shot/law/acc": 0.3,
                         "mmlu/0-shot/acc": 0.28, "lambada/0-shot/perplexity": 40.0, "gauntlet/reasoning": 0.1,
                         "gauntlet/average": 0.1},
               "big": {"piqa/0-shot/acc": 0.7, "piqa/0-shot/acc_norm": 0.72, "mmlu/0-shot/law/acc": 0.4,
                       "mmlu/0-shot/acc": 0.38, "lambada/0-shot/perplexity": 20.0, "gauntlet/reasoning": 0.2,
                       "gauntlet/average": 0.2}}
    write_results(results, tmp_path)
    page = report([tmp_path])
    assert page == tmp_path / "report.html"
    series = json.loads((tmp_path / "report" / "series.json").read_text())
    assert list(series) == ["tasks", "categories", "gauntlet", "perplexity"]
    bars = {(s["label"], n): v for s in series["tasks"] for n, v in zip(s["names"], s["values"])}
    assert bars == {(m, k): results[m][k] for m in results for k in ("piqa/0-shot/acc", "piqa/0-shot/acc_norm",
                                                                       "mmlu/0-shot/acc")}
    assert series["categories"][1] == {"label": "big", "names": ["mmlu/0-shot/law/acc"], "values": [0.4]}
    assert [s["values"] for s in series["gauntlet"]] == [[0.1, 0.1], [0.2, 0.2]]
    assert write_eval_report(tmp_path, tmp_path / "again.html").read_text().count("<img") == 4


def test_cli_report_errors_are_one_line(tmp_path):
    (tmp_path / "empty").mkdir()
    for args, message in [((str(tmp_path / "nope"),), "not a directory"),
                          ((str(tmp_path / "empty"),), "no metrics.jsonl (not a `foundry train` run folder)")]:
        result = run_cli("report", *args)
        assert result.returncode == 1 and result.stderr.count("\n") == 1 and message in result.stderr, result.stderr
    run = write_run(tmp_path / "run", [train_record(1, 3.0)])
    result = run_cli("report", str(run))
    assert result.returncode == 0 and result.stdout.strip() == f"wrote {run / 'report.html'}"
