"""convert-dataset: packing, splits, worker invariance, atomic output, S3 upload, bad inputs."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from streaming.base.format import reader_from_json

from llmfoundry.data.convert import convert_dataset, split_of
from llmfoundry.errors import UserError


def make_corpus(directory: Path, n: int = 60) -> list[str]:
    directory.mkdir(parents=True, exist_ok=True)
    docs = [f"Document {i}: " + " ".join(f"word{(i * 7 + j) % 50}" for j in range(5 + i % 17)) for i in range(n)]
    with open(directory / "corpus.jsonl", "w") as f:
        for doc in docs:
            f.write(json.dumps({"text": doc}) + "\n")
    return docs


def read_mds(directory: Path) -> list[dict]:
    """Every sample of an MDS directory, in order, read with mosaicml-streaming's own shard readers."""
    index = json.loads((directory / "index.json").read_text())
    samples = []
    for info in index["shards"]:
        shard = reader_from_json(str(directory), None, info)
        samples.extend(shard[i] for i in range(shard.samples))
    return samples


def test_concat_packs_documents_joined_by_eos(tmp_path, gpt2_tokenizer_dir):
    from transformers import AutoTokenizer

    docs = make_corpus(tmp_path / "in")
    summary = convert_dataset([str(tmp_path / "in")], str(tmp_path / "out"), tokenizer=str(gpt2_tokenizer_dir),
                              max_seq_len=32, progress=False)
    tok = AutoTokenizer.from_pretrained(str(gpt2_tokenizer_dir))
    samples = read_mds(tmp_path / "out" / "train")
    assert all(s["tokens"].dtype == np.int32 and s["tokens"].shape == (32,) for s in samples)
    stream = np.concatenate([s["tokens"] for s in samples])
    expected = [t for doc in docs for t in tok(doc).input_ids + [tok.eos_token_id]]
    assert stream.tolist() == expected[: len(stream)]
    assert len(expected) - len(stream) == summary.splits["train"].dropped_tail_tokens < 32
    assert summary.splits["train"].samples == len(samples)
    assert summary.splits["train"].tokens == len(expected)
    report = json.loads((tmp_path / "out" / "conversion.json").read_text())
    assert report["documents_written"] == len(docs)


def test_split_is_stable_hash_and_workers_do_not_change_output(tmp_path, gpt2_tokenizer_dir):
    make_corpus(tmp_path / "in", n=300)
    outputs = []
    for workers in (1, 2):
        out = tmp_path / f"out{workers}"
        convert_dataset([str(tmp_path / "in")], str(out), tokenizer=str(gpt2_tokenizer_dir), max_seq_len=16,
                        val_fraction=0.2, workers=workers, progress=False)
        outputs.append({split: [s["tokens"].tolist() for s in read_mds(out / split)] for split in ("train", "val")})
    assert outputs[0] == outputs[1]
    summary = json.loads((tmp_path / "out1" / "conversion.json").read_text())
    val_docs = summary["splits"]["val"]["documents"]
    assert 30 <= val_docs <= 90  # ~20% of 300
    assert split_of("same text", 0.2) == split_of("same text", 0.2)


def test_text_mode_keeps_raw_documents(tmp_path):
    docs = make_corpus(tmp_path / "in", n=20)
    convert_dataset([str(tmp_path / "in")], str(tmp_path / "out"), mode="text", val_fraction=0.5, progress=False)
    got = [s["text"] for split in ("train", "val") for s in read_mds(tmp_path / "out" / split)]
    assert sorted(got) == sorted(docs)


def test_refuses_non_empty_output_and_overwrite_replaces(tmp_path):
    make_corpus(tmp_path / "in", n=5)
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("precious")
    with pytest.raises(UserError, match="not empty; pass --overwrite"):
        convert_dataset([str(tmp_path / "in")], str(out), mode="text", progress=False)
    assert (out / "keep.txt").exists()
    convert_dataset([str(tmp_path / "in")], str(out), mode="text", overwrite=True, progress=False)
    assert not (out / "keep.txt").exists() and (out / "train" / "index.json").exists()


def test_failure_leaves_no_output(tmp_path, gpt2_tokenizer_dir):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.jsonl").write_text('{"text": "fine"}\n{"text": 3}\n')
    with pytest.raises(UserError, match="a.jsonl:2"):
        convert_dataset([str(tmp_path / "in")], str(tmp_path / "out"), tokenizer=str(gpt2_tokenizer_dir),
                        strict=True, progress=False)
    assert not (tmp_path / "out").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["in"]  # no temporary directory left behind


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"tokenizer": "/no/such/tokenizer"}, "tokenizer directory does not exist"),
        ({"tokenizer": None}, "--tokenizer is required"),
        ({"mode": "text", "val_fraction": 1.5}, "--val-fraction"),
        ({"mode": "text", "shard_size": "lots"}, "--shard-size"),
        ({"mode": "text", "workers": 0}, "--workers"),
        ({"mode": "text", "compression": "lzma"}, r"--compression: got 'lzma', expected none, zstd \(zstd:1..22\)"),
    ],
)
def test_bad_arguments(tmp_path, kwargs, message):
    make_corpus(tmp_path / "in", n=3)
    with pytest.raises(UserError, match=message):
        convert_dataset([str(tmp_path / "in")], str(tmp_path / "out"), progress=False, **kwargs)


def test_empty_input_is_an_error(tmp_path):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.txt").write_text("  \n")
    with pytest.raises(UserError, match=r"no documents to convert \(empty: 1\)"):
        convert_dataset([str(tmp_path / "in")], str(tmp_path / "out"), mode="text", progress=False)
    assert not (tmp_path / "out").exists()


def test_unwritable_output(tmp_path):
    make_corpus(tmp_path / "in", n=3)
    if os.geteuid() == 0:
        locked = Path("/sys")  # read-only even for root
    else:
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
    with pytest.raises(UserError, match="not writable"):
        convert_dataset([str(tmp_path / "in")], str(locked / "llmfoundry-out"), mode="text", progress=False)


def test_output_under_a_file_is_an_error(tmp_path):
    make_corpus(tmp_path / "in", n=3)
    (tmp_path / "file").write_text("x")
    with pytest.raises(UserError, match="cannot create its parent directory"):
        convert_dataset([str(tmp_path / "in")], str(tmp_path / "file" / "out"), mode="text", progress=False)


@pytest.mark.slow
def test_upload_to_s3(tmp_path, gpt2_tokenizer_dir, s3_server):
    make_corpus(tmp_path / "in", n=40)
    convert_dataset([str(tmp_path / "in")], str(tmp_path / "local"), tokenizer=str(gpt2_tokenizer_dir),
                    max_seq_len=16, progress=False)
    convert_dataset([str(tmp_path / "in")], "s3://corpus/pubmed", tokenizer=str(gpt2_tokenizer_dir),
                    max_seq_len=16, progress=False)
    keys = {o["Key"] for o in s3_server.list_objects_v2(Bucket="corpus")["Contents"]}
    assert {"pubmed/conversion.json", "pubmed/train/index.json", "pubmed/val/index.json"} <= keys
    download = tmp_path / "download" / "train"
    download.mkdir(parents=True)
    for key in keys:
        if key.startswith("pubmed/train/"):
            s3_server.download_file("corpus", key, str(download / key.rsplit("/", 1)[1]))
    remote = [s["tokens"].tolist() for s in read_mds(download)]
    local = [s["tokens"].tolist() for s in read_mds(tmp_path / "local" / "train")]
    assert remote == local
    with pytest.raises(UserError, match="already holds data"):
        convert_dataset([str(tmp_path / "in")], "s3://corpus/pubmed", tokenizer=str(gpt2_tokenizer_dir),
                        max_seq_len=16, progress=False)


def test_summary_adds_up_on_real_pubmed(tmp_path, pubmed_baseline):
    """Every article of the file is either written or skipped with a reason (the summary used to read
    "read 33,277 / written 33,277 / skipped 17,511"), for a whole conversion and for one part of two."""
    import gzip

    from llmfoundry.data.convert import format_summary

    with gzip.open(pubmed_baseline, "rt") as f:  # the file's first 2,000 articles, as a baseline file of its own
        head, *articles = f.read().split("<PubmedArticle>")[:2001]
    sample = tmp_path / "pubmed-head.xml"
    sample.write_text(head + "".join("<PubmedArticle>" + a.split("</PubmedArticle>")[0] + "</PubmedArticle>\n"
                                     for a in articles) + "</PubmedArticleSet>\n")
    whole = convert_dataset([str(sample)], str(tmp_path / "whole"), mode="text", progress=False)
    part = convert_dataset([str(sample)], str(tmp_path / "part"), mode="text", progress=False, shard=(0, 2))
    articles = len(articles)
    skipped = sum(whole.skipped.values())
    assert skipped > 0 and whole.skipped == part.skipped
    assert format_summary(whole).splitlines()[0] == (
        f"records read: {articles:,} = {whole.documents_written:,} documents written + {skipped:,} skipped "
        f"(no_abstract: {whole.skipped['no_abstract']:,})")
    assert format_summary(part).splitlines()[0] == (
        f"records read: {articles:,} = {part.documents_written:,} documents written + {skipped:,} skipped "
        f"(no_abstract: {part.skipped['no_abstract']:,}) + {part.in_other_parts:,} left to the other 1 part")
    assert whole.documents_written + skipped == articles == part.documents_written + skipped + part.in_other_parts


def test_conversion_records_the_tokenizer_vocabulary(tmp_path, gpt2_tokenizer_dir):
    from llmfoundry.data.provenance import fingerprint, vocabulary
    from llmfoundry.data.tokenizer import load_tokenizer

    make_corpus(tmp_path / "in", n=5)
    convert_dataset([str(tmp_path / "in")], str(tmp_path / "out"), tokenizer=str(gpt2_tokenizer_dir), max_seq_len=16,
                    progress=False)
    recorded = json.loads((tmp_path / "out" / "conversion.json").read_text())["tokenizer_vocab"]
    assert recorded == fingerprint(vocabulary(load_tokenizer(gpt2_tokenizer_dir)))
    assert recorded["size"] == 50257
