"""The console without a terminal (logs, CI) and the end of a run when its report cannot be drawn."""

from __future__ import annotations

import json

from llmfoundry.config.schema import LoggersConfig
from llmfoundry.loggers import MetricLoggers
from llmfoundry.loggers.console import ConsoleView, hms


def test_plain_lines_print_each_eval_once_on_its_own_line(capsys):
    view = ConsoleView(12, progress_bar=True, log_to_console=True)  # captured stdout is not a terminal: plain lines
    train = {"loss/train": 2.5, "lr": 0.001, "tokens": 512, "time/remaining_s": 75.0}
    view.log(4, train)
    view.log(4, {**train, "loss/val": 2.75, "perplexity/val": 15.64, "icl/copa/0-shot/acc": 0.5})
    view.finish(12)
    assert capsys.readouterr().out.splitlines() == [
        "[step 4/12] loss=2.5  lr=0.001  tokens=512",
        "[step 4/12] eval: val_loss=2.75  val_ppl=15.64  icl/copa/0-shot/acc=0.5",
        "done",
    ]
    assert hms(75) == "0:01:15" and hms(3 * 3600 + 62) == "3:01:02"


def test_a_report_failure_is_loud_but_does_not_fail_the_finished_run(tmp_path, capsys, monkeypatch):
    import llmfoundry.report

    log = MetricLoggers(tmp_path, LoggersConfig(), run_name="r", config={}, total_steps=2, progress_bar=False,
                        log_to_console=False)
    log.log(2, {"loss/train": 1.0, "tokens": 64, "throughput/tokens_per_sec": 10.0})

    def broken(*args, **kwargs):
        raise ZeroDivisionError("a plotting bug")

    monkeypatch.setattr(llmfoundry.report, "write_run_report", broken)
    log.finish(2, tmp_path / "checkpoints" / "step-00000002")
    out, err = capsys.readouterr()
    assert "Traceback" in err and "ZeroDivisionError: a plotting bug" in err
    assert f"retry with: foundry report {tmp_path}" in err
    assert out.splitlines()[0] == "done" and "summary: 2 steps, 64 tokens;" in out
    assert f"(failed; foundry report {tmp_path})" in out
    assert json.loads((tmp_path / "metrics.jsonl").read_text())["step"] == 2
    assert not (tmp_path / "report.html").exists()
