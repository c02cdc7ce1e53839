"""Load a model to talk to: an exported Hugging Face directory, or a run folder / checkpoint exported on the fly."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmfoundry.errors import UserError


@dataclass
class Loaded:
    model: Any
    """A transformers causal LM in eval mode."""
    tokenizer: Any
    """Its tokenizer (left padding, a pad token)."""
    name: str
    """The model's name for the API (the directory's name)."""
    window: int
    """Tokens the model attends to (prompt + completion)."""


def _window(config: Any) -> int:
    for key in ("max_position_embeddings", "n_positions", "max_seq_len"):
        value = getattr(config, key, None)
        if isinstance(value, int) and value > 0:
            return value
    raise UserError("the model's config names no context window (max_position_embeddings, n_positions or "
                    "max_seq_len)")


def _from_dir(path: Path, trust_remote_code: bool) -> tuple[Any, Any]:
    from transformers import AutoModelForCausalLM

    from llmfoundry.data.tokenizer import load_tokenizer

    if (path / "modeling_foundry.py").exists() and not trust_remote_code:
        raise UserError(f"{path}: this export carries its own modeling file (modeling_foundry.py); pass "
                        "--trust-remote-code to load it")
    tokenizer = load_tokenizer(path)
    model = AutoModelForCausalLM.from_pretrained(str(path), local_files_only=True,
                                                 trust_remote_code=trust_remote_code).eval()
    return model, tokenizer


def load(src: str | Path, *, trust_remote_code: bool = False) -> Loaded:
    """An exported directory (config.json) as it is; a run folder or checkpoint is exported to a temporary
    directory first (our own export, so its modeling file, if any, is trusted) and loaded from there."""
    path = Path(src)
    if (path / "config.json").exists():
        model, tokenizer = _from_dir(path, trust_remote_code)
    elif (path / "checkpoints").is_dir() or (path / ".metadata").exists():
        from llmfoundry.checkpoint.reader import load_model_from_checkpoint
        from llmfoundry.export.hf import export_model

        ours, config = load_model_from_checkpoint(path)
        tokenizer_dir = (config.get("tokenizer") or {}).get("name")
        if tokenizer_dir is None:
            raise UserError(f"{src}: the run's config names no tokenizer (tokenizer.name)")
        with tempfile.TemporaryDirectory(prefix="foundry-chat-") as tmp:
            export_model(ours, Path(tmp) / "hf", tokenizer_dir=tokenizer_dir)
            model, tokenizer = _from_dir(Path(tmp) / "hf", trust_remote_code=True)
    else:
        raise UserError(f"{src}: neither an exported model directory (config.json) nor a run folder "
                        "(checkpoints/) nor a checkpoint folder")
    tokenizer.padding_side = "left"  # a batch's prompts end where generation starts
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise UserError(f"{src}: the tokenizer has neither a pad nor an eos token")
        tokenizer.pad_token = tokenizer.eos_token
    return Loaded(model=model, tokenizer=tokenizer, name=path.resolve().name, window=_window(model.config))
