"""Training and loading tokenizers, always as local Hugging Face tokenizer directories.

Domain vocabularies matter (PubMed GPT used its own 28896-token biomedical BPE), so `train_tokenizer` builds
one of three standard kinds from the user's own files, with the same readers as convert-dataset:
byte-level BPE (GPT/MPT), WordPiece (BERT) and unigram (SentencePiece-style). The result loads offline with
`transformers.AutoTokenizer.from_pretrained(DIR)` with its special tokens set.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from llmfoundry.data.sources import InputFormat, SplitBy, discover_inputs, read_documents, text_field_hint
from llmfoundry.errors import UserError
from llmfoundry.io import atomic_directory, check_disjoint

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

TokenizerKind = Literal["bpe", "wordpiece", "unigram"]


def load_tokenizer(path: str | Path, **kwargs: object) -> PreTrainedTokenizerBase:
    """Load a local tokenizer directory; a missing or broken one is a UserError, never a hub download."""
    from transformers import AutoTokenizer

    directory = Path(path)
    if not directory.is_dir():
        raise UserError(f"{path}: tokenizer directory does not exist (give a local Hugging Face tokenizer dir)")
    try:
        return AutoTokenizer.from_pretrained(str(directory), local_files_only=True, **kwargs)
    except (OSError, ValueError, TypeError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UserError(f"{path}: not a loadable tokenizer directory ({first})") from None


def _training_texts(docs: Iterator[str], limit: int | None) -> Iterator[str]:
    for count, doc in enumerate(docs):
        if limit is not None and count >= limit:
            return
        yield doc


def train_tokenizer(
    inputs: list[str],
    out: str | Path,
    *,
    kind: TokenizerKind = "bpe",
    vocab_size: int = 32000,
    min_frequency: int = 2,
    input_format: InputFormat = "auto",
    text_field: str = "text",
    split_by: SplitBy = "file",
    limit_docs: int | None = None,
    overwrite: bool = False,
) -> dict[str, object]:
    """Train a tokenizer of `kind` on `inputs` and save it as a Hugging Face directory at `out`."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    if vocab_size < 100:
        raise UserError(f"--vocab-size: {vocab_size} is too small (at least 100; byte-level BPE needs > 256)")
    paths = discover_inputs(inputs, input_format)
    check_disjoint(out, [*inputs, *paths])
    skipped: Counter[str] = Counter()
    documents = 0

    def texts() -> Iterator[str]:
        nonlocal documents
        docs = read_documents(paths, input_format=input_format, text_field=text_field, split_by=split_by, skipped=skipped)
        for doc in _training_texts(docs, limit_docs):
            documents += 1
            yield doc

    if kind == "bpe":
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        tok.post_processor = processors.ByteLevel(trim_offsets=False)
        special = {"eos_token": "<|endoftext|>", "bos_token": "<|endoftext|>", "unk_token": "<|endoftext|>",
                   "pad_token": "<|padding|>"}
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            min_frequency=min_frequency,
            special_tokens=["<|endoftext|>", "<|padding|>"],
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        )
    elif kind == "wordpiece":
        tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
        tok.normalizer = normalizers.BertNormalizer(lowercase=True)
        tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        tok.decoder = decoders.WordPiece(prefix="##")
        special = {"pad_token": "[PAD]", "unk_token": "[UNK]", "cls_token": "[CLS]", "sep_token": "[SEP]",
                   "mask_token": "[MASK]", "bos_token": "[CLS]", "eos_token": "[SEP]"}
        trainer = trainers.WordPieceTrainer(
            vocab_size=vocab_size,
            min_frequency=min_frequency,
            special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"],
            show_progress=False,
        )
    elif kind == "unigram":
        tok = Tokenizer(models.Unigram())
        tok.normalizer = normalizers.NFKC()
        tok.pre_tokenizer = pre_tokenizers.Metaspace()
        tok.decoder = decoders.Metaspace()
        special = {"pad_token": "<pad>", "eos_token": "</s>", "bos_token": "<s>", "unk_token": "<unk>"}
        trainer = trainers.UnigramTrainer(
            vocab_size=vocab_size,
            special_tokens=["<pad>", "</s>", "<s>", "<unk>"],
            unk_token="<unk>",
            show_progress=False,
        )
    else:
        raise UserError(f"--kind: got {kind!r}, expected bpe, wordpiece or unigram")

    tok.train_from_iterator(texts(), trainer=trainer)
    hint = text_field_hint(skipped, paths, text_field)
    if documents == 0:
        raise UserError(f"{', '.join(inputs)}: no documents to train on (skipped: {dict(skipped) or 'none'}){hint}")
    if kind == "wordpiece":
        cls_id, sep_id = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
        tok.post_processor = processors.TemplateProcessing(
            single="[CLS] $A [SEP]",
            pair="[CLS] $A [SEP] $B:1 [SEP]:1",
            special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)],
        )
    # Decoder tokenizers must not emit token_type_ids: causal LMs' generate() rejects them.
    inputs = ["input_ids", "token_type_ids", "attention_mask"] if kind == "wordpiece" else ["input_ids", "attention_mask"]
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, model_input_names=inputs, **special)
    with atomic_directory(out, overwrite=overwrite) as tmp:
        fast.save_pretrained(str(tmp))
    notes = [hint.removeprefix("; ")] if hint else []
    if tok.get_vocab_size() < vocab_size:
        notes.append(f"--vocab-size {vocab_size:,} asked for more tokens than this text gives: the trainer ran out "
                     f"of {'pieces' if kind == 'unigram' else 'merges'} at {tok.get_vocab_size():,} (every pair "
                     f"seen at least --min-frequency {min_frequency} times is merged); give it more text"
                     + (" or a lower --min-frequency" if kind != "unigram" and min_frequency > 1 else ""))
    return {"kind": kind, "vocab_size": tok.get_vocab_size(), "requested_vocab_size": vocab_size,
            "documents": documents, "skipped": dict(skipped), "notes": notes, "out": str(out)}

