"""ICL tasks in LLM Foundry's jsonl formats, turned into requests exactly as LLM Foundry 0.22 builds them.

A request is three strings tokenized separately, as Foundry does: the preamble (prompt_string + few-shot
examples, tokenized with the tokenizer's special tokens), the item's own context (no special tokens) and the
continuation being scored (no special tokens). Foundry's whitespace rules are kept item by item: every
top-level string field is stripped (`strip_dataset`), the context is right-stripped (so a delimiter such as
"\\nAnswer: " ends the prompt as "\\nAnswer:"), and a continuation gets one leading space when the tokenizer is
GPT-2-style BPE and the text has none. Few-shot examples come from one `random.Random(fewshot_random_seed)`
drawn in item order over the whole file (per category when `has_categories`), so the same items get the same
examples whatever the subset, batch size or number of processes.
"""

from __future__ import annotations

import json
import random
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from llmfoundry.errors import UserError

TaskType = Literal["language_modeling", "multiple_choice", "schema", "generation_task_with_answers",
                   "code_evaluation"]
REQUIRED: dict[str, dict[str, type | tuple[type, ...]]] = {
    "language_modeling": {"context": str, "continuation": str},
    "multiple_choice": {"query": str, "choices": list, "gold": int},
    "schema": {"context_options": list, "continuation": str, "gold": int},
    "generation_task_with_answers": {"context": str, "answer": str},
    "code_evaluation": {"prompt": str, "entry_point": str, "canonical_solution": str, "test_inputs": list,
                        "test_outputs": list},
}
# LLM Foundry's metric class names -> ours (the first of a task's metric_names is its headline metric).
FOUNDRY_METRICS = {
    "InContextLearningLMAccuracy": "acc",
    "InContextLearningMultipleChoiceAccuracy": "acc_norm_token",
    "InContextLearningGenerationExactMatchAccuracy": "acc",
    "InContextLearningCodeEvalAccuracy": "pass@1",
}
METRICS: dict[str, tuple[str, ...]] = {
    "language_modeling": ("acc", "perplexity"),
    "multiple_choice": ("acc_norm_token", "acc", "acc_norm"),
    "schema": ("acc",),
    "generation_task_with_answers": ("acc",),
    "code_evaluation": (),  # pass@k for each k in pass_at_k
}


@dataclass
class ICLTaskConfig:
    label: str
    """Name of the task in results (e.g. piqa)."""
    dataset_uri: str
    """Local path to the task's jsonl file (`hf://` datasets are not downloaded: export them to jsonl)."""
    icl_task_type: TaskType
    """language_modeling, multiple_choice, schema, generation_task_with_answers or code_evaluation."""
    num_fewshot: list[int] = field(default_factory=lambda: [0])
    """Few-shot counts; one result per value."""
    prompt_string: str = ""
    """Text put once before the few-shot examples."""
    example_delimiter: str = "\n"
    """Before each example after the first piece of text."""
    continuation_delimiter: str = " "
    """Between a context and its continuation (trailing whitespace is stripped from the prompt, as in Foundry)."""
    question_prelimiter: str = ""
    """Text put before every context, few-shot examples included (Foundry's `prelimiter`), e.g. "Question: "."""
    prelimiter: str | None = None
    """Foundry's other name for question_prelimiter (set one of the two)."""
    max_seq_len: int | None = None
    """Override of the window for this task (contexts are left-truncated to fit)."""
    batch_size: int | None = None
    """Override of device_eval_batch_size."""
    fewshot_random_seed: int = 1234
    """Seed of the few-shot draws (LLM Foundry's default)."""
    has_categories: bool = False
    """Per-category results from each item's `category` (few-shot examples come from the same category); the
    task's own result is the mean over categories, as LLM Foundry's gauntlet takes it."""
    strip_dataset: bool = True
    """Strip whitespace around every string field of an item (Foundry's default; code_evaluation never strips)."""
    metric_names: list[str] | None = None
    """Metrics to report: LLM Foundry class names (InContextLearningMultipleChoiceAccuracy, ...) or ours (acc,
    acc_norm_token, ...); the first is the headline metric the gauntlet scores. Default: every metric of the
    task type, headline Foundry's (acc_norm_token for multiple_choice)."""
    cot_delimiter: str = ""
    """generation: the answer is the text after the last occurrence of this (e.g. "The answer is ")."""
    early_stopping_criteria: list[str] | None = None
    """generation: stop strings; the answer is cut at the first one (joined as a regex, as in Foundry)."""
    do_normalization: bool = True
    """generation: lowercase, drop punctuation and articles before comparing (else only strip)."""
    max_new_tokens: int | None = None
    """generation: longest answer; default Foundry's (the longest answer's tokens, +10 with cot_delimiter)."""
    generation_kwargs: dict[str, Any] = field(default_factory=dict)
    """Extra arguments for transformers' generate (do_sample, temperature, top_p, top_k, max_new_tokens)."""
    generations_per_sample: int = 1
    """code_evaluation: samples drawn per problem."""
    pass_at_k: list[int] | int = 1
    """code_evaluation: k of pass@k (one value or a list); at most generations_per_sample."""
    hf_loading_vars: dict[str, Any] | None = None
    """Foundry's `hf://` dataset arguments: accepted only to say that hub datasets are not downloaded."""
    hf_parsing_map: dict[str, Any] | None = None
    """Foundry's `hf://` column mapping: as hf_loading_vars."""

    def __post_init__(self) -> None:
        if self.dataset_uri.startswith("hf://"):
            raise UserError(f"dataset_uri: {self.dataset_uri} is a Hugging Face hub dataset; nothing is downloaded "
                            "here: export it to a local jsonl in LLM Foundry's format and point dataset_uri at it")
        if self.prelimiter is not None:
            if self.question_prelimiter:
                raise UserError("prelimiter: set either question_prelimiter or prelimiter (the same thing), not both")
            self.question_prelimiter, self.prelimiter = self.prelimiter, None
        if self.icl_task_type == "code_evaluation":
            self.strip_dataset = False
            if max(self.ks) > self.generations_per_sample:
                raise UserError(f"pass_at_k: {max(self.ks)} needs generations_per_sample >= {max(self.ks)}, "
                                f"got {self.generations_per_sample}")
        for name in self.metric_names or []:
            if FOUNDRY_METRICS.get(name, name) not in self.available_metrics:
                raise UserError(f"metric_names: {name!r} is not a metric of {self.icl_task_type} (expected one of "
                                f"{', '.join(self.available_metrics)} or the Foundry class names)")

    @property
    def ks(self) -> list[int]:
        return [self.pass_at_k] if isinstance(self.pass_at_k, int) else list(self.pass_at_k)

    @property
    def available_metrics(self) -> tuple[str, ...]:
        if self.icl_task_type == "code_evaluation":
            return tuple(f"pass@{k}" for k in self.ks)
        return METRICS[self.icl_task_type]

    @property
    def metrics(self) -> list[str]:
        """The reported metrics, headline first."""
        if self.metric_names:
            return [FOUNDRY_METRICS.get(m, m) for m in self.metric_names]
        return list(self.available_metrics)


@dataclass
class Request:
    item: int
    """Index of the item in the task's file."""
    option: int
    """Choice (multiple_choice), context option (schema), or 0."""
    preamble: str
    """prompt_string + few-shot examples: tokenized with the tokenizer's special tokens."""
    context: str
    """The item's own prompt text: tokenized without special tokens, after the preamble."""
    continuation: str = ""
    """The scored text (empty for generation)."""


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


def needs_prefix_space(tokenizer: Any) -> bool:
    """GPT-2-style BPE encodes " a" as one token and wants a space before a continuation; SentencePiece does not."""
    return len(tokenizer(" a", add_special_tokens=False)["input_ids"]) == 1
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


def partitions(cfg: ICLTaskConfig, items: list[dict[str, Any]]) -> dict[str | None, list[int]]:
    """Item indices per category (sorted by name), or one partition `None` holding every item."""
    if not cfg.has_categories:
        return {None: list(range(len(items)))}
    groups: dict[str | None, list[int]] = defaultdict(list)
    for index, item in enumerate(items):
        groups[str(item["category"])].append(index)
    return dict(sorted(groups.items()))


def fewshot_indices(size: int, shots: int, position: int, rng: random.Random) -> set[int]:
    """LLM Foundry's draw: `shots` positions without replacement, never `position` (a set: its order is kept)."""
    shots = min(size - 1, shots)
    picks = set(rng.sample(range(size), shots))
    if position in picks:
        picks.remove(position)
        if len(picks) >= size - 1:
            return picks
        replacement = rng.choice(range(size))
        while replacement in picks or replacement == position:
            replacement = rng.choice(range(size))
        picks.add(replacement)
    return picks


class PromptBuilder:
    """Foundry's prompt construction for one task: few-shot text, the item's context(s), continuations."""

    def __init__(self, cfg: ICLTaskConfig, items: list[dict[str, Any]], prefix_space: bool) -> None:
        self.cfg = cfg
        self.raw = items
        self.items = [_strip(item) for item in items] if cfg.strip_dataset else items
        self.prefix_space = prefix_space
        self.has_cot = any("chain_of_thought" in item for item in items)

    def requests(self, shots: int) -> list[Request]:
        """Every request of the task at `shots` few-shot examples, in item order."""
        out: list[Request] = []
        for group in partitions(self.cfg, self.items).values():
            rng = random.Random(self.cfg.fewshot_random_seed)
            for position, index in enumerate(group):
                preamble = self.cfg.prompt_string
                if shots > 0:
                    for pick in fewshot_indices(len(group), shots, position, rng):
                        preamble += self.example(self.items[group[pick]], preamble)
                out += self.item_requests(index, preamble)
        out.sort(key=lambda r: (r.item, r.option))
        return out

    def _spaced(self, text: str) -> str:
        return f" {text}" if self.prefix_space and not text.startswith(" ") else text

    def answer(self, item: dict[str, Any]) -> str:
        """The solved answer of a few-shot example (no prefix space, as Foundry's in-context answers)."""
        kind = self.cfg.icl_task_type
        if kind == "language_modeling":
            return item["continuation"]
        if kind == "multiple_choice":
            return item["choices"][item["gold"]]
        if kind == "code_evaluation":
            return item["canonical_solution"]
        if self.has_cot:
            return f"{item.get('chain_of_thought', '')}{self.cfg.cot_delimiter}{item['answer']}"
        return item["answer"]

    def example(self, item: dict[str, Any], preceding: str) -> str:
        """One solved few-shot example, appended to `preceding`."""
        c = self.cfg
        if c.icl_task_type == "schema":
            context = item["context_options"][item["gold"]]
            if preceding:
                context = c.example_delimiter + context
            return f"{c.question_prelimiter}{context}{c.continuation_delimiter}{item['continuation']}"
        return self.context(item, preceding) + self.answer(item)

    def context(self, item: dict[str, Any], preceding: str) -> str:
        c = self.cfg
        field_name = {"multiple_choice": "query", "code_evaluation": "prompt"}.get(c.icl_task_type, "context")
        text = c.question_prelimiter + item[field_name]
        if preceding:
            text = c.example_delimiter + text
        return text if c.icl_task_type == "code_evaluation" else text + c.continuation_delimiter

    def item_requests(self, index: int, preamble: str) -> list[Request]:
        c, item = self.cfg, self.items[index]
        if c.icl_task_type == "schema":
            if preamble:
                delimiter = c.continuation_delimiter.rstrip() if c.strip_dataset else c.continuation_delimiter
                contexts = [f"{c.question_prelimiter}{c.example_delimiter}{o}{delimiter}" for o in item["context_options"]]
            else:
                contexts = [f"{c.question_prelimiter}{o}" for o in item["context_options"]]
            continuation = self._spaced(item["continuation"])
            return [Request(index, k, preamble, ctx, continuation) for k, ctx in enumerate(contexts)]
        context = self.context(item, preamble)
        if c.strip_dataset:
            context = context.rstrip()
        if c.icl_task_type == "multiple_choice":
            return [Request(index, k, preamble, context, self._spaced(choice)) for k, choice in enumerate(item["choices"])]
        if c.icl_task_type == "language_modeling":
            return [Request(index, 0, preamble, context, self._spaced(item["continuation"]))]
        return [Request(index, 0, preamble, context)]

    def answers(self, index: int) -> set[str]:
        """generation: the accepted answers of an item (answer and aliases)."""
        item = self.items[index]
        return {item["answer"], *item.get("aliases", [])}

    def max_answer_tokens(self, tokenizer: Any) -> int:
        """Foundry's generation budget: the longest answer (or alias), with its chain of thought, in tokens
        (special tokens included), plus 10 when a cot_delimiter is set."""
        longest = 0
        for item in self.raw:
            for answer in {item["answer"], *item.get("aliases", [])}:
                text = f"{item.get('chain_of_thought', '')}{self.cfg.cot_delimiter}{answer}" if self.has_cot else answer
                longest = max(longest, len(tokenizer(text)["input_ids"]))
        return longest + (10 if self.cfg.cot_delimiter else 0)


def _strip(item: dict[str, Any]) -> dict[str, Any]:
    return {k: v.strip() if isinstance(v, str) else v for k, v in item.items()}
