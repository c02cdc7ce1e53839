"""What a person sees of a training run: the live view in a real terminal, the summary, the report.

One tiny run trains in a pseudo-terminal (python's pty) and its output is rendered by a VT100 emulator
(pyte), so the assertions are on the text a terminal shows, frame by frame. Its run folder then serves
the report tests: the plotted values against metrics.jsonl, and the HTML in headless Chromium.
"""

from __future__ import annotations

import fcntl
import json
import os
import pty
import re
import select
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest

from tests.conftest import REPO, toy_corpus

pyte = pytest.importorskip("pyte")

COLS, ROWS = 160, 200  # tall enough that nothing scrolls off the emulated screen
CONFIG = """
base: {base}
variables:
  data_local: {data}
  tokenizer: {tok}
  max_seq_len: 32
  run_name: view
model:
  name: mpt
  preset: mpt-tiny
  d_model: 64
  vocab_size: 512
max_duration: 12ba
global_train_batch_size: 4
device_train_microbatch_size: 4
precision: fp32
eval_interval: 4ba
eval_subset_num_batches: 2
save_interval: 6ba
console_log_interval: 2ba
progress_bar: true
scheduler:
  t_warmup: 2ba
optimizer:
  lr: 0.01
"""


def run_in_terminal(args: list[str], timeout: float = 600) -> tuple[int, bytes, list[list[str]]]:
    """Run `args` with a pseudo-terminal as stdin/stdout/stderr; the exit code, the raw bytes, and the
    emulated screen after every chunk of output (so transient lines and the bar's frames can be checked)."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", ROWS, COLS, 0, 0))
    env = {**os.environ, "PYTHONPATH": str(REPO), "TERM": "xterm-256color", "COLUMNS": str(COLS)}
    env.pop("NO_COLOR", None)
    proc = subprocess.Popen(args, stdin=slave, stdout=slave, stderr=slave, env=env, close_fds=True)
    os.close(slave)
    screen = pyte.Screen(COLS, ROWS)
    stream = pyte.ByteStream(screen)
    raw, frames = [], []
    watch = select.poll()
    watch.register(master, select.POLLIN)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready = watch.poll(1000)  # poll, not select: a long suite's descriptors pass select's 1024 limit
            if not ready:
                if proc.poll() is not None:
                    break
                continue
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not data:
                break
            raw.append(data)
            stream.feed(data)
            frames.append(list(screen.display))
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=60)
    return proc.returncode, b"".join(raw), frames


def text_lines(frame: list[str]) -> list[str]:
    return [line.rstrip() for line in frame if line.strip()]


@pytest.fixture(scope="module")
def terminal_run(tmp_path_factory):
    """A 12-step run with evaluation every 4 steps, trained in a pseudo-terminal."""
    from llmfoundry.data.convert import convert_dataset

    root = tmp_path_factory.mktemp("view")
    corpus, tok = toy_corpus(root)
    convert_dataset([str(corpus)], str(root / "data"), tokenizer=str(tok), max_seq_len=32, val_fraction=0.1,
                    progress=False)
    config = root / "view.yaml"
    config.write_text(CONFIG.format(base=REPO / "yamls" / "pretrain" / "_base.yaml", data=root / "data", tok=tok))
    run = root / "run"
    code, raw, frames = run_in_terminal([sys.executable, "-m", "llmfoundry.cli", "train", str(config),
                                         f"save_folder={run}"])
    assert code == 0, raw.decode(errors="replace")[-3000:]
    return root, config, run, raw, frames


@pytest.mark.slow
def test_terminal_view_keeps_evals_shows_eta_and_done(terminal_run):
    _, _, run, raw, frames = terminal_run
    final = text_lines(frames[-1])
    # one line per evaluation, above the bar, still on screen at the end (not overwritten by the bar)
    evals = [line for line in final if " eval: " in line]
    assert [re.match(r"\[step (\d+)/12\]", line).group(1) for line in evals] == ["4", "8", "12"]
    assert all("val_loss=" in line and "val_ppl=" in line for line in evals)
    bar = [i for i, line in enumerate(final) if line.startswith("train ")]
    assert len(bar) == 1, final
    assert "12/12" in final[bar[0]] and "ETA 0:00:00" in final[bar[0]]
    assert max(i for i, line in enumerate(final) if " eval: " in line) < bar[0]
    assert final[bar[0] + 1] == "done"
    # mid-run frames: the bar at an intermediate step with an h:mm:ss ETA in its own column
    mid = [line for frame in frames for line in frame if re.match(r"train .* (2|4|6|8|10)/12 ETA \d+:\d\d:\d\d", line)]
    assert mid, "no intermediate bar frame with an ETA"
    # start-up: a status line said what the run was doing before step 1 (transient: gone at the end)
    shown = raw.decode(errors="replace")
    for phase in ("loading the config", "importing torch", "building the model, opening the data"):
        assert f"starting: {phase}" in shown
    assert not any(line.lstrip(" ⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏").startswith("starting:") for line in final)


@pytest.mark.slow
def test_summary_names_losses_time_and_where_things_are(terminal_run):
    _, _, run, _, frames = terminal_run
    final = text_lines(frames[-1])
    start = next(i for i, line in enumerate(final) if line.startswith("summary: "))
    summary = "\n".join(final[start:])
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    train_loss = [r["loss/train"] for r in records if r["step"] == 12][-1]
    val_loss = [r["loss/val"] for r in records if "loss/val" in r][-1]
    assert final[start].startswith("summary: 12 steps, 1,536 tokens; 0:")
    assert re.search(rf"train loss +{train_loss:.4f} \(perplexity [\d.]+\) at step 12", summary)
    assert re.search(rf"validation loss +{val_loss:.4f} \(perplexity [\d.]+\) at step 12", summary)
    assert re.search(r"mean tokens/s +[\d,]+", summary) and "mean MFU" in summary
    assert re.search(r"peak memory \(process RSS\) +[\d.]+ GiB", summary)
    assert re.search(rf"checkpoint +{run}/checkpoints/step-00000012\n", summary)
    assert re.search(rf"report +{run}/report.html\n", summary)
    assert re.search(rf"export +foundry inference-convert {run} {run}-hf$", summary)


@pytest.mark.slow
def test_finished_run_shows_its_real_step(terminal_run):
    """Run the same command again: nothing is left to train, and the bar says 12/12, not 0/12."""
    _, config, run, _, _ = terminal_run
    code, raw, frames = run_in_terminal([sys.executable, "-m", "llmfoundry.cli", "train", str(config),
                                         f"save_folder={run}", "autoresume=true"])
    assert code == 0, raw.decode(errors="replace")[-3000:]
    bars = {line.split(" ETA")[0].split()[-1] for frame in frames for line in frame if line.startswith("train ")}
    assert bars == {"12/12"}, bars
    assert "done" in text_lines(frames[-1])


def metrics_series(run: Path, key: str, x: str) -> tuple[list[float], list[float]]:
    """(x, y) of `key` straight from metrics.jsonl, independently of llmfoundry.report (last record per step)."""
    by_step: dict[int, dict] = {}
    for line in (run / "metrics.jsonl").read_text().splitlines():
        record = json.loads(line)
        by_step.setdefault(record["step"], {}).update(record)
    steps = [s for s in sorted(by_step) if key in by_step[s]]
    return [float(by_step[s][x]) for s in steps], [float(by_step[s][key]) for s in steps]


@pytest.mark.slow
def test_report_plots_what_metrics_jsonl_says(terminal_run):
    """The figures' own line data (read back from the matplotlib objects) and series.json equal metrics.jsonl."""
    from llmfoundry.report.plots import RUN_PLOTS, drawn, run_figure
    from llmfoundry.report.runs import load_run

    _, _, run, _, _ = terminal_run
    assert (run / "report.html").is_file()
    saved = json.loads((run / "report" / "series.json").read_text())
    figures = {plot.name: run_figure(plot, [load_run(run)]) for plot in RUN_PLOTS}
    assert {name for name, fig in figures.items() if fig is not None} == set(saved) == \
        {"loss", "lr", "throughput", "memory", "grad_norm"}  # no MFU on a CPU; no ICL tasks in this run
    expected = {("loss", "loss/train"): "tokens", ("loss", "loss/val"): "tokens", ("lr", "lr"): "step",
                ("throughput", "throughput/tokens_per_sec"): "step", ("memory", "memory/peak_rss_gb"): "step",
                ("grad_norm", "grad_norm"): "step"}
    for (name, key), x in expected.items():
        want = metrics_series(run, key, x)
        for lines in (drawn(figures[name]), saved[name]):
            (line,) = [line for line in lines if line["key"] == key]
            assert (line["x"], line["y"]) == want, (name, key)
    assert len(metrics_series(run, "loss/val", "step")[0]) == 3
    for name in saved:
        assert (run / "report" / f"{name}.png").stat().st_size > 5000


def chromium() -> str:
    import shutil

    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        pytest.skip("chromium not installed: run `make install` (it installs Debian's chromium when apt-get exists)")
    return path


def open_in_chromium(page: Path, out: Path) -> tuple[str, str]:
    """Load `page` in headless Chromium with no network; (the DOM it rendered, its console log); saves a screenshot."""
    args = [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--no-first-run",
            "--proxy-server=127.0.0.1:9", "--proxy-bypass-list=<-loopback>",  # any network request would fail
            "--enable-logging=stderr", "--v=0", f"--user-data-dir={out / 'profile'}", "--window-size=1280,2600"]
    shot = subprocess.run([*args, f"--screenshot={out / 'shot.png'}", page.as_uri()], capture_output=True, text=True,
                          timeout=180)
    assert shot.returncode == 0, shot.stderr[-2000:]
    dom = subprocess.run([*args, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=180)
    assert dom.returncode == 0, dom.stderr[-2000:]
    return dom.stdout, shot.stderr + dom.stderr


@pytest.mark.slow
def test_report_opens_offline_in_headless_chromium(terminal_run, tmp_path):
    import numpy as np
    from PIL import Image

    _, _, run, _, _ = terminal_run
    dom, log = open_in_chromium(run / "report.html", tmp_path)
    console = [line for line in log.splitlines() if "CONSOLE" in line or "Uncaught" in line]
    assert not console, console
    assert not re.search(r"net::ERR_|Failed to load resource", log), log[-2000:]
    assert dom.count("<img") == 5 and dom.count('src="data:image/png;base64,') == 5  # loss, lr, tok/s, memory, grad_norm
    assert "Run report: run" in dom and "Resolved config" in dom and "loss/val" in dom
    # the screenshot shows the plots: the page is far from blank, and the plot area holds the lines' colors
    pixels = np.asarray(Image.open(tmp_path / "shot.png").convert("RGB")).astype(float)
    assert pixels.std() > 20
    blue = (np.abs(pixels - [31, 119, 180]).sum(-1) < 40).sum()  # the first series' color (matplotlib tab:blue)
    assert blue > 500
