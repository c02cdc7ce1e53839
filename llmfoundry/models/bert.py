"""MosaicBERT (and classic BERT): a post-LN encoder for masked-LM pretraining and sequence classification.

MosaicBERT's recipe: ALiBi instead of position embeddings, GeGLU feed-forward, low-precision LayerNorm, and
unpadded execution: the real tokens of a batch are gathered once into one [tokens, d_model] matrix and every
layer, attention included, runs on them (layers/varlen.py: flash varlen, or one batched call over the rows
first-fit packed into bins), so work follows the real tokens and nothing is re-padded until the output.
`classic: true` switches to learned positions and a GELU MLP: exactly
`transformers`' BertModel/BertForMaskedLM math (tested against a real checkpoint).
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
from llmfoundry.models.layers.attention import AttentionMask, attention, build_mask, resolve_impl
from llmfoundry.models.layers.loss import IGNORE_INDEX, chunked_cross_entropy
from llmfoundry.models.layers.mlp import MLP
from llmfoundry.models.layers.norm import Norm, NormType
from llmfoundry.models.layers.varlen import Bins, Packed, packed_attention
from llmfoundry.models.params import count_params
from llmfoundry.models.presets import apply_preset


@dataclass
class BertArgs:
    name: Literal["mosaic_bert", "mosaicbert", "bert"] = "mosaic_bert"
    """Model family."""
    preset: str | None = None
    """mosaicbert-base, mosaicbert-large, bert-base, bert-large or bert-tiny."""
    classic: bool = False
    """Exactly BERT: learned positions, GELU MLP, LayerNorm in fp32 (no ALiBi, no GLU)."""
    unpad: bool = True
    """Compute on the real tokens only (padding removed) in every layer; attention keeps each sequence separate."""
    d_model: int = field(default=768, metadata=POSITIVE)
    """Hidden size."""
    n_heads: int = field(default=12, metadata=POSITIVE)
    """Attention heads."""
    n_layers: int = field(default=12, metadata=POSITIVE)
    """Encoder layers."""
    intermediate_size: int = field(default=3072, metadata=POSITIVE)
    """Feed-forward width (each half of the GLU for MosaicBERT)."""
    max_seq_len: int = field(default=512, metadata=POSITIVE)
    """Positions (classic); MosaicBERT's ALiBi extrapolates beyond the training length."""
    vocab_size: int = field(default=30522, metadata=POSITIVE)
    """Vocabulary size; padded up to a multiple of pad_vocab_multiple."""
    pad_vocab_multiple: int = field(default=128, metadata=POSITIVE)
    """Pad the embedding to a multiple of this (1 disables)."""
    type_vocab_size: int = field(default=2, metadata=POSITIVE)
    """Token type (segment) embeddings."""
    pad_token_id: int = field(default=0, metadata=NON_NEGATIVE)
    """Padding token (its embedding row starts at zero)."""
    attn_impl: Literal["auto", "torch", "sdpa", "flex", "flash"] = "auto"
    """Attention backend (auto: flash if installed, else flex on CUDA without attention dropout; sdpa otherwise)."""
    alibi_bias_max: int = field(default=8, metadata=POSITIVE)
    """ALiBi slope range (MosaicBERT)."""
    norm_type: NormType = "low_precision_layernorm"
    """MosaicBERT uses low-precision LayerNorm; classic forces layernorm."""
    norm_eps: float = field(default=1e-12, metadata={"gt": 0})
    """LayerNorm epsilon (BERT's 1e-12)."""
    hidden_dropout: float = field(default=0.1, metadata=PROBABILITY)
    """Dropout on embeddings and residual branches."""
    attn_dropout: float = field(default=0.1, metadata=PROBABILITY)
    """Dropout on attention probabilities."""
    init_std: float = field(default=0.02, metadata=NON_NEGATIVE)
    """Normal init std for linear and embedding weights."""
    num_labels: int | None = None
    """Set for sequence classification (1 = regression): replaces the MLM head by pooler + classifier."""
    classifier_dropout: float | None = field(default=None, metadata=PROBABILITY)
    """Dropout before the classifier (default hidden_dropout)."""
    loss_chunk_size: int = field(default=4096, metadata=POSITIVE)
    """Tokens per chunk of the MLM output projection."""

    @classmethod
    def config_expand(cls, raw: dict[str, Any]) -> dict[str, Any]:
        return apply_preset(raw, BERT_PRESETS)

    def __post_init__(self) -> None:
        if self.d_model % self.n_heads:
            raise UserError(f"d_model: {self.d_model} is not divisible by n_heads={self.n_heads}")
        if self.num_labels is not None and self.num_labels < 1:
            raise UserError(f"num_labels: must be at least 1, got {self.num_labels}")

    @property
    def padded_vocab_size(self) -> int:
        multiple = max(self.pad_vocab_multiple, 1)
        return math.ceil(self.vocab_size / multiple) * multiple


BERT_PRESETS: dict[str, dict[str, Any]] = {
    "bert-tiny": {"d_model": 128, "n_heads": 4, "n_layers": 2, "intermediate_size": 256},
    "mosaicbert-base": {"d_model": 768, "n_heads": 12, "n_layers": 12, "intermediate_size": 3072},
    "mosaicbert-large": {"d_model": 1024, "n_heads": 16, "n_layers": 24, "intermediate_size": 4096},
    "bert-base": {"classic": True, "unpad": False, "d_model": 768, "n_heads": 12, "n_layers": 12,
                  "intermediate_size": 3072, "norm_type": "layernorm"},
    "bert-large": {"classic": True, "unpad": False, "d_model": 1024, "n_heads": 16, "n_layers": 24,
                   "intermediate_size": 4096, "norm_type": "layernorm"},
}


@dataclass
class _Layout:
    """How the batch is laid out for this forward: [B, T] padded (`mask`) or [N] real tokens (`packed`)."""

    impl: str
    alibi: tuple[int, float] | None
    packed: Packed | None = None
    bins: Bins | None = None  # packed, every impl but flash
    mask: AttentionMask | None = None

    def to_padded(self, x: torch.Tensor) -> torch.Tensor:
        return x if self.packed is None else self.packed.unpack(x)

    def first_tokens(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, 0] if self.packed is None else self.packed.first_tokens(x)


class BertAttention(nn.Module):
    def __init__(self, a: BertArgs) -> None:
        super().__init__()
        self.n_heads, self.head_dim = a.n_heads, a.d_model // a.n_heads
        self.dropout = a.attn_dropout
        self.Wqkv = nn.Linear(a.d_model, 3 * a.d_model)
        self.out_proj = nn.Linear(a.d_model, a.d_model)
        self.norm = Norm(a.d_model, _norm_type(a), a.norm_eps)
        self.drop = nn.Dropout(a.hidden_dropout)

    def forward(self, x: torch.Tensor, layout: _Layout) -> torch.Tensor:
        """x: [N, d] packed tokens or [B, T, d]."""
        p = self.dropout if self.training else 0.0
        qkv = self.Wqkv(x).unflatten(-1, (3, self.n_heads, self.head_dim))
        if layout.packed is not None:  # qkv [N, 3, H, D]
            out = packed_attention(qkv, layout.packed, layout.bins, layout.impl, alibi=layout.alibi, dropout_p=p)
        else:
            q, k, v = (z.transpose(1, 2) for z in qkv.unbind(2))  # [B, H, T, D]
            out = attention(q, k, v, layout.mask, dropout_p=p).transpose(1, 2)  # type: ignore[arg-type]
        return self.norm(x + self.drop(self.out_proj(out.flatten(-2))))  # post-LN, as in BERT


class BertLayer(nn.Module):
    def __init__(self, a: BertArgs) -> None:
        super().__init__()
        self.attention = BertAttention(a)
        self.mlp = MLP(a.d_model, a.intermediate_size, "gelu", gated=not a.classic, bias=True)
        self.norm = Norm(a.d_model, _norm_type(a), a.norm_eps)
        self.drop = nn.Dropout(a.hidden_dropout)

    def forward(self, x: torch.Tensor, layout: _Layout) -> torch.Tensor:
        x = self.attention(x, layout)
        return self.norm(x + self.drop(self.mlp(x)))


def _norm_type(a: BertArgs) -> NormType:
    return "layernorm" if a.classic else a.norm_type


class BertEncoder(nn.Module):
    """Embeddings + layers; names follow transformers' BertModel where the math is the same."""

    def __init__(self, a: BertArgs) -> None:
        super().__init__()
        self.args = a
        self.embeddings = nn.ModuleDict({
            "word_embeddings": nn.Embedding(a.padded_vocab_size, a.d_model),
            "token_type_embeddings": nn.Embedding(a.type_vocab_size, a.d_model),
            "norm": Norm(a.d_model, _norm_type(a), a.norm_eps),
        })
        if a.classic:
            self.embeddings["position_embeddings"] = nn.Embedding(a.max_seq_len, a.d_model)
        self.emb_drop = nn.Dropout(a.hidden_dropout)
        self.encoder = nn.ModuleDict({"layer": nn.ModuleList(BertLayer(a) for _ in range(a.n_layers))})

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None,
                token_type_ids: torch.Tensor | None) -> tuple[torch.Tensor, _Layout]:
        a = self.args
        b, t = input_ids.shape
        if a.classic and t > a.max_seq_len:
            raise UserError(f"sequence length {t} exceeds max_seq_len={a.max_seq_len} of learned positions")
        emb = self.embeddings
        types = token_type_ids if token_type_ids is not None else torch.zeros_like(input_ids)
        positions = torch.arange(t, device=input_ids.device).expand(b, t)
        impl = resolve_impl(a.attn_impl, input_ids.device, dropout=a.attn_dropout > 0)
        layout = _Layout(impl, None if a.classic else (a.n_heads, a.alibi_bias_max))
        if attention_mask is not None and a.unpad:  # gather the real tokens once; every layer runs on them
            layout.packed = Packed.from_mask(attention_mask.bool())
            if impl != "flash":
                layout.bins = Bins.build(layout.packed, impl, layout.alibi)
            input_ids, types, positions = (layout.packed.pack(z) for z in (input_ids, types, positions))
        else:
            layout.mask = build_mask(impl, batch=b, seq_len=t, device=input_ids.device, causal=False,
                                     alibi=layout.alibi, key_padding_mask=attention_mask)
        x = emb["word_embeddings"](input_ids) + emb["token_type_embeddings"](types)
        if a.classic:
            x = x + emb["position_embeddings"](positions)
        x = self.emb_drop(emb["norm"](x))
        for layer in self.encoder["layer"]:
            x = layer(x, layout)
        return x, layout


class MosaicBert(nn.Module):
    """Masked LM (default) or sequence classifier (`num_labels`) on top of the shared encoder."""

    def __init__(self, args: BertArgs) -> None:
        super().__init__()
        self.args = args
        self.bert = BertEncoder(args)
        if args.num_labels is None:
            self.cls = nn.ModuleDict({
                "dense": nn.Linear(args.d_model, args.d_model),
                "norm": Norm(args.d_model, _norm_type(args), args.norm_eps),
            })
            self.cls_bias = nn.Parameter(torch.zeros(args.padded_vocab_size))
        else:
            self.pooler = nn.Linear(args.d_model, args.d_model)
            p = args.classifier_dropout if args.classifier_dropout is not None else args.hidden_dropout
            self.classifier_drop = nn.Dropout(p)
            self.classifier = nn.Linear(args.d_model, args.num_labels)

    @property
    def blocks(self) -> nn.ModuleList:
        return self.bert.encoder["layer"]  # type: ignore[return-value]

    def init_weights(self) -> None:
        """BERT's init: normal(init_std) weights, zero biases, unit norms, a zero padding embedding."""
        for module in self.modules():
            self.init_module(module)

    def init_module(self, module: nn.Module) -> None:
        """Initialize `module`'s own parameters (one module at a time, in `modules()` order: see mpt.py)."""
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, std=self.args.init_std)
            if isinstance(module, nn.Linear) and module.bias is not None:
                nn.init.zeros_(module.bias)
            if module is self.bert.embeddings["word_embeddings"]:
                with torch.no_grad():
                    module.weight[self.args.pad_token_id].zero_()
        elif isinstance(module, Norm):
            module.reset_parameters()
        elif module is self and self.args.num_labels is None:
            nn.init.zeros_(self.cls_bias)

    def forward(self, input_ids: torch.Tensor, *, labels: torch.Tensor | None = None,
                attention_mask: torch.Tensor | None = None, token_type_ids: torch.Tensor | None = None,
                sequence_id: torch.Tensor | None = None) -> torch.Tensor:
        """MLM: logits [B,T,V], or with labels the summed CE over labelled tokens. Classifier: [B,num_labels]/sum loss."""
        del sequence_id  # one sequence per row; rows never attend to each other
        x, layout = self.bert(input_ids, attention_mask, token_type_ids)
        if self.args.num_labels is not None:
            return self._classify(layout.first_tokens(x), labels)
        weight = self.bert.embeddings["word_embeddings"].weight
        if labels is None:
            logits = F.linear(self._transform(layout.to_padded(x)), weight, self.cls_bias)
            return logits
        if layout.packed is not None:
            flat_labels = layout.packed.pack(labels)
        else:
            flat_labels, x = labels.flatten(), x.reshape(-1, x.shape[-1])
        # MosaicBERT's trick: run the MLM head only where there is something to predict.
        where = (flat_labels != IGNORE_INDEX).nonzero().squeeze(1)
        hidden = self._transform(x[where])
        return chunked_cross_entropy(hidden, weight, flat_labels[where], bias=self.cls_bias,
                                     chunk_size=self.args.loss_chunk_size)

    def _transform(self, x: torch.Tensor) -> torch.Tensor:
        return self.cls["norm"](F.gelu(self.cls["dense"](x)))

    def _classify(self, first: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        logits = self.classifier(self.classifier_drop(torch.tanh(self.pooler(first))))
        if labels is None:
            return logits
        if self.args.num_labels == 1:
            return F.mse_loss(logits.squeeze(-1).float(), labels.float(), reduction="sum")
        return F.cross_entropy(logits.float(), labels, ignore_index=IGNORE_INDEX, reduction="sum")

    def num_params(self, exclude_embeddings: bool = False) -> int:
        return count_params(self, exclude_embeddings)

    def flops_per_token(self, seq_len: int) -> float:
        a = self.args
        head = self.bert.embeddings["word_embeddings"].weight.numel() if a.num_labels is None else 0
        return 6 * (self.num_params(exclude_embeddings=True) + head) + 12 * a.n_layers * a.d_model * seq_len


def build_bert(args: BertArgs) -> MosaicBert:
    return MosaicBert(args)
