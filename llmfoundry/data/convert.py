"""`foundry convert-dataset`: raw documents -> mosaicml-streaming MDS shards, split into train/val.

The pipeline is one direction: read documents -> batches -> tokenize -> pack into fixed-length samples ->
MDSWriter. Tokenization runs in the Rust `tokenizers` thread pool (`workers` threads, GIL released) on batch
k+1 while Python reads and writes batch k; batches stay in order, so the shards are identical for any worker
count. Threads beat processes here: no pickling of texts and token arrays, no interpreter start-up.
`concat` mode joins documents with eos (and an optional bos) and cuts fixed `max_seq_len` samples, so document
boundaries are recoverable from eos at train time; `text` mode stores raw text for tokenization at train time.
The train/val split is a stable hash of each document's text, so it does not change between runs, worker
counts or input orderings. `shard=(I, N)` converts only the documents of part I of N (llmfoundry/data/parts.py),
for conversions spread over many machines and joined by `foundry merge-index`.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import os
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from llmfoundry.data.integrity import HASH
from llmfoundry.data.parts import SUMMARIES, part_name, part_of, staged_part
from llmfoundry.data.sources import InputFormat, SplitBy, discover_inputs, read_documents, text_field_hint
from llmfoundry.errors import UserError
from llmfoundry.io import atomic_directory, check_disjoint, check_output_dir

Mode = Literal["concat", "text"]
SPLITS = ("train", "val")
_BATCH_DOCS = 1024


@dataclass
class SplitStats:
    documents: int = 0
    tokens: int = 0
    samples: int = 0
    dropped_tail_tokens: int = 0


@dataclass
class ConversionSummary:
    """What a conversion read, wrote and skipped; printed at the end and saved as conversion.json."""

    mode: str
    max_seq_len: int | None
    tokenizer: str | None
    inputs: list[str]
    tokenizer_vocab: dict[str, Any] | None = None
    """Size and sha256 of the tokenizer's vocabulary (data/provenance.py): training refuses another one."""
    documents_read: int = 0
    """Documents read from the inputs (records skipped as unreadable are counted in `skipped` instead)."""
    skipped: dict[str, int] = field(default_factory=dict)
    parts: int = 1
    """Into how many parts (`--shard I/N`) the documents were divided; this summary covers one of them."""
    in_other_parts: int = 0
    """Documents read but left to the other parts."""
    splits: dict[str, SplitStats] = field(default_factory=lambda: {s: SplitStats() for s in SPLITS})
    seconds: float = 0.0

    @property
    def documents_written(self) -> int:
        return sum(s.documents for s in self.splits.values())

    @property
    def tokens(self) -> int:
        return sum(s.tokens for s in self.splits.values())

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["documents_written"] = self.documents_written
        data["tokens_per_second"] = round(self.tokens / self.seconds, 1) if self.seconds else None
        return data


def split_of(text: str, val_fraction: float) -> int:
    """0 (train) or 1 (val) from a stable hash of the document, independent of order and process."""
    if val_fraction <= 0:
        return 0
    digest = hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return 1 if int.from_bytes(digest, "little") / 2**64 < val_fraction else 0


# Tokenizer state for one conversion, set by _init_worker.
_WORKER: dict[str, Any] = {}


def _init_worker(tokenizer_json: str | None, prefix: list[int], suffix: list[int], val_fraction: float) -> None:
    from tokenizers import Tokenizer

    _WORKER["tok"] = Tokenizer.from_str(tokenizer_json) if tokenizer_json else None
    _WORKER["prefix"] = prefix
    _WORKER["suffix"] = suffix
    _WORKER["val_fraction"] = val_fraction


def _tokenize_batch(docs: list[str]) -> list[tuple[np.ndarray, int]]:
    """Per split: all documents of the batch as one int32 token stream with separators, and the doc count."""
    val_fraction = _WORKER["val_fraction"]
    splits = [split_of(doc, val_fraction) for doc in docs]
    encodings = _WORKER["tok"].encode_batch(docs, add_special_tokens=False)
    prefix, suffix = _WORKER["prefix"], _WORKER["suffix"]
    out = []
    for split in range(len(SPLITS)):
        pieces = [prefix + enc.ids + suffix for enc, s in zip(encodings, splits) if s == split]
        stream = np.fromiter(itertools.chain.from_iterable(pieces), dtype=np.int32) if pieces else np.empty(0, np.int32)
        out.append((stream, len(pieces)))
    return out


def _split_batch(docs: list[str]) -> list[list[str]]:
    val_fraction = _WORKER["val_fraction"]
    out: list[list[str]] = [[] for _ in SPLITS]
    for doc in docs:
        out[split_of(doc, val_fraction)].append(doc)
    return out


def _batched(items: Iterable[str], size: int) -> Iterator[list[str]]:
    iterator = iter(items)
    while batch := list(itertools.islice(iterator, size)):
        yield batch


class _Packer:
    """Cuts a token stream into fixed-length samples, carrying the remainder across batches."""

    def __init__(self, max_seq_len: int) -> None:
        self.max_seq_len = max_seq_len
        self.buffer = np.empty(0, np.int32)

    def add(self, stream: np.ndarray) -> Iterator[np.ndarray]:
        data = np.concatenate([self.buffer, stream]) if self.buffer.size else stream
        full = data.size // self.max_seq_len
        for i in range(full):
            yield data[i * self.max_seq_len : (i + 1) * self.max_seq_len]
        self.buffer = data[full * self.max_seq_len :].copy()


def _parse_size(size: str) -> int:
    units = {"b": 1, "kb": 1 << 10, "mb": 1 << 20, "gb": 1 << 30}
    text = size.strip().lower()
    for unit in ("kb", "mb", "gb", "b"):
        if text.endswith(unit):
            number = text[: -len(unit)]
            break
    else:
        unit, number = "b", text
    try:
        value = int(float(number) * units[unit])
    except ValueError:
        raise UserError(f"--shard-size: got {size!r}, expected a size like 64mb") from None
    if value < 1024:
        raise UserError(f"--shard-size: {size!r} is too small (at least 1kb)")
    return value


def _vocab_fingerprint(tokenizer: str | None) -> dict[str, Any] | None:
    from llmfoundry.data.provenance import fingerprint, vocabulary
    from llmfoundry.data.tokenizer import load_tokenizer

    return fingerprint(vocabulary(load_tokenizer(tokenizer))) if tokenizer else None


def _prepare_tokenizer(tokenizer: str | None, mode: Mode, bos: bool) -> tuple[str | None, list[int], list[int]]:
    if tokenizer is None:
        if mode == "concat":
            raise UserError("--tokenizer is required for --mode concat")
        return None, [], []
    from llmfoundry.data.tokenizer import load_tokenizer

    tok = load_tokenizer(tokenizer)
    if not tok.is_fast:
        raise UserError(f"{tokenizer}: needs a fast tokenizer (a tokenizer.json file)")
    if tok.eos_token_id is None:
        raise UserError(f"{tokenizer}: has no eos token; concat mode needs one to mark document boundaries")
    prefix = [tok.bos_token_id] if bos and tok.bos_token_id is not None and tok.bos_token_id != tok.eos_token_id else []
    if bos and not prefix:
        raise UserError(f"{tokenizer}: --bos asks for a bos token distinct from eos, and this tokenizer has none")
    return tok.backend_tokenizer.to_str(), prefix, [tok.eos_token_id]


def convert_dataset(
    inputs: list[str],
    out: str,
    *,
    tokenizer: str | None = None,
    mode: Mode = "concat",
    max_seq_len: int = 2048,
    input_format: InputFormat = "auto",
    text_field: str = "text",
    split_by: SplitBy = "file",
    val_fraction: float = 0.0,
    bos: bool = False,
    workers: int = 1,
    shard_size: str = "64mb",
    compression: str | None = None,
    strict: bool = False,
    max_docs: int | None = None,
    overwrite: bool = False,
    progress: bool = True,
    shard: tuple[int, int] | None = None,
) -> ConversionSummary:
    """Convert `inputs` into MDS shards under `out/train` and `out/val` (local directory or s3:// URL).

    With `shard=(I, N)` only part I's documents are written, to `out/<split>/part-I-of-N` (see data/parts.py).
    """
    if mode not in ("concat", "text"):
        raise UserError(f"--mode: got {mode!r}, expected concat or text")
    if not 0 <= val_fraction < 1:
        raise UserError(f"--val-fraction: got {val_fraction}, expected a number in [0, 1)")
    if max_seq_len < 2:
        raise UserError(f"--max-seq-len: got {max_seq_len}, expected at least 2")
    if workers < 1:
        raise UserError(f"--workers: got {workers}, expected at least 1")
    size_limit = _parse_size(shard_size)
    os.environ.setdefault("RAYON_NUM_THREADS", str(workers))  # read when the tokenizers thread pool starts
    compression = None if compression in (None, "", "none") else compression
    part = part_name(*shard) if shard else None
    remote = check_output(out, overwrite) if part is None else _remote_part(out)
    paths = discover_inputs(inputs, input_format)
    if remote is None:
        check_disjoint(out, [*inputs, *paths])
    tokenizer_json, prefix, suffix = _prepare_tokenizer(tokenizer, mode, bos)

    summary = ConversionSummary(mode=mode, max_seq_len=max_seq_len if mode == "concat" else None,
                                tokenizer=tokenizer, inputs=[str(p) for p in paths], parts=shard[1] if shard else 1,
                                tokenizer_vocab=_vocab_fingerprint(tokenizer) if mode == "concat" else None)
    skipped: Counter[str] = Counter()
    docs = read_documents(paths, input_format=input_format, text_field=text_field, split_by=split_by,
                          strict=strict, skipped=skipped)
    if max_docs is not None:
        docs = itertools.islice(docs, max_docs)

    def counted(stream: Iterator[str]) -> Iterator[str]:
        for doc in stream:
            summary.documents_read += 1
            if shard and part_of(doc, shard[1]) != shard[0]:
                summary.in_other_parts += 1
                continue
            yield doc

    start = time.perf_counter()
    local_part = part is not None and remote is None
    staging = (staged_part(out, part, SPLITS, overwrite) if local_part else
               staged_output(out, remote, overwrite, estimate=_input_bytes(paths)))
    with staging as local:  # type: ignore[arg-type]
        _write(counted(docs), local, remote, summary, mode, tokenizer_json, prefix, suffix, val_fraction,
               workers, size_limit, compression, max_seq_len, overwrite, progress, part)
        summary.skipped = dict(skipped)
        summary.seconds = time.perf_counter() - start
        finish_output(summary, local, remote, "documents",
                      name=f"{SUMMARIES}/{part}.json" if part else "conversion.json",
                      hint=text_field_hint(skipped, paths, text_field))
    return summary


def _remote_part(out: str) -> str | None:
    """A part of an s3:// conversion: the MDS writers upload its shards (each index.json last)."""
    if "://" not in out:
        return None
    _remote_has_data(out)  # checks the URL and that the bucket can be listed
    return out


def check_output(out: str, overwrite: bool) -> str | None:
    """Refuse an output that already holds data, before any work; returns the s3:// URL or None (local)."""
    remote = out if "://" in out else None
    if remote is None:
        check_output_dir(out, overwrite=overwrite)
    elif not overwrite and _remote_has_data(remote):
        raise UserError(f"{remote}: already holds data; pass --overwrite to replace it")
    return remote


def _input_bytes(paths: list[Path]) -> int:
    """The inputs' size: about what the shards take (int32 tokens of ~4-byte BPE tokens, or the raw text)."""
    return sum(p.stat().st_size for p in paths)


@contextlib.contextmanager
def staged_output(out: str, remote: str | None, overwrite: bool, estimate: int | None = None) -> Iterator[str]:
    """Where the shards are written: a temporary directory renamed to `out` when complete, or, for a remote
    `out`, a scratch directory the MDS writers upload from (the `index.json` files land last). A full or
    read-only disk is one line naming `out` and the free space (`estimate`: bytes the output may need)."""
    if remote is None:
        with atomic_directory(out, overwrite=overwrite, estimate=estimate) as tmp:
            yield str(tmp)
    else:
        with tempfile.TemporaryDirectory(prefix="foundry-convert-") as tmp:
            yield tmp


def finish_output(summary: ConversionSummary, local: str, remote: str | None, what: str,
                  name: str = "conversion.json", hint: str = "") -> None:
    """Fail if nothing was written (saying why, and `hint`), else write the summary `name` (and upload it)."""
    if summary.documents_written == 0 and summary.in_other_parts == 0:
        reasons = ", ".join(f"{k}: {v}" for k, v in summary.skipped.items()) or "the inputs are empty"
        raise UserError(f"{', '.join(summary.inputs)}: no {what} to convert ({reasons}){hint}")
    path = Path(local) / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(summary.to_json(), indent=2) + "\n")
    if remote is not None:
        from streaming.base.storage.upload import CloudUploader

        CloudUploader.get(out=(local, remote), keep_local=True, exist_ok=True).upload_file(name)


def _remote_has_data(remote: str) -> bool:
    """Whether an s3:// prefix already holds objects (S3_ENDPOINT_URL selects an S3-compatible store)."""
    from botocore.exceptions import BotoCoreError, ClientError

    from llmfoundry.io import is_s3, s3_client, split_s3

    if not is_s3(remote):
        raise UserError(f"{remote}: only local paths and s3:// URLs are supported outputs")
    bucket, prefix = split_s3(remote)
    try:
        listing = s3_client().list_objects_v2(Bucket=bucket, Prefix=prefix + "/", MaxKeys=1)
    except (BotoCoreError, ClientError) as err:
        raise UserError(f"{remote}: cannot list the bucket ({err})") from None
    return listing.get("KeyCount", 0) > 0


def mds_writer(local: str, remote: str | None, split: str, columns: dict[str, str], size_limit: int,
               compression: str | None, overwrite: bool) -> Any:
    """An MDSWriter for one split, uploading to `remote` as shards complete when there is one; each shard's
    xxh64 goes into index.json, which the trainer verifies on first read of the shard (data/integrity.py)."""
    from streaming import MDSWriter

    check_compression(compression)
    target: Any = str(Path(local) / split)
    if remote is not None:
        target = (target, f"{remote.rstrip('/')}/{split}")
    try:
        return MDSWriter(out=target, columns=columns, compression=compression, size_limit=size_limit,
                         hashes=[HASH], exist_ok=overwrite, progress_bar=False)
    except FileExistsError:
        raise UserError(f"{remote or local}/{split}: already holds data; pass --overwrite to replace it") from None


def check_compression(compression: str | None) -> None:
    """The codecs mosaicml-streaming reads, named in the error (its own says only "Invalid compression")."""
    from streaming.base.compression import get_compressions

    if compression is not None and compression not in get_compressions():
        raise UserError(f"--compression: got {compression!r}, expected none, zstd (zstd:1..22), gz (gz:0..9), "
                        "br (br:0..11), bz2 (bz2:1..9) or snappy")


def _write(docs: Iterator[str], local: str, remote: str | None, summary: ConversionSummary, mode: Mode,
           tokenizer_json: str | None, prefix: list[int], suffix: list[int], val_fraction: float, workers: int,
           size_limit: int, compression: str | None, max_seq_len: int, overwrite: bool, progress: bool,
           part: str | None = None) -> None:
    columns = {"tokens": "ndarray:int32"} if mode == "concat" else {"text": "str"}
    folders = [f"{split}/{part}" if part else split for split in SPLITS]
    writers = [mds_writer(local, remote, folder, columns, size_limit, compression, overwrite) for folder in folders]
    packers = [_Packer(max_seq_len) for _ in SPLITS]
    _init_worker(tokenizer_json, prefix, suffix, val_fraction)
    results = _pipelined(_tokenize_batch if mode == "concat" else _split_batch, _batched(docs, _BATCH_DOCS))
    reporter = _Progress(enabled=progress)
    try:
        for result in results:
            for split, (writer, packer, part) in enumerate(zip(writers, packers, result)):
                stats = summary.splits[SPLITS[split]]
                if mode == "concat":
                    stream, count = part
                    stats.documents += count
                    stats.tokens += int(stream.size)
                    for sample in packer.add(stream):
                        writer.write({"tokens": sample})
                        stats.samples += 1
                else:
                    for doc in part:
                        writer.write({"text": doc})
                    stats.documents += len(part)
                    stats.samples += len(part)
            reporter.update(summary)
        for split, (writer, packer) in enumerate(zip(writers, packers)):
            summary.splits[SPLITS[split]].dropped_tail_tokens = int(packer.buffer.size)
            writer.finish()
    finally:
        reporter.close()


def _pipelined(fn: Any, batches: Iterator[list[str]]) -> Iterator[Any]:
    """Yield fn(batch) in order, computing the next one in a background thread meanwhile."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=1) as executor:
        pending = None
        for batch in batches:
            future = executor.submit(fn, batch)
            if pending is not None:
                yield pending.result()
            pending = future
        if pending is not None:
            yield pending.result()


class _Progress:
    """A rich live line on a terminal; a plain line every 10 s otherwise (logs, CI)."""

    def __init__(self, enabled: bool) -> None:
        from rich.console import Console

        self.console = Console(stderr=True)
        self.live = enabled and self.console.is_terminal
        self.enabled = enabled
        self.start = time.perf_counter()
        self.last = self.start
        self.progress = None
        if self.live:
            from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

            self.progress = Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(),
                                     console=self.console, transient=True)
            self.task = self.progress.add_task("converting")
            self.progress.start()

    def update(self, summary: ConversionSummary) -> None:
        if not self.enabled:
            return
        now = time.perf_counter()
        rate = summary.tokens / max(now - self.start, 1e-9)
        line = (f"{summary.documents_read:,} docs read, {summary.documents_written:,} written, "
                f"{summary.tokens:,} tokens ({rate:,.0f} tok/s)")
        if self.progress is not None:
            self.progress.update(self.task, description=line)
        elif now - self.last >= 10:
            self.last = now
            print(line, file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()


def format_summary(summary: ConversionSummary) -> str:
    """The end-of-run report, as plain text lines."""
    skipped = sum(summary.skipped.values())
    records = summary.documents_read + skipped  # skipped records never became documents
    line = f"records read: {records:,} = {summary.documents_written:,} documents written + {skipped:,} skipped"
    if summary.skipped:
        line += f" ({', '.join(f'{k}: {v:,}' for k, v in sorted(summary.skipped.items()))})"
    if summary.parts > 1:
        line += f" + {summary.in_other_parts:,} left to the other {summary.parts - 1} part{'s' if summary.parts > 2 else ''}"
    lines = [line]
    for name, stats in summary.splits.items():
        line = f"  {name:5s}: {stats.documents:,} documents, {stats.samples:,} samples"
        if summary.mode == "concat":
            line += f", {stats.tokens:,} tokens ({stats.dropped_tail_tokens:,} in the final partial sample, dropped)"
        lines.append(line)
    rate = summary.tokens / summary.seconds if summary.seconds else 0.0
    lines.append(f"time: {summary.seconds:.1f} s" + (f", {rate:,.0f} tokens/s" if summary.mode == "concat" else ""))
    return "\n".join(lines)
