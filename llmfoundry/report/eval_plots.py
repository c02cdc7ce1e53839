"""The figures of an eval report: `foundry eval`'s results.json as grouped bar charts, one bar per model.

results.json maps each model to `{task}/{n}-shot/{metric}` (and `{task}/{n}-shot/{category}/acc` for tasks
with categories) plus `gauntlet/{category}` scores; each family gets its own chart.
"""

from __future__ import annotations

from collections.abc import Callable

from matplotlib.figure import Figure

from llmfoundry.report.plots import COLORS, new_figure


def _family(key: str) -> str | None:
    parts = key.split("/")
    if parts[0] == "gauntlet":
        return "gauntlet"
    if len(parts) == 3 and parts[1].endswith("-shot"):
        return "perplexity" if parts[2] == "perplexity" else "tasks"
    if len(parts) == 4 and parts[1].endswith("-shot"):
        return "categories"
    return None


FAMILIES: dict[str, tuple[str, str]] = {
    "tasks": ("Accuracy per task", "score"),
    "categories": ("Accuracy per category", "accuracy"),
    "gauntlet": ("Gauntlet (per category, averages)", "score"),
    "perplexity": ("Perplexity of the continuations", "perplexity"),
}


def eval_figures(results: dict[str, dict[str, float]]) -> list[tuple[str, Figure]]:
    """One horizontal grouped bar chart per family of metrics present, in FAMILIES order."""
    figures = []
    for family, (title, xlabel) in FAMILIES.items():
        figure = _bars(results, lambda key, f=family: _family(key) == f, title, xlabel)
        if figure is not None:
            figures.append((family, figure))
    return figures


def _bars(results: dict[str, dict[str, float]], select: Callable[[str], bool], title: str,
          xlabel: str) -> Figure | None:
    names = sorted({key for metrics in results.values() for key in metrics if select(key)})
    if not names:
        return None
    models = list(results)
    fig, ax = new_figure(title, height=max(2.0, 0.9 + 0.28 * len(names) * max(1, len(models) / 2)))
    height = 0.8 / len(models)
    for i, model in enumerate(models):
        positions = [n + (i - (len(models) - 1) / 2) * height for n in range(len(names))]
        values = [float(results[model].get(name, float("nan"))) for name in names]
        ax.barh(positions, values, height=height, color=COLORS[i % len(COLORS)], label=model)
    ax.set_yticks(range(len(names)), names, fontsize="small")
    ax.invert_yaxis()
    ax.set_xlabel(xlabel)
    ax.legend(fontsize="small", loc="best")
    return fig
