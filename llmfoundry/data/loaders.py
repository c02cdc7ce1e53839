"""What a run trains on: `train_loader.name` / `eval_loader.name` picks the builder.

text            MDS shards streamed by mosaicml-streaming (data/text.py): causal-LM or masked-LM batches
finetuning      prompt/response and chat examples, loss on responses (data/finetune.py)
classification  labelled sentences or pairs for a sequence classifier (data/classification.py)

The trainer asks this module for the collator, the dataset (None means StepBatches streams the MDS shards
itself), eval batches, and the notes to print when training starts (what was truncated, skipped, packed).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch

from llmfoundry.config.schema import AnyLoaderConfig, ClassificationLoaderConfig, FinetuneLoaderConfig
from llmfoundry.errors import UserError
from llmfoundry.models.bert import BertArgs
from llmfoundry.models.gpt import GptArgs
from llmfoundry.models.mpt import MptArgs


@dataclass
class LoaderParts:
    loader: AnyLoaderConfig
    collate: Callable[[list[Any]], dict[str, torch.Tensor]]
    dataset: Any | None = None
    notes: list[str] = field(default_factory=list)
    metrics: list[str] | None = None  # classification: which metrics evaluation reports

    def eval_batches(self, batch_size: int) -> Iterator[dict[str, torch.Tensor]]:
        """One pass in order; in-memory eval sets are evaluated whole on every rank."""
        if self.dataset is None:
            from llmfoundry.data.text import eval_batches

            yield from eval_batches(self.loader, self.collate, batch_size)  # type: ignore[arg-type]
            return
        from torch.utils.data import DataLoader

        yield from DataLoader(self.dataset, batch_size=batch_size, collate_fn=self.collate, drop_last=False)


def check_loader(cfg: AnyLoaderConfig, where: str, *, used: bool = True) -> None:
    """Fail before any heavy work when the data is not where the config says (or is empty and `used`)."""
    if isinstance(cfg, FinetuneLoaderConfig):
        from llmfoundry.data.finetune import resolve_source

        resolve_source(cfg.dataset, f"{where}.dataset")
    elif isinstance(cfg, ClassificationLoaderConfig):
        from llmfoundry.data.classification import resolve_files

        resolve_files(cfg.dataset, f"{where}.dataset")
    else:
        from llmfoundry.data.text import check_dataset

        check_dataset(cfg.dataset, f"{where}.dataset", used=used)


def _uses_sequence_id(model: Any) -> bool:
    if isinstance(model, MptArgs):
        return model.attn_config.attn_uses_sequence_id
    if isinstance(model, GptArgs):
        return model.attn_uses_sequence_id
    return False


def build_loader(cfg: AnyLoaderConfig, *, model: Any, tokenizer: Any, seq_len: int, seed: int, where: str,
                 training: bool, rank: int = 0, world_size: int = 1, batch_size: int = 1) -> LoaderParts:
    """Collator and dataset for one loader. Eval loaders (`training=False`) keep file order on every rank."""
    if not training:
        rank, world_size = 0, 1
    if isinstance(cfg, FinetuneLoaderConfig):
        from llmfoundry.data.finetune import build_finetune_dataset

        ds = cfg.dataset
        if isinstance(model, BertArgs):
            raise UserError(f"{where}.name: finetuning trains causal LMs; for bert/mosaic_bert use classification")
        if ds.packing_ratio not in (None, 1, 1.0) and not _uses_sequence_id(model):
            raise UserError(f"{where}.dataset.packing_ratio: packed examples would attend to each other; set "
                            "model.attn_config.attn_uses_sequence_id: true (mpt) or model.attn_uses_sequence_id: "
                            "true (gpt), or drop packing_ratio (hf_causal_lm models cannot pack)")
        dataset, collate, report = build_finetune_dataset(
            ds if training else _no_shuffle(ds), tokenizer, where=f"{where}.dataset", rank=rank,
            world_size=world_size, batch_size=batch_size)
        return LoaderParts(cfg, collate, dataset, [f"{where}: {report.describe()}"])
    if isinstance(cfg, ClassificationLoaderConfig):
        from llmfoundry.data.classification import build_classification_dataset

        num_labels = getattr(model, "num_labels", None)
        if not isinstance(model, BertArgs) or num_labels is None:
            raise UserError(f"{where}.name: classification needs a bert/mosaic_bert model with num_labels "
                            "(1 for regression)")
        ds = cfg.dataset
        dataset, collate, report = build_classification_dataset(
            ds if training else _no_shuffle(ds), tokenizer, num_labels, where=f"{where}.dataset", rank=rank,
            world_size=world_size, batch_size=batch_size)
        metrics = ds.metrics or (["pearson", "spearman"] if num_labels == 1 else ["accuracy"])
        return LoaderParts(cfg, collate, dataset, [f"{where}: {report.describe()}"], metrics=metrics)
    from llmfoundry.data.text import LMCollator, MLMCollator

    if isinstance(model, BertArgs):
        if model.num_labels is not None:
            raise UserError(f"{where}.name: a model with num_labels is a classifier; use name: classification")
        return LoaderParts(cfg, MLMCollator(tokenizer, seq_len, cfg.dataset.mlm_probability or 0.3, seed),
                           notes=_tokenizer_notes(cfg, tokenizer, where))
    return LoaderParts(cfg, LMCollator(tokenizer, seq_len, cfg.dataset.eos_token_id,
                                       vocab_size=getattr(model, "vocab_size", None)),
                       notes=_tokenizer_notes(cfg, tokenizer, where))


def _tokenizer_notes(cfg: AnyLoaderConfig, tokenizer: Any, where: str) -> list[str]:
    """Refuse MDS data tokenized with another vocabulary (data/provenance.py); notes for compatible ones."""
    from llmfoundry.data.provenance import check_tokenizer

    streams = cfg.dataset.streams or {}
    locals_ = {f"{where}.dataset.streams.{n}": s.local for n, s in streams.items()} if streams else \
        {f"{where}.dataset": cfg.dataset.local}
    return [note for key, local in locals_.items() for note in check_tokenizer(local, tokenizer, key)]


def _no_shuffle(ds: Any) -> Any:
    from dataclasses import replace

    return replace(ds, shuffle=False)
