"""Run and eval reports: `RUN/report.html` (self-contained) with the PNGs and what they plot beside it.

`foundry train` writes one for its run when it finishes (rank 0, after the final checkpoint);
`foundry report RUN [RUN ...]` regenerates it or overlays several runs; `foundry report EVAL_DIR` draws a
`foundry eval` save_folder's results.json. Next to `NAME.html` goes the folder `NAME/` with one PNG per
figure and series.json, the values each figure draws (read back from the figures), for scripts and tests.
Every file is written under a temporary name and renamed, the HTML last.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from llmfoundry.errors import UserError
from llmfoundry.io import write_atomic
from llmfoundry.report import html
from llmfoundry.report.plots import RUN_PLOTS, drawn, png, run_figure
from llmfoundry.report.runs import METRICS, Run, load_run
from llmfoundry.report.summary import run_numbers

RESULTS = "results.json"


PLOTS = "Plots"


def _write(out: Path, title: str, note: str, figures: list[tuple[str, str, Any]],
           sections: list[tuple[str, str]]) -> Path:
    """PNGs + series.json into `out` without its suffix, then the page at `out`; the figures go in the
    section headed PLOTS."""
    folder = out.with_suffix("")
    folder.mkdir(parents=True, exist_ok=True)
    images, series = [], {}
    for name, caption, fig in figures:
        data = png(fig)
        write_atomic(folder / f"{name}.png", data)
        series[name] = drawn(fig)
        images.append(html.image(name, data, caption))
    write_atomic(folder / "series.json", json.dumps(series) + "\n")
    plots = f"<div class=\"plots\">{''.join(images)}</div>" if images else "<p>No metrics to plot.</p>"
    write_atomic(out, html.page(title, [(h, plots if h == PLOTS else body) for h, body in sections], note))
    return out


def write_run_report(runs: list[Run], out: Path) -> Path:
    """The report of one run, or of several overlaid (a color per run), at `out`."""
    figures = []
    for plot in RUN_PLOTS:
        fig = run_figure(plot, runs)
        if fig is not None:
            figures.append((plot.name, f"{plot.title} against {'tokens' if plot.x == 'tokens' else 'steps'}", fig))
    numbers = [run_numbers(run) for run in runs]
    labels = list(dict.fromkeys(label for n in numbers for label in n))
    summary = html.table(["", *[r.name for r in runs]], [[lab, *[n.get(lab, "") for n in numbers]] for lab in labels])
    finals = [run.last() for run in runs]
    keys = list(dict.fromkeys(key for f in finals for key in f))
    final = html.table(["metric", *[r.name for r in runs]],
                       [[key, *[f"{f[key][1]:.6g} (step {f[key][0]:,})" if key in f else "" for f in finals]]
                        for key in keys])
    configs = "".join(f"<details{' open' if len(runs) == 1 else ''}><summary>{html.escape(r.name)}: "
                      f"config.yaml</summary>{html.pre(r.config_text or '(no config.yaml)')}</details>" for r in runs)
    names = ", ".join(r.name for r in runs)
    title = f"Run report: {names}" if len(runs) == 1 else f"Runs compared: {names}"
    note = (f"From {', '.join(str(r.path / METRICS) for r in runs)}; written {time.strftime('%Y-%m-%d %H:%M:%S')}. "
            "Regenerate with: foundry report " + " ".join(str(r.path) for r in runs))
    return _write(out, title, note, figures, [("Summary", summary), (PLOTS, ""),
                                              ("Final metrics (last logged value)", final), ("Resolved config", configs)])


def write_eval_report(folder: Path, out: Path) -> Path:
    """The report of a `foundry eval` save_folder (results.json): per task, per category, gauntlet."""
    from llmfoundry.report.eval_plots import eval_figures

    results = load_results(folder)
    figures = [(name, name, fig) for name, fig in eval_figures(results)]
    models = list(results)
    keys = sorted({key for m in results.values() for key in m})
    rows = [[key, *[f"{results[m][key]:.4f}" if key in results[m] else "" for m in models]] for key in keys]
    note = f"From {folder / RESULTS}; written {time.strftime('%Y-%m-%d %H:%M:%S')}. Regenerate with: foundry report {folder}"
    return _write(out, f"Eval report: {', '.join(models)}", note, figures,
                  [(PLOTS, ""), ("All results", html.table(["metric", *models], rows))])


def load_results(folder: Path) -> dict[str, dict[str, float]]:
    path = folder / RESULTS
    try:
        results = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise UserError(f"{path}: not valid JSON ({err.msg} at line {err.lineno})") from None
    if not isinstance(results, dict) or not all(isinstance(m, dict) for m in results.values()):
        raise UserError(f"{path}: expected {{model_name: {{metric: value}}}} as `foundry eval` writes it")
    return {model: {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
            for model, metrics in results.items()}


def report(paths: list[str | Path], out: str | Path | None = None) -> Path:
    """`foundry report`: run folders (one, or several to compare) or one eval folder; returns the page."""
    folders = [Path(p) for p in paths]
    for folder in folders:
        if not folder.is_dir():
            raise UserError(f"{folder}: not a directory (give a run folder or a `foundry eval` save_folder)")
    from llmfoundry.report.experiments import is_experiments_folder, write_experiments_report

    if len(folders) == 1 and is_experiments_folder(folders[0]):
        return write_experiments_report(folders[0], Path(out) if out else folders[0] / "report.html")
    evals = [f for f in folders if (f / RESULTS).is_file() and not (f / METRICS).is_file()]
    if evals:
        if len(folders) > 1:
            raise UserError(f"{evals[0]}: an eval folder is reported on its own (results.json holds every model)")
        return write_eval_report(folders[0], Path(out) if out else folders[0] / "report.html")
    runs = [load_run(f) for f in folders]
    default = folders[0] / "report.html" if len(folders) == 1 else Path("report.html")
    return write_run_report(runs, Path(out) if out else default)
