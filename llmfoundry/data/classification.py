"""Sequence classification / regression data (GLUE and the like) for bert/mosaic_bert with `num_labels`.

Examples come from jsonl, csv or tsv with configurable text fields (one sentence or a pair) and a label field.
Labels are class ids, class names listed in `label_names`, or numbers when the model regresses
(`num_labels: 1`, STS-B). Pairs are tokenized as the tokenizer's pair template ([CLS] a [SEP] b [SEP] with
token types 0/1) and truncated longest-first; how many were truncated is reported. Batches carry one label per
row (`labels` [B]), which the classifier head scores; the trainer's count of non-ignored labels is then the
number of examples, so the loss is the mean over examples like any other.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from llmfoundry.config.schema import ClassificationDatasetConfig
from llmfoundry.data.rows import RowDataset
from llmfoundry.errors import UserError

_FILE_TYPES = (".jsonl", ".csv", ".tsv")


@dataclass
class ClassificationReport:
    source: str
    examples: int = 0
    truncated: int = 0
    max_seq_len: int = 0

    def describe(self) -> str:
        cut = f"{self.truncated:,} truncated to {self.max_seq_len} tokens" if self.truncated else "none truncated"
        return f"{self.source}: {self.examples:,} labelled examples; {cut}"


def resolve_files(cfg: ClassificationDatasetConfig, where: str) -> list[Path]:
    if cfg.data_files:
        paths = [Path(f) for f in cfg.data_files]
    elif cfg.local is None:
        raise UserError(f"{where}: set local (a .jsonl/.csv/.tsv file or a directory) or data_files")
    else:
        path = Path(cfg.local)
        if path.is_dir():
            paths = [path / f"{cfg.split}{ext}" for ext in _FILE_TYPES if (path / f"{cfg.split}{ext}").is_file()]
            if not paths:
                raise UserError(f"{where}.local: {path} has no {cfg.split}.jsonl, {cfg.split}.csv or {cfg.split}.tsv")
        else:
            paths = [path]
    for path in paths:
        if not path.is_file():
            raise UserError(f"{where}: {path}: no such file")
        if path.suffix not in _FILE_TYPES:
            raise UserError(f"{where}: {path}: expected a .jsonl, .csv or .tsv file")
    return paths


def read_records(paths: list[Path]) -> Iterator[tuple[str, dict[str, Any]]]:
    for path in paths:
        if path.suffix == ".jsonl":
            with open(path, encoding="utf-8", errors="strict") as f:
                for number, line in enumerate(f, 1):
                    if not line.strip():
                        continue
                    try:
                        record = json.loads(line)
                    except json.JSONDecodeError as err:
                        raise UserError(f"{path}:{number}: malformed JSON ({err.msg} at column {err.colno})") from None
                    if not isinstance(record, dict):
                        raise UserError(f"{path}:{number}: expected a JSON object, got {type(record).__name__}")
                    yield f"{path}:{number}", record
            continue
        # GLUE's tsv files contain unbalanced quotes inside sentences: read tabs literally.
        tsv = path.suffix == ".tsv"
        with open(path, encoding="utf-8", newline="") as f:
            reader = csv.DictReader(f, delimiter="\t" if tsv else ",", quoting=csv.QUOTE_NONE if tsv else csv.QUOTE_MINIMAL)
            for record in reader:
                if None in record:
                    raise UserError(f"{path}:{reader.line_num}: more columns than the header has")
                yield f"{path}:{reader.line_num}", record


def parse_label(value: Any, where: str, cfg: ClassificationDatasetConfig, num_labels: int) -> float | int:
    if num_labels == 1:
        try:
            return float(value)
        except (TypeError, ValueError):
            raise UserError(f"{where}: {cfg.label_field} {value!r} is not a number (regression, num_labels: 1)") from None
    if cfg.label_names is not None and isinstance(value, str) and value in cfg.label_names:
        return cfg.label_names.index(value)
    try:
        label = int(value)
    except (TypeError, ValueError):
        names = f" (label_names: {cfg.label_names})" if cfg.label_names else "; list class names in label_names"
        raise UserError(f"{where}: {cfg.label_field} {value!r} is not a class id{names}") from None
    if not 0 <= label < num_labels:
        raise UserError(f"{where}: label {label} is outside 0..{num_labels - 1} (model.num_labels: {num_labels})")
    return label


def build_classification_rows(cfg: ClassificationDatasetConfig, tokenizer: Any, num_labels: int,
                              where: str) -> tuple[list[dict[str, Any]], ClassificationReport]:
    if not 1 <= len(cfg.text_fields) <= 2:
        raise UserError(f"{where}.text_fields: one field or a pair, got {cfg.text_fields}")
    paths = resolve_files(cfg, where)
    report = ClassificationReport(str(paths[0]) if len(paths) == 1 else f"{len(paths)} files",
                                  max_seq_len=cfg.max_seq_len)
    texts: list[list[str]] = [[] for _ in cfg.text_fields]
    labels: list[float | int] = []
    for loc, record in read_records(paths):
        for i, name in enumerate(cfg.text_fields):
            if name not in record:
                raise UserError(f"{loc}: no text field {name!r} (fields: {', '.join(map(str, record))}); "
                                "set dataset.text_fields")
            if not isinstance(record[name], str):
                raise UserError(f"{loc}: {name} is {type(record[name]).__name__}, expected a string")
            texts[i].append(record[name])
        if cfg.label_field not in record:
            raise UserError(f"{loc}: no label field {cfg.label_field!r}; set dataset.label_field")
        labels.append(parse_label(record[cfg.label_field], loc, cfg, num_labels))
    if not labels:
        raise UserError(f"{where}: {report.source} holds no examples")
    full = tokenizer(*texts, truncation=False)["input_ids"]
    report.examples = len(labels)
    report.truncated = sum(len(ids) > cfg.max_seq_len for ids in full)
    enc = tokenizer(*texts, truncation="longest_first", max_length=cfg.max_seq_len, return_token_type_ids=True)
    rows = [{"input_ids": np.asarray(ids, np.int32), "token_type_ids": np.asarray(types, np.int8), "label": label}
            for ids, types, label in zip(enc["input_ids"], enc["token_type_ids"], labels)]
    return rows, report


class ClassificationCollator:
    def __init__(self, pad_id: int, regression: bool) -> None:
        self.pad_id, self.regression = pad_id, regression

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        width = max(len(r["input_ids"]) for r in rows)
        ids = np.full((len(rows), width), self.pad_id, dtype=np.int64)
        types = np.zeros((len(rows), width), dtype=np.int64)
        keep = np.zeros((len(rows), width), dtype=bool)
        for b, row in enumerate(rows):
            n = len(row["input_ids"])
            ids[b, :n], types[b, :n], keep[b, :n] = row["input_ids"], row["token_type_ids"], True
        dtype = torch.float32 if self.regression else torch.int64
        return {"input_ids": torch.from_numpy(ids), "token_type_ids": torch.from_numpy(types),
                "attention_mask": torch.from_numpy(keep),
                "labels": torch.tensor([r["label"] for r in rows], dtype=dtype)}


def build_classification_dataset(cfg: ClassificationDatasetConfig, tokenizer: Any, num_labels: int, *, where: str,
                                 rank: int = 0, world_size: int = 1, batch_size: int = 1
                                 ) -> tuple[RowDataset, ClassificationCollator, ClassificationReport]:
    rows, report = build_classification_rows(cfg, tokenizer, num_labels, where)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    dataset = RowDataset(rows, shuffle=cfg.shuffle, seed=cfg.shuffle_seed, rank=rank, world_size=world_size,
                         batch_size=batch_size)
    return dataset, ClassificationCollator(pad, regression=num_labels == 1), report
