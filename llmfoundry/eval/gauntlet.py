"""The eval gauntlet: benchmark scores, optionally baseline-subtracted and rescaled, averaged per category.

LLM Foundry's yaml shape: `categories: [{name, benchmarks: [{name, num_fewshot, random_baseline}]}]`,
`weighting: EQUAL|SAMPLE_SZ|LOG_SAMPLE_SZ`, `subtract_random_baseline`, `rescale_accuracy`, `averages`.
A benchmark's score is `(acc - random_baseline) / (1 - random_baseline)` with both options on, so 0 means
chance and 1 perfect. As in LLM Foundry: the score of a benchmark is its task's headline metric (Foundry's:
acc_norm_token for multiple choice), a category whose benchmarks did not all run is left out with a note
(not an error), LOG_SAMPLE_SZ weighs by max(log2(items), 1), and `average` is the mean over the categories
that were scored (LLM Foundry calls it `default_average` when no `averages` are given).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

from llmfoundry.errors import UserError


@dataclass
class Benchmark:
    name: str
    """The task label in icl_tasks."""
    num_fewshot: int
    """Which few-shot result to use."""
    random_baseline: float = 0.0
    """Accuracy of random guessing (0.5 for two choices)."""
    metric: str | None = None
    """Metric of the task to score (default: the task's headline metric, the first of its metric_names)."""


@dataclass
class Category:
    name: str
    """Category name."""
    benchmarks: list[Benchmark]
    """Its benchmarks."""


@dataclass
class GauntletConfig:
    categories: list[Category]
    """Categories of benchmarks."""
    weighting: Literal["EQUAL", "SAMPLE_SZ", "LOG_SAMPLE_SZ"] = "EQUAL"
    """Benchmark weights inside a category: equal, by item count, or by log item count."""
    subtract_random_baseline: bool = True
    """Subtract each benchmark's random baseline."""
    rescale_accuracy: bool = True
    """Divide by (1 - random_baseline) so a perfect score is 1."""
    averages: dict[str, list[str]] = field(default_factory=dict)
    """Extra named averages over chosen categories."""


def gauntlet_scores(cfg: GauntletConfig, metrics: dict[str, float], sizes: dict[str, int],
                    headline: dict[str, str] | None = None, notes: list[str] | None = None) -> dict[str, float]:
    """`gauntlet/<category>` for each category, `gauntlet/<average>` and `gauntlet/average`.

    `headline` names each task's default metric; a category with a benchmark missing from `metrics` is left
    out and a line is added to `notes`.
    """
    if cfg.rescale_accuracy and not cfg.subtract_random_baseline:
        raise UserError("eval_gauntlet.rescale_accuracy: needs subtract_random_baseline: true (as in LLM Foundry)")
    out: dict[str, float] = {}
    for category in cfg.categories:
        total, weights = 0.0, 0.0
        keys = [f"{b.name}/{b.num_fewshot}-shot/{b.metric or (headline or {}).get(b.name, 'acc')}"
                for b in category.benchmarks]
        missing = [k for k in keys if k not in metrics]
        if missing:
            if notes is not None:
                notes.append(f"eval_gauntlet: category {category.name} left out: no result for {', '.join(missing)}")
            continue
        for b, key in zip(category.benchmarks, keys):
            value = metrics[key]
            if cfg.subtract_random_baseline:
                value -= b.random_baseline
            if cfg.rescale_accuracy and b.random_baseline < 1:
                value /= 1 - b.random_baseline
            weight = {"EQUAL": 1.0, "SAMPLE_SZ": float(sizes.get(b.name, 1)),
                      "LOG_SAMPLE_SZ": max(math.log2(max(sizes.get(b.name, 1), 1)), 1.0)}[cfg.weighting]
            total += weight * value
            weights += weight
        out[f"gauntlet/{category.name}"] = total / weights
    known = {c.name for c in cfg.categories}
    for name, names in cfg.averages.items():
        unknown = [n for n in names if n not in known]
        if unknown:
            raise UserError(f"eval_gauntlet.averages.{name}: unknown categories {unknown}")
        scored = [out[f"gauntlet/{n}"] for n in names if f"gauntlet/{n}" in out]
        out[f"gauntlet/{name}"] = sum(scored) / len(scored) if scored else 0.0
    scored = [out[f"gauntlet/{c.name}"] for c in cfg.categories if f"gauntlet/{c.name}" in out]
    if scored:
        out["gauntlet/average"] = sum(scored) / len(scored)
    return out
