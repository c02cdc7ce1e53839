"""Config loading (layered OmegaConf yaml) and validation into typed dataclasses."""

from __future__ import annotations

from pathlib import Path
from typing import TypeVar

from llmfoundry.config.build import build
from llmfoundry.config.duration import Duration
from llmfoundry.config.loader import LoadedConfig, load_config

T = TypeVar("T")


def load_typed(cls: type[T], path: str | Path, overrides: list[str] | None = None) -> tuple[T, LoadedConfig]:
    """Load `path` with its bases and overrides and validate it as `cls`; every problem is reported at once."""
    loaded = load_config(path, overrides)
    return build(cls, loaded.data, origin=loaded.origin), loaded


__all__ = ["Duration", "LoadedConfig", "build", "load_config", "load_typed"]
