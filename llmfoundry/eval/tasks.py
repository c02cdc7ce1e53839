"""ICL tasks in LLM Foundry's jsonl formats, turned into (context, continuation) requests.

Each item becomes one request per option (choices for multiple choice, contexts for schema). Few-shot
examples are drawn per item from a generator seeded by (seed, item index), so they never include the item
itself and do not depend on batching, ordering or the number of processes.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from llmfoundry.errors import UserError

TaskType = Literal["language_modeling", "multiple_choice", "schema", "generation_task_with_answers"]
REQUIRED: dict[str, dict[str, type | tuple[type, ...]]] = {
    "language_modeling": {"context": str, "continuation": str},
    "multiple_choice": {"query": str, "choices": list, "gold": int},
    "schema": {"context_options": list, "continuation": str, "gold": int},
    "generation_task_with_answers": {"context": str, "answer": str},
}


@dataclass
class ICLTaskConfig:
    label: str
    """Name of the task in results (e.g. piqa)."""
    dataset_uri: str
    """Local path to the task's jsonl file."""
    icl_task_type: TaskType
    """language_modeling, multiple_choice, schema or generation_task_with_answers."""
    num_fewshot: list[int] = field(default_factory=lambda: [0])
    """Few-shot counts; one result per value."""
    prompt_string: str = ""
    """Text put before the few-shot examples."""
    example_delimiter: str = "\n"
    """Between examples."""
    continuation_delimiter: str = " "
    """Between a context and its continuation."""
    max_seq_len: int | None = None
    """Override of the model's sequence length for this task (contexts are left-truncated to fit)."""
    batch_size: int | None = None
    """Override of device_eval_batch_size."""
    seed: int = 1234
    """Seed of the few-shot draws."""
    has_categories: bool = False
    """Report per-category results using each item's `category` field (MMLU style)."""
    max_new_tokens: int = 32
    """generation_task_with_answers: longest answer generated."""
    stop_sequences: list[str] | None = None
    """generation_task_with_answers: stop strings (default: the example delimiter)."""
    metric: str | None = None
    """Metric used by the gauntlet (default: acc)."""


@dataclass
class Request:
    item: int
    option: int
    context: str
    continuation: str


def load_items(cfg: ICLTaskConfig) -> list[dict[str, Any]]:
    """Read and validate the task's jsonl; every problem names the file and line."""
    path = Path(cfg.dataset_uri)
    if not path.is_file():
        raise UserError(f"icl_tasks.{cfg.label}.dataset_uri: {path} does not exist")
    items = []
    with open(path, "rb") as f:
        for number, raw in enumerate(f, start=1):
            where = f"{path}:{number}"
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as err:
                raise UserError(f"{where}: invalid UTF-8 ({err.reason} at byte {err.start})") from None
            if not line.strip():
                continue
            try:
                item = json.loads(line)
            except json.JSONDecodeError as err:
                raise UserError(f"{where}: malformed JSON ({err.msg} at column {err.colno})") from None
            check_item(cfg, item, where)
            items.append(item)
    if not items:
        raise UserError(f"{path}: no items")
    return items


def check_item(cfg: ICLTaskConfig, item: Any, where: str) -> None:
    """One line naming file:line for an item the task type cannot use: not a JSON object, a missing or
    mistyped field, empty or non-string options, a gold index out of range, a missing category."""
    if not isinstance(item, dict):
        raise UserError(f"{where}: expected a JSON object per line, got a {type(item).__name__}")
    for key, kind in REQUIRED[cfg.icl_task_type].items():
        if not isinstance(item.get(key), kind) or isinstance(item.get(key), bool):
            raise UserError(f"{where}: {cfg.icl_task_type} needs '{key}' ({kind.__name__})")  # type: ignore[union-attr]
    for key in ("choices", "context_options"):
        if key in REQUIRED[cfg.icl_task_type]:
            options = item[key]
            if not options:
                raise UserError(f"{where}: '{key}' is empty; give at least one option")
            wrong = [o for o in options if not isinstance(o, str)]
            if wrong:
                raise UserError(f"{where}: '{key}' must hold strings, got {wrong[0]!r}")
            if not 0 <= item["gold"] < len(options):
                raise UserError(f"{where}: gold={item['gold']} is out of range for {len(options)} options")
    if cfg.has_categories and "category" not in item:
        raise UserError(f"{where}: has_categories is set but the item has no 'category'")


def example_text(cfg: ICLTaskConfig, item: dict[str, Any]) -> str:
    """A solved example as it appears in a few-shot prompt."""
    d = cfg.continuation_delimiter
    if cfg.icl_task_type == "language_modeling":
        return item["context"] + item["continuation"]
    if cfg.icl_task_type == "multiple_choice":
        return item["query"] + d + item["choices"][item["gold"]]
    if cfg.icl_task_type == "schema":
        return item["context_options"][item["gold"]] + d + item["continuation"]
    return item["context"] + d + item["answer"]


def fewshot_prefix(cfg: ICLTaskConfig, items: list[dict[str, Any]], index: int, shots: int) -> str:
    if shots >= len(items):
        raise UserError(f"icl_tasks.{cfg.label}: num_fewshot={shots} needs more than {len(items)} items")
    rng = random.Random(cfg.seed * 1_000_003 + index)
    picks: list[int] = []
    while len(picks) < shots:
        choice = rng.randrange(len(items))
        if choice != index and choice not in picks:
            picks.append(choice)
    return cfg.prompt_string + "".join(example_text(cfg, items[i]) + cfg.example_delimiter for i in picks)


def build_requests(cfg: ICLTaskConfig, items: list[dict[str, Any]], shots: int) -> list[Request]:
    d = cfg.continuation_delimiter
    requests = []
    for index, item in enumerate(items):
        prefix = fewshot_prefix(cfg, items, index, shots)
        if cfg.icl_task_type == "language_modeling":
            requests.append(Request(index, 0, prefix + item["context"], item["continuation"]))
        elif cfg.icl_task_type == "multiple_choice":
            requests += [Request(index, k, prefix + item["query"] + d, c) for k, c in enumerate(item["choices"])]
        elif cfg.icl_task_type == "schema":
            requests += [Request(index, k, prefix + c + d, item["continuation"])
                         for k, c in enumerate(item["context_options"])]
        else:
            requests.append(Request(index, 0, prefix + item["context"] + d, item["answer"]))
    return requests
