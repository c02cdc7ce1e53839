"""Composer / LLM Foundry checkpoints: how their users bring existing runs (`load_path`, inference-convert).

Two formats, as Composer writes them:
- monolithic: one `.pt` file (`ep0-ba60-rank0.pt`), a pickled `{"state": {"model": ..., "optimizers": ...,
  "integrations": {"huggingface": {"model": {"config": ...}, "tokenizer": ...}}, ...}, "rng": ...}`;
- sharded (`fsdp_config.state_dict_type: sharded`): a torch.distributed.checkpoint folder of that same
  nesting (keys `state.model.<name>`).
A `.pt` is read with `torch.load(weights_only=True)` and the few plain-data globals Composer's metadata uses,
never with code execution: composer need not be installed, and a file that needs more is refused.
Composer names the weights after its wrapper (`model.` + the module's names), which are our names for
hf_causal_lm and, minus that `model.`, for MPT (our parameter names are LLM Foundry's).
"""

from __future__ import annotations

import datetime
import json
import pickle
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from llmfoundry.errors import UserError

# Wrapper infixes older Composer/FSDP1 versions left in saved names.
WRAPPER_INFIXES = ("_fsdp_wrapped_module.", "_checkpoint_wrapped_module.", "_orig_mod.")


@dataclass
class ComposerCheckpoint:
    path: Path
    model: dict[str, torch.Tensor]  # Composer's names (model.<...>)
    hf_config: dict[str, Any] | None  # state.integrations.huggingface.model.config.content
    hf_class: str | None  # e.g. llmfoundry.models.mpt.modeling_mpt.MPTForCausalLM
    tokenizer_files: dict[str, Any]  # file name -> {file_extension, content}
    batch: int | None  # batches trained, for the notes


def is_composer_checkpoint(path: Path) -> bool:
    """A Composer `.pt` file (a torch zip archive), or a DCP folder holding Composer's `state.model.*` keys."""
    if path.is_file():
        return zipfile.is_zipfile(path) or path.suffix == ".pt"
    if (path / ".metadata").is_file():
        return any(key.startswith("state.model.") for key in _dcp_keys(path))
    return False


def format_load_path(load_path: str, rank: int = 0) -> str:
    """Composer's per-rank placeholder in load_path (`latest-rank{rank}.pt`): rank 0's file holds the model."""
    return load_path.replace("{rank}", str(rank))


def read_composer(path: Path) -> ComposerCheckpoint:
    """The model weights (CPU, as saved) and the metadata of a Composer checkpoint."""
    if path.is_dir():
        return _read_sharded(path)
    state = _torch_load(path).get("state")
    if not isinstance(state, dict) or not isinstance(state.get("model"), dict):
        raise UserError(f"{path}: not a Composer checkpoint (no state.model)")
    hf = ((state.get("integrations") or {}).get("huggingface") or {})
    config = (hf.get("model") or {}).get("config") or {}
    batch = ((state.get("timestamp") or {}).get("Timestamp") or {}).get("batch")
    model = {_clean(k): v for k, v in state["model"].items() if isinstance(v, torch.Tensor)}
    return ComposerCheckpoint(path, model, config.get("content"), config.get("class"), hf.get("tokenizer") or {},
                              batch)


def _torch_load(path: Path) -> dict[str, Any]:
    import numpy as np
    from numpy._core.multiarray import _reconstruct
    from torch.torch_version import TorchVersion

    # RNG states (numpy arrays), timestamps and versions: plain data. numpy 1.x pickles name numpy.core.
    safe = [datetime.timedelta, TorchVersion, np.ndarray, np.dtype, np.dtypes.UInt32DType, _reconstruct,
            (_reconstruct, "numpy.core.multiarray._reconstruct")]
    try:
        with torch.serialization.safe_globals(safe):
            data = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        detail = next((ln.strip() for ln in str(err).splitlines() if "Unsupported global" in ln), str(err)[:200])
        raise UserError(f"{path}: refusing to unpickle this checkpoint: it holds more than weights and plain data "
                        f"({detail})") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile) as err:
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise UserError(f"{path}: not a readable torch checkpoint ({first})") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: not a Composer checkpoint (a {type(data).__name__}, not a mapping)")
    return data


def _dcp_keys(path: Path) -> list[str]:
    from torch.distributed.checkpoint import FileSystemReader

    return list(FileSystemReader(str(path)).read_metadata().state_dict_metadata)


def _read_sharded(path: Path) -> ComposerCheckpoint:
    """A Composer sharded checkpoint: DCP with `state.model.<name>` tensors, read whole in this process."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint import FileSystemReader
    from torch.distributed.checkpoint.metadata import TensorStorageMetadata

    meta = FileSystemReader(str(path)).read_metadata().state_dict_metadata
    prefix = "state.model."
    wanted = {k: torch.empty(m.size, dtype=m.properties.dtype) for k, m in meta.items()
              if k.startswith(prefix) and isinstance(m, TensorStorageMetadata)}
    nested = {"state": {"model": {k.removeprefix(prefix): v for k, v in wanted.items()}}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        dcp.load(nested, checkpoint_id=str(path))
    model = {_clean(k): v for k, v in nested["state"]["model"].items()}
    return ComposerCheckpoint(path, model, None, None, {}, None)


def _clean(name: str) -> str:
    for infix in WRAPPER_INFIXES:
        name = name.replace(infix, "")
    return name


def state_for(model_keys: list[str], ckpt: ComposerCheckpoint) -> dict[str, torch.Tensor]:
    """The checkpoint's weights under `model_keys`' names: as saved (hf_causal_lm) or minus `model.` (MPT)."""
    options = [ckpt.model, {k.removeprefix("model."): v for k, v in ckpt.model.items()}]
    best = max(options, key=lambda o: len(set(model_keys) & set(o)))
    if not set(model_keys) & set(best):
        raise UserError(f"load_path: {ckpt.path} holds none of this model's weights (checkpoint names like "
                        f"{next(iter(ckpt.model), '?')}, model names like {model_keys[0]})")
    return best


def load_composer_weights(model: nn.Module, path: Path, weights_only: bool) -> list[str]:
    """`load_path` on a Composer checkpoint: its weights into `model` (plain or FSDP2-sharded), as a warm start
    of our own checkpoints is (same shape checks, LoRA adapters and a new classifier head start fresh)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict, set_model_state_dict

    from llmfoundry.train.warm_start import warm_start_keys

    if not weights_only:
        raise UserError(f"load_path: {path} is a Composer checkpoint: only its weights can be loaded here (its "
                        "optimizer and trainer state are Composer's); set load_weights_only: true")
    ckpt = read_composer(path)
    ours = get_model_state_dict(model)
    state = state_for(list(ours), ckpt)
    wanted, notes = warm_start_keys(ours, path, shapes={k: tuple(v.shape) for k, v in state.items()})
    full = {k: state[k].to(ours[k].dtype) for k in wanted}
    set_model_state_dict(model, full, options=StateDictOptions(full_state_dict=True, strict=len(wanted) == len(ours)))
    trained = f" after {ckpt.batch} batches" if ckpt.batch is not None else ""
    return [f"load_path: {len(full)} weights from the Composer checkpoint {path.name}{trained}", *notes]


# -- the model a checkpoint describes (inference-convert) ---------------------------------------------------

# LLM Foundry MPT config keys we have no field for, with the value that means "what we compute".
_NEUTRAL = {
    "attn_config.fused_qkv": True, "attn_config.kv_dim": None, "attn_config.nope": False, "attn_config.qk_gn": False,
    "attn_config.sliding_window_size": -1, "attn_config.attn_logit_softcapping": None,
    "attn_config.attn_temperature_tuning.attn_scale": 0.0, "block_overrides": None, "final_logit_softcapping": None,
    "head_dim": None, "fc_type.name": "torch", "ffn_config.fc_type.name": "torch",
    "init_config.emb_init_uniform_lim": None, "attention_bias": False,
}


def mpt_args_from_foundry(config: dict[str, Any], where: str) -> Any:
    """Our MptArgs for LLM Foundry's MPT config (its HF `config.json` or a Composer checkpoint's copy)."""
    from llmfoundry.config import build
    from llmfoundry.models.mpt import MptArgs

    ffn_type = (config.get("ffn_config") or {}).get("ffn_type", "mptmlp")
    if ffn_type not in ("mptmlp", "mptglu"):
        raise UserError(f"{where}: ffn_type {ffn_type!r} (MoE) is not supported")
    for key, neutral in _NEUTRAL.items():
        value = _get(config, key, neutral)
        if value != neutral:
            raise UserError(f"{where}: the model sets {key}={value!r}, which has no equivalent here")
    raw = _known(MptArgs, config)
    raw.update(name="mpt_causal_lm", pad_vocab_multiple=1)
    return build(MptArgs, raw, key="model", origin=lambda _: where)


def _get(config: dict[str, Any], dotted: str, default: Any) -> Any:
    node: Any = config
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return default
        node = node[part]
    return node


def _known(cls: type, raw: dict[str, Any]) -> dict[str, Any]:
    """The keys of `raw` that `cls` has fields for (recursively), minus nulls where our field has a value."""
    import dataclasses
    import typing

    hints = typing.get_type_hints(cls)
    out = {}
    for f in dataclasses.fields(cls):
        if f.name not in raw or not f.init:
            continue
        value = raw[f.name]
        if value is None and f.default is not None:
            continue
        if isinstance(value, dict) and dataclasses.is_dataclass(hints[f.name]):
            value = _known(hints[f.name], value)
        out[f.name] = value
    return out


def load_composer_model(path: Path) -> tuple[nn.Module, dict[str, Any]]:
    """The model a Composer checkpoint holds, built from its saved Hugging Face config, and a config dict
    (model + tokenizer) in our run's shape, as `load_model_from_checkpoint` returns for our own checkpoints."""
    from llmfoundry.models import build_model

    ckpt = read_composer(path)
    where = f"{path}: state.integrations.huggingface.model.config"
    if ckpt.hf_config is None:
        raise UserError(f"{path}: this Composer checkpoint has no saved model config ({where.split(': ')[1]}); "
                        "train with it as load_path under a yaml that describes the model instead")
    if ckpt.hf_config.get("model_type") != "mpt" or not (ckpt.hf_class or "").endswith("MPTForCausalLM"):
        raise UserError(f"{where}: {ckpt.hf_class} is not supported here (LLM Foundry MPT checkpoints are); "
                        "export it with LLM Foundry's convert_composer_to_hf.py and use hf_causal_lm")
    args = mpt_args_from_foundry(ckpt.hf_config, where)
    model = build_model(args, device="meta")
    model.to_empty(device="cpu")
    wanted = list(model.state_dict())
    state = state_for(wanted, ckpt)
    missing = [k for k in wanted if k not in state]
    if missing:
        raise UserError(f"{path}: the checkpoint lacks {missing[0]} (and {len(missing) - 1} more) of its own model")
    model.load_state_dict({k: state[k].float() for k in wanted})
    from dataclasses import asdict

    return model.eval(), {"model": asdict(args), "tokenizer": {"name": _tokenizer_dir(ckpt.tokenizer_files)}}


def _tokenizer_dir(files: dict[str, Any]) -> str | None:
    """The tokenizer Composer saved inside the checkpoint, written out (its json files) to a temporary
    directory removed at exit, so an export carries the run's tokenizer; None when the checkpoint has none."""
    import atexit
    import shutil
    import tempfile

    entries = {name: e for name, e in files.items() if isinstance(e, dict) and e.get("file_extension") == ".json"}
    if "tokenizer_config.json" not in entries:
        return None
    out = Path(tempfile.mkdtemp(prefix="composer-tokenizer-"))
    atexit.register(shutil.rmtree, out, True)
    for name, entry in entries.items():
        (out / name).write_text(json.dumps(entry["content"]))
    return str(out)
