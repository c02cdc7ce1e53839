"""Relations between config values, and between values and the files they name, checked before any model
or loader is built.

The schema checks each value alone (config/validate.py). These checks need two values, or a value and a
file: batch sizes against the number of processes, `vocab_size` against the tokenizer, the sequence length
against the data's packed length and the model's positions, the model's size against the device's memory,
the run folder against its disk. Each of them otherwise fails deep inside torch (an IndexError in the
embedding, a storage overflow), or worse runs wrong: a sequence length above the packed one multiplies the
token counters. Every problem is collected and reported at once, one line each, naming the file that set
the key.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from llmfoundry.checkpoint.manager import local_run_dir
from llmfoundry.config.schema import FSDPConfig, TrainConfig
from llmfoundry.data.loaders import check_loader
from llmfoundry.distributed import DistInfo
from llmfoundry.errors import UserError
from llmfoundry.io import human_bytes
from llmfoundry.models.bert import BertArgs
from llmfoundry.models.gpt import GptArgs
from llmfoundry.models.mpt import MptArgs

Origin = Callable[[str], str]


class _Problems:
    def __init__(self, origin: Origin) -> None:
        self.origin, self.lines = origin, []

    def add(self, key: str, message: str) -> None:
        self.lines.append(f"{self.origin(key)}: {key}: {message}")

    def collect(self, fn: Callable[[], Any]) -> Any:
        """Run a check that raises UserError itself; keep its lines and go on with the others."""
        try:
            return fn()
        except UserError as err:
            self.lines.extend(err.problems)
            return None


def preflight(cfg: TrainConfig, dist: DistInfo, origin: Origin = lambda _: "config") -> tuple[int, int]:
    """Every relation problem of a training config at once; returns (microbatch, accumulation steps)."""
    from llmfoundry.data.tokenizer import load_tokenizer

    problems = _Problems(origin)
    micro, accumulation = _batches(cfg, dist, problems)
    tokenizer = problems.collect(lambda: load_tokenizer(cfg.tokenizer.name))
    problems.collect(lambda: check_loader(cfg.train_loader, "train_loader"))
    for where, loader in eval_keys(cfg):
        problems.collect(lambda: check_loader(loader, where, used=not cfg.eval_interval.is_zero))
    _precision(cfg, dist, problems)
    if tokenizer is not None:
        _vocab(cfg, len(tokenizer), problems)
    _sequence_length(cfg, problems)
    params = _memory(cfg, dist, problems)
    _run_folder(cfg, params, problems)
    if problems.lines:
        raise UserError(*problems.lines)
    return micro, accumulation


def _batches(cfg: TrainConfig, dist: DistInfo, problems: _Problems) -> tuple[int, int]:
    micro = cfg.device_train_microbatch_size
    per_rank, rest = divmod(cfg.global_train_batch_size, dist.world_size)
    if rest or per_rank == 0:
        problems.add("global_train_batch_size", f"{cfg.global_train_batch_size} is not divisible by the "
                     f"{dist.world_size} processes")
        return 1, 1
    if micro == "auto":
        micro = per_rank  # the data comes as whole per-process batches; the trainer splits them after an OOM
    if per_rank % micro:
        problems.add("device_train_microbatch_size", f"{micro} does not divide the per-process batch {per_rank} "
                     f"(global_train_batch_size {cfg.global_train_batch_size} / {dist.world_size} processes)")
        return 1, 1
    return micro, per_rank // micro


def eval_keys(cfg: TrainConfig) -> list[tuple[str, Any]]:
    """(config key, loader) of each eval loader: `eval_loader`, or `eval_loader[i]` for a list."""
    if isinstance(cfg.eval_loader, list):
        return [(f"eval_loader[{i}]", loader) for i, loader in enumerate(cfg.eval_loader)]
    return [("eval_loader", cfg.eval_loader)] if cfg.eval_loader is not None else []


def _precision(cfg: TrainConfig, dist: DistInfo, problems: _Problems) -> None:
    if cfg.precision == "amp_fp8":  # never silently train in another precision
        from llmfoundry.train.fp8 import check_fp8

        problems.collect(lambda: check_fp8(dist.device))
    if cfg.precision == "amp_fp16" and dist.device.type == "cpu":
        problems.add("precision", "amp_fp16 needs a GPU; use fp32 or amp_bf16 on CPU")


def _vocab(cfg: TrainConfig, tokenizer_size: int, problems: _Problems) -> None:
    model = cfg.model
    if isinstance(model, (MptArgs, GptArgs, BertArgs)) and model.vocab_size < tokenizer_size:
        problems.add("model.vocab_size", f"{model.vocab_size} is smaller than the {tokenizer_size:,} tokens of "
                     f"the tokenizer {cfg.tokenizer.name}; set it to at least {tokenizer_size}")


def sequence_length(cfg: TrainConfig) -> tuple[int, str]:
    """The training sequence length and the key that sets it (top-level max_seq_len wins, as in Foundry)."""
    if cfg.max_seq_len is not None:
        return cfg.max_seq_len, "max_seq_len"
    return cfg.train_loader.dataset.max_seq_len, "train_loader.dataset.max_seq_len"


def _sequence_length(cfg: TrainConfig, problems: _Problems) -> None:
    seq_len, key = sequence_length(cfg)
    positions = _learned_positions(cfg.model)
    if positions is not None and seq_len > positions:
        problems.add(key, f"{seq_len} is longer than model.max_seq_len={positions}, the model's learned "
                     "positions; lower it or raise model.max_seq_len")
    for where, loader in [("train_loader", cfg.train_loader), *eval_keys(cfg)]:
        if getattr(loader, "name", None) != "text":
            continue
        for local in _local_dirs(loader.dataset):
            packed = packed_length(local)
            if packed is not None and seq_len > packed:
                problems.add(key, f"{seq_len} is longer than the {packed}-token samples of {where} data {local} "
                             f"(its conversion.json); use at most {packed}, or re-convert with --max-seq-len {seq_len}")


def _learned_positions(model: Any) -> int | None:
    if isinstance(model, MptArgs) and model.learned_pos_emb:
        return model.max_seq_len
    if isinstance(model, GptArgs) or (isinstance(model, BertArgs) and model.classic):
        return model.max_seq_len
    return None


def _local_dirs(dataset: Any) -> list[str]:
    if dataset.streams:
        return [s.local for s in dataset.streams.values() if s.local is not None]
    return [dataset.local] if dataset.local is not None else []


def packed_length(local: str | Path) -> int | None:
    """Tokens per sample of a `foundry convert-dataset --mode concat` output, from its conversion.json (None
    for raw-text data, data converted elsewhere, or a remote dataset not cached yet)."""
    path = Path(local) / "conversion.json"
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    if not isinstance(info, dict) or info.get("mode") != "concat" or not isinstance(info.get("max_seq_len"), int):
        return None
    return info["max_seq_len"]


def parameter_estimate(model: Any) -> int | None:
    """A lower bound on the parameter count from the config alone (embedding and the blocks' matrices), so a
    model that cannot be allocated is refused before it is built; None for hf_causal_lm (its own size)."""
    if isinstance(model, GptArgs):
        model = model.to_mpt()
    if isinstance(model, MptArgs):
        width, hidden, gated = model.d_model, model.ffn_hidden, model.ffn_config.ffn_type == "mptglu"
    elif isinstance(model, BertArgs):
        width, hidden, gated = model.d_model, model.intermediate_size, not model.classic
    else:
        return None
    mlp = (3 if gated else 2) * width * hidden
    return model.padded_vocab_size * width + model.n_layers * (2 * width * width + mlp)


def _memory(cfg: TrainConfig, dist: DistInfo, problems: _Problems) -> int | None:
    params = parameter_estimate(cfg.model)
    if params is None:
        return None
    fsdp = cfg.fsdp_config or FSDPConfig()
    frozen = getattr(cfg.model, "peft_config", None) is not None
    whole_on_each_rank = frozen or getattr(cfg.model, "load_hf", None) or dist.world_size == 1 \
        or fsdp.sharding_strategy == "NO_SHARD"
    shards = 1 if whole_on_each_rank else dist.world_size
    need = 4 * params * (1 if frozen else 2) // shards  # fp32 weights (+ gradients): a floor, not an estimate
    have, what = _device_memory(dist)
    if need > have:
        problems.add("model", f"at least {params:.3g} parameters need at least {human_bytes(need)} per process "
                     f"for weights and gradients, more than the {human_bytes(have)} of {what}; shrink the model "
                     "(d_model, n_layers, vocab_size) or shard it over more devices")
    return params


def _device_memory(dist: DistInfo) -> tuple[int, str]:
    if dist.device.type == "cuda":
        import torch

        return torch.cuda.get_device_properties(dist.device).total_memory, f"this GPU ({dist.device})"
    local = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return ram // max(local, 1), "this machine's RAM" + (f" per process ({local} here)" if local > 1 else "")


def _run_folder(cfg: TrainConfig, params: int | None, problems: _Problems) -> None:
    """The run folder must be writable, with room for one checkpoint (fp32 weights + two Adam moments)."""
    folder = local_run_dir(str(cfg.save_folder), cfg.save_staging_folder)  # s3://: where it is staged
    existing = next((p for p in [folder, *folder.parents] if p.exists()), Path("."))
    if not existing.is_dir():
        problems.add("save_folder", f"{existing} is a file, not a directory")
        return
    try:
        probe = existing / f".foundry-write-probe-{os.getpid()}"
        probe.write_bytes(b"probe")
        probe.unlink()
    except OSError as err:
        problems.add("save_folder", f"{folder}: cannot write in {existing} ({err.strerror}); choose a writable "
                     "save_folder")
        return
    if params is None:
        return
    need, free = 12 * params, shutil.disk_usage(existing).free
    if need > free:
        problems.add("save_folder", f"{folder}: one checkpoint of this model needs about {human_bytes(need)} "
                     f"and {existing} has {human_bytes(free)} free; free space or choose another save_folder")
