"""Saving training checkpoints: one DCP folder per save, complete before it appears under its name.

A save writes `checkpoints/.tmp-step-XXXXXXXX`, copies the resolved config inside, renames it to
`step-XXXXXXXX`, and only then rewrites `checkpoints/latest` (via a temporary file and an atomic rename).
A run killed at any moment leaves `latest` naming a complete checkpoint.
"""

from __future__ import annotations

import os
import shutil
import warnings
from pathlib import Path
from typing import Any

from llmfoundry.checkpoint.reader import LATEST
from llmfoundry.distributed import barrier

PREFIX = "step-"


def checkpoint_name(step: int) -> str:
    return f"{PREFIX}{step:08d}"


def latest_checkpoint(folder: Path) -> Path | None:
    pointer = folder / LATEST
    if not pointer.exists():
        return None
    path = folder / pointer.read_text().strip()
    return path if (path / ".metadata").exists() else None


def save_checkpoint(folder: Path, step: int, state: dict[str, Any], config_yaml: str, *, is_main: bool,
                    keep: int) -> Path:
    import torch.distributed.checkpoint as dcp

    name = checkpoint_name(step)
    tmp, final = folder / f".tmp-{name}", folder / name
    if is_main:
        folder.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)
    barrier()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        dcp.save(state, checkpoint_id=str(tmp))
    if is_main:
        (tmp / "config.yaml").write_text(config_yaml)
        shutil.rmtree(final, ignore_errors=True)
        os.rename(tmp, final)
        pointer = folder / f".{LATEST}.tmp"
        pointer.write_text(name + "\n")
        os.replace(pointer, folder / LATEST)
        if keep > 0:
            saved = sorted(p for p in folder.iterdir() if p.name.startswith(PREFIX))
            for old in saved[:-keep]:
                shutil.rmtree(old, ignore_errors=True)
    barrier()
    return final


def load_checkpoint(path: Path, state: dict[str, Any]) -> None:
    import torch.distributed.checkpoint as dcp

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        dcp.load(state, checkpoint_id=str(path))
