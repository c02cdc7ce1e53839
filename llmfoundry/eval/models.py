"""The `models:` entries of an eval yaml (LLM Foundry's shape) and how each becomes a model to score.

- `name: hf_causal_lm`: a local Hugging Face directory (`pretrained: false` = its config, freshly
  initialized), optionally with LoRA adapters in peft's format (`pretrained_lora_id_or_path`), or 8-bit
  weights (`load_in_8bit`, which needs CUDA and bitsandbytes).
- an inline architecture (`name: mpt_causal_lm`, `gpt2`, ... with its keys, as in a train yaml) whose weights
  come from `models[].load_path` (a foundry run or checkpoint folder), or a fresh seeded initialization
  when there is none (LLM Foundry's test_eval.yaml does this; a note says so).
- `model: {load_path: RUN_OR_CHECKPOINT}` alone: the architecture is the run's own.
Our models are evaluated through their native transformers class (the class `foundry inference-convert`
writes, with the same logits), so generation uses the library's KV cache; an architecture without one is
scored by our module and generates without a cache.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch

from llmfoundry.config.schema import TokenizerConfig
from llmfoundry.errors import UserError

HF_KEYS = ("name", "pretrained_model_name_or_path", "pretrained", "init_device", "trust_remote_code",
           "load_in_8bit", "pretrained_lora_id_or_path", "use_auth_token", "config_overrides", "use_flash_attention_2",
           "attn_implementation")


@dataclass
class HFEvalModel:
    name: Literal["hf_causal_lm"] = "hf_causal_lm"
    """A Hugging Face causal LM."""
    pretrained_model_name_or_path: str = ""
    """A local Hugging Face model directory (hub ids are never downloaded)."""
    pretrained: bool = True
    """Its weights (true) or a fresh initialization of its config (false)."""
    init_device: Literal["cpu", "meta", "mixed"] = "cpu"
    """LLM Foundry's key; accepted (weights load straight onto the evaluation device)."""
    trust_remote_code: bool = False
    """Allow a modeling file shipped in the directory."""
    load_in_8bit: bool = False
    """8-bit weights via bitsandbytes (CUDA only)."""
    pretrained_lora_id_or_path: str | None = None
    """A local dir of LoRA adapters in peft's format (adapter_config.json + weights) to apply."""
    config_overrides: dict[str, Any] = field(default_factory=dict)
    """Config attributes to set before the weights load (LLM Foundry's key)."""
    use_auth_token: bool | str | None = None
    """LLM Foundry's hub token key: nothing is downloaded here, so it has no effect."""
    use_flash_attention_2: bool = False
    """Ask transformers for FlashAttention-2 (needs the flash-attn package and a GPU)."""
    attn_implementation: str | None = None
    """transformers' attention backend (eager, sdpa, flash_attention_2)."""
    load_path: str | None = None
    """Not for hf_causal_lm: set pretrained_model_name_or_path."""

    def __post_init__(self) -> None:
        if self.load_path is not None:
            raise UserError("load_path: an hf_causal_lm model comes from pretrained_model_name_or_path")
        if not self.pretrained_model_name_or_path:
            raise UserError("pretrained_model_name_or_path: required for hf_causal_lm (a local directory)")


@dataclass
class EvalModel:
    model_name: str
    """Name of the model in result tables."""
    model: dict[str, Any]
    """hf_causal_lm keys, an inline architecture (as in a train yaml), or {load_path: RUN_OR_CHECKPOINT}."""
    tokenizer: TokenizerConfig | None = None
    """Tokenizer directory (default: the model directory, or the run's tokenizer)."""
    load_path: str | None = None
    """Weights for an inline architecture: a foundry run or checkpoint folder (LLM Foundry's place for it)."""


def spec_of(entry: EvalModel, key: str, origin: Any) -> Any:
    """The validated model block: HFEvalModel, a ModelConfig, or a str (a run/checkpoint folder)."""
    from llmfoundry.config import build
    from llmfoundry.models import ModelConfig

    raw = dict(entry.model)
    name = raw.get("name", "hf_causal_lm")
    if name in ("openai_chat", "openai_causal_lm"):
        raise UserError(f"{key}.name: {name} is an API model; it is not supported here (no network at run time)")
    ffn = (raw.get("ffn_config") or {}).get("ffn_type")
    if ffn in ("torch_dmoe", "mb_dmoe"):
        raise UserError(f"{key}.ffn_config.ffn_type: {ffn} (mixture of experts) is not supported")
    if name == "hf_causal_lm" and "load_path" not in raw:
        return build(HFEvalModel, raw, key=key, origin=origin)
    if set(raw) == {"load_path"} or (set(raw) == {"name", "load_path"}):
        return str(raw["load_path"])
    return build(ModelConfig, raw, key=key, origin=origin)


def load_model(entry: EvalModel, spec: Any, device: torch.device, seed: int, notes: list[str]) -> tuple[Any, Any]:
    """(model ready for scoring and generation, tokenizer)."""
    from llmfoundry.data.tokenizer import load_tokenizer

    kwargs = entry.tokenizer.kwargs if entry.tokenizer else {}
    if isinstance(spec, HFEvalModel):
        model = _load_hf(spec, device, notes, entry.model_name)
        tok_dir = entry.tokenizer.name if entry.tokenizer else spec.pretrained_model_name_or_path
        return model, load_tokenizer(tok_dir, **kwargs)
    model, config = _load_ours(entry, spec, seed, notes)
    tok_dir = entry.tokenizer.name if entry.tokenizer else (config.get("tokenizer") or {}).get("name")
    if tok_dir is None:
        raise UserError(f"models.{entry.model_name}: no tokenizer; set tokenizer.name")
    tokenizer = load_tokenizer(tok_dir, **kwargs)
    return as_transformers(model, tokenizer, notes, entry.model_name).to(device).eval(), tokenizer


def _load_hf(spec: HFEvalModel, device: torch.device, notes: list[str], name: str) -> Any:
    from transformers import AutoConfig, AutoModelForCausalLM

    path = Path(spec.pretrained_model_name_or_path)
    if not (path / "config.json").exists():
        raise UserError(f"{path}: not a local Hugging Face model directory (no config.json); models are never "
                        "downloaded: give the directory")
    if spec.use_auth_token:
        notes.append(f"models.{name}: use_auth_token has no effect (nothing is downloaded)")
    kwargs: dict[str, Any] = {"local_files_only": True, "trust_remote_code": spec.trust_remote_code}
    if spec.attn_implementation or spec.use_flash_attention_2:
        kwargs["attn_implementation"] = spec.attn_implementation or "flash_attention_2"
    if spec.load_in_8bit:
        kwargs["quantization_config"] = _eight_bit(device)
    config = AutoConfig.from_pretrained(str(path), local_files_only=True, trust_remote_code=spec.trust_remote_code)
    for key, value in spec.config_overrides.items():
        if not hasattr(config, key):
            raise UserError(f"models.{name}.model.config_overrides.{key}: {config.model_type} configs have no such "
                            "attribute")
        setattr(config, key, value)
    if spec.pretrained:
        model = AutoModelForCausalLM.from_pretrained(str(path), config=config, **kwargs)
    else:
        model = AutoModelForCausalLM.from_config(config, trust_remote_code=spec.trust_remote_code)
    if spec.pretrained_lora_id_or_path is not None:
        model = _with_lora(model, spec.pretrained_lora_id_or_path)
    return model if spec.load_in_8bit else model.to(device).eval()


def _eight_bit(device: torch.device) -> Any:
    """transformers' 8-bit config, or the one-line reason it cannot run here."""
    import importlib.util

    if device.type != "cuda" or importlib.util.find_spec("bitsandbytes") is None:
        missing = "CUDA" if device.type != "cuda" else "the bitsandbytes package"
        raise UserError(f"load_in_8bit: needs a CUDA GPU and the bitsandbytes package ({missing} is not available "
                        "here); drop load_in_8bit (and use precision: amp_bf16) to evaluate in 16/32-bit")
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(load_in_8bit=True)


def _with_lora(model: Any, adapters: str) -> Any:
    path = Path(adapters)
    if not (path / "adapter_config.json").exists():
        raise UserError(f"pretrained_lora_id_or_path: {adapters} is not a local peft adapters directory (no "
                        "adapter_config.json); hub ids are never downloaded")
    try:
        from peft import PeftModel
    except ImportError:
        raise UserError("pretrained_lora_id_or_path: needs the peft package (pip install peft)") from None
    return PeftModel.from_pretrained(model, str(path), is_trainable=False).merge_and_unload()


def _load_ours(entry: EvalModel, spec: Any, seed: int, notes: list[str]) -> tuple[Any, dict[str, Any]]:
    from llmfoundry.checkpoint.reader import load_model_from_checkpoint

    if isinstance(spec, str):
        return load_model_from_checkpoint(spec)
    if entry.load_path is not None:
        model, config = load_model_from_checkpoint(entry.load_path)
        if type(model.args) is not type(spec):
            raise UserError(f"models.{entry.model_name}.load_path: {entry.load_path} holds a "
                            f"{type(model.args).__name__} model, the inline model is a {type(spec).__name__}")
        return model, config
    from llmfoundry.models import build_model

    torch.manual_seed(seed)
    model = build_model(spec)
    model.init_weights()
    notes.append(f"models.{entry.model_name}: no load_path: evaluating a fresh initialization (seed {seed})")
    return model, {}


def as_transformers(model: Any, tokenizer: Any, notes: list[str], name: str) -> Any:
    """Our model as its native transformers class (same weights and logits), or itself when it has none."""
    from transformers import AutoModelForCausalLM

    from llmfoundry.export.hf import hf_config, hf_state, native_target

    target, reason = native_target(model)
    if target is None or target == "bert":
        notes.append(f"models.{name}: no transformers class ({reason}); generation runs without a KV cache")
        return model
    hf = AutoModelForCausalLM.from_config(hf_config(model, target, tokenizer))
    missing, unexpected = hf.load_state_dict(hf_state(model, target), strict=False)
    hf.tie_weights()
    tied = {"lm_head.weight"}
    if unexpected or set(missing) - tied - {k for k in missing if "masked_bias" in k or ".attn.bias" in k}:
        raise RuntimeError(f"{target} conversion left weights unset: missing {missing}, unexpected {unexpected}")
    return hf
