"""The model zoo: `model.name` in yaml picks the family; `build_model` turns its args into a module.

Every model follows one contract (see mpt.py): `.blocks`, `.init_weights()`, `forward(input_ids, labels=...,
sequence_id=..., attention_mask=...)`, `num_params()`, `flops_per_token()`.
"""

from __future__ import annotations

import contextlib
from typing import Union

import torch
from torch import nn

from llmfoundry.models.bert import BertArgs, build_bert
from llmfoundry.models.gpt import GptArgs, build_gpt
from llmfoundry.models.hf import HFCausalLMArgs, build_hf
from llmfoundry.models.mpt import MPT, MptArgs

ModelConfig = Union[MptArgs, GptArgs, BertArgs, HFCausalLMArgs]


def build_model(args: ModelConfig, device: torch.device | str | None = None) -> nn.Module:
    """Build the family's module (on `device`, e.g. "meta" for a later `to_empty` + `init_weights`)."""
    with torch.device(device) if device is not None else contextlib.nullcontext():
        if isinstance(args, MptArgs):
            return MPT(args)
        if isinstance(args, GptArgs):
            return build_gpt(args)
        if isinstance(args, BertArgs):
            return build_bert(args)
        if isinstance(args, HFCausalLMArgs):
            return build_hf(args)
    raise TypeError(f"unknown model args {type(args).__name__}")


__all__ = ["ModelConfig", "build_model"]
