"""`load_path` warm starts for finetuning: which of the model's weights to take from the checkpoint.

Every weight must come from the checkpoint with the same shape, with two deliberate exceptions, each reported:
- LoRA adapters (`...lora_A`, `...lora_B`) that the checkpoint lacks keep their fresh initialization (B = 0:
  finetuning starts exactly at the pretrained model).
- A sequence classifier's head (`pooler.*`, `classifier.*`) that the checkpoint lacks (an MLM-pretrained
  encoder) or holds with another shape (MNLI's 3 classes -> RTE's 2) is re-initialized. A head of the same
  shape is loaded, so STS-B/RTE/MRPC can start from an MNLI-finetuned checkpoint as in the MosaicBERT recipe.
Anything else missing or mis-shaped is a mistake in the config and stops the run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from llmfoundry.errors import UserError
from llmfoundry.models.lora import is_adapter_key

HEAD_PREFIXES = ("pooler.", "classifier.")


def checkpoint_shapes(checkpoint: Path) -> dict[str, tuple[int, ...]]:
    """Model tensor name -> shape, read from the DCP metadata (no tensor data is loaded)."""
    from torch.distributed.checkpoint import FileSystemReader

    metadata = FileSystemReader(str(checkpoint)).read_metadata().state_dict_metadata
    return {key.removeprefix("model."): tuple(meta.size) for key, meta in metadata.items()
            if key.startswith("model.") and hasattr(meta, "size")}


def warm_start_keys(model_state: dict[str, Any], checkpoint: Path,
                    shapes: dict[str, tuple[int, ...]] | None = None) -> tuple[dict[str, Any], list[str]]:
    """The part of `model_state` to load from `checkpoint`, and notes on what keeps its initialization.

    `shapes` (name -> shape) is read from the checkpoint's DCP metadata unless given (a Composer file's)."""
    shapes = checkpoint_shapes(checkpoint) if shapes is None else shapes
    load: dict[str, Any] = {}
    fresh_adapters, fresh_head = [], []
    for key, value in model_state.items():
        have = shapes.get(key)
        if have == tuple(value.shape):
            load[key] = value
        elif is_adapter_key(key) and have is None:
            fresh_adapters.append(key)
        elif key.startswith(HEAD_PREFIXES):
            fresh_head.append(f"{key} {tuple(value.shape)}" + (f" (checkpoint: {have})" if have else " (not in checkpoint)"))
        else:
            found = "lacks it" if have is None else f"has shape {have}"
            raise UserError(f"load_path: {checkpoint} does not match this model: {key} {tuple(value.shape)}, the "
                            f"checkpoint {found}")
    notes = []
    if fresh_adapters:
        notes.append(f"load_path: {len(fresh_adapters)} LoRA adapter tensors start fresh (not in the checkpoint)")
    if fresh_head:
        notes.append(f"load_path: classifier head re-initialized: {', '.join(fresh_head)}")
    return load, notes
