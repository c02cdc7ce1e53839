"""The figures of a run report, drawn with matplotlib's object API (no pyplot state; the Agg renderer).

Each figure is one metric family against tokens (losses) or steps (everything else), one line per run and
metric. `drawn(fig)` reads back what was actually plotted, from the figure itself: the report saves it beside
the PNGs (series.json) and the tests compare it with metrics.jsonl.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from matplotlib.figure import Figure

from llmfoundry.report.runs import Run

COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf", "#7f7f7f",
          "#bcbd22"]
STYLES = ["-", "--", ":", "-."]


@dataclass(frozen=True)
class Plot:
    name: str
    title: str
    ylabel: str
    select: Callable[[str], bool]
    x: str = "step"
    log_y: bool = False


RUN_PLOTS = [
    Plot("loss", "Loss (train, validation)", "cross-entropy (nats/token)", lambda k: k in ("loss/train", "loss/val"),
         x="tokens"),
    Plot("lr", "Learning rate", "lr", lambda k: k == "lr"),
    Plot("throughput", "Throughput", "tokens/s", lambda k: k == "throughput/tokens_per_sec"),
    Plot("mfu", "Model FLOPs utilization", "MFU", lambda k: k == "throughput/mfu"),
    Plot("memory", "Peak memory", "GiB", lambda k: k.startswith("memory/")),
    Plot("grad_norm", "Gradient norm (before clipping)", "L2 norm", lambda k: k.endswith("grad_norm"), log_y=True),
    Plot("eval", "In-context-learning evaluation", "score", lambda k: k.startswith(("icl/", "gauntlet/"))),
]


def new_figure(title: str, height: float = 3.3) -> tuple[Figure, Any]:
    fig = Figure(figsize=(6.4, height), dpi=100, layout="constrained")
    ax = fig.subplots()
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    return fig, ax


def run_figure(plot: Plot, runs: list[Run]) -> Figure | None:
    """The figure of `plot` over `runs`, or None when no run logged any of its metrics."""
    lines = [(i, run, key) for i, run in enumerate(runs) for key in run.keys() if plot.select(key)]
    if not lines:
        return None
    fig, ax = new_figure(plot.title)
    keys = list(dict.fromkeys(key for _, _, key in lines))
    for i, run, key in lines:
        xs, ys = run.series(key, x=plot.x)
        if len(runs) > 1:  # a color per run, a line style per metric
            color, style, label = COLORS[i % len(COLORS)], STYLES[keys.index(key) % len(STYLES)], f"{run.name}: {key}"
        else:
            color, style, label = COLORS[keys.index(key) % len(COLORS)], "--" if "/val" in key else "-", key
        sparse = len(xs) < 30 or key.startswith(("loss/val", "icl/", "gauntlet/"))
        (line,) = ax.plot(xs, ys, style, color=color, label=label, marker="o" if sparse else None, markersize=3)
        line.set_gid(json.dumps([run.name, key]))
    ax.set_xlabel("tokens" if plot.x == "tokens" else "step")
    ax.set_ylabel(plot.ylabel)
    if plot.log_y:
        ax.set_yscale("log")
    ax.legend(fontsize="small", loc="best")
    return fig


def drawn(fig: Figure) -> list[dict[str, Any]]:
    """What the figure shows: every line's (run, metric, x, y) and every bar group's (label, names, values)."""
    out: list[dict[str, Any]] = []
    for ax in fig.axes:
        for line in ax.get_lines():
            if line.get_gid():
                run, key = json.loads(line.get_gid())
                out.append({"run": run, "key": key, "x": [float(v) for v in line.get_xdata()],
                            "y": [float(v) for v in line.get_ydata()]})
        for container in ax.containers:
            names = [t.get_text() for t in ax.get_yticklabels()]
            out.append({"label": container.get_label(), "names": names,
                        "values": [float(v) for v in container.datavalues]})
    return out


def png(fig: Figure) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()
