"""Data made with one tokenizer, trained with another: refused before training (data/provenance.py)."""

from __future__ import annotations

import json
import shutil

import pytest

from llmfoundry.data.convert import convert_dataset
from llmfoundry.data.provenance import check_tokenizer
from llmfoundry.data.tokenizer import load_tokenizer
from llmfoundry.errors import UserError
from tests.conftest import toy_corpus


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    root = tmp_path_factory.mktemp("prov")
    corpus, tok = toy_corpus(root)
    convert_dataset([str(corpus)], str(root / "data"), tokenizer=str(tok), max_seq_len=32, progress=False)
    return root, tok


def test_the_same_tokenizer_passes_and_another_vocabulary_is_refused(converted, gpt2_tokenizer_dir):
    root, tok = converted
    data, size = str(root / "data"), len(load_tokenizer(tok).get_vocab())
    assert check_tokenizer(data, load_tokenizer(tok), "train_loader.dataset") == []
    shutil.copytree(tok, root / "moved")  # the same vocabulary anywhere else is the same tokenizer
    assert check_tokenizer(data, load_tokenizer(root / "moved"), "train_loader.dataset") == []
    with pytest.raises(UserError) as err:
        check_tokenizer(data, load_tokenizer(gpt2_tokenizer_dir), "train_loader.dataset")
    assert str(err.value) == (
        f"train_loader.dataset: {data} was converted with the tokenizer {tok} ({size} tokens), not this run's "
        "(50,257 tokens, another vocabulary): its token ids would mean other text; set tokenizer.name: "
        f"{tok} or convert the data again with this tokenizer")


def test_a_tokenizer_that_only_adds_tokens_is_accepted_with_a_note(converted, tmp_path):
    root, tok = converted
    extended = load_tokenizer(tok)
    extended.add_tokens(["<|gene|>", "<|drug|>"])
    extended.save_pretrained(tmp_path / "extended")
    size = len(load_tokenizer(tok).get_vocab())
    (note,) = check_tokenizer(str(root / "data"), load_tokenizer(tmp_path / "extended"), "train_loader.dataset")
    assert note == (f"train_loader.dataset: the tokenizer adds 2 tokens after the {size} of {tok}, which converted "
                    f"{root / 'data'}; ids 0-{size - 1} agree, training on it")


def test_refused_by_fingerprint_when_the_recorded_tokenizer_is_gone(converted, tmp_path, gpt2_tokenizer_dir):
    root, tok = converted
    data = tmp_path / "data"
    shutil.copytree(root / "data", data)
    summary = json.loads((data / "conversion.json").read_text())
    summary["tokenizer"] = str(tmp_path / "deleted-tokenizer")
    (data / "conversion.json").write_text(json.dumps(summary))
    assert check_tokenizer(str(data), load_tokenizer(tok), "x") == []  # the fingerprint still matches
    with pytest.raises(UserError, match=r"was converted with the tokenizer .*deleted-tokenizer \(\d+ tokens\)"):
        check_tokenizer(str(data), load_tokenizer(gpt2_tokenizer_dir), "x")


def test_text_mode_and_unrecorded_data_pass(tmp_path, gpt2_tokenizer_dir):
    from tests.unit.test_convert import make_corpus

    make_corpus(tmp_path / "in", n=5)
    convert_dataset([str(tmp_path / "in")], str(tmp_path / "text"), mode="text", progress=False)
    assert check_tokenizer(str(tmp_path / "text"), load_tokenizer(gpt2_tokenizer_dir), "x") == []
    assert check_tokenizer(str(tmp_path / "nothing-here"), load_tokenizer(gpt2_tokenizer_dir), "x") == []
    assert check_tokenizer("s3://bucket/data", load_tokenizer(gpt2_tokenizer_dir), "x") == []
