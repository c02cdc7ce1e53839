"""Instruction and chat finetuning data: examples -> token rows whose loss covers only what the model should say.

An example is `{"prompt": str, "response": str}` or `{"messages": [{"role", "content"}, ...]}` (chat), read
from jsonl, parquet or the MDS written by `foundry convert-dataset --kind finetuning`. Chat is rendered with a
Jinja chat template (the tokenizer's, the yaml's `chat_template`, or ChatML); to know which tokens are the
assistant's, each assistant turn is rendered twice (the conversation before it with the generation prompt,
and with it) and the difference is the response text. Every piece is tokenized on its own, so the response
tokens are exactly what a model generates after being given the prompt tokens at inference time.

Each token carries a `target` flag (by default: response tokens, and the eos that ends a prompt/response
example). Labels follow the batch contract: labels[t] = input_ids[t+1] when token t+1 is a target of the same
example, else -100. Examples longer than max_seq_len are cut from the left (the prompt side) or skipped, and
the counts are reported, never silent. With `packing_ratio`, several examples share a row (best-fit
decreasing, so rows fill up) and keep their own `sequence_id`: with `attn_uses_sequence_id` and relative
positions (ALiBi/RoPE) a packed row computes the same loss as its examples would alone.
"""

from __future__ import annotations

import bisect
import dataclasses
import json
import math
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from llmfoundry.config.schema import FinetuneDatasetConfig
from llmfoundry.data.rows import RowDataset
from llmfoundry.errors import UserError

IGNORE = -100
CHATML = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
ROLES = ("system", "user", "assistant")
_FILE_TYPES = (".jsonl", ".parquet")
_TOKENIZE_BATCH = 4096


# -- reading ----------------------------------------------------------------------------------------------

def sources(cfg: FinetuneDatasetConfig) -> list[tuple[FinetuneDatasetConfig, str]]:
    """The dataset itself, or with `streams` one config per stream (its local/remote/split), with its key."""
    if not cfg.streams:
        return [(cfg, "")]
    return [(dataclasses.replace(cfg, local=s.local, remote=s.remote, split=s.split or cfg.split, streams=None,
                                 hf_name=None, data_files=None), f".streams.{name}") for name, s in cfg.streams.items()]


def resolve_source(cfg: FinetuneDatasetConfig, where: str) -> tuple[str, list[Path]]:
    """("mds", [dir]), ("files", [jsonl/parquet files]) or ("hf", []) (hf_name, read by `datasets`); raises a
    UserError saying what was looked for. With streams, every stream is checked and the first one's returned."""
    if cfg.streams:
        return [resolve_source(sub, where + key) for sub, key in sources(cfg)][0]
    if cfg.hf_name is not None and cfg.local is None and not cfg.data_files:
        from llmfoundry.data.hf_source import check_hf_name

        check_hf_name(cfg.hf_name, f"{where}.hf_name")
        return "hf", []
    if cfg.data_files:
        paths = [Path(f) for f in cfg.data_files]
        for path in paths:
            if not path.is_file():
                raise UserError(f"{where}.data_files: {path}: no such file")
            _check_type(path, f"{where}.data_files")
        return "files", paths
    if cfg.remote is not None:
        if cfg.local is None:
            raise UserError(f"{where}.local: a remote dataset needs local, the directory its shards are cached in")
        return "mds", [download_split(cfg.remote, Path(cfg.local), cfg.split, f"{where}.remote")]
    source, key = cfg.local, "local"
    if source is None:
        raise UserError(f"{where}: set local (a .jsonl/.parquet file or a directory), data_files or hf_name")
    path = Path(source)
    if not path.exists():
        raise UserError(f"{where}.{key}: {source}: no such file or directory (hub datasets are not downloaded)")
    if path.is_file():
        _check_type(path, f"{where}.{key}")
        return "files", [path]
    for mds in (path / cfg.split, path):
        if (mds / "index.json").exists():
            return "mds", [mds]
    files = [path / f"{cfg.split}{ext}" for ext in _FILE_TYPES if (path / f"{cfg.split}{ext}").is_file()]
    if not files and (path / cfg.split).is_dir():
        files = sorted(p for p in (path / cfg.split).iterdir() if p.suffix in _FILE_TYPES)
    if not files:
        raise UserError(f"{where}.{key}: {path} has no {cfg.split}.jsonl, {cfg.split}.parquet, {cfg.split}/ folder "
                        f"of them, nor MDS shards ({cfg.split}/index.json from `foundry convert-dataset --kind finetuning`)")
    return "files", files


def download_split(remote: str, cache: Path, split: str, where: str) -> Path:
    """Copy `{remote}/{split}` (index.json and shards, decompressed) into `{cache}/{split}`, once.

    Finetuning reads every example at start-up, so the whole split is fetched rather than streamed. Each file
    is written under a temporary name and renamed, so ranks fetching at once, or a run killed mid-download,
    never leave a partial file that a later run would trust.
    """
    import os

    from streaming.base.compression import decompress
    from streaming.base.storage.download import CloudDownloader

    source, target = f"{remote.rstrip('/')}/{split}", cache / split
    target.mkdir(parents=True, exist_ok=True)

    def fetch(name: str) -> Path:
        final = target / name
        if not final.exists():
            part = target / f".{name}.{os.getpid()}.part"
            try:
                CloudDownloader.direct_download(f"{source}/{name}", str(part))
            except Exception as err:  # boto3 / botocore / streaming raise many kinds for a missing object
                raise UserError(f"{where}: cannot fetch {source}/{name} ({err})") from None
            os.replace(part, final)
        return final

    index = json.loads(fetch("index.json").read_text())
    for shard in index["shards"]:
        raw = shard["raw_data"]["basename"]
        if (target / raw).exists():
            continue
        if shard.get("compression"):
            packed = fetch(shard["zip_data"]["basename"])
            part = target / f".{raw}.{os.getpid()}.part"
            part.write_bytes(decompress(shard["compression"], packed.read_bytes()))
            os.replace(part, target / raw)
        else:
            fetch(raw)
    return target


def _check_type(path: Path, where: str) -> None:
    if path.suffix not in _FILE_TYPES:
        raise UserError(f"{where}: {path}: expected a .jsonl or .parquet file")


def read_records(cfg: FinetuneDatasetConfig, where: str) -> Iterator[tuple[str, Any]]:
    """(location for error messages, example) for every example, in order (streams one after another), after
    `preprocessing_fn` (or the preprocessor LLM Foundry registers for `hf_name`)."""
    from llmfoundry.data.preprocessors import apply, resolve_preprocessor

    fn = resolve_preprocessor(cfg.preprocessing_fn, cfg.hf_name, f"{where}.preprocessing_fn")
    for sub, key in sources(cfg):
        for loc, record in _raw_records(sub, where + key):
            yield loc, apply(fn, record, loc) if fn is not None and isinstance(record, dict) else record


def _raw_records(cfg: FinetuneDatasetConfig, where: str) -> Iterator[tuple[str, Any]]:
    kind, paths = resolve_source(cfg, where)
    if kind == "hf":
        from llmfoundry.data.hf_source import hf_rows

        yield from hf_rows(cfg.hf_name, cfg.split, cfg.hf_kwargs, f"{where}.hf_name")  # type: ignore[arg-type]
        return
    if kind == "mds":
        from streaming import LocalDataset

        from llmfoundry.data.integrity import verify_split

        verify_split(paths[0])
        dataset = LocalDataset(local=str(paths[0]))
        for i in range(len(dataset)):
            yield f"{paths[0]}: sample {i}", dataset[i]
        return
    yield from read_files(paths)


def _read_jsonl(path: Path, skipped: Counter[str] | None = None) -> Iterator[tuple[str, Any]]:
    """Records with their file:line; bad lines raise, or are counted in `skipped` when it is given."""
    with open(path, "rb") as f:
        for number, raw in enumerate(f, 1):
            where = f"{path}:{number}"
            try:
                line = raw.decode("utf-8")
                if not line.strip():
                    continue
                yield where, json.loads(line)
            except UnicodeDecodeError as err:
                if skipped is None:
                    raise UserError(f"{where}: invalid UTF-8 ({err.reason} at byte {err.start})") from None
                skipped["invalid_utf8"] += 1
            except json.JSONDecodeError as err:
                if skipped is None:
                    raise UserError(f"{where}: malformed JSON ({err.msg} at column {err.colno})") from None
                skipped["malformed_json"] += 1


def _read_parquet(path: Path) -> Iterator[tuple[str, Any]]:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except Exception as err:  # pyarrow raises several types for a damaged file
        raise UserError(f"{path}: not a readable parquet file ({err})") from None
    for i, record in enumerate(table.to_pylist(), 1):
        yield f"{path}: row {i}", record


def read_files(paths: list[Path], skipped: Counter[str] | None = None) -> Iterator[tuple[str, Any]]:
    for path in paths:
        _check_type(path, "input")
        yield from (_read_parquet(path) if path.suffix == ".parquet" else _read_jsonl(path, skipped))


# -- rendering --------------------------------------------------------------------------------------------

def normalize(record: Any, where: str) -> dict[str, Any]:
    """A validated example: {"prompt", "response"} strings, or {"messages": [{"role", "content"}, ...]}."""
    if not isinstance(record, dict):
        raise UserError(f"{where}: expected an object with prompt/response or messages, got {type(record).__name__}")
    if "messages" in record:
        messages = record["messages"]
        if isinstance(messages, str):  # parquet may hold the conversation as JSON text
            try:
                messages = json.loads(messages)
            except json.JSONDecodeError as err:
                raise UserError(f"{where}: messages is a string that is not JSON ({err.msg})") from None
        if not isinstance(messages, list) or not messages:
            raise UserError(f"{where}: messages must be a non-empty list of {{role, content}}")
        for i, m in enumerate(messages):
            if not isinstance(m, dict) or m.get("role") not in ROLES or not isinstance(m.get("content"), str):
                raise UserError(f"{where}: messages[{i}] must be {{\"role\": {'|'.join(ROLES)}, \"content\": "
                                f"string}}, got {json.dumps(m)[:120]}")
        if messages[-1]["role"] != "assistant":
            raise UserError(f"{where}: the last message must be the assistant's (it is what the model learns to say)")
        return {"messages": [{"role": m["role"], "content": m["content"]} for m in messages]}
    missing = [k for k in ("prompt", "response") if k not in record]
    if missing:
        raise UserError(f"{where}: missing {' and '.join(repr(k) for k in missing)}: an example needs \"prompt\" and "
                        f"\"response\" strings, or \"messages\" (a list of {{role, content}}); found keys "
                        f"{sorted(record) or 'none'}")
    for key in ("prompt", "response"):
        if not isinstance(record[key], str):
            raise UserError(f"{where}: {key} is {type(record[key]).__name__}, expected a string")
    return {"prompt": record["prompt"], "response": record["response"]}


def segments_of(record: Any, where: str, render: Callable[[list[dict[str, str]], bool], str]) -> tuple[list[str], list[bool], bool]:
    """The example as text pieces, which pieces are responses, and whether it is a prompt/response pair."""
    example = normalize(record, where)
    if "messages" in example:
        texts, flags = _chat_segments(example["messages"], where, render)
        return texts, flags, False
    return [example["prompt"], example["response"]], [False, True], True


def _chat_segments(clean: list[dict[str, str]], where: str,
                   render: Callable[[list[dict[str, str]], bool], str]) -> tuple[list[str], list[bool]]:
    texts: list[str] = []
    flags: list[bool] = []
    done = ""
    for j, m in enumerate(clean):
        if m["role"] != "assistant":
            continue
        prefix, full = render(clean[:j], True), render(clean[: j + 1], False)
        if not prefix.startswith(done) or not full.startswith(prefix):
            raise UserError(f"{where}: the chat template does not render turns incrementally (each turn must extend "
                            "the text before it), so responses cannot be located; set dataset.chat_template")
        texts += [prefix[len(done):], full[len(prefix):]]
        flags += [False, True]
        done = full
    return texts, flags


def chat_renderer(tokenizer: Any, template: str | None) -> Callable[[list[dict[str, str]], bool], str]:
    chosen = template or getattr(tokenizer, "chat_template", None) or CHATML

    def render(messages: list[dict[str, str]], generation_prompt: bool) -> str:
        try:
            return tokenizer.apply_chat_template(messages, chat_template=chosen, tokenize=False,
                                                 add_generation_prompt=generation_prompt)
        except Exception as err:  # jinja raises TemplateError, or whatever the template itself raises
            raise UserError(f"chat_template: rendering failed ({type(err).__name__}: {err})") from None

    return render


# -- encoding ---------------------------------------------------------------------------------------------

@dataclass
class FinetuneReport:
    """What became of the examples: reported when training starts and returned to callers."""

    source: str
    examples: int = 0
    truncated: int = 0
    skipped_too_long: int = 0
    skipped_no_target: int = 0
    rows: int = 0
    tokens: int = 0
    target_tokens: int = 0
    max_examples_per_row: int = 1
    max_seq_len: int = 0

    @property
    def used(self) -> int:
        return self.examples - self.skipped_too_long - self.skipped_no_target

    def describe(self) -> str:
        parts = [f"{self.source}: {self.examples:,} examples -> {self.rows:,} rows of <= {self.max_seq_len} tokens",
                 f"{self.tokens:,} tokens ({self.target_tokens:,} trained on)"]
        if self.max_examples_per_row > 1:
            fill = self.tokens / max(self.rows * self.max_seq_len, 1)
            parts.append(f"packed {self.used / max(self.rows, 1):.2f} examples/row (at most "
                         f"{self.max_examples_per_row}), rows {fill:.0%} full")
        parts.append(f"{self.truncated:,} truncated from the left" if self.truncated else "none truncated")
        if self.skipped_too_long:
            parts.append(f"{self.skipped_too_long:,} skipped as longer than max_seq_len")
        if self.skipped_no_target:
            parts.append(f"{self.skipped_no_target:,} skipped with no response token left to train on")
        return "; ".join(parts)


@dataclass
class Encoded:
    ids: np.ndarray  # int32 token ids
    target: np.ndarray  # bool: this token is to be predicted (from the tokens before it)


def encode_examples(records: Iterator[tuple[str, Any]], tokenizer: Any, cfg: FinetuneDatasetConfig,
                    report: FinetuneReport) -> list[Encoded]:
    """Tokenize, flag targets, and truncate or skip long examples (counted in `report`)."""
    render = chat_renderer(tokenizer, cfg.chat_template)
    eos = cfg.eos_token_id if cfg.eos_token_id is not None else tokenizer.eos_token_id
    if eos is None:
        raise UserError("tokenizer: has no eos token, which ends each response (set the dataset's eos_token_id)")
    bos = tokenizer.bos_token_id if tokenizer.bos_token_id not in (None, tokenizer.eos_token_id) else None
    out: list[Encoded] = []
    pending: list[tuple[list[str], list[bool], bool]] = []

    def flush() -> None:
        texts = [t for seg in pending for t in seg[0]]
        ids = iter(tokenizer(texts, add_special_tokens=False)["input_ids"]) if texts else iter(())
        for pieces, flags, pair in pending:
            report.examples += 1
            encoded = _assemble([next(ids) for _ in pieces], flags, pair, cfg, bos, eos)
            encoded = _fit(encoded, cfg, report)
            if encoded is not None:
                out.append(encoded)
        pending.clear()

    for where, record in records:
        pending.append(segments_of(record, where, render))
        if len(pending) >= _TOKENIZE_BATCH:
            flush()
    flush()
    return out


def _assemble(pieces: list[list[int]], flags: list[bool], pair: bool, cfg: FinetuneDatasetConfig,
              bos: int | None, eos: int) -> Encoded:
    if pair:  # prompt/response: bos (when distinct) + prompt + response + eos; the eos is the response's
        pieces = [([bos] if bos is not None else []) + pieces[0], pieces[1] + [eos]]
    responses = [i for i, f in enumerate(flags) if f]
    trained = set(responses if cfg.target_responses == "all" else responses[-1:])
    if cfg.target_prompts == "all":
        trained |= {i for i, f in enumerate(flags) if not f}
    ids = np.fromiter((t for p in pieces for t in p), dtype=np.int32)
    target = np.concatenate([np.full(len(p), i in trained, dtype=bool) for i, p in enumerate(pieces)]) \
        if pieces else np.zeros(0, bool)
    return Encoded(ids, target)


def _fit(e: Encoded, cfg: FinetuneDatasetConfig, report: FinetuneReport) -> Encoded | None:
    if len(e.ids) > cfg.max_seq_len:
        if cfg.truncation == "skip":
            report.skipped_too_long += 1
            return None
        report.truncated += 1
        e = Encoded(e.ids[-cfg.max_seq_len:], e.target[-cfg.max_seq_len:])
    if not e.target[1:].any():  # the first token of a row has nothing before it to be predicted from
        report.skipped_no_target += 1
        return None
    return e


# -- rows -------------------------------------------------------------------------------------------------

def examples_per_row(cfg: FinetuneDatasetConfig, lengths: np.ndarray) -> int:
    """The packing cap: packing_ratio rounded down, or for `auto` max_seq_len / mean length."""
    ratio = cfg.packing_ratio
    if ratio is None:
        return 1
    if ratio == "auto":
        return max(1, int(cfg.max_seq_len // max(float(lengths.mean()), 1.0))) if len(lengths) else 1
    if ratio < 1:
        raise UserError(f"packing_ratio: must be at least 1 (1 = no packing) or 'auto', got {ratio}")
    return int(math.floor(ratio))


def pack(lengths: np.ndarray, capacity: int, cap: int) -> list[list[int]]:
    """Best-fit decreasing: each example (longest first) goes to the open row it fills most tightly."""
    rows: list[list[int]] = []
    open_rows: list[tuple[int, int]] = []  # (free tokens, row index), sorted
    for i in np.argsort(-lengths, kind="stable"):
        need = int(lengths[i])
        k = bisect.bisect_left(open_rows, (need, -1))
        if k < len(open_rows):
            free, r = open_rows.pop(k)
        else:
            free, r = capacity, len(rows)
            rows.append([])
        rows[r].append(int(i))
        free -= need
        if len(rows[r]) < cap and free > 0:
            bisect.insort(open_rows, (free, r))
    return rows


def make_rows(examples: list[Encoded], cfg: FinetuneDatasetConfig, report: FinetuneReport) -> list[dict[str, Any]]:
    lengths = np.array([len(e.ids) for e in examples], dtype=np.int64)
    cap = examples_per_row(cfg, lengths)
    groups = pack(lengths, cfg.max_seq_len, cap) if cap > 1 else [[i] for i in range(len(examples))]
    rows = []
    for group in groups:
        parts = [examples[i] for i in group]
        rows.append({
            "input_ids": np.concatenate([p.ids for p in parts]),
            "target": np.concatenate([p.target for p in parts]),
            "sequence_id": np.concatenate([np.full(len(p.ids), s, np.int32) for s, p in enumerate(parts)]),
        })
    report.rows, report.max_examples_per_row = len(rows), cap
    report.tokens = int(lengths.sum())
    report.target_tokens = int(sum(int(e.target[1:].sum()) for e in examples))
    return rows


class FinetuneCollator:
    """Rows -> padded batch with aligned labels (targets of the same example only) and sequence ids."""

    def __init__(self, pad_id: int, max_seq_len: int, trim: bool) -> None:
        self.pad_id, self.max_seq_len, self.trim = pad_id, max_seq_len, trim

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        width = max(len(r["input_ids"]) for r in rows) if self.trim else self.max_seq_len
        ids = np.full((len(rows), width), self.pad_id, dtype=np.int64)
        target = np.zeros((len(rows), width), dtype=bool)
        seq = np.full((len(rows), width), -1, dtype=np.int64)
        for b, row in enumerate(rows):
            n = len(row["input_ids"])
            ids[b, :n], target[b, :n], seq[b, :n] = row["input_ids"], row["target"], row["sequence_id"]
        labels = np.full_like(ids, IGNORE)
        predict = target[:, 1:] & (seq[:, 1:] == seq[:, :-1])
        labels[:, :-1] = np.where(predict, ids[:, 1:], IGNORE)
        batch = {"input_ids": torch.from_numpy(ids), "labels": torch.from_numpy(labels),
                 "sequence_id": torch.from_numpy(seq)}
        keep = seq >= 0
        if not keep.all():
            batch["attention_mask"] = torch.from_numpy(keep)
        return batch


def build_finetune_rows(cfg: FinetuneDatasetConfig, tokenizer: Any, where: str) -> tuple[list[dict[str, Any]], FinetuneReport]:
    """Read, render, tokenize, truncate/skip and pack every example of the split."""
    if not cfg.decoder_only_format:
        raise UserError(f"{where}.decoder_only_format: only decoder-only models are supported (set it to true)")
    if cfg.max_seq_len < 2:
        raise UserError(f"{where}.max_seq_len: must be at least 2, got {cfg.max_seq_len}")
    kind, paths = resolve_source(cfg, where)
    source = cfg.hf_name if kind == "hf" else str(paths[0]) if len(paths) == 1 else f"{len(paths)} files"
    if cfg.streams:
        source = f"{len(cfg.streams)} streams"
    report = FinetuneReport(source=str(source), max_seq_len=cfg.max_seq_len)
    examples = encode_examples(read_records(cfg, where), tokenizer, cfg, report)
    if not examples:
        raise UserError(f"{where}: no usable examples in {report.source} ({report.describe()})")
    return make_rows(examples, cfg, report), report


def build_finetune_dataset(cfg: FinetuneDatasetConfig, tokenizer: Any, *, where: str, rank: int = 0,
                           world_size: int = 1, batch_size: int = 1) -> tuple[RowDataset, FinetuneCollator, FinetuneReport]:
    """The dataset (resumable, rank-split) and collator the trainer iterates, plus the data report."""
    rows, report = build_finetune_rows(cfg, tokenizer, where)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    dataset = RowDataset(rows, shuffle=cfg.shuffle, seed=cfg.shuffle_seed, rank=rank, world_size=world_size,
                         batch_size=batch_size)
    return dataset, FinetuneCollator(pad, cfg.max_seq_len, cfg.allow_pad_trimming), report
