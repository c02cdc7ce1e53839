"""Held-out text scoring: bits per byte, perplexity and tokens per document of a causal LM at a window length.

`foundry eval-text MODEL_DIR INPUTS... --seq-len 128 --seq-len 1024` reads documents with the readers
`convert-dataset` uses, keeps the held-out ones (the same stable hash as its `--val-fraction` split, so they are
exactly the documents no run trained on), tokenizes each with the model's tokenizer and joins them as
`eos doc eos doc eos ...`. The stream is cut into consecutive windows of `seq_len + 1` tokens that overlap by
one, so every token but the first is predicted exactly once, from the tokens before it in its window (the
standard non-overlapping-window perplexity; a shorter last window keeps the tail).

Bits per byte = total nats / ln 2 / UTF-8 bytes of the documents. Unlike perplexity it does not depend on the
tokenizer: two models with different vocabularies are compared on the same bytes (the eos after each document
is scored too, the same events for every tokenizer). Perplexity is per token of this model's tokenizer.

Windows longer than the model was trained for are the point of an extrapolation test: an ALiBi MPT or a RoPE
Llama has no positional parameters, so its window limit is raised to fit; a model with learned positions
(GPT-2's `n_positions`, BERT-style `max_position_embeddings`) cannot go past them, and asking is a one-line
error naming the limit.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from llmfoundry.errors import UserError

# Window limits in a transformers config: (attribute, whether the model has parameters per position).
POSITION_LIMITS: dict[str, tuple[str, bool]] = {
    "mpt": ("max_seq_len", False),  # ALiBi: the bias is built for max_seq_len, no weights depend on it
    "llama": ("max_position_embeddings", False),  # RoPE: rotations computed for any position
    "gpt2": ("n_positions", True),  # a learned embedding row per position
}


@dataclass(frozen=True)
class HeldOutScore:
    seq_len: int
    """Window length in tokens (the context of the last prediction in a full window)."""
    documents: int
    """Held-out documents scored."""
    tokens: int
    """Tokens predicted (document tokens and one eos per document)."""
    bytes: int
    """UTF-8 bytes of the documents."""
    nats: float
    """Total cross-entropy, in nats, of every predicted token."""

    @property
    def bits_per_byte(self) -> float:
        return self.nats / math.log(2) / self.bytes

    @property
    def perplexity(self) -> float:
        return math.exp(self.nats / self.tokens)

    @property
    def tokens_per_document(self) -> float:
        return (self.tokens - self.documents) / self.documents

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "bits_per_byte": self.bits_per_byte, "perplexity": self.perplexity,
                "tokens_per_document": self.tokens_per_document}


def held_out_documents(inputs: list[str], *, input_format: str = "auto", val_fraction: float = 0.0,
                       max_docs: int | None = None) -> list[str]:
    """The documents of `inputs` in `convert-dataset`'s val split (all of them when val_fraction is 0)."""
    from llmfoundry.data.convert import split_of
    from llmfoundry.data.sources import discover_inputs, read_documents

    docs = []
    for doc in read_documents(discover_inputs(inputs, input_format), input_format=input_format):  # type: ignore[arg-type]
        if val_fraction <= 0 or split_of(doc, val_fraction) == 1:
            docs.append(doc)
            if max_docs is not None and len(docs) >= max_docs:
                break
    if not docs:
        raise UserError(f"{' '.join(inputs)}: no held-out documents (val_fraction {val_fraction})")
    return docs


def token_stream(tokenizer: Any, docs: Iterable[str]) -> list[int]:
    """eos doc eos doc eos ...: the first eos is the context of each document's first token."""
    eos = tokenizer.eos_token_id
    if eos is None:
        raise UserError(f"{tokenizer.name_or_path}: the tokenizer has no eos token to separate documents")
    stream = [eos]
    for ids in tokenizer(list(docs), add_special_tokens=False)["input_ids"]:
        stream += [*ids, eos]
    return stream


def window_limit(config: Any, seq_len: int, where: str) -> None:
    """Raise the config's window to `seq_len` where the model has no per-position weights; refuse otherwise."""
    attr, learned = POSITION_LIMITS.get(config.model_type, ("max_position_embeddings", True))
    limit = getattr(config, attr, None)
    if limit is None or seq_len <= limit:
        return
    if learned:
        raise UserError(f"{where}: a {config.model_type} model with learned positions ({attr}={limit}) cannot "
                        f"score {seq_len}-token windows; the longest it accepts is {limit}")
    setattr(config, attr, seq_len)


@torch.no_grad()
def score_stream(model: Any, stream: list[int], seq_len: int, batch_size: int, device: torch.device) -> tuple[int, float]:
    """(tokens predicted, total nats) over consecutive windows of seq_len + 1 tokens overlapping by one."""
    ids = torch.tensor(stream, dtype=torch.long)
    starts = list(range(0, len(stream) - 1, seq_len))
    full = [s for s in starts if s + seq_len + 1 <= len(stream)]
    tail = starts[len(full):]
    nats = torch.zeros((), dtype=torch.float64)
    for i in range(0, len(full), batch_size):
        batch = torch.stack([ids[s:s + seq_len + 1] for s in full[i:i + batch_size]]).to(device)
        nats += _nats(model, batch)
    for s in tail:
        nats += _nats(model, ids[s:].unsqueeze(0).to(device))
    return len(stream) - 1, float(nats)


def _nats(model: Any, window: torch.Tensor) -> torch.Tensor:
    logits = model(input_ids=window[:, :-1]).logits.float()
    return F.cross_entropy(logits.flatten(0, 1), window[:, 1:].flatten(), reduction="sum").double().cpu()


def load_causal_lm(model_dir: str, seq_len: int, device: torch.device) -> tuple[Any, Any]:
    """(model, tokenizer) from an exported Hugging Face directory, its window set for `seq_len` tokens."""
    from transformers import AutoConfig, AutoModelForCausalLM

    from llmfoundry.data.tokenizer import load_tokenizer

    path = Path(model_dir)
    if not (path / "config.json").is_file():
        raise UserError(f"{model_dir}: not a Hugging Face model directory (no config.json); export a run with "
                        "`foundry inference-convert RUN OUT`")
    config = AutoConfig.from_pretrained(str(path), local_files_only=True)
    window_limit(config, seq_len, model_dir)
    model = AutoModelForCausalLM.from_pretrained(str(path), config=config, local_files_only=True)
    return model.to(device).eval(), load_tokenizer(path)


def evaluate_text(model_dir: str, inputs: list[str], seq_lens: list[int], *, input_format: str = "auto",
                  val_fraction: float = 0.0, max_docs: int | None = None, batch_size: int = 8,
                  out: str | None = None) -> list[HeldOutScore]:
    """`foundry eval-text`: one score per window length; written as JSON to `out` (atomically) when given."""
    from llmfoundry.io import write_atomic

    for n in seq_lens:
        if n < 1:
            raise UserError(f"--seq-len: expected a positive number of tokens, got {n}")
    docs = held_out_documents(inputs, input_format=input_format, val_fraction=val_fraction, max_docs=max_docs)
    n_bytes = sum(len(d.encode("utf-8")) for d in docs)
    device = torch.device("cpu")
    scores = []
    for seq_len in seq_lens:
        model, tokenizer = load_causal_lm(model_dir, seq_len, device)
        tokens, nats = score_stream(model, token_stream(tokenizer, docs), seq_len, batch_size, device)
        scores.append(HeldOutScore(seq_len, len(docs), tokens, n_bytes, nats))
    if out is not None:
        record = {"model": model_dir, "inputs": inputs, "val_fraction": val_fraction,
                  "scores": [s.to_json() for s in scores]}
        write_atomic(Path(out), json.dumps(record, indent=2) + "\n")
    return scores
