"""The eval gauntlet: benchmark scores, optionally baseline-subtracted and rescaled, averaged per category.

LLM Foundry's yaml shape: `categories: [{name, benchmarks: [{name, num_fewshot, random_baseline}]}]`,
`weighting: EQUAL|SAMPLE_SZ|LOG_SAMPLE_SZ`, `subtract_random_baseline`, `rescale_accuracy`, `averages`.
A benchmark's score is `(acc - random_baseline) / (1 - random_baseline)` with both options on, so 0 means
chance and 1 perfect; the overall score is the mean over categories.
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
    metric: str = "acc"
    """Metric of the task to score."""


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


def gauntlet_scores(cfg: GauntletConfig, metrics: dict[str, float], sizes: dict[str, int]) -> dict[str, float]:
    """`gauntlet/<category>` for each category, `gauntlet/<average>` and `gauntlet/average`."""
    out: dict[str, float] = {}
    for category in cfg.categories:
        total, weights = 0.0, 0.0
        for b in category.benchmarks:
            key = f"{b.name}/{b.num_fewshot}-shot/{b.metric}"
            if key not in metrics:
                raise UserError(f"eval_gauntlet: {category.name}.{b.name} needs {key}, which icl_tasks did not produce")
            value = metrics[key]
            if cfg.subtract_random_baseline:
                value -= b.random_baseline
            if cfg.rescale_accuracy and b.random_baseline < 1:
                value /= 1 - b.random_baseline
            weight = {"EQUAL": 1.0, "SAMPLE_SZ": float(sizes.get(b.name, 1)),
                      "LOG_SAMPLE_SZ": math.log(max(sizes.get(b.name, 1), 2))}[cfg.weighting]
            total += weight * value
            weights += weight
        out[f"gauntlet/{category.name}"] = total / weights
    for name, names in cfg.averages.items():
        missing = [n for n in names if f"gauntlet/{n}" not in out]
        if missing:
            raise UserError(f"eval_gauntlet.averages.{name}: unknown categories {missing}")
        out[f"gauntlet/{name}"] = sum(out[f"gauntlet/{n}"] for n in names) / len(names)
    out["gauntlet/average"] = sum(out[f"gauntlet/{c.name}"] for c in cfg.categories) / len(cfg.categories)
    return out
