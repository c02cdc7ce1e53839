"""Conversion split over jobs (`--shard I/N`) and joined by `merge-index`: the same data as one job."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from llmfoundry.data.convert import convert_dataset
from llmfoundry.data.parts import merge_index, parse_shard, part_of
from llmfoundry.errors import UserError
from tests.conftest import run_cli


def corpus(root: Path, n: int = 240) -> str:
    path = root / "docs.jsonl"
    with open(path, "w") as f:
        for i in range(n):
            f.write(json.dumps({"text": f"document {i}: " + " ".join(["aspirin", "dose", "risk"][j % 3]
                                                                     for j in range(i % 19))}) + "\n")
    return str(path)


def samples(folder: str, column: str) -> Counter:
    from streaming import LocalDataset

    dataset = LocalDataset(local=folder)
    return Counter(_key(dataset[i][column]) for i in range(len(dataset)))


def _key(value):
    return value if isinstance(value, str) else tuple(value.tolist())


def convert(src: str, out: Path, shard=None, **kw):
    kw = {"mode": "text", "val_fraction": 0.2, "progress": False, **kw}
    return convert_dataset([src], str(out), shard=shard, **kw)


@pytest.mark.parametrize("mode", ["text", "concat"])
def test_three_parts_merged_equal_one_conversion(tmp_path, mode, gpt2_tokenizer_dir):
    src = corpus(tmp_path)
    kw = {"mode": mode, "tokenizer": str(gpt2_tokenizer_dir) if mode == "concat" else None, "max_seq_len": 8}
    whole = convert(src, tmp_path / "whole", **kw)
    parts = [convert(src, tmp_path / "parts", shard=(i, 3), **kw) for i in (2, 0, 1)]  # any order, any machine
    assert sum(p.documents_written for p in parts) == whole.documents_written == 240
    assert all(p.documents_read == 240 and p.documents_written + p.in_other_parts == 240 for p in parts)
    merge_index(str(tmp_path / "parts"))
    merged = merge_index(str(tmp_path / "parts"))  # merging again is harmless
    assert json.loads((tmp_path / "parts" / "conversion.json").read_text()) == merged
    for split in ("train", "val"):
        assert merged["splits"][split]["documents"] == whole.splits[split].documents
        assert merged["splits"][split]["tokens"] == whole.splits[split].tokens
        got = samples(str(tmp_path / "parts" / split), "text" if mode == "text" else "tokens")
        if mode == "text":  # documents are the samples: the very same multiset
            assert got == samples(str(tmp_path / "whole" / split), "text")
        else:  # each part packs its own documents (and drops its own partial tail)
            assert sum(got.values()) == merged["splits"][split]["samples"] > 0


def test_parts_partition_documents_by_a_stable_hash_independent_of_the_split():
    docs = [f"doc {i}" for i in range(3000)]
    assert [part_of(d, 4) for d in docs] == [part_of(d, 4) for d in docs]
    sizes = Counter(part_of(d, 4) for d in docs)
    assert set(sizes) == {0, 1, 2, 3} and min(sizes.values()) > 600
    from llmfoundry.data.convert import split_of

    val = [d for d in docs if split_of(d, 0.2)]
    assert min(Counter(part_of(d, 4) for d in val).values()) > 100  # every part gets validation documents


def test_incomplete_or_mixed_parts_and_reruns_are_one_line_errors(tmp_path):
    src = corpus(tmp_path, 60)
    out = tmp_path / "out"
    with pytest.raises(UserError, match="no converted parts"):
        merge_index(str(out))
    convert(src, out, shard=(0, 3))
    convert(src, out, shard=(2, 3))
    with pytest.raises(UserError, match=r"1 of 3 parts are missing or incomplete \(e.g. --shard 1/3\)"):
        merge_index(str(out))
    with pytest.raises(UserError, match="this part was already converted; pass --overwrite"):
        convert(src, out, shard=(0, 3))
    convert(src, out, shard=(1, 3))
    merge_index(str(out))
    assert (out / "train" / "index.json").exists()
    convert(src, out, shard=(1, 3), overwrite=True)  # a redone part makes the merged index stale: it is removed
    assert not (out / "train" / "index.json").exists() and not (out / "conversion.json").exists()
    assert not list(out.glob(".tmp-*"))
    convert(src, out, shard=(1, 4))
    with pytest.raises(UserError, match="parts of different splittings"):
        merge_index(str(out))
    for bad in ("3/3", "1", "-1/2", "a/b"):
        with pytest.raises(UserError, match="expected I/N with 0 <= I < N"):
            parse_shard(bad)


def test_a_failed_part_leaves_nothing_behind(tmp_path):
    (tmp_path / "empty.jsonl").write_text("")
    with pytest.raises(UserError, match="no documents to convert"):
        convert(str(tmp_path / "empty.jsonl"), tmp_path / "out", shard=(0, 2))
    assert [p.name for p in (tmp_path / "out").iterdir()] == []


@pytest.mark.slow
def test_parts_on_s3_merge_and_train(tmp_path, s3_server, gpt2_tokenizer_dir):
    """Jobs writing to a bucket, merged there, then a real training run streaming the merged dataset."""
    src = corpus(tmp_path, 400)
    for i in range(3):
        result = run_cli("convert-dataset", src, "--out", "s3://corpus/pubmed", "--tokenizer", str(gpt2_tokenizer_dir),
                         "--max-seq-len", "16", "--val-fraction", "0.1", "--shard", f"{i}/3")
        assert result.returncode == 0, result.stderr
        assert f"wrote part {i} of 3" in result.stdout
    merged = run_cli("merge-index", "s3://corpus/pubmed")
    assert merged.returncode == 0 and "merged 3 parts" in merged.stdout, merged.stderr
    keys = {o["Key"] for o in s3_server.list_objects_v2(Bucket="corpus", Prefix="pubmed/")["Contents"]}
    assert {"pubmed/train/index.json", "pubmed/val/index.json", "pubmed/conversion.json"} <= keys
    run = tmp_path / "run"
    train = run_cli("train", "yamls/pretrain/tiny-cpu.yaml", f"variables.tokenizer={gpt2_tokenizer_dir}",
                    "train_loader.dataset.remote=s3://corpus/pubmed", f"train_loader.dataset.local={tmp_path / 'cache'}",
                    "eval_loader.dataset.remote=s3://corpus/pubmed", f"eval_loader.dataset.local={tmp_path / 'cache'}",
                    "model.vocab_size=50257", "variables.max_seq_len=16", "max_duration=2ba", "eval_interval=2ba", "save_interval=0",
                    "global_train_batch_size=4", "device_train_microbatch_size=4", "progress_bar=false",
                    f"save_folder={run}", cwd=Path(__file__).resolve().parents[2])
    assert train.returncode == 0, train.stderr
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert any("loss/val" in r for r in records)
