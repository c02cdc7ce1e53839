"""`hf_name` read by the real `datasets` library (offline) gives the rows our own jsonl reader gives."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llmfoundry.config import build
from llmfoundry.config.schema import FinetuneDatasetConfig
from llmfoundry.data.finetune import build_finetune_rows, read_records
from llmfoundry.data.preprocessors import DOLLY_PROMPT
from llmfoundry.errors import UserError

ROWS = [{"prompt": f"What is {i} + {i}?", "response": f" {2 * i}"} for i in range(10)]


@pytest.fixture(scope="module")
def tok(gpt2_tokenizer_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(gpt2_tokenizer_dir)


@pytest.fixture
def data_dir(tmp_path) -> Path:
    out = tmp_path / "ds"
    out.mkdir()
    for split, rows in (("train", ROWS), ("test", ROWS[:4])):
        (out / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return out


def cfg(**kw) -> FinetuneDatasetConfig:
    return build(FinetuneDatasetConfig, {"shuffle": False, "max_seq_len": 64, **kw})


def ids(rows):
    return [r["input_ids"].tolist() if hasattr(r["input_ids"], "tolist") else list(r["input_ids"]) for r in rows]


def test_every_hf_name_form_gives_our_readers_rows(data_dir, tok, tmp_path):
    import datasets

    reference, _ = build_finetune_rows(cfg(local=str(data_dir)), tok, "d")
    disk_dict, disk_one = tmp_path / "dict", tmp_path / "one"
    datasets.DatasetDict({"train": datasets.Dataset.from_list(ROWS)}).save_to_disk(str(disk_dict))
    datasets.Dataset.from_list(ROWS).save_to_disk(str(disk_one))
    forms = [
        {"hf_name": str(data_dir)},  # a local dataset directory (datasets infers json and the splits)
        {"hf_name": "json", "hf_kwargs": {"data_files": {"train": str(data_dir / "train.jsonl")}}},
        {"hf_name": "json", "hf_kwargs": {"data_dir": str(data_dir)}},
        {"hf_name": str(disk_dict)},  # DatasetDict.save_to_disk
        {"hf_name": str(disk_one)},  # Dataset.save_to_disk
    ]
    for form in forms:
        rows, report = build_finetune_rows(cfg(**form), tok, "d")
        assert ids(rows) == ids(reference), form
        assert report.examples == len(ROWS)
    test_rows, _ = build_finetune_rows(cfg(hf_name=str(data_dir), split="test"), tok, "d")
    assert len(test_rows) == 4


def test_hub_names_and_missing_splits_are_one_line_errors(data_dir, tok):
    with pytest.raises(UserError, match="hub datasets are not downloaded"):
        build_finetune_rows(cfg(hf_name="mosaicml/dolly_hhrlhf"), tok, "train_loader.dataset")
    with pytest.raises(UserError, match="split 'validation'"):
        build_finetune_rows(cfg(hf_name=str(data_dir), split="validation"), tok, "train_loader.dataset")


def test_preprocessors_registered_by_name_by_path_and_by_mapping(tmp_path):
    dolly = tmp_path / "dolly"
    dolly.mkdir()
    rows = [{"instruction": "Add 2 and 2.", "input": "", "output": "4"},
            {"instruction": "Name it.", "input": "A red fruit.", "output": "Apple"}]
    (dolly / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    got = [r for _, r in read_records(cfg(hf_name=str(dolly), preprocessing_fn="HuggingFaceH4/databricks_dolly_15k"),
                                      "d")]
    assert got[0] == {"prompt": DOLLY_PROMPT.format(instruction="Add 2 and 2."), "response": "4"}
    assert got[1]["prompt"].endswith("### Instruction:\nName it.\nA red fruit.\n\n### Response:\n")
    mapped = [r for _, r in read_records(cfg(hf_name=str(dolly), preprocessing_fn={"prompt": "instruction",
                                                                                  "response": "output"}), "d")]
    assert mapped[1] == {"prompt": "Name it.", "response": "Apple"}
    by_path = [r for _, r in read_records(cfg(local=str(dolly), preprocessing_fn="tests.unit.test_finetune_hf:swap"),
                                          "d")]
    assert by_path[0] == {"prompt": "4", "response": "Add 2 and 2."}
    with pytest.raises(UserError, match="neither a registered preprocessor"):
        list(read_records(cfg(local=str(dolly), preprocessing_fn="no_colon"), "d"))
    with pytest.raises(UserError, match=r"preprocessing_fn .* failed on this row \(KeyError"):
        list(read_records(cfg(local=str(dolly), preprocessing_fn="bigscience/P3"), "d"))


def swap(row):
    return {"prompt": row["output"], "response": row["instruction"]}


def test_streams_are_read_one_after_another(data_dir, tok, tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    (other / "train.jsonl").write_text(json.dumps({"prompt": "Hi", "response": " there"}) + "\n")
    streams = {"a": {"local": str(data_dir)}, "b": {"local": str(other)}}
    got = [r for _, r in read_records(cfg(streams=streams), "d")]
    assert got == [*ROWS, {"prompt": "Hi", "response": " there"}]
    with pytest.raises(UserError, match="finetuning streams are read whole"):
        cfg(streams={"a": {"local": str(data_dir), "proportion": 0.5}})


def test_eos_token_id_ends_each_response(data_dir, tok):
    rows, _ = build_finetune_rows(cfg(local=str(data_dir), eos_token_id=0), tok, "d")
    default, _ = build_finetune_rows(cfg(local=str(data_dir)), tok, "d")
    for row, base in zip(ids(rows), ids(default)):
        assert row[-1] == 0 and base[-1] == tok.eos_token_id and row[:-1] == base[:-1]
