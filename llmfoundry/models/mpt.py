"""MPT: the decoder-only transformer (ALiBi / RoPE / learned positions, MHA / GQA / MQA, GELU or gated MLP).

The yaml shape is LLM Foundry's (`attn_config`, `ffn_config`, `init_config`, `norm_type`, `no_bias`, ...),
so a Foundry user's `model:` block validates unchanged. Parameter names are LLM Foundry's and transformers'
MPT names (`transformer.wte`, `transformer.blocks.N.attn.Wqkv`, ...), which keeps exports a renaming.
GPT (gpt.py) is this same module with GPT-2's options. No parallelism lives here: the trainer shards,
checkpoints and compiles the `blocks` from outside.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from llmfoundry.config.validate import NON_NEGATIVE, POSITIVE, PROBABILITY
from llmfoundry.errors import UserError
from llmfoundry.models.lora import LoraConfig
from llmfoundry.models.layers.attention import AttentionMask, attention, build_mask, resolve_impl
from llmfoundry.models.layers.loss import chunked_cross_entropy
from llmfoundry.models.layers.mlp import MLP, Activation
from llmfoundry.models.layers.norm import Norm, NormType
from llmfoundry.models.layers.rotary import apply_rotary, rotary_cos_sin
from llmfoundry.models.params import count_params
from llmfoundry.models.presets import apply_preset


@dataclass
class AttnConfig:
    attn_type: Literal["multihead_attention", "multiquery_attention", "grouped_query_attention"] = "multihead_attention"
    """MHA; MQA (one kv head); GQA (`kv_n_heads` kv heads)."""
    attn_impl: Literal["auto", "torch", "sdpa", "flex", "flash"] = "auto"
    """Attention backend: auto (flash if installed, else flex on CUDA; sdpa on CPU), torch (reference), sdpa
    (dense mask), flex (CUDA training), flash (needs flash-attn)."""
    alibi: bool = False
    """ALiBi position biases (MPT's default recipe)."""
    alibi_bias_max: int = field(default=8, metadata=POSITIVE)
    """Largest ALiBi slope exponent."""
    rope: bool = False
    """Rotary position embeddings (Llama convention)."""
    rope_theta: float = field(default=10000.0, metadata={"gt": 0})
    """RoPE base."""
    kv_n_heads: int | None = field(default=None, metadata=POSITIVE)
    """Key/value heads for grouped-query attention (must divide n_heads)."""
    qk_ln: bool = False
    """LayerNorm on queries and keys."""
    clip_qkv: float | None = field(default=None, metadata={"gt": 0})
    """Clamp q, k, v to [-clip_qkv, clip_qkv]."""
    attn_uses_sequence_id: bool = False
    """Keep attention inside documents of a packed sample (uses the batch's sequence_id)."""
    softmax_scale: float | None = field(default=None, metadata={"gt": 0})
    """Attention scale; default 1/sqrt(head_dim)."""
    attn_pdrop: float = field(default=0.0, metadata=PROBABILITY)
    """Dropout on attention probabilities."""


@dataclass
class ActFnConfig:
    name: Activation = "gelu"
    """gelu (exact), gelu_tanh (GPT-2), silu (SwiGLU), relu."""


@dataclass
class FfnConfig:
    ffn_type: Literal["mptmlp", "mptglu"] = "mptmlp"
    """mptmlp: up -> act -> down; mptglu: gated (GeGLU with gelu, SwiGLU with silu)."""
    ffn_act_fn: ActFnConfig = field(default_factory=ActFnConfig)
    """The activation."""
    ffn_hidden_size: int | None = field(default=None, metadata=POSITIVE)
    """Hidden width; default expansion_ratio * d_model."""


@dataclass
class InitConfig:
    name: Literal["kaiming_normal_", "kaiming_uniform_", "normal_", "small_init_", "xavier_normal_", "xavier_uniform_"] = "kaiming_normal_"
    """Initialization of linear and embedding weights."""
    init_std: float = field(default=0.02, metadata=NON_NEGATIVE)
    """Standard deviation for normal_."""
    init_div_is_residual: bool = True
    """Divide residual output projections (attn.out_proj, ffn.down_proj) by sqrt(2 * n_layers)."""
    emb_init_std: float | None = field(default=None, metadata=NON_NEGATIVE)
    """Separate std for embeddings (default: the linear init)."""
    fan_mode: Literal["fan_in", "fan_out"] = "fan_in"
    """Kaiming fan mode."""
    init_nonlinearity: Literal["relu", "leaky_relu", "linear"] = "relu"
    """Kaiming nonlinearity."""
    init_gain: float = 0.0
    """Kaiming negative slope / xavier gain (0 means the default)."""


@dataclass
class MptArgs:
    name: Literal["mpt_causal_lm", "mpt"] = "mpt_causal_lm"
    """Model family."""
    preset: str | None = None
    """A named preset (mpt-tiny, mpt-125m ... mpt-30b) filling defaults that explicit keys override."""
    d_model: int = field(default=2048, metadata=POSITIVE)
    """Hidden size."""
    n_heads: int = field(default=16, metadata=POSITIVE)
    """Attention heads."""
    n_layers: int = field(default=24, metadata=POSITIVE)
    """Transformer blocks."""
    expansion_ratio: float = field(default=4, metadata={"gt": 0})
    """MLP width as a multiple of d_model."""
    max_seq_len: int = field(default=2048, metadata=POSITIVE)
    """Longest sequence (learned positions need it; ALiBi extrapolates past it)."""
    vocab_size: int = field(default=50368, metadata=POSITIVE)
    """Vocabulary size; padded up to a multiple of pad_vocab_multiple for speed."""
    pad_vocab_multiple: int = field(default=128, metadata=POSITIVE)
    """Pad the embedding to a multiple of this (1 disables): 50277 -> 50432."""
    resid_pdrop: float = field(default=0.0, metadata=PROBABILITY)
    """Dropout on residual branches."""
    emb_pdrop: float = field(default=0.0, metadata=PROBABILITY)
    """Dropout on embeddings."""
    learned_pos_emb: bool = True
    """Learned absolute positions (wpe)."""
    attn_config: AttnConfig = field(default_factory=AttnConfig)
    """Attention options."""
    ffn_config: FfnConfig = field(default_factory=FfnConfig)
    """Feed-forward options."""
    init_config: InitConfig = field(default_factory=InitConfig)
    """Initialization options."""
    init_device: str = "meta"
    """LLM Foundry compatibility only: the trainer always builds on the meta device, then materializes."""
    logit_scale: float | None = None
    """Multiply logits by this."""
    no_bias: bool = False
    """Drop every bias (linear and norm)."""
    embedding_fraction: float = 1.0
    """Scale the embedding gradient by this (GLM's stability trick)."""
    norm_type: NormType = "low_precision_layernorm"
    """layernorm, low_precision_layernorm, rmsnorm or low_precision_rmsnorm."""
    norm_eps: float = field(default=1e-5, metadata={"gt": 0})
    """Norm epsilon."""
    tie_word_embeddings: bool = True
    """Share the input embedding with the output projection."""
    loss_fn: Literal["torch_crossentropy", "fused_crossentropy"] = "torch_crossentropy"
    """LLM Foundry compatibility: both mean our chunked cross-entropy."""
    z_loss: float = field(default=0.0, metadata=NON_NEGATIVE)
    """Coefficient of the z-loss (logsumexp^2) regularizer."""
    loss_chunk_size: int = field(default=4096, metadata=POSITIVE)
    """Tokens per chunk of the output projection + cross-entropy."""
    load_hf: str | None = None
    """Start from the weights of a Hugging Face directory (MptForCausalLM, GPT2LMHeadModel or
    LlamaForCausalLM with this exact shape), e.g. an earlier `foundry inference-convert` export."""
    peft_config: LoraConfig | None = None
    """LoRA finetuning: freeze the model and train low-rank adapters on `target_modules` (see models/lora.py)."""

    @classmethod
    def config_expand(cls, raw: dict[str, Any]) -> dict[str, Any]:
        return apply_preset(raw, MPT_PRESETS)

    def __post_init__(self) -> None:
        a = self.attn_config
        if self.d_model % self.n_heads:
            raise UserError(f"d_model: {self.d_model} is not divisible by n_heads={self.n_heads}")
        kv = self.kv_heads
        if self.n_heads % kv:
            raise UserError(f"attn_config: kv_n_heads={kv} must divide n_heads={self.n_heads}")
        if a.alibi and a.rope:
            raise UserError("attn_config: alibi and rope are exclusive; pick one")
        if a.rope and (self.d_model // self.n_heads) % 2:
            raise UserError("attn_config: rope needs an even head dimension")
        if not 0 < self.embedding_fraction <= 1:
            raise UserError(f"embedding_fraction: must be in (0, 1], got {self.embedding_fraction}")

    @property
    def kv_heads(self) -> int:
        a = self.attn_config
        if a.attn_type == "multiquery_attention":
            return 1
        if a.attn_type == "grouped_query_attention":
            if a.kv_n_heads is None:
                raise UserError("attn_config.kv_n_heads: required for grouped_query_attention")
            return a.kv_n_heads
        return self.n_heads if a.kv_n_heads is None else a.kv_n_heads

    @property
    def padded_vocab_size(self) -> int:
        multiple = max(self.pad_vocab_multiple, 1)
        return math.ceil(self.vocab_size / multiple) * multiple

    @property
    def ffn_hidden(self) -> int:
        return self.ffn_config.ffn_hidden_size or int(self.expansion_ratio * self.d_model)


def _mpt(d: int, h: int, layers: int, seq: int = 2048, **extra: Any) -> dict[str, Any]:
    return {"d_model": d, "n_heads": h, "n_layers": layers, "max_seq_len": seq, "vocab_size": 50432,
            "no_bias": True, "learned_pos_emb": False, "attn_config": {"alibi": True}, **extra}


# Shapes of the released MPT ladder (LLM Foundry yamls and the MPT-7B/30B releases).
MPT_PRESETS: dict[str, dict[str, Any]] = {
    "mpt-tiny": _mpt(128, 4, 2, seq=256),
    "mpt-125m": _mpt(768, 12, 12),
    "mpt-350m": _mpt(1024, 16, 24),
    "mpt-760m": _mpt(1536, 12, 24),
    "mpt-1b": _mpt(2048, 16, 24),
    "mpt-3b": _mpt(2560, 20, 32),
    "mpt-7b": _mpt(4096, 32, 32),
    "mpt-30b": _mpt(7168, 64, 48, seq=8192),
}


class Attention(nn.Module):
    def __init__(self, a: MptArgs) -> None:
        super().__init__()
        self.n_heads, self.kv_heads = a.n_heads, a.kv_heads
        self.head_dim = a.d_model // a.n_heads
        self.cfg = a.attn_config
        bias = not a.no_bias
        self.Wqkv = nn.Linear(a.d_model, (self.n_heads + 2 * self.kv_heads) * self.head_dim, bias=bias)
        if self.cfg.qk_ln:
            self.q_ln = Norm(a.d_model, a.norm_type, a.norm_eps, bias=bias)
            self.k_ln = Norm(self.kv_heads * self.head_dim, a.norm_type, a.norm_eps, bias=bias)
        self.out_proj = nn.Linear(a.d_model, a.d_model, bias=bias)
        self.out_proj._is_residual = True  # type: ignore[assignment]

    def forward(self, x: torch.Tensor, mask: AttentionMask, rope: tuple[torch.Tensor, torch.Tensor] | None) -> torch.Tensor:
        b, t, _ = x.shape
        qkv = self.Wqkv(x)
        if self.cfg.clip_qkv is not None:
            qkv = qkv.clamp(-self.cfg.clip_qkv, self.cfg.clip_qkv)
        kv_dim = self.kv_heads * self.head_dim
        q, k, v = qkv.split([self.n_heads * self.head_dim, kv_dim, kv_dim], dim=-1)
        if self.cfg.qk_ln:
            q, k = self.q_ln(q), self.k_ln(k)
        q = q.view(b, t, self.n_heads, self.head_dim).transpose(1, 2)
        k = k.view(b, t, self.kv_heads, self.head_dim).transpose(1, 2)
        v = v.view(b, t, self.kv_heads, self.head_dim).transpose(1, 2)
        if rope is not None:
            q, k = apply_rotary(q, *rope), apply_rotary(k, *rope)
        out = attention(q, k, v, mask, softmax_scale=self.cfg.softmax_scale,
                        dropout_p=self.cfg.attn_pdrop if self.training else 0.0)
        return self.out_proj(out.transpose(1, 2).reshape(b, t, -1))


class Block(nn.Module):
    """Pre-LN block: x + attn(norm_1(x)), then x + ffn(norm_2(x))."""

    def __init__(self, a: MptArgs) -> None:
        super().__init__()
        bias = not a.no_bias
        self.norm_1 = Norm(a.d_model, a.norm_type, a.norm_eps, bias=bias)
        self.attn = Attention(a)
        self.norm_2 = Norm(a.d_model, a.norm_type, a.norm_eps, bias=bias)
        self.ffn = MLP(a.d_model, a.ffn_hidden, a.ffn_config.ffn_act_fn.name,
                       gated=a.ffn_config.ffn_type == "mptglu", bias=bias)
        self.ffn.down_proj._is_residual = True  # type: ignore[assignment]
        self.resid_drop = nn.Dropout(a.resid_pdrop)

    def forward(self, x: torch.Tensor, mask: AttentionMask, rope: tuple[torch.Tensor, torch.Tensor] | None) -> torch.Tensor:
        x = x + self.resid_drop(self.attn(self.norm_1(x), mask, rope))
        return x + self.resid_drop(self.ffn(self.norm_2(x)))


class MPT(nn.Module):
    """Causal LM. forward() gives logits, or with labels the summed chunked cross-entropy."""

    def __init__(self, args: MptArgs) -> None:
        super().__init__()
        self.args = args
        vocab = args.padded_vocab_size
        self.transformer = nn.ModuleDict({"wte": nn.Embedding(vocab, args.d_model)})
        if args.learned_pos_emb:
            self.transformer["wpe"] = nn.Embedding(args.max_seq_len, args.d_model)
        self.transformer["emb_drop"] = nn.Dropout(args.emb_pdrop)
        self.transformer["blocks"] = nn.ModuleList(Block(args) for _ in range(args.n_layers))
        self.transformer["norm_f"] = Norm(args.d_model, args.norm_type, args.norm_eps, bias=not args.no_bias)
        self.lm_head = None if args.tie_word_embeddings else nn.Linear(args.d_model, vocab, bias=False)

    @property
    def blocks(self) -> nn.ModuleList:
        return self.transformer["blocks"]  # type: ignore[return-value]

    @property
    def output_weight(self) -> torch.Tensor:
        return self.transformer["wte"].weight if self.lm_head is None else self.lm_head.weight

    def init_weights(self) -> None:
        """(Re)initialize every parameter in place; call under torch.manual_seed for reproducibility."""
        for module in self.modules():
            self.init_module(module)

    def init_module(self, module: nn.Module) -> None:
        """Initialize `module`'s own parameters. One module at a time, in `modules()` order, so a sharded model
        can be initialized with the same random stream (distributed/sharded_init.py)."""
        cfg = self.args.init_config
        if isinstance(module, nn.Linear):
            _init_tensor(module.weight, cfg, self.args.d_model)
            if getattr(module, "_is_residual", False):
                with torch.no_grad():
                    module.weight.div_(math.sqrt(2 * self.args.n_layers) if cfg.init_div_is_residual else 1.0)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            if cfg.emb_init_std is not None:
                nn.init.normal_(module.weight, std=cfg.emb_init_std)
            else:
                _init_tensor(module.weight, cfg, self.args.d_model)
        elif isinstance(module, Norm):
            module.reset_parameters()

    def forward(self, input_ids: torch.Tensor, *, labels: torch.Tensor | None = None,
                sequence_id: torch.Tensor | None = None, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        a = self.args
        b, t = input_ids.shape
        if a.learned_pos_emb and t > a.max_seq_len:
            raise UserError(f"sequence length {t} exceeds max_seq_len={a.max_seq_len} of learned positions")
        x = self.transformer["wte"](input_ids)
        if a.learned_pos_emb:
            x = x + self.transformer["wpe"](torch.arange(t, device=input_ids.device))
        if a.embedding_fraction < 1:
            x = x * a.embedding_fraction + x.detach() * (1 - a.embedding_fraction)
        x = self.transformer["emb_drop"](x)
        cfg = a.attn_config
        # attention_mask is padding: the collators include it only for batches that have some, so nothing
        # here reads the device back (an all-ones mask is honoured too, merely with a mask).
        mask = build_mask(
            resolve_impl(cfg.attn_impl, input_ids.device, dropout=cfg.attn_pdrop > 0), batch=b, seq_len=t,
            device=input_ids.device, causal=True, alibi=(a.n_heads, cfg.alibi_bias_max) if cfg.alibi else None,
            sequence_id=sequence_id if cfg.attn_uses_sequence_id else None, key_padding_mask=attention_mask,
        )
        rope = rotary_cos_sin(t, a.d_model // a.n_heads, cfg.rope_theta, input_ids.device) if cfg.rope else None
        for block in self.blocks:
            x = block(x, mask, rope)
        x = self.transformer["norm_f"](x)
        if labels is None:
            logits = F.linear(x, self.output_weight)
            return logits * a.logit_scale if a.logit_scale is not None else logits
        return chunked_cross_entropy(x, self.output_weight, labels, logit_scale=a.logit_scale, z_loss=a.z_loss,
                                     chunk_size=a.loss_chunk_size)

    def num_params(self, exclude_embeddings: bool = False) -> int:
        return count_params(self, exclude_embeddings)

    def flops_per_token(self, seq_len: int) -> float:
        """Training FLOPs per token: 6N + 12·L·H·Q·T (N: matmul parameters, the output projection included)."""
        a = self.args
        matmul_params = self.num_params(exclude_embeddings=True) + self.output_weight.numel()
        return 6 * matmul_params + 12 * a.n_layers * a.d_model * seq_len


def _init_tensor(weight: torch.Tensor, cfg: InitConfig, d_model: int) -> None:
    if cfg.name == "normal_":
        nn.init.normal_(weight, std=cfg.init_std)
    elif cfg.name == "small_init_":
        nn.init.normal_(weight, std=math.sqrt(2 / (5 * d_model)))
    elif cfg.name == "kaiming_normal_":
        nn.init.kaiming_normal_(weight, a=cfg.init_gain, mode=cfg.fan_mode, nonlinearity=cfg.init_nonlinearity)
    elif cfg.name == "kaiming_uniform_":
        nn.init.kaiming_uniform_(weight, a=cfg.init_gain, mode=cfg.fan_mode, nonlinearity=cfg.init_nonlinearity)
    elif cfg.name == "xavier_normal_":
        nn.init.xavier_normal_(weight, gain=cfg.init_gain or 1.0)
    else:
        nn.init.xavier_uniform_(weight, gain=cfg.init_gain or 1.0)
