"""`preprocessing_fn`: turn a dataset's rows into prompt/response or chat examples, as LLM Foundry does.

Three spellings, as in Foundry: a name Foundry registers for a hub dataset its yamls use (below), an import
path `module:function`, or a mapping `{prompt: COLUMN, response: COLUMN}`. Without one, a dataset named
like a registered one (`hf_name: tatsu-lab/alpaca`) gets that preprocessor; otherwise rows must already hold
prompt/response or messages. Each registered function reproduces Foundry's formatting of that dataset's
columns exactly (the prompt strings are part of those datasets' format).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from llmfoundry.errors import UserError

Preprocessor = Callable[[dict[str, Any]], dict[str, Any]]

DOLLY_PROMPT = ("Below is an instruction that describes a task. Write a response that appropriately completes the "
                "request.\n\n### Instruction:\n{instruction}\n\n### Response:\n")


def alpaca(row: dict[str, Any]) -> dict[str, Any]:
    """tatsu-lab/alpaca: one `text` holding the prompt up to and including '### Response:'."""
    prompt, sep, response = row["text"].partition("### Response:")
    if not sep:
        raise ValueError("no '### Response:' in text")
    return {"prompt": prompt + sep, "response": response}


def dolly(row: dict[str, Any]) -> dict[str, Any]:
    """HuggingFaceH4/databricks_dolly_15k: instruction (+ input) in the Alpaca prompt, output as response."""
    instruction = row["instruction"] + ("\n" + row["input"] if row["input"] != "" else "")
    return {"prompt": DOLLY_PROMPT.format(instruction=instruction), "response": row["output"]}


def p3(row: dict[str, Any]) -> dict[str, Any]:
    """bigscience/P3: inputs + ':' as the prompt."""
    return {"prompt": row["inputs"] + ":", "response": row["targets"]}


def muennighoff(row: dict[str, Any]) -> dict[str, Any]:
    """Muennighoff/P3 and Muennighoff/flan: a space between prompt and response when neither has one."""
    prompt, response = row["inputs"], row["targets"]
    if not (prompt.endswith((" ", "\n", "\t")) or response.startswith((" ", "\n", "\t"))):
        response = " " + response
    return {"prompt": prompt, "response": response}


def sharegpt(row: dict[str, Any]) -> dict[str, Any]:
    """teknium/OpenHermes-2.5 (ShareGPT): conversations of {from, value} -> messages."""
    roles = {"human": "user", "gpt": "assistant"}
    return {"messages": [{"role": roles.get(m["from"], m["from"]), "content": m["value"]}
                         for m in row["conversations"]]}


REGISTERED: dict[str, Preprocessor] = {
    "tatsu-lab/alpaca": alpaca,
    "HuggingFaceH4/databricks_dolly_15k": dolly,
    "bigscience/P3": p3,
    "Muennighoff/P3": muennighoff,
    "Muennighoff/flan": muennighoff,
    "teknium/OpenHermes-2.5": sharegpt,
}


def resolve_preprocessor(spec: str | dict[str, str] | None, dataset_name: str | None,
                         where: str) -> Preprocessor | None:
    """The function `preprocessing_fn` names (or the one registered for `dataset_name`), None for none."""
    if spec is None:
        return REGISTERED.get(dataset_name or "")
    if isinstance(spec, dict):
        if sorted(spec) != ["prompt", "response"]:
            raise UserError(f"{where}: a mapping must have exactly the keys prompt and response, got {sorted(spec)}")
        return lambda row: {"prompt": row[spec["prompt"]], "response": row[spec["response"]]}
    if spec in REGISTERED:
        return REGISTERED[spec]
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise UserError(f"{where}: {spec!r} is neither a registered preprocessor ({', '.join(REGISTERED)}) nor "
                        "an import path module:function")
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise UserError(f"{where}: cannot import {module_name} ({err})") from None
    fn = getattr(module, attr, None)
    if not callable(fn):
        raise UserError(f"{where}: {module_name} has no function {attr}")
    return fn


def apply(fn: Preprocessor, row: dict[str, Any], where: str) -> dict[str, Any]:
    """Run the user's preprocessor on one row; a row it cannot handle is named with the failure."""
    try:
        return fn(row)
    except (KeyError, ValueError, TypeError, AttributeError) as err:
        raise UserError(f"{where}: preprocessing_fn {getattr(fn, '__name__', fn)} failed on this row "
                        f"({type(err).__name__}: {err}); columns: {', '.join(map(str, row))}") from None
