"""Tokenizer training: each kind loads offline with AutoTokenizer, with its special tokens set."""

from __future__ import annotations

import pytest
from transformers import AutoTokenizer

from llmfoundry.data.tokenizer import load_tokenizer, train_tokenizer
from llmfoundry.errors import UserError

TEXT = [
    "Aspirin reduces the risk of myocardial infarction in adults.",
    "The patient presented with acute myocardial infarction and hypertension.",
    "Metformin is a first-line therapy for type 2 diabetes mellitus.",
] * 30


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    directory = tmp_path_factory.mktemp("corpus")
    (directory / "a.txt").write_text("\n\n".join(TEXT))
    return directory


@pytest.mark.parametrize(
    ("kind", "specials"),
    [
        ("bpe", {"eos_token": "<|endoftext|>", "bos_token": "<|endoftext|>", "pad_token": "<|padding|>"}),
        ("wordpiece", {"cls_token": "[CLS]", "sep_token": "[SEP]", "mask_token": "[MASK]", "pad_token": "[PAD]"}),
        ("unigram", {"eos_token": "</s>", "bos_token": "<s>", "pad_token": "<pad>"}),
    ],
)
def test_each_kind_round_trips_through_autotokenizer(tmp_path, corpus, kind, specials):
    out = tmp_path / kind
    result = train_tokenizer([str(corpus)], out, kind=kind, vocab_size=300, split_by="paragraph")
    assert result["documents"] == len(TEXT)
    tok = AutoTokenizer.from_pretrained(str(out), local_files_only=True)
    for name, value in specials.items():
        assert getattr(tok, name) == value
    text = "aspirin reduces myocardial infarction"
    ids = tok(text, add_special_tokens=False).input_ids
    assert tok.decode(ids).strip().lower() == text
    if kind == "wordpiece":
        with_specials = tok(text).input_ids
        assert with_specials[0] == tok.cls_token_id and with_specials[-1] == tok.sep_token_id
    if kind == "bpe":
        assert "myocardial" in tok.get_vocab() or "Ġmyocardial" in tok.get_vocab()  # domain words become tokens


def test_refuses_to_overwrite_and_rejects_bad_input(tmp_path, corpus):
    out = tmp_path / "tok"
    out.mkdir()
    (out / "x").write_text("keep")
    with pytest.raises(UserError, match="not empty"):
        train_tokenizer([str(corpus)], out, vocab_size=300)
    with pytest.raises(UserError, match="no such file"):
        train_tokenizer([str(tmp_path / "missing")], tmp_path / "t2", vocab_size=300)
    with pytest.raises(UserError, match="too small"):
        train_tokenizer([str(corpus)], tmp_path / "t3", vocab_size=10)
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    with pytest.raises(UserError, match="no documents to train on"):
        train_tokenizer([str(empty)], tmp_path / "t4", vocab_size=300)
    assert not (tmp_path / "t4").exists()


def test_load_tokenizer_errors(tmp_path):
    with pytest.raises(UserError, match="tokenizer directory does not exist"):
        load_tokenizer(tmp_path / "nope")
    (tmp_path / "junk").mkdir()
    with pytest.raises(UserError, match="not a loadable tokenizer directory"):
        load_tokenizer(tmp_path / "junk")


def test_a_vocabulary_smaller_than_asked_is_said(tmp_path, corpus):
    """PubMed GPT's --vocab-size 28896 on a small text silently gave 5,258 tokens: the result says so."""
    result = train_tokenizer([str(corpus)], tmp_path / "tok", kind="bpe", vocab_size=28896, split_by="paragraph")
    assert result["vocab_size"] < 28896 == result["requested_vocab_size"]
    (note,) = result["notes"]
    assert note.startswith(f"--vocab-size 28,896 asked for more tokens than this text gives: the trainer ran out "
                           f"of merges at {result['vocab_size']:,}")
    assert "lower --min-frequency" in note
    assert train_tokenizer([str(corpus)], tmp_path / "small", vocab_size=300, split_by="paragraph")["notes"] == []


def test_missing_text_field_suggests_text_field_with_the_keys_found(tmp_path):
    import json

    path = tmp_path / "notes.jsonl"
    path.write_text("".join(json.dumps({"id": i, "body": TEXT[i], "meta": {"title": "t"}}) + "\n" for i in range(20)))
    with pytest.raises(UserError, match=r"no documents to train on \(skipped: \{'missing_text_field': 20\}\); "
                                        r"20 records have no 'text' field: set --text-field to the key holding "
                                        r"the text \(string keys in notes.jsonl: body, meta.title\)"):
        train_tokenizer([str(path)], tmp_path / "tok", vocab_size=300)
    assert train_tokenizer([str(path)], tmp_path / "tok", vocab_size=300, text_field="body")["documents"] == 20
