"""Weight-name mappings between our models and the `transformers` classes with the same math.

Each target is a list of rules `(our regex, their template, kind)`. Kinds: `same` (copy), `t` (transpose:
GPT-2's Conv1D stores weights as [in, out]) and `qkv` (our fused Wqkv <-> separate q, k, v tensors).
The same rules run in both directions, so export and import cannot drift apart.
"""

from __future__ import annotations

import re
from typing import Literal

import torch

Target = Literal["mpt", "gpt2", "llama", "bert"]

_L = r"(\d+)"
RULES: dict[str, list[tuple[str, str, str]]] = {
    "mpt": [
        (r"transformer\.wte\.weight", "transformer.wte.weight", "same"),
        (rf"transformer\.blocks\.{_L}\.(norm_1|norm_2)\.weight", r"transformer.blocks.\1.\2.weight", "same"),
        (rf"transformer\.blocks\.{_L}\.attn\.(Wqkv|out_proj)\.weight", r"transformer.blocks.\1.attn.\2.weight", "same"),
        (rf"transformer\.blocks\.{_L}\.ffn\.(up_proj|down_proj)\.weight", r"transformer.blocks.\1.ffn.\2.weight", "same"),
        (r"transformer\.norm_f\.weight", "transformer.norm_f.weight", "same"),
    ],
    "gpt2": [
        (r"transformer\.(wte|wpe)\.weight", r"transformer.\1.weight", "same"),
        (rf"transformer\.blocks\.{_L}\.norm_1\.(weight|bias)", r"transformer.h.\1.ln_1.\2", "same"),
        (rf"transformer\.blocks\.{_L}\.norm_2\.(weight|bias)", r"transformer.h.\1.ln_2.\2", "same"),
        (rf"transformer\.blocks\.{_L}\.attn\.Wqkv\.weight", r"transformer.h.\1.attn.c_attn.weight", "t"),
        (rf"transformer\.blocks\.{_L}\.attn\.Wqkv\.bias", r"transformer.h.\1.attn.c_attn.bias", "same"),
        (rf"transformer\.blocks\.{_L}\.attn\.out_proj\.weight", r"transformer.h.\1.attn.c_proj.weight", "t"),
        (rf"transformer\.blocks\.{_L}\.attn\.out_proj\.bias", r"transformer.h.\1.attn.c_proj.bias", "same"),
        (rf"transformer\.blocks\.{_L}\.ffn\.up_proj\.weight", r"transformer.h.\1.mlp.c_fc.weight", "t"),
        (rf"transformer\.blocks\.{_L}\.ffn\.up_proj\.bias", r"transformer.h.\1.mlp.c_fc.bias", "same"),
        (rf"transformer\.blocks\.{_L}\.ffn\.down_proj\.weight", r"transformer.h.\1.mlp.c_proj.weight", "t"),
        (rf"transformer\.blocks\.{_L}\.ffn\.down_proj\.bias", r"transformer.h.\1.mlp.c_proj.bias", "same"),
        (r"transformer\.norm_f\.(weight|bias)", r"transformer.ln_f.\1", "same"),
    ],
    "llama": [
        (r"transformer\.wte\.weight", "model.embed_tokens.weight", "same"),
        (rf"transformer\.blocks\.{_L}\.norm_1\.weight", r"model.layers.\1.input_layernorm.weight", "same"),
        (rf"transformer\.blocks\.{_L}\.norm_2\.weight", r"model.layers.\1.post_attention_layernorm.weight", "same"),
        (rf"transformer\.blocks\.{_L}\.attn\.Wqkv\.weight", r"model.layers.\1.self_attn.{q,k,v}_proj.weight", "qkv"),
        (rf"transformer\.blocks\.{_L}\.attn\.out_proj\.weight", r"model.layers.\1.self_attn.o_proj.weight", "same"),
        (rf"transformer\.blocks\.{_L}\.ffn\.(gate_proj|up_proj|down_proj)\.weight", r"model.layers.\1.mlp.\2.weight", "same"),
        (r"transformer\.norm_f\.weight", "model.norm.weight", "same"),
        (r"lm_head\.weight", "lm_head.weight", "same"),
    ],
    "bert": [
        (r"bert\.embeddings\.(word_embeddings|position_embeddings|token_type_embeddings)\.weight",
         r"bert.embeddings.\1.weight", "same"),
        (r"bert\.embeddings\.norm\.(weight|bias)", r"bert.embeddings.LayerNorm.\1", "same"),
        (rf"bert\.encoder\.layer\.{_L}\.attention\.Wqkv\.(weight|bias)",
         r"bert.encoder.layer.\1.attention.self.{query,key,value}.\2", "qkv"),
        (rf"bert\.encoder\.layer\.{_L}\.attention\.out_proj\.(weight|bias)",
         r"bert.encoder.layer.\1.attention.output.dense.\2", "same"),
        (rf"bert\.encoder\.layer\.{_L}\.attention\.norm\.(weight|bias)",
         r"bert.encoder.layer.\1.attention.output.LayerNorm.\2", "same"),
        (rf"bert\.encoder\.layer\.{_L}\.mlp\.up_proj\.(weight|bias)", r"bert.encoder.layer.\1.intermediate.dense.\2", "same"),
        (rf"bert\.encoder\.layer\.{_L}\.mlp\.down_proj\.(weight|bias)", r"bert.encoder.layer.\1.output.dense.\2", "same"),
        (rf"bert\.encoder\.layer\.{_L}\.norm\.(weight|bias)", r"bert.encoder.layer.\1.output.LayerNorm.\2", "same"),
        (r"cls\.dense\.(weight|bias)", r"cls.predictions.transform.dense.\1", "same"),
        (r"cls\.norm\.(weight|bias)", r"cls.predictions.transform.LayerNorm.\1", "same"),
        (r"cls_bias", "cls.predictions.bias", "same"),
    ],
}


def _qkv_names(template: str) -> list[str]:
    head, rest = template.split("{", 1)
    names, tail = rest.split("}", 1)
    return [head + n + tail for n in names.split(",")]


def mapping(our_keys: list[str], target: Target) -> dict[str, tuple[str, list[str]]]:
    """For each of our parameter names: (kind, the target's name(s)). Unmapped names are an error."""
    out: dict[str, tuple[str, list[str]]] = {}
    for key in our_keys:
        for pattern, template, kind in RULES[target]:
            match = re.fullmatch(pattern, key)
            if match is not None:
                name = match.expand(template)
                out[key] = (kind, _qkv_names(name) if kind == "qkv" else [name])
                break
        else:
            raise KeyError(f"no {target} name for parameter {key}")
    return out


def to_hf(state: dict[str, torch.Tensor], target: Target, *, q_dim: int | None = None) -> dict[str, torch.Tensor]:
    """Our state dict in the target class's names (Wqkv split with q_dim query rows; default: thirds)."""
    out: dict[str, torch.Tensor] = {}
    for key, (kind, names) in mapping(list(state), target).items():
        value = state[key]
        if kind == "qkv":
            q = q_dim or value.shape[0] // 3
            kv = (value.shape[0] - q) // 2
            for name, part in zip(names, value.split([q, kv, kv], dim=0)):
                out[name] = part.contiguous()
        else:
            out[names[0]] = value.t().contiguous() if kind == "t" else value
    return out


def from_hf(state: dict[str, torch.Tensor], our_keys: list[str], target: Target) -> dict[str, torch.Tensor]:
    """The target's state dict in our names, for the parameters `our_keys` of a model built to match."""
    out: dict[str, torch.Tensor] = {}
    for key, (kind, names) in mapping(our_keys, target).items():
        missing = [n for n in names if n not in state]
        if missing:
            raise KeyError(f"checkpoint has no {missing[0]} (needed for {key})")
        if kind == "qkv":
            out[key] = torch.cat([state[n] for n in names], dim=0)
        else:
            out[key] = state[names[0]].t().contiguous() if kind == "t" else state[names[0]]
    return out
