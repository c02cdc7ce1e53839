"""Whether a run's tokenizer is the one its pre-tokenized data was made with.

`convert-dataset --mode concat` stores token ids, which mean something only under the tokenizer that
produced them; conversion.json records that tokenizer's path and a fingerprint of its vocabulary (size and
the sha256 of its tokens in id order). A run whose tokenizer has another vocabulary would train and
evaluate on the wrong text without a sign, so it is refused before training; a tokenizer that only adds
tokens after the data's (same tokens at every id the data can hold) is accepted with a note.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from llmfoundry.errors import UserError


def vocabulary(tokenizer: Any) -> list[str]:
    """The tokens in id order (added tokens included); ids nobody holds are empty strings."""
    vocab = tokenizer.get_vocab()
    tokens = [""] * (max(vocab.values()) + 1)
    for token, index in vocab.items():
        tokens[index] = token
    return tokens


def fingerprint(tokens: list[str]) -> dict[str, Any]:
    """What conversion.json records of a tokenizer's vocabulary."""
    return {"size": len(tokens), "sha256": hashlib.sha256(json.dumps(tokens).encode()).hexdigest()}


def check_tokenizer(data: str | None, tokenizer: Any, where: str) -> list[str]:
    """Raise if the concat-mode data at `data` was tokenized with another vocabulary than `tokenizer`'s;
    return a note when ours only extends it. Data without a conversion.json (remote, or made elsewhere)
    cannot be checked and passes."""
    summary = _conversion(data)
    if summary is None or summary.get("mode") != "concat" or not summary.get("tokenizer"):
        return []
    ours = vocabulary(tokenizer)
    recorded = summary.get("tokenizer_vocab")
    if recorded is not None and recorded == fingerprint(ours):
        return []
    theirs = _recorded_vocabulary(summary["tokenizer"])
    if theirs is None and recorded is None:
        return []  # converted before fingerprints were recorded, and its tokenizer is gone: nothing to compare
    if theirs == ours:
        return []
    size = len(theirs) if theirs is not None else recorded["size"]
    if theirs is not None and ours[:len(theirs)] == theirs:
        return [f"{where}: the tokenizer adds {len(ours) - len(theirs):,} tokens after the {len(theirs):,} of "
                f"{summary['tokenizer']}, which converted {data}; ids 0-{len(theirs) - 1} agree, training on it"]
    raise UserError(f"{where}: {data} was converted with the tokenizer {summary['tokenizer']} ({size:,} tokens), "
                    f"not this run's ({len(ours):,} tokens, another vocabulary): its token ids would mean other "
                    f"text; set tokenizer.name: {summary['tokenizer']} or convert the data again with this tokenizer")


def _conversion(data: str | None) -> dict[str, Any] | None:
    path = Path(data) / "conversion.json" if data and "://" not in data else None
    if path is None or not path.is_file():
        return None
    return json.loads(path.read_text())


def _recorded_vocabulary(path: str) -> list[str] | None:
    from llmfoundry.data.tokenizer import load_tokenizer

    if "://" in path or not Path(path).is_dir():
        return None
    try:
        return vocabulary(load_tokenizer(path))
    except UserError:
        return None
