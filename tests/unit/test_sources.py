"""Document readers: every format, compression, and every kind of bad record."""

from __future__ import annotations

import gzip
import json
from collections import Counter
from pathlib import Path

import pytest

from llmfoundry.data.sources import discover_inputs, read_documents
from llmfoundry.errors import UserError

PUBMED_XML = """<?xml version="1.0" encoding="utf-8"?>
<PubmedArticleSet>
  <PubmedArticle><MedlineCitation><Article>
    <ArticleTitle>Aspirin and <i>headache</i>.</ArticleTitle>
    <Abstract>
      <AbstractText Label="BACKGROUND">Pain is common.</AbstractText>
      <AbstractText Label="RESULTS">Aspirin helps.</AbstractText>
    </Abstract>
  </Article></MedlineCitation></PubmedArticle>
  <PubmedArticle><MedlineCitation><Article>
    <ArticleTitle>A title with no abstract.</ArticleTitle>
  </Article></MedlineCitation></PubmedArticle>
  <PubmedArticle><MedlineCitation><Article>
    <ArticleTitle>Second.</ArticleTitle>
    <Abstract><AbstractText>Plain abstract.</AbstractText></Abstract>
  </Article></MedlineCitation></PubmedArticle>
</PubmedArticleSet>
"""


def read(paths, **kwargs):
    skipped: Counter[str] = Counter()
    docs = list(read_documents([Path(p) for p in paths], skipped=skipped, **kwargs))
    return docs, skipped


def test_text_per_file_and_per_paragraph(tmp_path):
    path = tmp_path / "a.txt"
    path.write_text("first para\nline two\n\n\nsecond para\n\n   \nthird\n")
    docs, _ = read([path])
    assert docs == [path.read_text()]
    docs, skipped = read([path], split_by="paragraph")
    assert docs == ["first para\nline two", "second para", "third"]
    assert not skipped


def test_gzip_and_zstd(tmp_path):
    import zstandard

    (tmp_path / "a.txt.gz").write_bytes(gzip.compress(b"gzipped doc"))
    (tmp_path / "b.txt.zst").write_bytes(zstandard.ZstdCompressor().compress(b"zstd doc"))
    docs, _ = read(discover_inputs([str(tmp_path)]))
    assert docs == ["gzipped doc", "zstd doc"]


def test_jsonl_dotted_field_and_bad_lines(tmp_path):
    path = tmp_path / "a.jsonl"
    lines = [
        json.dumps({"meta": {"body": "one"}}),
        "{not json",
        json.dumps({"other": 1}),
        json.dumps({"meta": {"body": 7}}),
        "",
        json.dumps({"meta": {"body": "two"}}),
    ]
    path.write_bytes(("\n".join(lines) + "\n").encode() + b'{"meta": {"body": "bad \xff"}}\n')
    docs, skipped = read([path], text_field="meta.body")
    assert docs == ["one", "two"]
    assert skipped == Counter(malformed_json=1, missing_text_field=1, non_string_text_field=1, invalid_utf8=1)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b'{"text": "ok"}\n{broken\n', r"a\.jsonl:2: malformed JSON"),
        (b'{"text": "ok"}\n{"body": "x"}\n', r"a\.jsonl:2: no text field 'text'"),
        (b'{"text": "ok"}\n{"text": "\xff"}\n', r"a\.jsonl:2: invalid UTF-8"),
    ],
)
def test_jsonl_strict_names_file_and_line(tmp_path, content, message):
    path = tmp_path / "a.jsonl"
    path.write_bytes(content)
    with pytest.raises(UserError, match=message):
        read([path], strict=True)


def test_invalid_utf8_text_counted_or_strict(tmp_path):
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"caf\xe9 latin-1")
    (tmp_path / "good.txt").write_text("fine")
    docs, skipped = read([bad, tmp_path / "good.txt"])
    assert docs == ["fine"] and skipped["invalid_utf8"] == 1
    with pytest.raises(UserError, match=r"bad\.txt: invalid UTF-8"):
        read([bad], strict=True)


def test_empty_documents_are_counted(tmp_path):
    (tmp_path / "a.txt").write_text("   \n")
    docs, skipped = read([tmp_path / "a.txt"])
    assert docs == [] and skipped["empty"] == 1


def test_parquet_and_arrow(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table({"text": ["p1", "p2", None], "id": [1, 2, 3]})
    pq.write_table(table, tmp_path / "a.parquet")
    docs, skipped = read([tmp_path / "a.parquet"])
    assert docs == ["p1", "p2"] and skipped["non_string_text_field"] == 1
    # `datasets.save_to_disk` layout: IPC stream files inside a directory.
    ds_dir = tmp_path / "saved"
    ds_dir.mkdir()
    with pa.OSFile(str(ds_dir / "data-00000-of-00001.arrow"), "wb") as sink, pa.ipc.new_stream(sink, table.schema) as w:
        w.write_table(table)
    (ds_dir / "dataset_info.json").write_text("{}")
    docs, _ = read(discover_inputs([str(ds_dir)]))
    assert docs == ["p1", "p2"]
    with pytest.raises(UserError, match=r"no column 'body' \(columns: text, id\)"):
        read([tmp_path / "a.parquet"], text_field="body")


def test_pubmed_xml_title_and_abstract(tmp_path):
    path = tmp_path / "pubmed24n0001.xml.gz"
    path.write_bytes(gzip.compress(PUBMED_XML.encode()))
    docs, skipped = read([path])
    assert docs == [
        "Aspirin and headache.\nBACKGROUND: Pain is common.\nRESULTS: Aspirin helps.",
        "Second.\nPlain abstract.",
    ]
    assert skipped == Counter(no_abstract=1)


def test_real_pubmed_baseline_file_reads(pubmed_baseline):
    skipped: Counter[str] = Counter()
    docs = []
    for doc in read_documents([pubmed_baseline], skipped=skipped):
        docs.append(doc)
        if len(docs) == 200:
            break
    assert len(docs) == 200
    assert all(len(d) > 50 for d in docs)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda d: [str(d / "missing.txt")], "no such file or directory"),
        (lambda d: [str(d / "*.nothing")], "the pattern matches no files"),
        (lambda d: [str(d)], "directory holds no supported data files"),
    ],
)
def test_discover_errors(tmp_path, make, message):
    (tmp_path / "notes.bin").write_bytes(b"\x00")
    with pytest.raises(UserError, match=message):
        discover_inputs(make(tmp_path))


def test_unknown_extension_needs_format(tmp_path):
    path = tmp_path / "corpus.dat"
    path.write_text("hello")
    with pytest.raises(UserError, match="unknown file type"):
        read([path])
    docs, _ = read([path], input_format="text")
    assert docs == ["hello"]
