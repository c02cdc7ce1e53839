"""Pretraining data: MDS shards from convert-dataset through mosaicml-streaming, into model batches.

The sample order comes from StreamingDataset with a fixed `num_canonical_nodes` (default 1), so the samples
of each optimizer step are the same for any number of ranks or workers. Position is counted by the trainer
(epoch, samples consumed in the epoch) and handed back to StreamingDataset on resume, so a resumed run sees
exactly the samples an uninterrupted one would.

Batches follow the model contract: `input_ids`, `labels` (next-token targets, -100 where there is none),
`sequence_id` (document index per token, recovered from eos; -1 on padding) and `attention_mask` when
there is padding. The eos token belongs to the document it ends, and its label is the next document's first
token, as in LLM Foundry; with `attn_uses_sequence_id` that prediction sees only the finished document.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from llmfoundry.config.schema import DatasetConfig, LoaderConfig
from llmfoundry.data.integrity import WHERE, check_split
from llmfoundry.errors import UserError

IGNORE = -100


def check_dataset(cfg: DatasetConfig, where: str, *, used: bool = True) -> None:
    """Fail before any heavy work if a local dataset is missing, or empty while the run will read it
    (`used`); remote ones are checked on first read."""
    if cfg.streams:
        for name, stream in cfg.streams.items():
            check_dataset(DatasetConfig(local=stream.local, remote=stream.remote, split=stream.split),
                          f"{where}.streams.{name}", used=used)
        return
    if cfg.local is None and cfg.remote is None:
        raise UserError(f"{where}: set local (a directory from `foundry convert-dataset`) or remote")
    if cfg.remote is None:
        path = Path(cfg.local) / (cfg.split or "")  # type: ignore[arg-type]
        if not (path / "index.json").exists():
            raise UserError(f"{where}: {path} has no index.json (not an MDS dataset; run `foundry convert-dataset`)")
        if not used:  # an eval split of a run that never evaluates may be empty
            return
        if _samples(path / "index.json") == 0:
            hint = ("convert the data again with --val-fraction (e.g. 0.02: `foundry convert-dataset` writes no "
                    "validation samples by default), or train without evaluation: eval_interval=0"
                    if cfg.split == "val" else "it has no samples; convert the data again")
            raise UserError(f"{where}: {path} holds no samples; {hint}")
        check_split(path)


def _samples(index: Path) -> int | None:
    """Samples listed in an MDS index.json (None when it is not the JSON streaming writes)."""
    import json

    try:
        shards = json.loads(index.read_text())["shards"]
        return sum(int(shard["samples"]) for shard in shards)
    except (ValueError, KeyError, TypeError, OSError):
        return None


def build_dataset(cfg: DatasetConfig, device_batch_size: int) -> Any:
    from streaming import Stream

    from llmfoundry.data.integrity import CheckedStreamingDataset

    streams = None
    if cfg.streams:
        streams = [Stream(local=s.local, remote=s.remote, split=s.split, proportion=s.proportion,
                          repeat=s.repeat, choose=s.choose) for s in cfg.streams.values()]
    return CheckedStreamingDataset(
        streams=streams, local=None if streams else cfg.local, remote=None if streams else cfg.remote,
        split=None if streams else cfg.split, shuffle=cfg.shuffle, shuffle_seed=cfg.shuffle_seed,
        shuffle_algo=cfg.shuffle_algo, num_canonical_nodes=cfg.num_canonical_nodes or 1,
        batch_size=device_batch_size, predownload=cfg.predownload,
    )


class LMCollator:
    """Samples (`tokens` or raw `text`) -> causal-LM batch with labels and sequence ids.

    Pre-tokenized samples are checked on the way (vectorized, once per batch): at least max_seq_len tokens
    each, and every id inside the model's vocabulary, else one line naming the shard and sample.
    """

    def __init__(self, tokenizer: Any, max_seq_len: int, eos_token_id: int | None = None,
                 vocab_size: int | None = None) -> None:
        self.tokenizer = tokenizer
        self.max_seq_len = max_seq_len
        self.vocab_size = vocab_size
        eos = eos_token_id if eos_token_id is not None else tokenizer.eos_token_id
        if eos is None:
            raise UserError("tokenizer: has no eos token; set train_loader.dataset.eos_token_id")
        self.eos = eos
        self.pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos

    def __call__(self, samples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        if "tokens" in samples[0]:
            ids = torch.from_numpy(self._tokens(samples))
            keep = torch.ones_like(ids, dtype=torch.bool)
        else:
            encoded = self.tokenizer([s["text"] for s in samples], add_special_tokens=False,
                                     truncation=True, max_length=self.max_seq_len - 1)["input_ids"]
            ids = torch.full((len(samples), self.max_seq_len), self.pad, dtype=torch.int64)
            keep = torch.zeros_like(ids, dtype=torch.bool)
            for row, tokens in enumerate(encoded):
                ids[row, : len(tokens) + 1] = torch.tensor([*tokens, self.eos])
                keep[row, : len(tokens) + 1] = True
        is_eos = (ids == self.eos).long()
        sequence_id = (is_eos.cumsum(1) - is_eos).masked_fill(~keep, -1)
        labels = torch.full_like(ids, IGNORE)
        labels[:, :-1] = ids[:, 1:].masked_fill(~keep[:, 1:], IGNORE)
        batch = {"input_ids": ids, "labels": labels, "sequence_id": sequence_id}
        if not bool(keep.all()):
            batch["attention_mask"] = keep
        return batch


    def _tokens(self, samples: list[dict[str, Any]]) -> np.ndarray:
        short = next((s for s in samples if len(s["tokens"]) < self.max_seq_len), None)
        if short is not None:
            raise UserError(f"{_where(short)}: holds {len(short['tokens'])} tokens, fewer than the "
                            f"{self.max_seq_len} training uses (max_seq_len); lower max_seq_len or re-convert "
                            f"with --max-seq-len {self.max_seq_len}")
        ids = np.stack([s["tokens"][: self.max_seq_len] for s in samples]).astype(np.int64)
        if self.vocab_size is not None and ids.size and (ids.min() < 0 or ids.max() >= self.vocab_size):
            row = int(np.flatnonzero(((ids < 0) | (ids >= self.vocab_size)).any(axis=1))[0])
            bad = ids[row][(ids[row] < 0) | (ids[row] >= self.vocab_size)][0]
            raise UserError(f"{_where(samples[row])}: holds token id {bad}, outside the model's vocabulary "
                            f"(model.vocab_size {self.vocab_size}): the shard is damaged or was converted with "
                            "another tokenizer; re-run `foundry convert-dataset`")
        return ids


def _where(sample: dict[str, Any]) -> str:
    """'shard file: sample N' when the dataset said where the sample came from."""
    if WHERE in sample:
        path, index = sample[WHERE]
        return f"{path}: sample {index}"
    return "a data sample"


class MLMCollator:
    """Raw text -> masked-LM batch: `mlm_probability` of real tokens chosen, 80% [MASK], 10% random, 10% kept.

    The masking RNG is seeded from the batch content and the run seed, so it is the same for any worker count
    and after a resume, with no generator state to checkpoint.
    """

    def __init__(self, tokenizer: Any, max_seq_len: int, mlm_probability: float, seed: int) -> None:
        if tokenizer.mask_token_id is None:
            raise UserError("tokenizer: masked-LM training needs a tokenizer with a [MASK] token (e.g. --kind wordpiece)")
        if not 0 < mlm_probability < 1:
            raise UserError(f"train_loader.dataset.mlm_probability: must be in (0, 1), got {mlm_probability}")
        self.tokenizer, self.max_seq_len, self.p, self.seed = tokenizer, max_seq_len, mlm_probability, seed

    def __call__(self, samples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        if "text" not in samples[0]:
            raise UserError("masked-LM training reads raw text: convert the data with `--mode text`")
        enc = self.tokenizer([s["text"] for s in samples], truncation=True, max_length=self.max_seq_len,
                             padding="max_length", return_tensors="pt", return_special_tokens_mask=True)
        return mask_tokens(enc["input_ids"], enc["attention_mask"].bool(), enc["special_tokens_mask"].bool(),
                           self.p, self.tokenizer.mask_token_id, len(self.tokenizer), self.seed)


def mask_tokens(ids: torch.Tensor, keep: torch.Tensor, special: torch.Tensor, p: float, mask_id: int,
                vocab: int, seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed ^ zlib.crc32(ids.numpy().tobytes()))
    candidates = keep & ~special
    chosen = (torch.rand(ids.shape, generator=g) < p) & candidates
    labels = ids.masked_fill(~chosen, IGNORE)
    roll = torch.rand(ids.shape, generator=g)
    masked = ids.clone()
    masked[chosen & (roll < 0.8)] = mask_id
    random_tokens = torch.randint(0, vocab, ids.shape, generator=g)
    swap = chosen & (roll >= 0.8) & (roll < 0.9)
    masked[swap] = random_tokens[swap]
    return {"input_ids": masked, "labels": labels, "attention_mask": keep}


@dataclass
class DataPosition:
    """Where the trainer is in the data: checkpointed with the model for exact resumption."""

    epoch: int = 0
    samples_in_epoch: int = 0  # global samples consumed in this epoch (all ranks)


class StepBatches:
    """Yields, per optimizer step, this rank's list of microbatches; epochs never split a step."""

    def __init__(self, loader_cfg: LoaderConfig, collate: Any, *, microbatch: int, accumulation: int,
                 world_size: int, position: DataPosition, dataset: Any | None = None) -> None:
        self.cfg = loader_cfg
        self.collate = collate
        self.microbatch, self.accumulation, self.world_size = microbatch, accumulation, world_size
        self.position = position
        # finetuning/classification loaders hand in their in-memory RowDataset (same protocol)
        self.dataset = dataset if dataset is not None else build_dataset(loader_cfg.dataset, microbatch)
        per_rank = len(self.dataset)
        self.steps_per_epoch = per_rank // (microbatch * accumulation)
        if self.steps_per_epoch == 0:
            raise UserError(
                f"train_loader: {self.dataset.size} samples are fewer than one global batch "
                f"({microbatch * accumulation * world_size}); lower global_train_batch_size or add data")

    @property
    def global_batch(self) -> int:
        return self.microbatch * self.accumulation * self.world_size

    def skip(self, steps: int) -> None:
        """Move the position `steps` global batches ahead (spike_guard skips the batches that led to a spike)."""
        done = self.position.samples_in_epoch // self.global_batch + steps
        self.position.epoch += done // self.steps_per_epoch
        self.position.samples_in_epoch = done % self.steps_per_epoch * self.global_batch

    def _loader(self, epoch: int) -> Any:
        """A DataLoader over this epoch; its own generator keeps it from drawing on the global torch RNG.

        Each DataLoader iterator draws a base seed for its workers; from the global stream, that draw would
        shift dropout after every resume (the loader is re-created there but not in an uninterrupted run).
        """
        from torch.utils.data import DataLoader

        kwargs: dict[str, Any] = {}
        if self.cfg.num_workers:
            kwargs = {"prefetch_factor": self.cfg.prefetch_factor, "persistent_workers": self.cfg.persistent_workers}
        return DataLoader(self.dataset, batch_size=self.microbatch, collate_fn=self.collate,
                          num_workers=self.cfg.num_workers, pin_memory=self.cfg.pin_memory and torch.cuda.is_available(),
                          drop_last=True, timeout=self.cfg.timeout, generator=torch.Generator().manual_seed(epoch),
                          **kwargs)

    def __iter__(self) -> Iterator[list[dict[str, torch.Tensor]]]:
        while True:
            pos = self.position
            if hasattr(self.dataset, "next_epoch"):
                # A StreamingDataset ignores a resume state older than its own epoch counter, which a restart
                # inside this process (spike_guard's rollback) would otherwise leave ahead of the position.
                self.dataset.next_epoch = pos.epoch
            self.dataset.load_state_dict({
                "epoch": pos.epoch, "sample_in_epoch": pos.samples_in_epoch,
                "num_canonical_nodes": getattr(self.cfg.dataset, "num_canonical_nodes", None) or 1,
                "shuffle_seed": self.cfg.dataset.shuffle_seed, "initial_physical_nodes": 1,
            })
            step_in_epoch = pos.samples_in_epoch // self.global_batch
            pending: list[dict[str, torch.Tensor]] = []
            for micro in self._loader(pos.epoch):
                pending.append(micro)
                if len(pending) == self.accumulation:
                    step_in_epoch += 1
                    pos.samples_in_epoch += self.global_batch
                    yield pending
                    pending = []
                    if step_in_epoch >= self.steps_per_epoch:
                        break
            pos.epoch += 1
            pos.samples_in_epoch = 0


def eval_batches(loader_cfg: LoaderConfig, collate: Any, microbatch: int) -> Iterator[dict[str, torch.Tensor]]:
    """One pass over an eval split (no shuffling state to keep)."""
    from torch.utils.data import DataLoader

    dataset = build_dataset(loader_cfg.dataset, microbatch)
    yield from DataLoader(dataset, batch_size=microbatch, collate_fn=collate, drop_last=False)
