"""Config loading (layered OmegaConf yaml) and validation into typed dataclasses."""

from __future__ import annotations

from pathlib import Path
from typing import TypeVar

from llmfoundry.config.build import build
from llmfoundry.config.duration import Duration
from llmfoundry.config.loader import LoadedConfig, load_config
from llmfoundry.errors import UserError

T = TypeVar("T")


# The keys that tell a training config from an evaluation config, and the verb that runs each.
KINDS = {"TrainConfig": ("training", "foundry train", ("train_loader", "max_duration")),
         "EvalConfig": ("evaluation", "foundry eval", ("models", "icl_tasks"))}


def load_typed(cls: type[T], path: str | Path, overrides: list[str] | None = None) -> tuple[T, LoadedConfig]:
    """Load `path` with its bases and overrides and validate it as `cls`; every problem is reported at once."""
    loaded = load_config(path, overrides)
    _check_kind(cls.__name__, loaded.data, path)
    return build(cls, loaded.data, origin=loaded.origin), loaded


def _check_kind(name: str, data: dict, path: str | Path) -> None:
    """A training yaml given to `foundry eval` (or the reverse) is one line naming the right verb, rather than
    a line for each of its keys the other schema does not know."""
    if name not in KINDS or any(key in data for key in KINDS[name][2]):
        return
    for other, (what, verb, keys) in KINDS.items():
        if other != name and all(key in data for key in keys):
            raise UserError(f"{path}: this is {_article(what)} config ({', '.join(keys)}), not "
                            f"{_article(KINDS[name][0])} one; run it with `{verb} {path}`")


def _article(word: str) -> str:
    return ("an " if word[0] in "aeiou" else "a ") + word


__all__ = ["Duration", "LoadedConfig", "build", "load_config", "load_typed"]
