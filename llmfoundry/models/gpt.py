"""GPT: the GPT-2 architecture (learned positions, biases, LayerNorm, tanh-GELU, tied head).

This is the PubMed GPT / BioMedLM recipe: Hugging Face's GPT-2 architecture with a fast attention backend.
It is the MPT module with GPT-2's options fixed, so there is one decoder implementation to trust; the
parameter names are therefore MPT's, and export maps them to `GPT2LMHeadModel`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from llmfoundry.config.validate import NON_NEGATIVE, POSITIVE, PROBABILITY
from llmfoundry.models.lora import LoraConfig
from llmfoundry.models.mpt import MPT, ActFnConfig, AttnConfig, FfnConfig, InitConfig, MptArgs
from llmfoundry.models.presets import apply_preset


@dataclass
class GptArgs:
    name: Literal["gpt2", "gpt"] = "gpt2"
    """Model family."""
    preset: str | None = None
    """gpt2-small, gpt2-medium, gpt2-large, biomedlm-2.7b or gpt-tiny."""
    d_model: int = field(default=768, metadata=POSITIVE)
    """Hidden size (GPT-2's n_embd)."""
    n_heads: int = field(default=12, metadata=POSITIVE)
    """Attention heads (n_head)."""
    n_layers: int = field(default=12, metadata=POSITIVE)
    """Transformer blocks (n_layer)."""
    max_seq_len: int = field(default=1024, metadata=POSITIVE)
    """Positions (n_positions)."""
    vocab_size: int = field(default=50257, metadata=POSITIVE)
    """Vocabulary size; padded up to a multiple of pad_vocab_multiple."""
    pad_vocab_multiple: int = field(default=128, metadata=POSITIVE)
    """Pad the embedding to a multiple of this (1 disables)."""
    dropout: float = field(default=0.0, metadata=PROBABILITY)
    """Embedding, residual and attention dropout (GPT-2 used 0.1)."""
    layer_norm_eps: float = field(default=1e-5, metadata={"gt": 0})
    """LayerNorm epsilon."""
    init_std: float = field(default=0.02, metadata=NON_NEGATIVE)
    """Normal init std; residual projections are scaled by 1/sqrt(2 * n_layers) as in GPT-2."""
    attn_impl: Literal["auto", "torch", "sdpa", "flex", "flash"] = "auto"
    """Attention backend (auto: flash if installed, else flex on CUDA; sdpa on CPU)."""
    attn_uses_sequence_id: bool = False
    """Keep attention inside documents of a packed sample."""
    z_loss: float = field(default=0.0, metadata=NON_NEGATIVE)
    """z-loss coefficient."""
    loss_chunk_size: int = field(default=4096, metadata=POSITIVE)
    """Tokens per chunk of the output projection + cross-entropy."""
    load_hf: str | None = None
    """Start from the weights of a Hugging Face directory (MptForCausalLM, GPT2LMHeadModel or
    LlamaForCausalLM with this exact shape), e.g. an earlier `foundry inference-convert` export."""
    peft_config: LoraConfig | None = None
    """LoRA finetuning: freeze the model and train low-rank adapters on `target_modules` (see models/lora.py)."""

    @classmethod
    def config_expand(cls, raw: dict[str, Any]) -> dict[str, Any]:
        return apply_preset(raw, GPT_PRESETS)

    def to_mpt(self) -> MptArgs:
        return MptArgs(
            d_model=self.d_model, n_heads=self.n_heads, n_layers=self.n_layers, max_seq_len=self.max_seq_len,
            vocab_size=self.vocab_size, pad_vocab_multiple=self.pad_vocab_multiple, resid_pdrop=self.dropout,
            emb_pdrop=self.dropout, learned_pos_emb=True, no_bias=False, norm_type="layernorm",
            norm_eps=self.layer_norm_eps, tie_word_embeddings=True, z_loss=self.z_loss,
            loss_chunk_size=self.loss_chunk_size,
            attn_config=AttnConfig(attn_impl=self.attn_impl, attn_pdrop=self.dropout,
                                   attn_uses_sequence_id=self.attn_uses_sequence_id),
            ffn_config=FfnConfig(ffn_type="mptmlp", ffn_act_fn=ActFnConfig(name="gelu_tanh")),
            init_config=InitConfig(name="normal_", init_std=self.init_std, init_div_is_residual=True),
        )


GPT_PRESETS: dict[str, dict[str, Any]] = {
    "gpt-tiny": {"d_model": 128, "n_heads": 4, "n_layers": 2, "max_seq_len": 256},
    "gpt2-small": {"d_model": 768, "n_heads": 12, "n_layers": 12},
    "gpt2-medium": {"d_model": 1024, "n_heads": 16, "n_layers": 24},
    "gpt2-large": {"d_model": 1280, "n_heads": 20, "n_layers": 36},
    # BioMedLM (PubMed GPT 2.7B): GPT-2 architecture with a 28896-token biomedical BPE vocabulary.
    "biomedlm-2.7b": {"d_model": 2560, "n_heads": 20, "n_layers": 32, "max_seq_len": 1024, "vocab_size": 28896},
}


def build_gpt(args: GptArgs) -> MPT:
    return MPT(args.to_mpt())
