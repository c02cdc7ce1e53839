"""Read checkpoints back: resolve what a path or s3:// URL means, verify it, load it with clear errors.

A checkpoint folder is a torch.distributed.checkpoint (DCP) directory holding `{"model": ..., ...}`, the run's
resolved `config.yaml` and a `manifest.json` of file hashes; a run folder names its newest complete checkpoint
in `checkpoints/latest`. Sharded checkpoints written by any number of processes load here without a process
group. Every load verifies the manifest first (so damage is named, never trained on), then compares the
checkpoint's keys and shapes with what is being loaded (a checkpoint of another model is a one-line error
naming the key), and only then reads tensors; DCP's own failures caused by the files (a truncated or
corrupt shard of a checkpoint too old to carry a manifest) become one line too. Any other failure is ours
and keeps its traceback.
"""

from __future__ import annotations

import pickle
import sys
import warnings
from pathlib import Path
from typing import Any

import yaml
from torch import nn

from llmfoundry.checkpoint.manifest import first_problem, has_manifest, hash_share, write_manifest
from llmfoundry.checkpoint.pointer import LATEST, offer_other, read_latest
from llmfoundry.errors import UserError
from llmfoundry.io import is_s3


def resolve_checkpoint(src: str | Path, verb: str = "use it") -> Path:
    """The checkpoint `src` means: itself (a folder, or a Composer `.pt`), or what a run's checkpoints/latest names.

    An s3:// URL (run or checkpoint) is downloaded into the local cache first (see checkpoint/remote.py).
    """
    from llmfoundry.checkpoint.composer import format_load_path, is_composer_checkpoint

    if is_s3(src):
        from llmfoundry.checkpoint.remote import fetch_checkpoint

        return fetch_checkpoint(str(src))
    path = Path(format_load_path(str(src)))
    if not path.exists():
        raise UserError(f"{src}: no such run or checkpoint folder")
    if (path / ".metadata").exists() or (path.is_file() and is_composer_checkpoint(path)):
        return path
    ckpt_dir = path / "checkpoints"
    if ckpt_dir.is_dir():
        target = read_latest(ckpt_dir, verb)
        if target is None:
            raise UserError(f"{src}: run folder has no complete checkpoint yet (no checkpoints/{LATEST})")
        return target
    raise UserError(f"{src}: not a checkpoint folder (no .metadata) nor a run folder (no checkpoints/{LATEST})")


def verify_checkpoint(checkpoint: Path, verb: str = "use it") -> list[str]:
    """Check the files against the manifest (each rank its share; all ranks agree); notes for the log.

    Raises a UserError naming the first damaged file, and offering the previous complete checkpoint of the
    same run. A checkpoint written before manifests existed loads with a note saying it was not verified.
    """
    import torch.distributed as dist

    distributed = dist.is_available() and dist.is_initialized()
    rank, world = (dist.get_rank(), dist.get_world_size()) if distributed else (0, 1)
    problem = first_problem(checkpoint, rank, world)
    if world > 1:
        found: list[str | None] = [None] * world
        dist.all_gather_object(found, problem)
        problem = next((p for p in found if p), None)
    if problem:
        raise UserError(f"{problem} (the checkpoint is damaged){offer_other(checkpoint.parent, checkpoint.name, verb)}")
    if not has_manifest(checkpoint):
        return [f"{checkpoint}: no manifest.json (written before checkpoints carried checksums); loaded unverified"]
    return []


def read_metadata(checkpoint: Path) -> Any:
    from torch.distributed.checkpoint import FileSystemReader

    try:
        return FileSystemReader(str(checkpoint)).read_metadata()
    except (OSError, EOFError, pickle.UnpicklingError, AttributeError, ValueError) as err:
        raise UserError(f"{checkpoint / '.metadata'}: unreadable ({type(err).__name__}: {err}); the checkpoint is "
                        "damaged") from None


def check_matches(checkpoint: Path, state: dict[str, Any], where: str) -> None:
    """Every key being loaded exists in the checkpoint with the same shape, or a line naming the first that does not."""
    from torch.distributed.checkpoint._nested_dict import flatten_state_dict

    saved = read_metadata(checkpoint).state_dict_metadata
    flat, _ = flatten_state_dict(state)
    for key, value in flat.items():
        meta = saved.get(key)
        if meta is None:
            raise UserError(f"{where}: {checkpoint} does not match this run: it lacks {key} (written by another "
                            "model or optimizer?)")
        shape = getattr(value, "shape", None)
        if shape is not None and hasattr(meta, "size") and tuple(meta.size) != tuple(shape):
            raise UserError(f"{where}: {checkpoint} does not match this run: {key} is {tuple(meta.size)} there, "
                            f"{tuple(shape)} here (written by a model of another shape?)")


def load_state(checkpoint: Path, state: dict[str, Any], where: str) -> None:
    """dcp.load into `state` in place, after the key/shape check; file-caused DCP failures become one line."""
    import torch.distributed.checkpoint as dcp

    check_matches(checkpoint, state, where)
    try:
        with warnings.catch_warnings():  # "assuming the intent is to load in a single process": it is
            warnings.simplefilter("ignore", UserWarning)
            dcp.load(state, checkpoint_id=str(checkpoint))
    except BaseException as err:  # CheckpointException is a BaseException; only file damage is translated
        cause = _file_damage(err)
        if cause is None:
            raise
        text = str(cause).strip()
        first = text.splitlines()[0].split(". ")[0] if text else type(cause).__name__
        raise UserError(f"{where}: {checkpoint}: cannot read the checkpoint ({type(cause).__name__}: {first}); the "
                        f"files are damaged{offer_other(checkpoint.parent, checkpoint.name)}") from None


def _file_damage(err: BaseException) -> BaseException | None:
    """The underlying exception when a DCP failure comes from unreadable files, else None (our bug: stay loud)."""
    from torch.distributed.checkpoint import CheckpointException

    causes = [exc for exc, _ in err.failures.values()] if isinstance(err, CheckpointException) else [err]
    for exc in causes:
        if isinstance(exc, (OSError, EOFError, pickle.UnpicklingError)):
            return exc
        if isinstance(exc, RuntimeError) and "PytorchStreamReader" in str(exc):  # torch.load of a cut/corrupt shard
            return exc
    return None


def read_config(checkpoint: Path) -> dict[str, Any]:
    """The resolved config saved with a checkpoint (inside it, or in its run folder)."""
    for candidate in (checkpoint / "config.yaml", checkpoint.parent.parent / "config.yaml"):
        if candidate.exists():
            data = yaml.safe_load(candidate.read_text())
            if not isinstance(data, dict) or "model" not in data:
                raise UserError(f"{candidate}: has no 'model' section")
            return data
    raise UserError(f"{checkpoint}: no config.yaml beside the checkpoint")


def load_model_from_checkpoint(src: str | Path, *, merge_lora: bool = True) -> tuple[nn.Module, dict[str, Any]]:
    """Build the model the checkpoint's config describes and load its weights (CPU, fp32; LoRA merged unless asked)."""
    from llmfoundry.checkpoint.composer import is_composer_checkpoint, load_composer_model
    from llmfoundry.config import build
    from llmfoundry.models import ModelConfig, build_model

    checkpoint = resolve_checkpoint(src)
    if is_composer_checkpoint(checkpoint):  # a Composer / LLM Foundry run's checkpoint
        return load_composer_model(checkpoint)
    for note in verify_checkpoint(checkpoint):
        print(f"note: {note}", file=sys.stderr)
    config = read_config(checkpoint)
    args = build(ModelConfig, config["model"], key="model", origin=lambda _: str(checkpoint / "config.yaml"))
    model = build_model(args, device="meta")
    model.to_empty(device="cpu")
    peft = getattr(args, "peft_config", None)
    if peft is not None:  # a LoRA run's checkpoint holds the base weights and the adapters under these names
        from llmfoundry.models.lora import apply_lora

        apply_lora(model, peft)
    state = model.state_dict()
    load_state(checkpoint, {"model": state}, where=str(src))
    model.load_state_dict(state)
    if peft is not None and merge_lora:  # exports and evaluation get one plain model with the adapters folded in
        from llmfoundry.models.lora import merge_lora as merge

        merge(model)
    return model.eval(), config


def save_model_checkpoint(model: nn.Module, config: dict[str, Any], folder: str | Path) -> Path:
    """Write a weights-only checkpoint folder in the same format the trainer writes (model + config)."""
    import torch.distributed.checkpoint as dcp

    path = Path(folder)
    path.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        dcp.save({"model": {k: v.detach() for k, v in model.state_dict().items()}}, checkpoint_id=str(path))
    (path / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    write_manifest(path, hash_share(path))
    return path


__all__ = ["load_model_from_checkpoint", "load_state", "resolve_checkpoint", "save_model_checkpoint",
           "verify_checkpoint"]
