"""code_evaluation (HumanEval): sampled completions run against the item's tests in the sandbox; pass@k.

As LLM Foundry 0.8 scored it: each problem gets `generations_per_sample` samples (do_sample, temperature 0.2
unless generation_kwargs say otherwise); a completion is cut at the first line that starts at column 0 with a
letter, digit, '#' or '`' (the function ended); the program is the prompt plus that completion, and it passes
when `entry_point(*eval(input)) == eval(output)` for every (test_inputs, test_outputs) pair. pass@k is the
unbiased estimator 1 - C(n-c, k) / C(n, k) of the HumanEval paper, averaged over problems.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np

from llmfoundry.errors import UserError
from llmfoundry.eval.sandbox import run_python

DEFAULT_SAMPLING = {"do_sample": True, "temperature": 0.2, "num_beams": 1}
FUNCTION_END = re.compile(r"\n[A-Za-z0-9#`]")


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n samples of which c pass."""
    if n - c < k:
        return 1.0
    return 1.0 - float(np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))


def completion(text: str) -> str:
    return FUNCTION_END.split(text)[0]


def passes(item: dict[str, Any], generated: str) -> bool:
    """Whether prompt + the generated body passes all of the item's tests."""
    language = item.get("language", "python")
    if language != "python":
        raise UserError(f"code_evaluation: language {language!r} is not supported (python only)")
    tests = list(zip(item["test_inputs"], item["test_outputs"]))
    return all(run_python(item["prompt"] + completion(generated), item["entry_point"], tests).passed)


def code_metrics(items: dict[int, dict[str, Any]], samples: dict[int, list[str]], ks: list[int]) -> dict[str, list[float]]:
    """pass@k per problem, for each k."""
    out: dict[str, list[float]] = {f"pass@{k}": [] for k in ks}
    for index, item in items.items():
        correct = sum(passes(item, text) for text in samples[index])
        for k in ks:
            out[f"pass@{k}"].append(pass_at_k(len(samples[index]), correct, k))
    return out
