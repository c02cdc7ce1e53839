"""The plan of a training config: size, FLOPs, tokens, memory per GPU, what fits, speed, time and cost.

Everything comes from the resolved config: the model is built on the meta device (no memory is allocated)
and its own `num_params()` / `flops_per_token()` are used, the same numbers the trainer's MFU uses, so a
plan at MFU m predicts the tokens/s of a run that logs `throughput/mfu` = m.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from llmfoundry.config.schema import FSDPConfig, TrainConfig
from llmfoundry.errors import UserError
from llmfoundry.devices import Device
from llmfoundry.plan.memory import Memory, Setup, ac_mode, estimate

CHINCHILLA_TOKENS_PER_PARAM = 20
"""Compute-optimal tokens per parameter: Hoffmann et al. 2022, "Training Compute-Optimal Large Language
Models" (arXiv:2203.15556), Table 3: about 20 tokens per parameter (e.g. 70B parameters on 1.4T tokens)."""

GIB = 2**30
RESERVE_BYTES = 1 * GIB
"""Kept free on each GPU for what the memory terms leave out: the CUDA context, NCCL and cuBLAS workspaces."""
USABLE_FRACTION = 0.95
"""Share of the rest the caching allocator can really hand out (fragmentation)."""


@dataclass
class Plan:
    """Everything `foundry plan` reports (`--json` prints this)."""

    config: str
    family: str
    parameters: int
    non_embedding_parameters: int
    flops_per_token: float
    seq_len: int
    global_batch: int
    microbatch: int
    accumulation: int
    steps: int
    tokens: int
    chinchilla_tokens: int
    gpus: int
    device: str
    peak_flops: float
    mfu: float
    precision: str
    sharding: str
    activation_checkpointing: str
    tokens_per_s: float
    seconds: float
    gpu_hours: float
    cost: float | None
    usable_bytes_per_gpu: float
    memory: dict[str, Any] | None
    """The configured setup's memory terms (bytes per GPU), or None where memory is not modeled."""
    peak_by_ac: dict[str, int] = field(default_factory=dict)
    """Peak bytes per GPU with activation checkpointing none / selective / full, the rest as configured."""
    fits: bool | None = None
    largest_microbatch: int | None = None
    """The largest microbatch (<= the per-GPU batch) whose peak fits; 0 when even 1 does not."""
    largest_dividing_microbatch: int | None = None
    """The largest fitting microbatch that divides the per-GPU batch (what device_train_microbatch_size takes)."""
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)


def _steps_per_epoch(cfg: TrainConfig) -> int:
    """Optimizer steps per epoch, from the train split's MDS index (epochs need the dataset's size)."""
    ds = cfg.train_loader.dataset
    local = getattr(ds, "local", None)
    split = getattr(ds, "split", None) or ""
    index = Path(local or "") / split / "index.json"
    if local is None or not index.exists():
        raise UserError(f"max_duration: {cfg.max_duration} is in epochs, which needs the dataset's size, but "
                        f"{index} does not exist; give max_duration in ba, tok or sp")
    shards = json.loads(index.read_text())["shards"]
    return sum(s["samples"] for s in shards) // cfg.global_train_batch_size


def _steps(cfg: TrainConfig, seq_len: int) -> int:
    from llmfoundry.train.schedule import steps_for

    per_epoch = _steps_per_epoch(cfg) if cfg.max_duration.unit == "ep" else 0
    return steps_for(cfg.max_duration, max_steps=None, global_batch=cfg.global_train_batch_size, seq_len=seq_len,
                     steps_per_epoch=per_epoch)


def _microbatch(cfg: TrainConfig, gpus: int) -> tuple[int, int]:
    """(configured microbatch, per-GPU batch); `auto` starts at the whole per-GPU batch, as the trainer does."""
    per_rank, rest = divmod(cfg.global_train_batch_size, gpus)
    if rest:
        raise UserError(f"global_train_batch_size: {cfg.global_train_batch_size} is not divisible by --gpus {gpus}")
    micro = cfg.device_train_microbatch_size
    micro = per_rank if micro == "auto" else micro
    if per_rank % micro:
        raise UserError(f"device_train_microbatch_size: {micro} does not divide the per-GPU batch {per_rank} "
                        f"(global_train_batch_size {cfg.global_train_batch_size} / {gpus} GPUs)")
    return micro, per_rank


def _setup(cfg: TrainConfig, gpus: int, micro: int, per_rank: int, seq_len: int, cuda: bool, ac: Any = None) -> Setup:
    fsdp = cfg.fsdp_config or FSDPConfig()
    return Setup(world_size=gpus, microbatch=micro, accumulation=per_rank // micro, seq_len=seq_len,
                 precision=cfg.precision, sharding=fsdp.sharding_strategy, mixed_precision=fsdp.mixed_precision,
                 ac=ac_mode(fsdp.activation_checkpointing if ac is None else ac), optimizer=cfg.optimizer.name,
                 cuda=cuda)


def _memory_plan(cfg: TrainConfig, model: Any, gpus: int, micro: int, per_rank: int, seq_len: int, usable: float,
                 cuda: bool, auto: bool) -> dict[str, Any]:
    """Memory of the configured setup (for `auto`, the microbatch the trainer's halving settles on)."""
    def peak(m: int, ac: Any = None) -> Memory:
        return estimate(model, _setup(cfg, gpus, m, per_rank, seq_len, cuda, ac))

    if auto:
        while micro > 1 and peak(micro).peak > usable:
            micro = (micro + 1) // 2
    memory = peak(micro)
    fitting = [m for m in range(1, per_rank + 1) if peak(m).peak <= usable]
    dividing = [m for m in fitting if per_rank % m == 0]
    return {
        "microbatch": micro, "memory": memory,
        "peak_by_ac": {ac: peak(micro, ac).peak for ac in ("none", "selective", "full")},
        "largest": max(fitting, default=0), "largest_dividing": max(dividing, default=0),
    }


def plan(cfg: TrainConfig, *, config: str, gpus: int, device: Device, mfu: float = 0.4,
         price_per_gpu_hour: float | None = None, cuda: bool = True) -> Plan:
    """Plan training `cfg` on `gpus` x `device` at model FLOPs utilization `mfu`.

    `cuda` says which kernels the run uses (fused optimizer, bool dropout masks); False plans a CPU run, as the
    validation against measured CPU runs does.
    """
    from llmfoundry.models import build_model
    from llmfoundry.models.mpt import MPT

    if gpus < 1:
        raise UserError(f"--gpus: must be at least 1, got {gpus}")
    if not 0 < mfu <= 1:
        raise UserError(f"--mfu: must be in (0, 1], got {mfu}")
    if price_per_gpu_hour is not None and price_per_gpu_hour < 0:
        raise UserError(f"--price-per-gpu-hour: must not be negative, got {price_per_gpu_hour}")
    seq_len = cfg.max_seq_len or cfg.train_loader.dataset.max_seq_len
    micro, per_rank = _microbatch(cfg, gpus)
    model = build_model(cfg.model, device="meta")
    params = model.num_params()
    flops = model.flops_per_token(seq_len)
    steps = _steps(cfg, seq_len)
    tokens = steps * cfg.global_train_batch_size * seq_len
    peak_flops = device.bf16_flops
    rate = gpus * peak_flops * mfu / flops
    seconds = tokens / rate
    fsdp = cfg.fsdp_config or FSDPConfig()
    usable = USABLE_FRACTION * (device.memory_bytes - RESERVE_BYTES)
    notes = []
    if cfg.precision == "fp32":
        notes.append("precision fp32: speed is predicted at the bf16 peak; fp32 matmuls run at the TF32 rate at best")
    result = Plan(
        config=config, family=cfg.model.name, parameters=params,
        non_embedding_parameters=model.num_params(exclude_embeddings=True), flops_per_token=flops, seq_len=seq_len,
        global_batch=cfg.global_train_batch_size, microbatch=micro, accumulation=per_rank // micro, steps=steps,
        tokens=tokens, chinchilla_tokens=CHINCHILLA_TOKENS_PER_PARAM * params, gpus=gpus, device=device.name,
        peak_flops=peak_flops, mfu=mfu, precision=cfg.precision,
        sharding=fsdp.sharding_strategy if gpus > 1 else "none (1 process)",
        activation_checkpointing=ac_mode(fsdp.activation_checkpointing), tokens_per_s=rate, seconds=seconds,
        gpu_hours=seconds / 3600 * gpus,
        cost=None if price_per_gpu_hour is None else seconds / 3600 * gpus * price_per_gpu_hour,
        usable_bytes_per_gpu=usable, memory=None, notes=notes,
    )
    if not isinstance(model, MPT):
        notes.append(f"memory: modeled for the mpt and gpt2 families (this package's decoder); not for {cfg.model.name}")
        return result
    mem = _memory_plan(cfg, model, gpus, micro, per_rank, seq_len, usable, cuda,
                       auto=cfg.device_train_microbatch_size == "auto")
    if mem["microbatch"] != micro:
        notes.append(f"device_train_microbatch_size auto: {micro} does not fit; the trainer halves it to "
                     f"{mem['microbatch']}")
        result.microbatch, result.accumulation = mem["microbatch"], per_rank // mem["microbatch"]
    result.memory = mem["memory"].as_dict()
    result.peak_by_ac = mem["peak_by_ac"]
    result.fits = mem["memory"].peak <= usable
    result.largest_microbatch = mem["largest"]
    result.largest_dividing_microbatch = mem["largest_dividing"]
    return result


def hours(seconds: float) -> str:
    """A duration for people: 42 s, 3.5 h, 12.3 days."""
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 2 * 3600:
        return f"{seconds / 60:.1f} min"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


def count(n: float) -> str:
    """1.3B, 125.0M, 2.4T, 950K."""
    for size, unit in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "K")):
        if abs(n) >= size:
            return f"{n / size:.2f}{unit}" if n < 10 * size else f"{n / size:.1f}{unit}"
    return f"{n:.0f}"

