"""Export our models as plain Hugging Face directories, and import such directories back.

An export maps to a native `transformers` class only when our configuration has exactly that class's
math, so `AutoModelForCausalLM.from_pretrained(OUT)` needs no `trust_remote_code` and reproduces our
logits. `native_target` says which class fits, or why none does.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from llmfoundry.errors import UserError
from llmfoundry.export.names import Target, from_hf, to_hf
from llmfoundry.io import atomic_directory
from llmfoundry.models.bert import BertArgs, MosaicBert
from llmfoundry.models.mpt import MPT, ActFnConfig, AttnConfig, FfnConfig, MptArgs

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
HF_CLASS = {"mpt": "MptForCausalLM", "gpt2": "GPT2LMHeadModel", "llama": "LlamaForCausalLM",
            "bert": "BertForMaskedLM"}


def _checks(a: MptArgs) -> dict[str, dict[str, bool]]:
    at, ffn = a.attn_config, a.ffn_config
    common = {
        "multi-head attention (kv_n_heads == n_heads)" : a.kv_heads == a.n_heads,
        "no qk_ln": not at.qk_ln,
        "no logit_scale": a.logit_scale is None,
        "default softmax_scale": at.softmax_scale is None,
    }
    return {
        "mpt": {**common,
                "ALiBi with alibi_bias_max 8": at.alibi and at.alibi_bias_max == 8,
                "no learned positions": not a.learned_pos_emb,
                "no_bias": a.no_bias,
                "LayerNorm": not a.norm_type.endswith("rmsnorm"),
                "GELU MLP of 4 x d_model": ffn.ffn_type == "mptmlp" and ffn.ffn_act_fn.name == "gelu"
                and a.ffn_hidden == 4 * a.d_model,
                "tied embeddings": a.tie_word_embeddings},
        "gpt2": {**common,
                 "learned positions, no ALiBi/RoPE": a.learned_pos_emb and not at.alibi and not at.rope,
                 "biases": not a.no_bias,
                 "LayerNorm": not a.norm_type.endswith("rmsnorm"),
                 "tanh-GELU MLP of 4 x d_model": ffn.ffn_type == "mptmlp" and ffn.ffn_act_fn.name == "gelu_tanh"
                 and a.ffn_hidden == 4 * a.d_model,
                 "no clip_qkv": at.clip_qkv is None,
                 "tied embeddings": a.tie_word_embeddings},
        "llama": {"no qk_ln": not at.qk_ln, "no logit_scale": a.logit_scale is None,
                  "default softmax_scale": at.softmax_scale is None,
                  "RoPE, no learned positions": at.rope and not a.learned_pos_emb,
                  "no_bias": a.no_bias,
                  "RMSNorm": a.norm_type.endswith("rmsnorm"),
                  "SwiGLU MLP": ffn.ffn_type == "mptglu" and ffn.ffn_act_fn.name == "silu",
                  "no clip_qkv": at.clip_qkv is None},
    }


def native_target(model: nn.Module) -> tuple[Target | None, str]:
    """The transformers class with exactly this model's math, or None and the reason none fits."""
    if isinstance(model, MosaicBert):
        if model.args.classic and model.args.num_labels is None:
            return "bert", "classic BERT"
        return None, "MosaicBERT (ALiBi, GeGLU, unpadded) has no transformers class" if not model.args.classic \
            else "sequence-classification export is not supported yet"
    if not isinstance(model, MPT):
        raise UserError(f"cannot export a {type(model).__name__}")
    checks = _checks(model.args)
    for target in ("mpt", "gpt2", "llama"):
        if all(checks[target].values()):
            return target, HF_CLASS[target]  # type: ignore[return-value]
    best = min(checks, key=lambda t: sum(not ok for ok in checks[t].values()))
    missing = [name for name, ok in checks[best].items() if not ok]
    return None, f"closest class {HF_CLASS[best]} needs: {'; '.join(missing)}"


def hf_config(model: nn.Module, target: Target, tokenizer: Any | None = None) -> Any:
    import transformers

    tokens = {}
    if tokenizer is not None:
        tokens = {k: v for k, v in {"bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id,
                                    "pad_token_id": tokenizer.pad_token_id}.items() if v is not None}
    if target == "bert":
        b: BertArgs = model.args  # type: ignore[assignment]
        return transformers.BertConfig(
            vocab_size=b.padded_vocab_size, hidden_size=b.d_model, num_hidden_layers=b.n_layers,
            num_attention_heads=b.n_heads, intermediate_size=b.intermediate_size, hidden_act="gelu",
            hidden_dropout_prob=b.hidden_dropout, attention_probs_dropout_prob=b.attn_dropout,
            max_position_embeddings=b.max_seq_len, type_vocab_size=b.type_vocab_size, layer_norm_eps=b.norm_eps,
            pad_token_id=b.pad_token_id, architectures=["BertForMaskedLM"],
            **{k: v for k, v in tokens.items() if k != "pad_token_id"})
    a: MptArgs = model.args  # type: ignore[assignment]
    vocab = a.padded_vocab_size
    if target == "mpt":
        return transformers.MptConfig(
            d_model=a.d_model, n_heads=a.n_heads, n_layers=a.n_layers, expansion_ratio=4, max_seq_len=a.max_seq_len,
            vocab_size=vocab, resid_pdrop=a.resid_pdrop, emb_pdrop=a.emb_pdrop, layer_norm_epsilon=a.norm_eps,
            no_bias=True, learned_pos_emb=False, architectures=["MptForCausalLM"],
            attn_config={"alibi": True, "alibi_bias_max": 8, "clip_qkv": a.attn_config.clip_qkv,
                         "attn_pdrop": a.attn_config.attn_pdrop}, **tokens)
    if target == "gpt2":
        return transformers.GPT2Config(
            n_embd=a.d_model, n_head=a.n_heads, n_layer=a.n_layers, n_positions=a.max_seq_len, vocab_size=vocab,
            layer_norm_epsilon=a.norm_eps, activation_function="gelu_new", resid_pdrop=a.resid_pdrop,
            embd_pdrop=a.emb_pdrop, attn_pdrop=a.attn_config.attn_pdrop, architectures=["GPT2LMHeadModel"], **tokens)
    return transformers.LlamaConfig(
        hidden_size=a.d_model, intermediate_size=a.ffn_hidden, num_hidden_layers=a.n_layers,
        num_attention_heads=a.n_heads, num_key_value_heads=a.kv_heads, head_dim=a.d_model // a.n_heads,
        max_position_embeddings=a.max_seq_len, rms_norm_eps=a.norm_eps, rope_theta=a.attn_config.rope_theta,
        vocab_size=vocab, tie_word_embeddings=a.tie_word_embeddings, attention_bias=False, mlp_bias=False,
        architectures=["LlamaForCausalLM"], **tokens)


def hf_state(model: nn.Module, target: Target, dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
    """Our weights under the target class's names, in `dtype` (tied copies left to transformers)."""
    q_dim = model.args.d_model if target == "llama" else None
    state = {k: v.detach().to(dtype).contiguous() for k, v in to_hf(model.state_dict(), target, q_dim=q_dim).items()}
    if target == "bert":
        state["cls.predictions.decoder.bias"] = state["cls.predictions.bias"].clone()
    return state


def export_model(model: nn.Module, out: str | Path, *, tokenizer_dir: str | Path | None, dtype: str = "fp32",
                 overwrite: bool = False) -> dict[str, str]:
    """Write `model` as a Hugging Face directory at `out` (atomically). Returns what was written and why."""
    if dtype not in DTYPES:
        raise UserError(f"--dtype: got {dtype!r}, expected one of {', '.join(DTYPES)}")
    target, reason = native_target(model)
    tokenizer = None
    if tokenizer_dir is not None:
        from llmfoundry.data.tokenizer import load_tokenizer

        tokenizer = load_tokenizer(tokenizer_dir)
    import transformers

    if target is None:
        from llmfoundry.export.remote import write_remote

        with atomic_directory(out, overwrite=overwrite, need=_weight_bytes(model, DTYPES[dtype])) as tmp:
            write_remote(model, tmp, tokenizer, DTYPES[dtype])
            if tokenizer is not None:
                tokenizer.save_pretrained(str(tmp))
        return {"class": "remote code (modeling_foundry.py)", "reason": reason, "dtype": dtype, "out": str(out),
                "trust_remote_code": "true"}
    from safetensors.torch import save_file

    config = hf_config(model, target, tokenizer)
    config.dtype = DTYPES[dtype]
    state = hf_state(model, target, DTYPES[dtype])
    with atomic_directory(out, overwrite=overwrite, need=sum(t.numel() * t.element_size() for t in state.values())) as tmp:
        config.save_pretrained(str(tmp))
        save_file(state, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        if target != "bert":
            transformers.GenerationConfig.from_model_config(config).save_pretrained(str(tmp))
        if tokenizer is not None:
            tokenizer.save_pretrained(str(tmp))
    return {"class": HF_CLASS[target], "reason": reason, "dtype": dtype, "out": str(out)}


def _weight_bytes(model: nn.Module, dtype: torch.dtype) -> int:
    """What the weights take on disk in `dtype`: the space an export needs, checked before writing."""
    return sum(p.numel() for p in model.state_dict().values()) * torch.empty((), dtype=dtype).element_size()


def import_hf(directory: str | Path) -> nn.Module:
    """Load a Hugging Face MPT / GPT-2 / Llama / BERT directory into our model (to continue training it)."""
    import transformers

    path = Path(directory)
    if not (path / "config.json").exists():
        raise UserError(f"{directory}: not a Hugging Face model directory (no config.json)")
    raw = json.loads((path / "config.json").read_text())
    if raw.get("model_type") == "llmfoundry":  # our own remote-code export: the args are in the config
        from safetensors.torch import load_file

        from llmfoundry.config import build
        from llmfoundry.models import ModelConfig, build_model

        args = dict(raw["args"])
        model = build_model(build(ModelConfig, args))
        state = {k.removeprefix("model."): v.float() for k, v in load_file(str(path / "model.safetensors")).items()}
        model.load_state_dict(state)
        return model
    config = transformers.AutoConfig.from_pretrained(str(path), local_files_only=True)
    model, target = _model_for_config(config)
    cls = transformers.BertModel if config.model_type == "bert" and "MaskedLM" not in str(config.architectures) \
        else transformers.AutoModelForMaskedLM if config.model_type == "bert" else transformers.AutoModelForCausalLM
    hf = cls.from_pretrained(str(path), local_files_only=True, dtype=torch.float32)
    state = hf.state_dict()
    if cls is transformers.BertModel:
        state = {f"bert.{k}": v for k, v in state.items()}
    ours = [k for k in model.state_dict() if not (cls is transformers.BertModel and k.startswith("cls"))]
    model.load_state_dict(from_hf(state, ours, target), strict=False)
    return model


def _model_for_config(config: Any) -> tuple[nn.Module, Target]:
    kind = config.model_type
    if kind == "mpt":
        at = config.attn_config
        args = MptArgs(d_model=config.d_model, n_heads=config.n_heads, n_layers=config.n_layers,
                       max_seq_len=config.max_seq_len, vocab_size=config.vocab_size, pad_vocab_multiple=1,
                       learned_pos_emb=False, no_bias=True, norm_type="layernorm", norm_eps=config.layer_norm_epsilon,
                       attn_config=AttnConfig(alibi=True, alibi_bias_max=8, clip_qkv=at.clip_qkv))
        return MPT(args), "mpt"
    if kind == "gpt2":
        from llmfoundry.models.gpt import GptArgs

        g = GptArgs(d_model=config.n_embd, n_heads=config.n_head, n_layers=config.n_layer,
                    max_seq_len=config.n_positions, vocab_size=config.vocab_size, pad_vocab_multiple=1,
                    layer_norm_eps=config.layer_norm_epsilon)
        return MPT(g.to_mpt()), "gpt2"
    if kind == "llama":
        args = MptArgs(d_model=config.hidden_size, n_heads=config.num_attention_heads,
                       n_layers=config.num_hidden_layers, max_seq_len=config.max_position_embeddings,
                       vocab_size=config.vocab_size, pad_vocab_multiple=1, learned_pos_emb=False, no_bias=True,
                       norm_type="rmsnorm", norm_eps=config.rms_norm_eps,
                       tie_word_embeddings=config.tie_word_embeddings,
                       attn_config=AttnConfig(rope=True, rope_theta=config.rope_theta,
                                              kv_n_heads=config.num_key_value_heads),
                       ffn_config=FfnConfig(ffn_type="mptglu", ffn_act_fn=ActFnConfig(name="silu"),
                                            ffn_hidden_size=config.intermediate_size))
        return MPT(args), "llama"
    if kind == "bert":
        args = BertArgs(classic=True, unpad=False, d_model=config.hidden_size, n_heads=config.num_attention_heads,
                        n_layers=config.num_hidden_layers, intermediate_size=config.intermediate_size,
                        max_seq_len=config.max_position_embeddings, vocab_size=config.vocab_size,
                        pad_vocab_multiple=1, type_vocab_size=config.type_vocab_size, norm_type="layernorm",
                        norm_eps=config.layer_norm_eps, pad_token_id=config.pad_token_id or 0)
        return MosaicBert(args), "bert"
    raise UserError(f"model_type {kind!r} cannot be imported; supported: mpt, gpt2, llama, bert")
