"""`hf_causal_lm`: any local Hugging Face causal LM directory, trained by the same loop as our own models.

The wrapper gives a transformers model our model contract: `.blocks` (its list of decoder layers, for
FSDP and activation checkpointing), `init_weights()` (loads the pretrained weights, or initializes from the
config when `pretrained: false`, so building on the meta device works as for our families), and a loss
computed with our chunked cross-entropy on the final hidden states.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from llmfoundry.config.validate import NON_NEGATIVE, POSITIVE
from llmfoundry.errors import UserError
from llmfoundry.models.lora import LoraConfig
from llmfoundry.models.layers.loss import chunked_cross_entropy
from llmfoundry.models.params import count_params


@dataclass
class HFCausalLMArgs:
    name: Literal["hf_causal_lm"]
    """Model family."""
    pretrained_model_name_or_path: str
    """A local Hugging Face model directory (config.json + weights); hub ids are not downloaded."""
    pretrained: bool = True
    """Start from the directory's weights (true) or from a fresh initialization of its config (false)."""
    trust_remote_code: bool = False
    """Allow a modeling file shipped in the directory."""
    z_loss: float = field(default=0.0, metadata=NON_NEGATIVE)
    """z-loss coefficient."""
    loss_chunk_size: int = field(default=4096, metadata=POSITIVE)
    """Tokens per chunk of the output projection + cross-entropy."""
    peft_config: LoraConfig | None = None
    """LoRA finetuning: freeze the model and train low-rank adapters on `target_modules` (see models/lora.py)."""
    config_overrides: dict[str, Any] = field(default_factory=dict)
    """Values set on the directory's config before the model is built (`max_position_embeddings: 4096`,
    nested: `attn_config: {attn_impl: torch}`); each must be an attribute the config has."""
    attn_implementation: Literal["eager", "sdpa", "flash_attention_2", "flex_attention"] | None = None
    """transformers attention backend (default: the class's own choice, sdpa where supported);
    flash_attention_2 needs the flash-attn package and a CUDA GPU."""
    use_flash_attention_2: bool = False
    """LLM Foundry's spelling of attn_implementation: flash_attention_2."""
    init_device: Literal["cpu", "meta", "mixed", "cuda"] = "cpu"
    """LLM Foundry compatibility only: the trainer always builds on meta, then materializes (what `mixed` did)."""
    use_auth_token: bool = False
    """LLM Foundry compatibility only: no-op, nothing is downloaded (models are local directories)."""

    def __post_init__(self) -> None:
        if not (Path(self.pretrained_model_name_or_path) / "config.json").exists():
            raise UserError(f"pretrained_model_name_or_path: {self.pretrained_model_name_or_path} is not a local "
                            "Hugging Face model directory (no config.json); models are never downloaded")
        if self.use_flash_attention_2:
            if self.attn_implementation not in (None, "flash_attention_2"):
                raise UserError(f"use_flash_attention_2: contradicts attn_implementation: {self.attn_implementation}")
            self.attn_implementation = "flash_attention_2"

    def hf_config(self) -> Any:
        """The directory's transformers config with config_overrides applied."""
        from transformers import AutoConfig

        config = AutoConfig.from_pretrained(self.pretrained_model_name_or_path, local_files_only=True,
                                            trust_remote_code=self.trust_remote_code)
        _override(config, self.config_overrides, "config_overrides")
        return config


def _override(target: Any, overrides: dict[str, Any], where: str) -> None:
    """Set each override on the config (or on its nested sub-config / dict), refusing attributes it lacks."""
    for key, value in overrides.items():
        current = target.get(key, _MISSING) if isinstance(target, dict) else getattr(target, key, _MISSING)
        if current is _MISSING:
            raise UserError(f"{where}.{key}: the model's config has no such attribute "
                            f"({type(target).__name__}); check the name")
        if isinstance(value, dict) and (isinstance(current, dict) or hasattr(current, "to_dict")):
            _override(current, value, f"{where}.{key}")  # a nested section (MPT's attn_config)
        elif isinstance(target, dict):
            target[key] = value
        else:
            setattr(target, key, value)


_MISSING = object()


class HFCausalLM(nn.Module):
    def __init__(self, args: HFCausalLMArgs) -> None:
        super().__init__()
        from transformers import AutoModelForCausalLM

        self.args = args
        config = args.hf_config()
        if args.attn_implementation is not None:
            _check_attn_implementation(args.attn_implementation)
            config._attn_implementation = args.attn_implementation
        if torch.get_default_device().type == "meta":
            # Parameters on meta, buffers computed for real: non-persistent buffers (RoPE's inv_freq, ...) are
            # made in __init__ and are in no checkpoint, so `to_empty` below puts these values back.
            from accelerate import init_empty_weights

            with torch.device("cpu"), init_empty_weights(include_buffers=False):
                self.model = AutoModelForCausalLM.from_config(config, trust_remote_code=args.trust_remote_code)
        else:
            self.model = AutoModelForCausalLM.from_config(config, trust_remote_code=args.trust_remote_code)
        self._initial_buffers = {name: b.detach().clone() for name, b in self.model.named_buffers()}
        self._blocks = _find_layers(self.model)

    def to_empty(self, *, device: torch.device | str | None, recurse: bool = True) -> HFCausalLM:
        """Materialize as nn.Module does, then restore the buffers computed at construction (not garbage)."""
        super().to_empty(device=device, recurse=recurse)
        with torch.no_grad():
            for name, value in self._initial_buffers.items():
                self.model.get_buffer(name).copy_(value)
        return self

    @property
    def blocks(self) -> nn.ModuleList:
        return self._blocks

    def init_weights(self) -> None:
        if not self.args.pretrained:
            self.model.apply(self.model._init_weights)
            self.model.tie_weights()
            return
        from transformers import AutoModelForCausalLM

        source = AutoModelForCausalLM.from_pretrained(self.args.pretrained_model_name_or_path, local_files_only=True,
                                                      trust_remote_code=self.args.trust_remote_code,
                                                      dtype=torch.float32)
        with torch.no_grad():
            missing, unexpected = self.model.load_state_dict(source.state_dict(), strict=False)
        if unexpected or [m for m in missing if "lm_head" not in m]:
            raise UserError(f"{self.args.pretrained_model_name_or_path}: weights do not match its config "
                            f"(missing {missing[:3]}, unexpected {unexpected[:3]})")
        self.model.tie_weights()

    def forward(self, input_ids: torch.Tensor, *, labels: torch.Tensor | None = None,
                sequence_id: torch.Tensor | None = None, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        del sequence_id  # transformers classes have no per-document masking
        if labels is None:
            return self.model(input_ids=input_ids, attention_mask=attention_mask).logits
        config = self.model.config
        if getattr(config, "final_logit_softcapping", None):
            # Gemma-2/3 squash logits with tanh before the loss; our fused loss has no such step, so these
            # classes compute their loss from their own full logits.
            logits = self.model(input_ids=input_ids, attention_mask=attention_mask).logits.float().flatten(0, 1)
            keep = labels.flatten() != -100
            loss = torch.nn.functional.cross_entropy(logits[keep], labels.flatten()[keep], reduction="sum")
            if self.args.z_loss:
                loss = loss + self.args.z_loss * torch.logsumexp(logits[keep], dim=-1).square().sum()
            return loss
        hidden = self.model.base_model(input_ids=input_ids, attention_mask=attention_mask)[0]
        head = self.model.get_output_embeddings()
        scale = getattr(config, "logit_scale", None)  # Cohere multiplies logits by it
        return chunked_cross_entropy(hidden, head.weight, labels, bias=head.bias, z_loss=self.args.z_loss,
                                     logit_scale=scale if isinstance(scale, float) else None,
                                     chunk_size=self.args.loss_chunk_size)

    def num_params(self, exclude_embeddings: bool = False) -> int:
        return count_params(self, exclude_embeddings)

    def flops_per_token(self, seq_len: int) -> float:
        config = self.model.config
        layers = getattr(config, "num_hidden_layers", None) or getattr(config, "n_layer", 0)
        width = getattr(config, "hidden_size", None) or getattr(config, "n_embd", 0)
        head = self.model.get_output_embeddings().weight.numel()
        return 6 * (self.num_params(exclude_embeddings=True) + head) + 12 * layers * width * seq_len


def _check_attn_implementation(name: str) -> None:
    if name != "flash_attention_2":
        return
    import importlib.util

    if not torch.cuda.is_available() or importlib.util.find_spec("flash_attn") is None:
        raise UserError("model.use_flash_attention_2 / attn_implementation: flash_attention_2 needs the flash-attn "
                        "package and a CUDA GPU; use attn_implementation: sdpa")


def _find_layers(model: nn.Module) -> nn.ModuleList:
    """The decoder's layer list: the longest ModuleList in the model (model.layers, transformer.h, ...)."""
    lists = [m for m in model.modules() if isinstance(m, nn.ModuleList)]
    if not lists:
        raise UserError(f"{type(model).__name__}: no list of layers found to shard")
    return max(lists, key=len)


def build_hf(args: HFCausalLMArgs) -> HFCausalLM:
    return HFCausalLM(args)
