"""`foundry train`: the training loop, in the shape of torchtitan's trainer.

Build the model on the meta device, materialize and initialize it identically on every rank, apply
activation checkpointing / compile / FSDP2 from outside, then loop: each optimizer step runs
`accumulation` microbatches; the loss is the summed token cross-entropy divided by the number of
target tokens of the whole global batch (so the result does not depend on how the batch is split across
microbatches or ranks), gradients are synchronized only on the last microbatch and summed over ranks, and
the host reads values back only at log steps and saves. A checkpoint is written only after its weights pass
the finite checks (and the spike guard, when on). Everything needed to continue exactly (model, optimizer,
step, data position, RNG) goes into each checkpoint.
"""

from __future__ import annotations

import contextlib
import gc
import math
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from torch import nn

from llmfoundry.checkpoint.manager import CheckpointManager, on_main
from llmfoundry.checkpoint.pointer import STEP_NAME, checkpoint_name, read_latest
from llmfoundry.checkpoint.reader import load_state, resolve_checkpoint, verify_checkpoint
from llmfoundry.config.loader import LoadedConfig
from llmfoundry.config.schema import FSDPConfig, TrainConfig
from llmfoundry.data.loaders import LoaderParts, build_loader
from llmfoundry.data.text import DataPosition, StepBatches
from llmfoundry.distributed import all_reduce_sum, barrier, init_distributed, restart_count, shutdown
from llmfoundry.errors import UserError
from llmfoundry.io import disk_errors, write_atomic
from llmfoundry.models import build_model
from llmfoundry.devices import peak_flops
from llmfoundry.train.grads import build_scaler, clip_to_norm, global_grad_norm
from llmfoundry.train.guard import RunGuard, one_line
from llmfoundry.train.optim import build_optimizer
from llmfoundry.train.preflight import eval_keys, preflight
from llmfoundry.train.schedule import lr_multiplier, steps_for
from llmfoundry.train.spike import Spike, SpikeGuard



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


@dataclass
class StepResult:
    """What one optimizer step leaves for logging and the guards, as device tensors read only when needed."""

    loss_sum: torch.Tensor  # summed token losses of the global batch
    count: torch.Tensor  # target tokens of the global batch
    grad_norm: torch.Tensor  # global pre-clip gradient norm (not finite when fp16 scaling skipped the step)
    probe: dict[str, torch.Tensor]  # this rank's first rows (one microbatch), to test the new weights before a save

    @property
    def loss(self) -> torch.Tensor:
        return self.loss_sum / self.count.clamp(min=1)


class Trainer:
    """Holds the parts of one run; `fit()` trains to max_duration."""

    def __init__(self, cfg: TrainConfig, loaded: LoadedConfig) -> None:
        self.cfg = cfg
        if cfg.expandable_segments:  # read by the CUDA caching allocator when it first allocates
            import os

            os.environ.setdefault("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True")
        self.dist = init_distributed(cfg.dist_timeout)
        self.micro, self.accumulation = preflight(cfg, self.dist, loaded.origin)
        self.config_yaml = loaded.to_yaml()
        self.checkpoints = CheckpointManager.for_run(  # the run folder: save_folder, or its local staging for s3://
            str(cfg.save_folder), staging=cfg.save_staging_folder, config_yaml=self.config_yaml,
            keep=cfg.save_num_checkpoints_to_keep, save_async=cfg.save_async)
        self.run_dir = self.checkpoints.run_dir
        self.guard = RunGuard(self.run_dir, self.dist, cfg.dist_timeout)  # before the run folder is read or written
        try:
            self._setup(loaded)
        except BaseException as error:
            self.guard.close("failed", one_line(error))
            raise

    def _setup(self, loaded: LoadedConfig) -> None:
        cfg = self.cfg
        self.auto_micro = cfg.device_train_microbatch_size == "auto"
        self.log: Any = None  # MetricLoggers on rank 0 while fit() runs
        if self.dist.is_main:  # the end-of-run report's libraries (matplotlib) load now, while memory is
            import llmfoundry.report  # noqa: F401  plentiful, not after a run that may end near its limit
        self.ckpt_dir = self.checkpoints.ckpt_dir
        self.checkpoints.remove_leftovers()
        # A restarted attempt (torchrun after a failure) continues this job's checkpoints even without autoresume.
        self.resume_from = self.checkpoints.resume_point() if cfg.autoresume or restart_count() else None
        if self.resume_from is None and self.checkpoints.has_checkpoints():
            if not cfg.save_overwrite:
                raise UserError(f"save_folder: {cfg.save_folder} already holds checkpoints; set autoresume: true to "
                                "continue that run or save_overwrite: true to start over")
            on_main(self._start_over)  # a restart must never resume from the earlier run's checkpoints
        self.preempted = False
        from llmfoundry.data.tokenizer import load_tokenizer

        self.tokenizer = load_tokenizer(cfg.tokenizer.name, **cfg.tokenizer.kwargs)
        self.mesh_notes: list[str] = []
        self.model = self._build_model()
        self.optimizer = build_optimizer(self.model, cfg.optimizer)
        for group in self.optimizer.param_groups:
            group["initial_lr"] = cfg.optimizer.lr
        self.position = DataPosition()
        ds = cfg.train_loader.dataset
        self.seq_len = cfg.max_seq_len or ds.max_seq_len
        self.train_parts = self._loader(cfg.train_loader, "train_loader", training=True)
        self.collate = self.train_parts.collate
        # (metric suffix, loader parts): "" for one eval_loader, "/<label>" for each of a list
        self.evals = [("" if where == "eval_loader" else f"/{loader.label}",
                       self._loader(loader, where, training=False)) for where, loader in eval_keys(cfg)]
        from llmfoundry.config.foundry_compat import translate_train

        self.notes = self.guard.notes + translate_train(loaded.data)[1] + self.mesh_notes + self.train_parts.notes + \
            [note for _, parts in self.evals for note in parts.notes]
        self.data = StepBatches(cfg.train_loader, self.collate, microbatch=self.micro, accumulation=self.accumulation,
                                world_size=self.dist.world_size, position=self.position,
                                dataset=self.train_parts.dataset)
        self.global_batch = self.data.global_batch
        self.max_steps = self._steps(cfg.max_duration)
        self.schedule = lr_multiplier(cfg.scheduler, self.max_steps, self._steps)
        from llmfoundry.train.callbacks import Callbacks

        self.callbacks = Callbacks(cfg, self._steps)
        self.step, self.tokens, self.samples = 0, 0, 0
        self.icl_tasks, self.gauntlet = self._icl(loaded)
        self.scaler = build_scaler(cfg.precision == "amp_fp16", self.dist.device)
        self.spikes = SpikeGuard(cfg.spike_guard) if cfg.spike_guard is not None else None

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
            mesh = apply_fsdp(model, fsdp, self.dist.device, compute)
            if mesh is not None and mesh.ndim == 2:
                self.mesh_notes = [f"fsdp_config: {fsdp.sharding_strategy} over a {' x '.join(map(str, mesh.shape))} "
                                   f"mesh ({' x '.join(mesh.mesh_dim_names)})"]

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

        from llmfoundry.checkpoint.composer import is_composer_checkpoint, load_composer_weights

        if is_composer_checkpoint(path):
            self.notes += load_composer_weights(self.model, path, weights_only)
            return
        self.notes += verify_checkpoint(path, verb="resume from it")
        if weights_only:
            from llmfoundry.train.warm_start import warm_start_keys

            full = get_model_state_dict(self.model)
            wanted, notes = warm_start_keys(full, path)
            self.notes += notes
            state = {"model": wanted}
            load_state(path, state, where="load_path")
            set_model_state_dict(self.model, state["model"], options=StateDictOptions(strict=len(wanted) == len(full)))
            return
        state = self._state()
        load_state(path, state, where="load_path" if path != self.resume_from else "autoresume")
        set_model_state_dict(self.model, state["model"])
        set_optimizer_state_dict(self.model, self.optimizer, state["optim"])
        ts = state["train_state"]
        self.step, self.tokens, self.samples = ts["step"], ts["tokens"], ts["samples"]
        self.position.epoch, self.position.samples_in_epoch = ts["data"]["epoch"], ts["data"]["samples_in_epoch"]
        self.scaler.load_state_dict(ts["scaler"])
        _set_rng_state(ts["rng"])

    # -- the loop ---------------------------------------------------------------------------------------
    def fit(self) -> dict[str, float]:
        """Train to max_duration (or to a SIGTERM); the outcome goes to this rank's heartbeat, the lock is released."""
        try:
            last = self._fit()
        except RuntimeError as error:  # a collective that failed because a peer died or stalled: name the peer
            failure = self.guard.peer_failure(error, since=time.time())
            self.guard.close("failed", one_line(failure or error))
            if failure is None:
                raise
            raise failure from None
        except BaseException as error:
            self.guard.close("failed", one_line(error))
            raise
        self.guard.close("preempted" if self.preempted else "done")
        return last

    def _fit(self) -> dict[str, float]:
        from llmfoundry.loggers import MetricLoggers

        cfg, dist = self.cfg, self.dist
        if dist.is_main:
            with disk_errors(self.run_dir):
                self.run_dir.mkdir(parents=True, exist_ok=True)
            write_atomic(self.run_dir / "config.yaml", self.config_yaml)
        barrier()
        if self.resume_from is not None:
            self._restore(self.resume_from, weights_only=False)
        elif cfg.load_path:
            on_main(lambda: resolve_checkpoint(cfg.load_path))  # an s3:// load_path is downloaded once, by rank 0
            self._restore(resolve_checkpoint(cfg.load_path), weights_only=cfg.load_weights_only)
        with disk_errors(self.run_dir):  # metrics.jsonl (and any logger's files) open here
            log = MetricLoggers(self.run_dir, cfg.loggers, run_name=cfg.run_name,
                                config=yaml.safe_load(self.config_yaml), total_steps=self.max_steps,
                                progress_bar=cfg.progress_bar,
                                log_to_console=cfg.log_to_console) if dist.is_main else None
        self.log = log
        log_every = max(self._steps(cfg.console_log_interval), 1)
        save_every = self._steps(cfg.save_interval) if not cfg.save_interval.is_zero else 0
        has_eval = bool(self.evals) or bool(self.icl_tasks)
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
            result = self._train_step(next(batches))
            self.step += 1
            self.samples += self.global_batch
            step_tokens = self.global_batch * self.seq_len
            self.tokens += step_tokens
            window_tokens += step_tokens
            is_last = self.step == self.max_steps
            is_log = self.step % log_every == 0 or is_last
            is_save = bool(save_every and self.step % save_every == 0) or is_last
            if self.spikes is not None:
                self.spikes.record(self.step, result.loss)
                spike = self.spikes.first_spike() if is_log or is_save else None
                if spike is not None:
                    self._roll_back(spike)  # or stop
                    batches = iter(self.data)
                    continue
            if is_log:
                loss, grad_norm = self._check_finite(result)
                elapsed = time.perf_counter() - window_start
                rate = window_tokens / elapsed
                metrics = {"loss/train": loss, "grad_norm": grad_norm, "lr": self.optimizer.param_groups[0]["lr"],
                           "tokens": self.tokens,
                           "samples": self.samples, "epoch": self.position.epoch,
                           "throughput/tokens_per_sec": rate,
                           "throughput/samples_per_sec": rate / self.seq_len,
                           "time/remaining_s": (self.max_steps - self.step) * step_tokens / rate,
                           "trainer/device_train_microbatch_size": self.micro}
                if peak:
                    metrics["throughput/mfu"] = flops_per_token * rate / (peak * dist.world_size)
                if self.spikes is not None:
                    metrics["spike/rollbacks"] = self.spikes.rollbacks
                metrics.update(_memory())
                last = metrics
                self._log(log, metrics)
                window_start, window_tokens = time.perf_counter(), 0
            evaluated = None
            if eval_every and (self.step % eval_every == 0 or is_last):
                evaluated = self._evaluate()
                last.update(evaluated)
                self._log(log, last)
            stop = self.callbacks.after_step(self, self.step, is_last, evaluated)
            if is_save or stop:
                self._check_publishable(result)  # never let `latest` move to weights that give NaN
                self.checkpoints.save(self.step, self._state())
            if stop:
                if log is not None:
                    log.message(f"step {self.step}: early_stopper: {self.callbacks.stopper.metric()} has not "  # type: ignore[union-attr]
                                "improved; stopping")
                break
            self.guard.heartbeat.step = self.step
            if not is_last and self.guard.preemption.should_stop():
                self._stop_for_preemption(saved=is_save, result=result)
                break
        self.checkpoints.close()  # an async save in flight is committed (or its failure raised) before "done"
        if log is not None:
            if self.preempted:  # its message said how to continue; the summary is for a finished run
                log.close()
            else:
                log.finish(self.step, read_latest(self.ckpt_dir))
        return last

    def _start_over(self) -> None:
        """save_overwrite: the earlier run's checkpoints go (the new ones take their names anyway)."""
        import shutil

        for old in [p for p in self.ckpt_dir.iterdir() if STEP_NAME.fullmatch(p.name)]:
            shutil.rmtree(old)
        (self.ckpt_dir / "latest").unlink(missing_ok=True)

    def _stop_for_preemption(self, saved: bool, result: StepResult) -> None:
        """All ranks agreed to stop after this step: checkpoint it (unless just done) and say how to continue."""
        if not saved:
            self._check_publishable(result)
            self.checkpoints.save(self.step, self._state())
        self.preempted = True
        if self.log is not None:
            how = "the same command" + ("" if self.cfg.autoresume else " with autoresume=true")
            self.log.message(f"preempted (SIGTERM): stopped after step {self.step} of {self.max_steps} with checkpoint "
                             f"{self.ckpt_dir / checkpoint_name(self.step)}; {how} continues from there")

    def _check_finite(self, result: StepResult) -> tuple[float, float]:
        """The step's loss and pre-clip gradient norm (one host sync, at log steps); stop on a non-finite loss."""
        loss, grad_norm = torch.stack([result.loss, result.grad_norm.to(result.loss)]).tolist()
        if not math.isfinite(loss):
            raise UserError(f"step {self.step}: loss is {loss}; stopping (the last good checkpoint is kept). "
                            "Lower the learning rate or set skip_nan_batches: true")
        return loss, grad_norm

    def _check_publishable(self, result: StepResult) -> None:
        """Refuse to save weights that are not finite or that give a non-finite loss, whatever the step's loss was.

        A step with a finite loss and gradient norm can still leave weights of 1e10 that give NaN on every
        batch (optimizer.lr=1e10): so the new weights are also run forward (eval mode: no dropout, no random
        draws) on this step's first microbatch. Costs one forward and one host sync per save.
        """
        self.model.eval()
        with torch.no_grad(), _autocast(self.cfg, self.dist.device):
            probe = self.model(**result.probe).float()
        self.model.train()
        bad_weights = sum((~torch.isfinite(_local(p)).all()).float() for p in self.model.parameters())
        local = all_reduce_sum(torch.stack([probe, bad_weights.to(probe)]))
        grad_norm = result.grad_norm.to(probe) if not self.scaler.is_enabled() else torch.zeros_like(probe)
        loss, norm, probe_loss, bad = torch.cat([torch.stack([result.loss, grad_norm]), local]).tolist()
        problem = ("its loss is not finite" if not math.isfinite(loss) else
                   "its gradient norm is not finite" if not math.isfinite(norm) else
                   "its weights are not finite" if bad else
                   "its weights give a non-finite loss on its own batch" if not math.isfinite(probe_loss) else None)
        if problem is not None:
            self.checkpoints.wait()
            good = read_latest(self.ckpt_dir)
            kept = f"{good.name} stays the last good checkpoint" if good else "no checkpoint was saved"
            raise UserError(f"step {self.step}: {problem}; not saving it ({kept}). Lower the learning rate "
                            "or set spike_guard")

    def _roll_back(self, spike: Spike) -> None:
        """spike_guard: stop, or reload the last checkpoint (step c) and skip the batches of steps c+1..spike.step."""
        assert self.spikes is not None
        guard = self.spikes.cfg
        what = (f"loss {spike.loss:.4g} is more than {guard.factor} x the mean {spike.mean:.4g} of the previous "
                f"{guard.window} steps" if spike.mean is not None else f"loss is {spike.loss}")
        self.checkpoints.wait()  # an async save in flight may be the one to roll back to
        good = read_latest(self.ckpt_dir)
        if guard.action == "stop" or good is None or self.spikes.rollbacks >= guard.max_rollbacks:
            why = ("" if guard.action == "stop" else "; no checkpoint to roll back to yet" if good is None
                   else f"; {self.spikes.rollbacks} rollbacks already (spike_guard.max_rollbacks)")
            kept = f" ({good.name} is the last good checkpoint)" if good else ""
            raise UserError(f"step {spike.step}: {what} (spike_guard){why}; stopping{kept}")
        self._restore(good, weights_only=False)
        skipped = spike.step - self.step
        self.data.skip(skipped)
        self.spikes.rollbacks += 1
        if self.log is not None:
            self.log.message(f"step {spike.step}: {what}; rolled back to {good.name} and skipped the batches of steps "
                             f"{self.step + 1}-{spike.step} ({skipped * self.global_batch} samples; rollback "
                             f"{self.spikes.rollbacks} of at most {guard.max_rollbacks})")

    def _train_step(self, micros: list[dict[str, torch.Tensor]]) -> StepResult:
        device = self.dist.device
        micros = [{k: v.to(device, non_blocking=True) for k, v in m.items()} for m in micros]
        if self.auto_micro:
            loss_sum, count = self._fitting_forward_backward(micros)
        else:
            loss_sum, count = self._forward_backward(micros)
        if self.cfg.skip_nan_batches and not bool(torch.isfinite(loss_sum)):
            self.optimizer.zero_grad(set_to_none=True)
            zero = torch.zeros((), device=device)
            return StepResult(zero, torch.ones((), device=device), zero, self._probe(micros))
        self.scaler.unscale_(self.optimizer)  # one all-reduced inf check over every shard (grads.build_scaler)
        params = [p for p in self.model.parameters() if p.grad is not None]
        grad_norm = global_grad_norm(params)
        clip = self.cfg.algorithms.gradient_clipping
        if clip is not None:
            clip_to_norm(params, clip.clipping_threshold, grad_norm)
        for group in self.optimizer.param_groups:
            group["lr"] = group["initial_lr"] * self.schedule(self.step)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        return StepResult(loss_sum, count, grad_norm, self._probe(micros))

    def _probe(self, micros: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        """The rows the publish check runs: at most one microbatch of the size that just fit (auto may have shrunk it)."""
        return {k: v[:self.micro] for k, v in micros[0].items()}

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

            results = evaluate_icl(self.model, self.tokenizer, self.icl_tasks, batch_size=cfg.device_eval_batch_size,
                                   max_seq_len=cfg.icl_seq_len or self.seq_len, device=self.dist.device,
                                   precision="amp_bf16" if cfg.precision == "amp_fp8" else cfg.precision,
                                   shard=self.dist.world_size == 1)
            raw = {k: v for r in results.values() for k, v in r.metrics.items()}
            metrics = {f"icl/{k}": v for k, v in raw.items()}
            if self.gauntlet is not None:
                sizes = {t.label: len(load_items(t)) for t in self.icl_tasks}
                metrics.update(gauntlet_scores(self.gauntlet, raw, sizes, {t.label: t.metrics[0] for t in self.icl_tasks}))
        for suffix, parts in self.evals:
            metrics.update(self._evaluate_loader(parts, suffix))
        return metrics

    def _evaluate_loader(self, parts: LoaderParts, suffix: str) -> dict[str, float]:
        cfg = self.cfg
        if parts.metrics is not None:
            from llmfoundry.eval.classification import evaluate_classifier

            batches = parts.eval_batches(cfg.device_eval_batch_size)
            scores = evaluate_classifier(self.model, batches, parts.metrics, self.dist.device,
                                         lambda: _autocast(cfg, self.dist.device))
            return {f"{k}{suffix}": v for k, v in scores.items()}
        self.model.eval()
        total = torch.zeros((), device=self.dist.device)
        count = torch.zeros((), device=self.dist.device)
        for i, batch in enumerate(parts.eval_batches(cfg.device_eval_batch_size)):
            if 0 <= cfg.eval_subset_num_batches <= i:
                break
            batch = {k: v.to(self.dist.device) for k, v in batch.items()}
            with _autocast(cfg, self.dist.device):
                total += self.model(**batch).float()
            count += (batch["labels"] != -100).sum()
        self.model.train()
        loss = (all_reduce_sum(total) / all_reduce_sum(count).clamp(min=1)).item()
        return {f"loss/val{suffix}": loss, f"perplexity/val{suffix}": math.exp(min(loss, 50))}

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


def _local(tensor: torch.Tensor) -> torch.Tensor:
    from torch.distributed.tensor import DTensor

    return tensor.to_local() if isinstance(tensor, DTensor) else tensor


def _is_out_of_memory(error: BaseException) -> bool:
    """CUDA raises OutOfMemoryError; the CPU allocator raises a RuntimeError saying it cannot allocate."""
    return isinstance(error, torch.OutOfMemoryError) or "can't allocate memory" in str(error)


def _memory() -> dict[str, float]:
    if torch.cuda.is_available():
        return {"memory/peak_allocated_gb": torch.cuda.max_memory_allocated() / 2**30}
    from llmfoundry.memory import peak_rss_bytes

    return {"memory/peak_rss_gb": peak_rss_bytes() / 2**30}


def train(cfg: TrainConfig, loaded: LoadedConfig) -> dict[str, float]:
    """Run training as the config says; returns the last logged metrics."""
    trainer = None
    try:
        trainer = Trainer(cfg, loaded)
        return trainer.fit()
    finally:
        if trainer is not None:
            trainer.checkpoints.close()  # on any exit: an async save in flight finishes before the group goes
        shutdown()
