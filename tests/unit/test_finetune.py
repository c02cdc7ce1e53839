"""Finetuning data: loss masks exactly on responses, packing that does not change the loss, counted truncation."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from llmfoundry.config.schema import FinetuneDatasetConfig
from llmfoundry.data.finetune import CHATML, build_finetune_dataset, pack
from llmfoundry.data.rows import RowDataset
from llmfoundry.errors import UserError

CHAT = {"messages": [
    {"role": "system", "content": "Answer in one word."},
    {"role": "user", "content": "Capital of France?"},
    {"role": "assistant", "content": "Paris"},
    {"role": "user", "content": "And of Italy?"},
    {"role": "assistant", "content": "Rome"},
]}


@pytest.fixture(scope="module")
def tok(gpt2_tokenizer_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(gpt2_tokenizer_dir)


def write_jsonl(path: Path, records: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records))
    return path


def batch_of(tmp_path, tok, records, **kw):
    cfg = FinetuneDatasetConfig(local=str(write_jsonl(tmp_path / "d.jsonl", records)), shuffle=False,
                                **{"max_seq_len": 256, **kw})
    ds, collate, report = build_finetune_dataset(cfg, tok, where="train_loader.dataset")
    return collate(list(ds)), report


def enc(tok, text):
    return tok(text, add_special_tokens=False)["input_ids"]


def labelled(batch, row=0):
    labels = batch["labels"][row]
    where = (labels != -100).nonzero().squeeze(1).tolist()
    return where, labels[where].tolist()


def test_prompt_response_loss_only_on_response_and_eos(tmp_path, tok):
    prompt, response = "Translate: chat ->", " cat"
    batch, _ = batch_of(tmp_path, tok, [{"prompt": prompt, "response": response}])
    p, r = enc(tok, prompt), enc(tok, response)
    ids = batch["input_ids"][0, : len(p) + len(r) + 1].tolist()
    assert ids == p + r + [tok.eos_token_id]
    where, targets = labelled(batch)
    # labels are aligned: position t predicts token t+1, so the response is predicted from the prompt's last token
    assert where == list(range(len(p) - 1, len(p) + len(r)))
    assert targets == r + [tok.eos_token_id]
    assert batch["attention_mask"][0].sum() == len(p) + len(r) + 1


def test_target_prompts_all_trains_on_every_token(tmp_path, tok):
    batch, _ = batch_of(tmp_path, tok, [{"prompt": "a b c", "response": " d"}], target_prompts="all")
    n = int(batch["attention_mask"][0].sum())
    where, targets = labelled(batch)
    assert where == list(range(n - 1))
    assert targets == batch["input_ids"][0, 1:n].tolist()


def chatml(messages, generation=False):
    text = "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages)
    return text + ("<|im_start|>assistant\n" if generation else "")


def test_chat_several_turns_last_vs_all(tmp_path, tok):
    m = CHAT["messages"]
    # the pieces as a reader of ChatML would cut them by hand
    pieces = [chatml(m[:2], True), "Paris<|im_end|>\n", chatml(m[:4], True)[len(chatml(m[:3])):], "Rome<|im_end|>\n"]
    ids = [enc(tok, p) for p in pieces]
    starts = np.cumsum([0] + [len(x) for x in ids])
    for mode, trained in (("last", [3]), ("all", [1, 3])):
        batch, _ = batch_of(tmp_path, tok, [CHAT], target_responses=mode)
        assert batch["input_ids"][0, : starts[-1]].tolist() == sum(ids, [])
        where, targets = labelled(batch)
        expect_where = [t - 1 for i in trained for t in range(starts[i], starts[i + 1])]
        assert where == expect_where
        assert tok.decode(targets) == "".join(pieces[i] for i in trained)


def test_chat_template_override_and_tokenizer_template(tmp_path, tok):
    template = "{% for m in messages %}[{{ m['role'] }}] {{ m['content'] }}\n{% endfor %}" \
               "{% if add_generation_prompt %}[assistant] {% endif %}"
    batch, _ = batch_of(tmp_path, tok, [{"messages": CHAT["messages"][1:3]}], chat_template=template)
    _, targets = labelled(batch)
    assert tok.decode(targets) == "Paris\n"
    assert CHATML.startswith("{% for message in messages %}")


def test_truncation_left_keeps_response_and_counts(tmp_path, tok):
    long_prompt = "word " * 40
    records = [{"prompt": long_prompt, "response": " yes"}, {"prompt": "short", "response": " no"}]
    batch, report = batch_of(tmp_path, tok, records, max_seq_len=16)
    assert (report.examples, report.truncated, report.skipped_too_long) == (2, 1, 0)
    r = enc(tok, " yes") + [tok.eos_token_id]
    assert batch["input_ids"][0, -len(r):].tolist() == r
    assert labelled(batch)[1] == r
    assert "1 truncated from the left" in report.describe()


def test_truncation_skip_counts(tmp_path, tok):
    records = [{"prompt": "word " * 40, "response": " yes"}, {"prompt": "short", "response": " no"}]
    batch, report = batch_of(tmp_path, tok, records, max_seq_len=16, truncation="skip")
    assert (report.examples, report.truncated, report.skipped_too_long, report.rows) == (2, 0, 1, 1)
    assert "1 skipped as longer than max_seq_len" in report.describe()
    assert batch["input_ids"].shape == (1, 16)


def test_pack_best_fit_places_every_example_once():
    rng = np.random.default_rng(0)
    lengths = rng.integers(3, 60, size=300)
    rows = pack(lengths, 64, cap=4)
    flat = sorted(i for row in rows for i in row)
    assert flat == list(range(300))
    assert all(sum(lengths[i] for i in row) <= 64 and len(row) <= 4 for row in rows)
    assert len(rows) < 300 * 0.6  # it actually packs


def tiny_mpt(vocab: int, seq_id: bool = True):
    from llmfoundry.config import build
    from llmfoundry.models import ModelConfig, build_model

    args = build(ModelConfig, {"name": "mpt", "preset": "mpt-tiny", "d_model": 64, "vocab_size": vocab,
                               "attn_config": {"attn_uses_sequence_id": seq_id, "attn_impl": "torch"}})
    torch.manual_seed(0)
    model = build_model(args)
    model.init_weights()
    return model.eval()


def test_packed_rows_give_the_same_loss_as_unpacked(tmp_path, tok):
    rng = np.random.default_rng(1)
    records = [{"prompt": " ".join(["token"] * int(rng.integers(1, 12))) + f" {i}?",
                "response": " " + " ".join(["answer"] * int(rng.integers(1, 6)))} for i in range(12)]
    records.append(CHAT)
    plain, r1 = batch_of(tmp_path, tok, records, max_seq_len=96, target_responses="all", target_prompts="all")
    packed, r2 = batch_of(tmp_path, tok, records, max_seq_len=96, target_responses="all", target_prompts="all",
                          packing_ratio=6)
    assert r2.rows < r1.rows == 13 and r2.max_examples_per_row == 6
    assert int((plain["labels"] != -100).sum()) == int((packed["labels"] != -100).sum())
    model = tiny_mpt(len(tok))
    with torch.no_grad():
        a, b = model(**plain), model(**packed)
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-4)
    # without sequence ids the packed examples would see each other: a different loss
    leaky = dict(packed)
    del leaky["sequence_id"]
    with torch.no_grad():
        c = tiny_mpt(len(tok), seq_id=False)(**leaky)
    assert abs(float(c) - float(a)) > 1e-3


def test_packing_auto_uses_length_distribution(tmp_path, tok):
    records = [{"prompt": "q", "response": " a"}] * 30
    _, report = batch_of(tmp_path, tok, records, max_seq_len=40, packing_ratio="auto")
    length = len(enc(tok, "q") + enc(tok, " a")) + 1  # + eos
    assert report.max_examples_per_row == 40 // length
    assert report.rows == -(-30 // (40 // length))


def test_rows_split_across_ranks_cover_each_global_batch_and_resume():
    rows = [{"i": i} for i in range(12)]
    full = RowDataset(rows, shuffle=True, seed=3)
    order = [r["i"] for r in full]
    parts = [[r["i"] for r in RowDataset(rows, shuffle=True, seed=3, rank=k, world_size=2)] for k in range(2)]
    for step in range(3):  # global batch 4 = 2 per rank
        assert sorted(parts[0][2 * step : 2 * step + 2] + parts[1][2 * step : 2 * step + 2]) == sorted(order[4 * step : 4 * step + 4])
    resumed = RowDataset(rows, shuffle=True, seed=3)
    resumed.load_state_dict({"epoch": 0, "sample_in_epoch": 8})
    assert [r["i"] for r in resumed] == order[8:]
    resumed.load_state_dict({"epoch": 1, "sample_in_epoch": 0})
    assert [r["i"] for r in resumed] != order and sorted(r["i"] for r in resumed) == list(range(12))


@pytest.mark.parametrize("line, message", [
    ('{"prompt": "x"}', r"d.jsonl:2: missing 'response'"),
    ('{"prompt": "x", "response": 3}', r"d.jsonl:2: response is int, expected a string"),
    ('{"prompt": "x", "response": "y"', r"d.jsonl:2: malformed JSON"),
    ('{"messages": [{"role": "user", "content": "hi"}]}', r"d.jsonl:2: the last message must be the assistant's"),
    ('{"messages": [{"role": "bot", "content": "hi"}]}', r"d.jsonl:2: messages\[0\] must be"),
    ('{"text": "x"}', r"d.jsonl:2: missing 'prompt' and 'response'"),
])
def test_bad_examples_name_file_and_line(tmp_path, tok, line, message):
    with pytest.raises(UserError, match=message):
        batch_of(tmp_path, tok, [{"prompt": "ok", "response": " ok"}, line])


def test_bad_sources(tmp_path, tok):
    with pytest.raises(UserError, match="no such file or directory"):
        build_finetune_dataset(FinetuneDatasetConfig(local=str(tmp_path / "nope")), tok, where="w")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="has no train.jsonl, train.parquet"):
        build_finetune_dataset(FinetuneDatasetConfig(local=str(tmp_path / "empty")), tok, where="w")
    with pytest.raises(UserError, match="decoder_only_format"):
        build_finetune_dataset(FinetuneDatasetConfig(local=str(tmp_path), decoder_only_format=False), tok, where="w")


def test_parquet_and_directory_split(tmp_path, tok):
    import pyarrow as pa
    import pyarrow.parquet as pq

    (tmp_path / "ds").mkdir()
    pq.write_table(pa.Table.from_pylist([{"prompt": "p", "response": " r"}] * 3), tmp_path / "ds" / "train.parquet")
    write_jsonl(tmp_path / "ds" / "val.jsonl", [CHAT])
    _, _, report = build_finetune_dataset(FinetuneDatasetConfig(local=str(tmp_path / "ds")), tok, where="w")
    assert report.examples == 3
    _, _, report = build_finetune_dataset(FinetuneDatasetConfig(local=str(tmp_path / "ds"), split="val"), tok, where="w")
    assert report.examples == 1
