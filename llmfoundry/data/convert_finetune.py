"""`foundry convert-dataset --kind finetuning`: prompt/response or chat examples -> MDS shards, untokenized.

Examples are validated exactly as training reads them (data/finetune.py) and written as columns `prompt` and
`response` (str), or `messages` (json) for chat, split into train/val by a stable hash of each example. They
stay text: the chat template, target flags and truncation are applied at train time, so one conversion serves
any tokenizer, template or max_seq_len. A dataset holds one kind of example (MDS columns are fixed).
"""

from __future__ import annotations

import json
import time
from collections import Counter
from typing import Any

from llmfoundry.data.convert import (SPLITS, ConversionSummary, _parse_size, check_output, finish_output,
                                     mds_writer, split_of, staged_output)
from llmfoundry.data.finetune import normalize, read_files
from llmfoundry.data.sources import discover_inputs
from llmfoundry.errors import UserError
from llmfoundry.io import check_disjoint

COLUMNS = {"pair": {"prompt": "str", "response": "str"}, "chat": {"messages": "json"}}


def convert_finetuning(inputs: list[str], out: str, *, val_fraction: float = 0.0, strict: bool = False,
                       max_docs: int | None = None, shard_size: str = "64mb", compression: str | None = None,
                       overwrite: bool = False) -> ConversionSummary:
    """Write the examples of `inputs` (.jsonl/.parquet files, directories or globs) to `out/train` and `out/val`
    (a local directory or an s3:// URL)."""
    if not 0 <= val_fraction < 1:
        raise UserError(f"--val-fraction: got {val_fraction}, expected a number in [0, 1)")
    size_limit = _parse_size(shard_size)
    compression = None if compression in (None, "", "none") else compression
    remote = check_output(out, overwrite)
    paths = discover_inputs(inputs, "auto")
    if remote is None:
        check_disjoint(out, [*inputs, *paths])
    for path in paths:
        if path.suffix not in (".jsonl", ".parquet"):
            raise UserError(f"{path}: finetuning examples are read from .jsonl or .parquet files")
    summary = ConversionSummary(mode="finetuning", max_seq_len=None, tokenizer=None, inputs=[str(p) for p in paths])
    skipped: Counter[str] = Counter()
    start = time.perf_counter()
    with staged_output(out, remote, overwrite, estimate=sum(p.stat().st_size for p in paths)) as local:
        writers: list[Any] = []
        kind: tuple[str, str] | None = None  # (pair|chat, where the first example was)
        try:
            for where, record in read_files(paths, None if strict else skipped):
                if max_docs is not None and summary.documents_read >= max_docs:
                    break
                summary.documents_read += 1
                try:
                    example = normalize(record, where)
                except UserError:
                    if strict:
                        raise
                    skipped["invalid_example"] += 1
                    continue
                this = "chat" if "messages" in example else "pair"
                if kind is None:
                    kind = (this, where)
                    writers = [mds_writer(local, remote, split, COLUMNS[this], size_limit, compression, overwrite)
                               for split in SPLITS]
                elif this != kind[0]:
                    raise UserError(f"{where}: a {this} example in a dataset of {kind[0]} examples (first at "
                                    f"{kind[1]}); convert prompt/response and chat examples separately")
                split = split_of(json.dumps(example, sort_keys=True), val_fraction)
                writers[split].write(example)
                stats = summary.splits[SPLITS[split]]
                stats.documents += 1
                stats.samples += 1
        finally:
            for writer in writers:
                writer.finish()
        summary.skipped = dict(skipped)
        summary.seconds = time.perf_counter() - start
        finish_output(summary, local, remote, "examples")
    return summary
