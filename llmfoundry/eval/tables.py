"""Result tables: ours (metric x model) and LLM Foundry's two (gauntlet scores; Category | Benchmark | Subtask |
Accuracy | Number few shot | Model, the headline metric of every task, per-category rows under an Average)."""

from __future__ import annotations

from typing import Any

from llmfoundry.eval.gauntlet import GauntletConfig
from llmfoundry.eval.tasks import ICLTaskConfig


def markdown(header: list[str], rows: list[list[Any]]) -> str:
    def cell(v: Any) -> str:
        return "" if v is None else f"{v:.4f}" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows])


def metric_table(results: dict[str, dict[str, float]]) -> str:
    names = list(results)
    keys = sorted({k for m in results.values() for k in m})
    return markdown(["metric", *names], [[k, *(results[n].get(k, float("nan")) for n in names)] for k in keys])


def foundry_tables(results: dict[str, dict[str, float]], tasks: list[ICLTaskConfig],
                   gauntlet: GauntletConfig | None) -> str:
    """LLM Foundry's console output: the gauntlet table (when there is one), then every task's headline metric."""
    taxonomy = {b.name: c.name for c in gauntlet.categories for b in c.benchmarks} if gauntlet else {}
    parts = []
    if gauntlet is not None:
        columns = ["average", *gauntlet.averages, *(c.name for c in gauntlet.categories)]
        rows = [[model, *(m.get(f"gauntlet/{c}") for c in columns)] for model, m in results.items()]
        parts.append(markdown(["model_name", *columns], rows))
    rows = []
    for model, metrics in results.items():
        for shots in dict.fromkeys(s for t in tasks for s in t.num_fewshot):
            for task in (t for t in tasks if shots in t.num_fewshot):
                rows += _task_rows(task, shots, metrics, taxonomy.get(task.label, ""), model)
    parts.append(markdown(["Category", "Benchmark", "Subtask", "Accuracy", "Number few shot", "Model"], rows))
    return "\n\n".join(parts)


def _task_rows(task: ICLTaskConfig, shots: int, metrics: dict[str, float], category: str, model: str) -> list[list[Any]]:
    prefix, metric = f"{task.label}/{shots}-shot", task.metrics[0]
    if f"{prefix}/{metric}" not in metrics:
        return []
    subtasks = sorted(k[len(prefix) + 1 : -len(metric) - 1] for k in metrics
                      if k.startswith(prefix + "/") and k.endswith("/" + metric) and k.count("/") == 3)
    if not subtasks:
        return [[category, task.label, None, metrics[f"{prefix}/{metric}"], f"{shots}-shot", model]]
    rows = [[category, task.label, "Average", metrics[f"{prefix}/{metric}"], f"{shots}-shot", model]]
    return rows + [[category, None, sub, metrics[f"{prefix}/{sub}/{metric}"], f"{shots}-shot", model] for sub in subtasks]
