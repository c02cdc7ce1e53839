"""convert-dataset --kind finetuning: MDS that trains exactly like its jsonl, bad records counted or fatal."""

from __future__ import annotations

import json

import pytest

from llmfoundry.config.schema import FinetuneDatasetConfig
from llmfoundry.data.convert_finetune import convert_finetuning
from llmfoundry.data.finetune import build_finetune_rows
from llmfoundry.errors import UserError

CHATS = [{"messages": [{"role": "user", "content": f"Question {i}?"}, {"role": "assistant", "content": f"Answer {i}."}]}
         for i in range(6)]


@pytest.fixture(scope="module")
def tok(gpt2_tokenizer_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(gpt2_tokenizer_dir)


def rows_of(cfg, tok):
    rows, _ = build_finetune_rows(cfg, tok, "w")
    return sorted((r["input_ids"].tolist(), r["target"].tolist()) for r in rows)


@pytest.mark.parametrize("records", [CHATS, [{"prompt": f"p{i}", "response": f" r{i}"} for i in range(6)]])
def test_mds_trains_like_the_jsonl(tmp_path, tok, records):
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in records))
    summary = convert_finetuning([str(src)], str(tmp_path / "mds"), val_fraction=0.4)
    counts = {k: v.documents for k, v in summary.splits.items()}
    assert sum(counts.values()) == 6 and counts["val"] > 0
    from_mds = [row for split in ("train", "val")
                for row in rows_of(FinetuneDatasetConfig(local=str(tmp_path / "mds"), split=split), tok)]
    assert sorted(from_mds) == rows_of(FinetuneDatasetConfig(local=str(src)), tok)
    assert json.loads((tmp_path / "mds" / "conversion.json").read_text())["mode"] == "finetuning"


def test_bad_records_counted_or_fatal(tmp_path):
    src = tmp_path / "in.jsonl"
    src.write_text(json.dumps(CHATS[0]) + "\n{broken\n" + json.dumps({"prompt": "x"}) + "\n")
    summary = convert_finetuning([str(src)], str(tmp_path / "out"))
    assert summary.skipped == {"malformed_json": 1, "invalid_example": 1}
    with pytest.raises(UserError, match=r"in.jsonl:2: malformed JSON"):
        convert_finetuning([str(src)], str(tmp_path / "strict"), strict=True)
    assert not (tmp_path / "strict").exists()  # nothing half-written
    src.write_text(json.dumps(CHATS[0]) + "\n" + json.dumps({"prompt": "x", "response": "y"}) + "\n")
    with pytest.raises(UserError, match=r"in.jsonl:2: a pair example in a dataset of chat examples"):
        convert_finetuning([str(src)], str(tmp_path / "mixed"))
