"""A training run as the report sees it: metrics.jsonl folded into one record per step, and config.yaml.

metrics.jsonl is append-only: a resumed run appends the steps after its checkpoint again, and an evaluation
step is logged twice (the train metrics, then the same record with the eval results added). Folding keeps
what a person means by "the run": for each step the merged record, and after a resume only the new
segment's values for the steps it repeats.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmfoundry.errors import UserError

METRICS = "metrics.jsonl"


@dataclass
class Run:
    """One run folder: its name, its records (one per step, in step order) and its resolved config text."""

    name: str
    path: Path
    records: list[dict[str, Any]]
    config_text: str

    def series(self, key: str, x: str = "step") -> tuple[list[float], list[float]]:
        """(x, y) of every step that logged a finite `key`; x is `step` or another logged key like `tokens`."""
        xs, ys = [], []
        for record in self.records:
            value = record.get(key)
            if isinstance(value, (int, float)) and math.isfinite(value) and x in record:
                xs.append(float(record[x]))
                ys.append(float(value))
        return xs, ys

    def keys(self) -> list[str]:
        """Every numeric metric logged at least once, in first-seen order."""
        seen: dict[str, None] = {}
        for record in self.records:
            for key, value in record.items():
                if key != "step" and isinstance(value, (int, float)):
                    seen.setdefault(key)
        return list(seen)

    def last(self) -> dict[str, tuple[int, float]]:
        """The last logged value of each metric and the step it was logged at."""
        out: dict[str, tuple[int, float]] = {}
        for record in self.records:
            for key, value in record.items():
                if key != "step" and isinstance(value, (int, float)):
                    out[key] = (int(record["step"]), float(value))
        return out


def fold(lines: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Merge records of the same step; a step lower than the previous one starts a resumed segment, whose
    records replace the earlier segment's from that step on."""
    merged: dict[int, dict[str, Any]] = {}
    previous = -1
    for line in lines:
        step = int(line["step"])
        if step < previous:
            merged = {s: r for s, r in merged.items() if s < step}
        previous = step
        merged.setdefault(step, {}).update(line)
    return [merged[s] for s in sorted(merged)]


def load_run(path: str | Path) -> Run:
    """Read a run folder (`save_folder` of `foundry train`); a folder without metrics.jsonl is a UserError."""
    folder = Path(path)
    metrics = folder / METRICS
    if not metrics.is_file():
        raise UserError(f"{folder}: no {METRICS} (not a `foundry train` run folder)")
    lines = []
    with open(metrics) as f:
        for number, raw in enumerate(f, start=1):
            if not raw.strip():
                continue
            try:
                record = json.loads(raw)
            except json.JSONDecodeError:
                if raw.endswith("\n"):
                    raise UserError(f"{metrics}:{number}: not a JSON line") from None
                break  # a last line cut short by a kill: everything before it stands
            if not isinstance(record, dict) or "step" not in record:
                raise UserError(f"{metrics}:{number}: expected a JSON object with a step")
            lines.append(record)
    config = folder / "config.yaml"
    return Run(name=folder.resolve().name, path=folder, records=fold(lines),
               config_text=config.read_text() if config.is_file() else "")
