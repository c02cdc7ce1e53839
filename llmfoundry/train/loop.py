"""`foundry train`: the training loop, in the shape of torchtitan's trainer.

Build the model on the meta device, materialize and initialize it identically on every rank, apply
activation checkpointing / compile / FSDP2 from outside, then loop: each optimizer step runs
`accumulation` microbatches; the loss is the summed token cross-entropy divided by the number of
target tokens of the whole global batch (so the result does not depend on how the batch is split across
microbatches or ranks), gradients are synchronized only on the last microbatch, and the host reads values
back only at log steps. Everything needed to continue exactly (model, optimizer, step, data position, RNG)
goes into each checkpoint.
"""

from __future__ import annotations

import contextlib
import gc
import math
import random
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from torch import nn

from llmfoundry.checkpoint.manager import latest_checkpoint, load_checkpoint, save_checkpoint
from llmfoundry.config.loader import LoadedConfig
from llmfoundry.config.schema import FSDPConfig, TrainConfig
from llmfoundry.data.loaders import LoaderParts, build_loader, check_loader
from llmfoundry.data.text import DataPosition, StepBatches
from llmfoundry.distributed import DistInfo, all_reduce_sum, barrier, init_distributed, shutdown
from llmfoundry.errors import UserError
from llmfoundry.models import build_model
from llmfoundry.train.devices import peak_flops
from llmfoundry.train.optim import build_optimizer
from llmfoundry.train.schedule import lr_multiplier, steps_for

def _check_before_work(cfg: TrainConfig, dist: DistInfo) -> tuple[int, int]:
    """Everything that can be wrong with the config, found before any model or data is built."""
    from llmfoundry.data.tokenizer import load_tokenizer

    micro = cfg.device_train_microbatch_size
    per_rank, rest = divmod(cfg.global_train_batch_size, dist.world_size)
    if rest:
        raise UserError(f"global_train_batch_size: {cfg.global_train_batch_size} is not divisible by the "
                        f"{dist.world_size} processes")
    if micro == "auto":
        micro = per_rank  # the data comes as whole per-process batches; _fitting_forward_backward splits them
    if per_rank % micro:
        raise UserError(f"device_train_microbatch_size: {micro} does not divide the per-process batch {per_rank} "
                        f"(global_train_batch_size {cfg.global_train_batch_size} / {dist.world_size} processes)")
    if cfg.precision == "amp_fp16" and dist.device.type == "cpu":
        raise UserError("precision: amp_fp16 needs a GPU; use fp32 or amp_bf16 on CPU")
    if cfg.precision == "amp_fp8":
        from llmfoundry.train.fp8 import check_fp8

        check_fp8(dist.device)
    load_tokenizer(cfg.tokenizer.name)
    check_loader(cfg.train_loader, "train_loader")
    if cfg.eval_loader is not None:
        check_loader(cfg.eval_loader, "eval_loader")
    return micro, per_rank // micro


def _autocast(cfg: TrainConfig, device: torch.device) -> Any:
    if cfg.precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.float16 if cfg.precision == "amp_fp16" else torch.bfloat16  # amp_fp8: bf16 outside the fp8 GEMMs
    return torch.autocast(device.type, dtype=dtype)


def _rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


class Trainer:
    """Holds the parts of one run; `fit()` trains to max_duration."""

    def __init__(self, cfg: TrainConfig, loaded: LoadedConfig) -> None:
        self.cfg = cfg
        self.dist = init_distributed(cfg.dist_timeout)
        self.micro, self.accumulation = _check_before_work(cfg, self.dist)
        self.auto_micro = cfg.device_train_microbatch_size == "auto"
        self.log: Any = None  # MetricLoggers on rank 0 while fit() runs
        self.run_dir = Path(cfg.save_folder)  # type: ignore[arg-type]
        self.ckpt_dir = self.run_dir / "checkpoints"
        self.config_yaml = loaded.to_yaml()
        self.resume_from = latest_checkpoint(self.ckpt_dir) if cfg.autoresume else None
        if self.resume_from is None and any(self.ckpt_dir.glob("step-*")) and not cfg.save_overwrite:
            raise UserError(f"save_folder: {self.run_dir} already holds checkpoints; set autoresume: true to "
                            "continue that run or save_overwrite: true to start over")
        from llmfoundry.data.tokenizer import load_tokenizer

        self.tokenizer = load_tokenizer(cfg.tokenizer.name, **cfg.tokenizer.kwargs)
        self.model = self._build_model()
        self.optimizer = build_optimizer(self.model, cfg.optimizer)
        for group in self.optimizer.param_groups:
            group["initial_lr"] = cfg.optimizer.lr
        self.position = DataPosition()
        ds = cfg.train_loader.dataset
        self.seq_len = cfg.max_seq_len or ds.max_seq_len
        self.train_parts = self._loader(cfg.train_loader, "train_loader", training=True)
        self.collate = self.train_parts.collate
        self.eval_parts = self._loader(cfg.eval_loader, "eval_loader", training=False) if cfg.eval_loader else None
        self.notes = self.train_parts.notes + (self.eval_parts.notes if self.eval_parts else [])
        self.data = StepBatches(cfg.train_loader, self.collate, microbatch=self.micro, accumulation=self.accumulation,
                                world_size=self.dist.world_size, position=self.position,
                                dataset=self.train_parts.dataset)
        self.global_batch = self.data.global_batch
        self.max_steps = self._steps(cfg.max_duration)
        self.schedule = lr_multiplier(cfg.scheduler, self.max_steps, self._steps)
        self.step, self.tokens, self.samples = 0, 0, 0
        self.icl_tasks, self.gauntlet = self._icl(loaded)
        self.scaler = torch.amp.GradScaler(enabled=cfg.precision == "amp_fp16")

    # -- building ---------------------------------------------------------------------------------------
    def _build_model(self) -> nn.Module:
        from llmfoundry.models.layers.attention import check_impl

        cfg = self.cfg
        impl = getattr(getattr(cfg.model, "attn_config", None), "attn_impl", None) or getattr(cfg.model, "attn_impl", None)
        if impl is not None:  # hf_causal_lm models use their class's own attention
            check_impl(impl, self.dist.device, training=True)
        model = build_model(cfg.model, device="meta")
        fsdp = cfg.fsdp_config or FSDPConfig()
        peft = getattr(cfg.model, "peft_config", None)
        sharded = self.dist.world_size > 1 and fsdp.sharding_strategy != "NO_SHARD"
        if sharded and hasattr(model, "init_module") and not getattr(cfg.model, "load_hf", None) and peft is None:
            # From scratch on several ranks: shard on meta, materialize shards only, initialize module by module
            # with the values an unsharded init gives (a 30B model never exists whole on one device).
            from llmfoundry.distributed.sharded_init import init_sharded

            self._parallelize(model, fsdp)
            model.to_empty(device=self.dist.device)
            torch.manual_seed(cfg.seed)
            init_sharded(model)
            return model
        # Otherwise materialize and initialize the whole model identically on every rank, load what it starts
        # from, add adapters, then shard it.
        model.to_empty(device=self.dist.device)
        torch.manual_seed(cfg.seed)
        with torch.no_grad():
            model.init_weights()
        if getattr(cfg.model, "load_hf", None):
            _load_hf_weights(model, cfg.model.load_hf)  # type: ignore[union-attr]
        if peft is not None:  # after the base weights exist, before sharding and the optimizer
            from llmfoundry.models.lora import apply_lora

            apply_lora(model, peft)
        self._parallelize(model, fsdp)
        return model

    def _parallelize(self, model: nn.Module, fsdp: FSDPConfig) -> None:
        """Activation checkpointing and compile per block, then FSDP2 (or replication) over the ranks."""
        from llmfoundry.distributed.parallelize import apply_ac, apply_activation_offload, apply_compile, apply_fsdp

        if self.cfg.precision == "amp_fp8":  # before compile and sharding, as torchtitan orders them
            from llmfoundry.train.fp8 import apply_fp8

            apply_fp8(model)
        apply_ac(model, fsdp.activation_checkpointing)
        if fsdp.activation_cpu_offload:
            apply_activation_offload(model, self.dist.device)
        if fsdp.compile:
            apply_compile(model)
        if self.dist.world_size > 1:
            compute = {"fp32": None, "amp_bf16": torch.bfloat16, "amp_fp16": torch.float16,
                       "amp_fp8": torch.bfloat16}[self.cfg.precision]
            apply_fsdp(model, fsdp, self.dist.device, compute)

    def _icl(self, loaded: LoadedConfig) -> tuple[list[Any], Any]:
        """ICL tasks (and gauntlet) to run at eval_interval, validated now so mistakes surface before training."""
        if not self.cfg.icl_tasks:
            return [], None
        from llmfoundry.config import build
        from llmfoundry.eval.gauntlet import GauntletConfig
        from llmfoundry.eval.run import load_section
        from llmfoundry.eval.tasks import ICLTaskConfig, load_items

        base = Path(loaded.layers[0][0]).parent if loaded.layers else Path(".")
        raw = self.cfg.icl_tasks
        tasks = load_section(raw, "icl_tasks", list[ICLTaskConfig], base) if isinstance(raw, str) else \
            build(list[ICLTaskConfig], raw, key="icl_tasks", origin=loaded.origin)
        for task in tasks:
            load_items(task)
        gauntlet = None
        if self.cfg.eval_gauntlet:
            g = self.cfg.eval_gauntlet
            gauntlet = load_section(g, "eval_gauntlet", GauntletConfig, base) if isinstance(g, str) else \
                build(GauntletConfig, g, key="eval_gauntlet", origin=loaded.origin)
        return tasks, gauntlet

    def _loader(self, loader: Any, where: str, training: bool) -> LoaderParts:
        return build_loader(loader, model=self.cfg.model, tokenizer=self.tokenizer, seq_len=self.seq_len,
                            seed=self.cfg.seed, where=where, training=training, rank=self.dist.rank,
                            world_size=self.dist.world_size, batch_size=self.micro)

    def _steps(self, duration: Any) -> int:
        return steps_for(duration, max_steps=getattr(self, "max_steps", None), global_batch=self.global_batch,
                         seq_len=self.seq_len, steps_per_epoch=self.data.steps_per_epoch)

    # -- state ------------------------------------------------------------------------------------------
    def _state(self) -> dict[str, Any]:
        from torch.distributed.checkpoint.state_dict import get_model_state_dict, get_optimizer_state_dict

        return {
            "model": get_model_state_dict(self.model),
            "optim": get_optimizer_state_dict(self.model, self.optimizer),
            "train_state": {"step": self.step, "tokens": self.tokens, "samples": self.samples,
                            "data": asdict(self.position), "rng": _rng_state(),
                            "scaler": self.scaler.state_dict()},
        }

    def _restore(self, path: Path, weights_only: bool) -> None:
        from torch.distributed.checkpoint.state_dict import (
            StateDictOptions, get_model_state_dict, set_model_state_dict, set_optimizer_state_dict)

        if weights_only:
            from llmfoundry.train.warm_start import warm_start_keys

            full = get_model_state_dict(self.model)
            wanted, notes = warm_start_keys(full, path)
            self.notes += notes
            state = {"model": wanted}
            load_checkpoint(path, state)
            set_model_state_dict(self.model, state["model"], options=StateDictOptions(strict=len(wanted) == len(full)))
            return
        state = self._state()
        load_checkpoint(path, state)
        set_model_state_dict(self.model, state["model"])
        set_optimizer_state_dict(self.model, self.optimizer, state["optim"])
        ts = state["train_state"]
        self.step, self.tokens, self.samples = ts["step"], ts["tokens"], ts["samples"]
        self.position.epoch, self.position.samples_in_epoch = ts["data"]["epoch"], ts["data"]["samples_in_epoch"]
        self.scaler.load_state_dict(ts["scaler"])
        _set_rng_state(ts["rng"])

    # -- the loop ---------------------------------------------------------------------------------------
    def fit(self) -> dict[str, float]:
        from llmfoundry.loggers import MetricLoggers

        cfg, dist = self.cfg, self.dist
        if dist.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            (self.run_dir / "config.yaml").write_text(self.config_yaml)
        barrier()
        if self.resume_from is not None:
            self._restore(self.resume_from, weights_only=False)
        elif cfg.load_path:
            from llmfoundry.checkpoint.reader import resolve_checkpoint

            self._restore(resolve_checkpoint(cfg.load_path), weights_only=cfg.load_weights_only)
        log = MetricLoggers(self.run_dir, cfg.loggers, run_name=cfg.run_name,
                            config=yaml.safe_load(self.config_yaml), total_steps=self.max_steps,
                            progress_bar=cfg.progress_bar, log_to_console=cfg.log_to_console) if dist.is_main else None
        self.log = log
        log_every = max(self._steps(cfg.console_log_interval), 1)
        save_every = self._steps(cfg.save_interval) if not cfg.save_interval.is_zero else 0
        has_eval = cfg.eval_loader is not None or bool(self.icl_tasks)
        eval_every = self._steps(cfg.eval_interval) if (has_eval and not cfg.eval_interval.is_zero) else 0
        flops_per_token = self.model.flops_per_token(self.seq_len)
        peak = peak_flops(dist.device)
        if log is not None:
            resumed = f" (resumed at step {self.step} from {self.resume_from.name})" if self.resume_from else ""
            log.message(f"training {self.model.num_params():,} parameters for {self.max_steps} steps of "
                        f"{self.global_batch} x {self.seq_len} tokens on {dist.world_size} x {dist.device.type}{resumed}")
            from llmfoundry.models.lora import trainable_params

            trainable = trainable_params(self.model)
            if trainable < self.model.num_params():
                log.message(f"{trainable:,} of them trainable (LoRA adapters; the rest is frozen)")
            for note in self.notes:
                log.message(note)
        if cfg.eval_first and eval_every and self.step == 0:
            self._log(log, self._evaluate())
        last: dict[str, float] = {}
        window_start, window_tokens = time.perf_counter(), 0
        self.model.train()
        batches = iter(self.data)
        while self.step < self.max_steps:
            loss_sum, count = self._train_step(next(batches))
            self.step += 1
            self.samples += self.global_batch
            step_tokens = self.global_batch * self.seq_len
            self.tokens += step_tokens
            window_tokens += step_tokens
            is_last = self.step == self.max_steps
            if self.step % log_every == 0 or is_last:
                loss = self._check_finite(loss_sum, count)
                elapsed = time.perf_counter() - window_start
                rate = window_tokens / elapsed
                metrics = {"loss/train": loss, "lr": self.optimizer.param_groups[0]["lr"], "tokens": self.tokens,
                           "samples": self.samples, "epoch": self.position.epoch,
                           "throughput/tokens_per_sec": rate,
                           "throughput/samples_per_sec": rate / self.seq_len,
                           "time/remaining_s": (self.max_steps - self.step) * step_tokens / rate,
                           "trainer/device_train_microbatch_size": self.micro}
                if peak:
                    metrics["throughput/mfu"] = flops_per_token * rate / (peak * dist.world_size)
                metrics.update(_memory())
                last = metrics
                self._log(log, metrics)
                window_start, window_tokens = time.perf_counter(), 0
            if eval_every and (self.step % eval_every == 0 or is_last):
                last.update(self._evaluate())
                self._log(log, last)
            if (save_every and self.step % save_every == 0) or is_last:
                self._check_finite(loss_sum, count)  # never write NaN weights over the last good checkpoint
                save_checkpoint(self.ckpt_dir, self.step, self._state(), self.config_yaml, is_main=dist.is_main,
                                keep=cfg.save_num_checkpoints_to_keep)
        if log is not None:
            log.message(f"done: {self.step} steps, {self.tokens:,} tokens; checkpoint in {self.ckpt_dir}")
            log.close()
        return last

    def _check_finite(self, loss_sum: torch.Tensor, count: torch.Tensor) -> float:
        loss = (loss_sum / count.clamp(min=1)).item()
        if not math.isfinite(loss):
            raise UserError(f"step {self.step}: loss is {loss}; stopping (the last good checkpoint is kept). "
                            "Lower the learning rate or set skip_nan_batches: true")
        return loss

    def _train_step(self, micros: list[dict[str, torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor]:
        device = self.dist.device
        micros = [{k: v.to(device, non_blocking=True) for k, v in m.items()} for m in micros]
        if self.auto_micro:
            loss_sum, count = self._fitting_forward_backward(micros)
        else:
            loss_sum, count = self._forward_backward(micros)
        if self.cfg.skip_nan_batches and not bool(torch.isfinite(loss_sum)):
            self.optimizer.zero_grad(set_to_none=True)
            return torch.zeros((), device=device), torch.ones((), device=device)
        self.scaler.unscale_(self.optimizer)
        clip = self.cfg.algorithms.gradient_clipping
        if clip is not None:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), clip.clipping_threshold, foreach=True)
        for group in self.optimizer.param_groups:
            group["lr"] = group["initial_lr"] * self.schedule(self.step)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        return loss_sum, count

    def _fitting_forward_backward(self, micros: list[dict[str, torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor]:
        """`device_train_microbatch_size: auto`: halve the microbatch after an out-of-memory error and redo the step.

        The step's rows are the same whatever the split and the loss is normalized by the step's token count,
        so a retried step computes what an unsplit one would. Every rank reports whether it ran out and all
        retry together; ranks see equally shaped batches, so they normally run out together (a rank that runs
        out alone leaves the others in a collective until dist_timeout).
        """
        rows = micros[0] if len(micros) == 1 else {k: torch.cat([m[k] for m in micros]) for k in micros[0]}
        while True:
            failed = False
            try:
                starts = range(0, len(rows["input_ids"]), self.micro)
                split = [{k: v[i:i + self.micro] for k, v in rows.items()} for i in starts]
                result = self._forward_backward(split)
            except (torch.OutOfMemoryError, RuntimeError) as error:
                if not _is_out_of_memory(error):
                    raise
                failed = True
            if self.dist.world_size > 1:  # one host sync per step, so that every rank retries or none does
                failed = bool(all_reduce_sum(torch.tensor(float(failed), device=self.dist.device)).item())
            if not failed:
                return result
            self._release_after_out_of_memory()
            if self.micro == 1:
                raise UserError("device_train_microbatch_size: auto: out of memory even with a microbatch of 1 "
                                "sequence; lower max_seq_len, set fsdp_config.activation_checkpointing, or use "
                                "more processes")
            smaller = (self.micro + 1) // 2
            if self.log is not None:
                self.log.message(f"step {self.step + 1}: out of memory with a microbatch of {self.micro}; "
                                 f"retrying the step with {smaller}")
            self.micro = smaller

    def _release_after_out_of_memory(self) -> None:
        """Drop partial gradients and anything FSDP left gathered, so the retry starts from clean memory."""
        from torch.distributed.fsdp import FSDPModule

        self.optimizer.zero_grad(set_to_none=True)
        for module in self.model.modules():
            if isinstance(module, FSDPModule):
                module.reshard()
        gc.collect()
        if self.dist.device.type == "cuda":
            torch.cuda.empty_cache()

    def _forward_backward(self, micros: list[dict[str, torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor]:
        """Gradients of the step's loss (summed over microbatches, divided by the step's target tokens)."""
        device = self.dist.device
        count = sum((m["labels"] != -100).sum() for m in micros).to(torch.float32)
        count = all_reduce_sum(count)
        loss_sum = torch.zeros((), device=device)
        for i, micro in enumerate(micros):
            if hasattr(self.model, "set_requires_gradient_sync"):
                self.model.set_requires_gradient_sync(i == len(micros) - 1)
            with _autocast(self.cfg, device):
                loss = self.model(**micro)
            self.scaler.scale(loss / count).backward()
            loss_sum += loss.detach()
        return all_reduce_sum(loss_sum), count

    @torch.no_grad()
    def _evaluate(self) -> dict[str, float]:
        cfg = self.cfg
        metrics: dict[str, float] = {}
        if self.icl_tasks:
            from llmfoundry.eval.gauntlet import gauntlet_scores
            from llmfoundry.eval.icl import evaluate_icl
            from llmfoundry.eval.tasks import load_items

            metrics = evaluate_icl(self.model, self.tokenizer, self.icl_tasks, batch_size=cfg.device_eval_batch_size,
                                   max_seq_len=cfg.icl_seq_len or self.seq_len, device=self.dist.device,
                                   precision="amp_bf16" if cfg.precision == "amp_fp8" else cfg.precision,
                                   shard=self.dist.world_size == 1)
            metrics = {f"icl/{k}": v for k, v in metrics.items()}
            if self.gauntlet is not None:
                sizes = {t.label: len(load_items(t)) for t in self.icl_tasks}
                raw = {k.removeprefix("icl/"): v for k, v in metrics.items()}
                metrics.update(gauntlet_scores(self.gauntlet, raw, sizes))
        if self.eval_parts is None:
            return metrics
        if self.eval_parts.metrics is not None:
            from llmfoundry.eval.classification import evaluate_classifier

            batches = self.eval_parts.eval_batches(cfg.device_eval_batch_size)
            return {**metrics, **evaluate_classifier(self.model, batches, self.eval_parts.metrics, self.dist.device,
                                                      lambda: _autocast(cfg, self.dist.device))}
        self.model.eval()
        total = torch.zeros((), device=self.dist.device)
        count = torch.zeros((), device=self.dist.device)
        for i, batch in enumerate(self.eval_parts.eval_batches(cfg.device_eval_batch_size)):
            if 0 <= cfg.eval_subset_num_batches <= i:
                break
            batch = {k: v.to(self.dist.device) for k, v in batch.items()}
            with _autocast(cfg, self.dist.device):
                total += self.model(**batch).float()
            count += (batch["labels"] != -100).sum()
        self.model.train()
        loss = (all_reduce_sum(total) / all_reduce_sum(count).clamp(min=1)).item()
        return {**metrics, "loss/val": loss, "perplexity/val": math.exp(min(loss, 50))}

    def _log(self, log: Any, metrics: dict[str, float]) -> None:
        if log is not None:
            log.log(self.step, metrics)


def _load_hf_weights(model: nn.Module, directory: str) -> None:
    from llmfoundry.export.hf import import_hf

    state = import_hf(directory).state_dict()
    ours = model.state_dict()
    wrong = [k for k in ours if k not in state or state[k].shape != ours[k].shape]
    if wrong:
        raise UserError(f"model.load_hf: {directory} does not have this model's shape (first mismatch: {wrong[0]})")
    with torch.no_grad():
        model.load_state_dict({k: v.to(ours[k].device) for k, v in state.items()})


def _is_out_of_memory(error: BaseException) -> bool:
    """CUDA raises OutOfMemoryError; the CPU allocator raises a RuntimeError saying it cannot allocate."""
    return isinstance(error, torch.OutOfMemoryError) or "can't allocate memory" in str(error)


def _memory() -> dict[str, float]:
    if torch.cuda.is_available():
        return {"memory/peak_allocated_gb": torch.cuda.max_memory_allocated() / 2**30}
    import resource

    return {"memory/peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}


def train(cfg: TrainConfig, loaded: LoadedConfig) -> dict[str, float]:
    """Run training as the config says; returns the last logged metrics."""
    try:
        return Trainer(cfg, loaded).fit()
    finally:
        shutdown()
