"""Per-GPU training memory of an MPT/GPT config, term by term, from the config alone.

Every term follows what this package's own code keeps alive (read models/mpt.py, layers/loss.py,
distributed/parallelize.py and train/loop.py beside it), not a generic rule of thumb:

- weights: the parameters are fp32 (the trainer materializes them in fp32; they are the master weights), so
  4 bytes per parameter, divided over the ranks under FSDP (FULL_SHARD, SHARD_GRAD_OP), whole under NO_SHARD
  or on one process;
- gradients: fp32, sharded like the weights; optimizer state: AdamW keeps two fp32 moments (8 bytes per
  parameter), Lion one (4);
- working copies: on one process, bf16 autocast keeps a bf16 cast of every matmul weight from its use in
  forward until backward (autocast's cast cache, saved by each Linear); under FSDP the all-gathered
  parameters in the compute dtype: the root's (embeddings, final norm) for the whole forward plus two blocks in
  flight (the one computing and the one prefetched) with FULL_SHARD, every block with SHARD_GRAD_OP;
- activations: what autograd saves for backward in each block, counted tensor by tensor below (tested equal
  to the bytes autograd really saves, tests/unit/test_plan.py); with activation checkpointing a checkpointed
  block keeps only its input, and one block is recomputed at a time in backward;
- the attention mask of sdpa/torch (a dense [B|1, H|1, T, T] fp32 additive bias when ALiBi or document masks
  are used, plus its bf16 copy under autocast), shared by all blocks;
- the loss: the chunked cross-entropy keeps the gradients of the hidden states and of the output weight from
  forward to backward, and one chunk's fp32 logits (plus logsumexp's and the matmuls' temporaries) exist at a
  time;
- the optimizer step: torch's foreach AdamW (CPU) allocates one temporary per parameter (sqrt of the second
  moment); the fused kernel (CUDA) none.

The peak is the largest of three moments of a step: the end of forward (the loss chunk computing), the start of
backward (the loss's saved gradients handed on, then the gradients of the last block's wide tensors; that block
recomputed under checkpointing) and the optimizer step. Gradients of earlier microbatches are present during later forwards when a step has several. Process
overhead (the CUDA context, allocator fragmentation, the interpreter) is not in these terms; `foundry plan`
keeps a reserve for it when deciding what fits.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Literal

from llmfoundry.models.mpt import MptArgs

ACMode = Literal["none", "full", "selective"]


@dataclass(frozen=True)
class Setup:
    """How a run executes, as far as memory cares."""

    world_size: int
    """Processes (GPUs)."""
    microbatch: int
    """Samples per forward/backward per rank."""
    accumulation: int
    """Microbatches per optimizer step."""
    seq_len: int
    """Tokens per sample."""
    precision: str
    """fp32, amp_bf16 or amp_fp16."""
    sharding: str
    """FULL_SHARD, SHARD_GRAD_OP or NO_SHARD (FSDP applies only with world_size > 1)."""
    mixed_precision: str
    """FSDP mixed precision: DEFAULT, PURE or FULL."""
    ac: ACMode
    """Activation checkpointing."""
    optimizer: str
    """Optimizer name (AdamW variants keep two moments, Lion one)."""
    cuda: bool
    """On CUDA the optimizer is fused (no temporaries; foreach on CPU keeps one per parameter) and dropout
    masks are bool (the input's dtype on CPU)."""
    batch_keys: int = 3
    """int64 tensors per sample token in a batch (input_ids, labels, sequence_id)."""


@dataclass
class Memory:
    """Bytes per rank, by term; `peak` is the largest moment and `phase` names it."""

    weights: int
    gradients: int
    optimizer: int
    working_copies: int
    activations: int
    activations_per_sample: int
    mask: int
    loss: int
    batch: int
    optimizer_step: int
    peak: int
    phase: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def ac_mode(value: bool | str) -> ACMode:
    """fsdp_config.activation_checkpointing as one of none/full/selective."""
    if value in (True, "full"):
        return "full"
    if value == "selective":
        return "selective"
    return "none"


def _norm_bytes(a: MptArgs, norm_in: int) -> int:
    """Saved per token by one Norm (input + statistics; RMSNorm also its fp32 input and normalized value)."""
    d = a.d_model
    if a.norm_type.endswith("rmsnorm"):
        return 4 * d + 4 + norm_in * d  # x.float() (saved by pow), rsqrt, normed in x's dtype (weight * normed)
    return norm_in * d + 8  # layer_norm saves its input, mean and rstd


def _dtypes(a: MptArgs, s: Setup) -> tuple[int, int]:
    """(bytes of matmul outputs, bytes of a norm's saved input) under the setup's precision."""
    if s.precision == "fp32":
        return 4, 4
    act = 2
    low = a.norm_type.startswith("low_precision")
    return act, act if low else 4  # autocast runs plain LayerNorm in fp32 (it saves an fp32 input)


def block_bytes_per_token(a: MptArgs, s: Setup) -> int:
    """Bytes one block saves for backward per token (without checkpointing)."""
    act, norm_in = _dtypes(a, s)
    d, hidden = a.d_model, a.ffn_hidden
    head = d // a.n_heads
    kv = a.kv_heads * head
    cfg = a.attn_config
    total = 2 * _norm_bytes(a, norm_in) + 2 * act * d  # two norms, and their outputs (Linear inputs)
    total += act * (d + 2 * kv)  # the fused qkv projection (q, k, v are views of it)
    if cfg.clip_qkv is not None:
        total += act * (d + 2 * kv)  # clamp keeps its input; q, k, v are views of the clamped copy
    if cfg.qk_ln:
        total += act * (d + kv) + 16  # normalized q and k, with their statistics
    if cfg.rope:
        total += act * (d + kv)  # the rotated q, k (the rotations themselves keep only the shared cos/sin)
    if cfg.attn_impl == "torch":
        total += 4 * a.n_heads * s.seq_len + act * d  # fp32 softmax probabilities, the output
        if act != 4:
            total += 4 * kv  # v upcast to fp32 for probs @ v
    else:
        total += act * d + 4 * a.n_heads  # kernel output (out_proj's input is a view) and logsumexp
    act_fn = a.ffn_config.ffn_act_fn.name
    gated = a.ffn_config.ffn_type == "mptglu"
    ffn = (4 if gated else 2) - (1 if act_fn == "relu" else 0)  # relu saves its output, the next matmul's input
    total += ffn * act * hidden
    if a.resid_pdrop > 0:
        total += 2 * d * (1 if s.cuda else act)  # two dropout masks: bool on CUDA, the input's dtype on CPU
    return total


def _block_input_bytes(a: MptArgs, s: Setup) -> int:
    """What a checkpointed block keeps per token: its input (the residual stream)."""
    fsdp_low = s.world_size > 1 and s.sharding != "NO_SHARD" and s.precision != "fp32" and s.mixed_precision != "FULL"
    return (2 if fsdp_low else 4) * a.d_model  # fp32 residual, or the compute dtype when FSDP gathers bf16 weights


def activation_bytes(a: MptArgs, s: Setup, ac: ACMode | None = None) -> tuple[int, int]:
    """(saved bytes of all blocks for one microbatch, bytes of one block recomputed in backward)."""
    ac = s.ac if ac is None else ac
    tokens = s.microbatch * s.seq_len
    full = block_bytes_per_token(a, s) * tokens
    kept = _block_input_bytes(a, s) * tokens
    checkpointed = {"none": 0, "full": a.n_layers, "selective": math.ceil(a.n_layers / 2)}[ac]
    act, norm_in = _dtypes(a, s)
    final = (_norm_bytes(a, norm_in)) * tokens  # norm_f's saved input
    total = (a.n_layers - checkpointed) * full + checkpointed * kept + final
    return total, full if checkpointed else 0


def backward_temp_bytes(a: MptArgs, s: Setup) -> int:
    """Gradients alive at once while backward runs through one block: those of the MLP's wide tensors (two,
    three when gated) and of the residual stream (two)."""
    act, _ = _dtypes(a, s)
    wide = 3 if a.ffn_config.ffn_type == "mptglu" else 2
    return s.microbatch * s.seq_len * act * (wide * a.ffn_hidden + 2 * a.d_model)


def mask_bytes(a: MptArgs, s: Setup) -> int:
    """The dense additive attention bias sdpa/torch use for ALiBi, documents or `torch`, built once per forward."""
    cfg = a.attn_config
    if cfg.attn_impl not in ("sdpa", "torch"):
        return 0
    if not (cfg.alibi or cfg.attn_uses_sequence_id or cfg.attn_impl == "torch"):
        return 0
    rows = s.microbatch if cfg.attn_uses_sequence_id else 1
    heads = a.n_heads if cfg.alibi else 1
    elements = rows * heads * s.seq_len ** 2
    copy = 2 if s.precision != "fp32" and cfg.attn_impl == "sdpa" else 0  # bias_as(bf16) under autocast
    return elements * (4 + copy)


def loss_bytes(a: MptArgs, s: Setup, vocab: int) -> tuple[int, int]:
    """(kept from forward to backward, the largest moment of one chunk's temporaries) of the chunked loss.

    Per chunk of c tokens: the fp32 logits [c, V] (in bf16 first under autocast); logsumexp allocates its own
    [c, V] temporary; softmax - onehot is then formed in place; under autocast it is cast to bf16 for the two
    matmuls, whose weight-gradient result [V, d] is a temporary too (bf16, then fp32).
    """
    act, _ = _dtypes(a, s)
    tokens = s.microbatch * s.seq_len
    d = a.d_model
    kept = tokens * d * act + vocab * d * 4  # grad of the hidden states (input dtype), of the weight (fp32)
    cv = min(a.loss_chunk_size, tokens) * vocab
    moments = [2 * cv * 4, cv * 4 + vocab * d * 4]  # logits + logsumexp's temporary; logits + grad.t() @ h
    if act != 4:
        moments += [cv * 2 + cv * 4,  # the bf16 matmul result and its fp32 copy
                    cv * 4 + cv * 2 + vocab * d * (2 + 2 + 4)]  # + bf16 grad, weight.to(bf16), bf16 and fp32 [V, d]
    return kept, max(moments)


def _counts(model: Any) -> tuple[int, int, int, int]:
    """(all params, params in blocks, params in one block, matmul weights) of a model built on meta."""
    total = model.num_params()
    blocks = sum(p.numel() for p in model.blocks.parameters())
    one = sum(p.numel() for p in model.blocks[0].parameters())
    matmul = sum(m.weight.numel() for m in model.modules() if type(m).__name__ == "Linear")
    return total, blocks, one, matmul


def estimate(model: Any, s: Setup) -> Memory:
    """The memory terms of training `model` (an MPT/GPT built on meta) under `s`, and their peak."""
    a: MptArgs = model.args
    total, in_blocks, one_block, matmul = _counts(model)
    vocab = model.output_weight.shape[0]
    sharded = s.world_size > 1 and s.sharding != "NO_SHARD"
    shard = total / s.world_size if sharded else total
    weights = int(4 * shard)
    gradients = int(4 * shard)
    moments = 1 if "lion" in s.optimizer else 2
    optimizer = int(4 * moments * shard)
    low = s.precision != "fp32"
    if sharded:
        width = 2 if low and s.mixed_precision != "FULL" else 4
        root = total - in_blocks
        flight = in_blocks if s.sharding == "SHARD_GRAD_OP" else min(2, a.n_layers) * one_block
        working = int(width * (root + flight))
    else:
        working = 2 * matmul if low else 0  # autocast's bf16 weight casts, saved by each Linear
        if low and a.tie_word_embeddings:
            working += 2 * model.output_weight.numel()  # the tied output projection is cast too
    acts, recompute = activation_bytes(a, s)
    per_sample = activation_bytes(a, Setup(**{**asdict(s), "microbatch": 1}))[0]
    mask = mask_bytes(a, s)
    loss_kept, loss_temp = loss_bytes(a, s, vocab)
    batch = s.batch_keys * 8 * s.microbatch * s.accumulation * s.seq_len
    step_temp = 0 if s.cuda else int(4 * shard)
    accumulated = gradients if s.accumulation > 1 else 0
    static = weights + optimizer + batch
    phases = {
        "end of forward": static + accumulated + working + acts + mask + loss_kept + loss_temp,
        "backward": static + accumulated + working + acts + mask + recompute
        + max(2 * loss_kept, loss_kept + backward_temp_bytes(a, s)),
        "optimizer step": static + gradients + step_temp,
    }
    phase = max(phases, key=phases.__getitem__)
    return Memory(weights=weights, gradients=gradients, optimizer=optimizer, working_copies=working,
                  activations=acts, activations_per_sample=per_sample, mask=mask, loss=loss_kept + loss_temp,
                  batch=batch, optimizer_step=step_temp, peak=int(phases[phase]), phase=phase)
