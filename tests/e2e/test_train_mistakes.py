"""Mistakes that used to cost a whole run are refused before step 1, with one line."""

from __future__ import annotations

import pytest

from llmfoundry.data.convert import convert_dataset
from tests.conftest import REPO, run_cli, toy_corpus

TINY = REPO / "yamls" / "pretrain" / "tiny-cpu.yaml"


@pytest.fixture(scope="module")
def no_val(tmp_path_factory):
    """Data converted with convert-dataset's default --val-fraction 0: an empty val split."""
    root = tmp_path_factory.mktemp("noval")
    corpus, tok = toy_corpus(root)
    convert_dataset([str(corpus)], str(root / "data"), tokenizer=str(tok), max_seq_len=32, progress=False)
    return root, tok


def train(root, tok, *overrides: str):
    return run_cli("train", str(TINY), f"variables.data_local={root / 'data'}", f"variables.tokenizer={tok}",
                   "variables.max_seq_len=32", "model.vocab_size=512", "global_train_batch_size=4",
                   "device_train_microbatch_size=4", f"save_folder={root / 'run'}", *overrides)


@pytest.mark.slow
def test_no_validation_split_with_evaluation_is_refused_before_training(no_val):
    root, tok = no_val
    result = train(root, tok, "eval_interval=2ba", "max_duration=4ba")
    assert result.returncode == 1
    assert result.stderr == (f"error: eval_loader.dataset: {root / 'data' / 'val'} holds no samples; convert the "
                             "data again with --val-fraction (e.g. 0.02: `foundry convert-dataset` writes no "
                             "validation samples by default), or train without evaluation: eval_interval=0\n")
    assert not (root / "run").exists()  # refused before the run folder, the model or the data were built


@pytest.mark.slow
def test_data_of_another_tokenizer_is_refused_before_training(no_val, gpt2_tokenizer_dir):
    root, tok = no_val
    result = train(root, gpt2_tokenizer_dir, "eval_interval=0", "max_duration=4ba", "model.vocab_size=50304")
    assert result.returncode == 1, result.stderr[-2000:]
    assert result.stderr.count("\n") == 1 and result.stderr.startswith(
        f"error: train_loader.dataset: {root / 'data'} was converted with the tokenizer {tok} (")
    assert not (root / "run" / "metrics.jsonl").exists()


def test_an_empty_split_nobody_reads_is_fine(no_val):
    from llmfoundry.config.schema import DatasetConfig
    from llmfoundry.data.text import check_dataset
    from llmfoundry.errors import UserError

    root, _ = no_val
    val = DatasetConfig(local=str(root / "data"), split="val")
    check_dataset(val, "eval_loader.dataset", used=False)
    with pytest.raises(UserError, match="holds no samples"):
        check_dataset(val, "eval_loader.dataset")
    check_dataset(DatasetConfig(local=str(root / "data"), split="train"), "train_loader.dataset")
