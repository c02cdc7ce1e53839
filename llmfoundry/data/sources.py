"""Readers that turn user files into a stream of documents (plain strings).

One function, `read_documents`, hides the formats: plain text (a document per file or per blank-line
paragraph), JSONL with a (dotted) text field, parquet, arrow (a `datasets` dataset saved to disk), and
PubMed/MEDLINE baseline XML (title + abstract per article). `.gz` and `.zst` are decompressed on the fly.
Bad records are counted by reason in `skipped` and dropped, or raise a UserError naming file and line when
`strict` is set, so a conversion never silently loses data.
"""

from __future__ import annotations

import glob
import gzip
import io
import json
import os
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Literal

from llmfoundry.errors import UserError

InputFormat = Literal["auto", "text", "jsonl", "parquet", "arrow", "pubmed"]
SplitBy = Literal["file", "paragraph"]

_COMPRESSED = (".gz", ".zst")
_EXTENSIONS: dict[str, str] = {
    ".txt": "text",
    ".text": "text",
    ".md": "text",
    ".jsonl": "jsonl",
    ".json": "jsonl",
    ".ndjson": "jsonl",
    ".parquet": "parquet",
    ".arrow": "arrow",
    ".xml": "pubmed",
}


def detect_format(path: Path) -> str | None:
    """The format implied by a file name (compression suffix ignored), or None if unknown."""
    name = path.name.lower()
    for suffix in _COMPRESSED:
        if name.endswith(suffix):
            name = name[: -len(suffix)]
    return _EXTENSIONS.get(os.path.splitext(name)[1])


def discover_inputs(inputs: Iterable[str], input_format: InputFormat = "auto") -> list[Path]:
    """Expand files, directories (recursively) and globs into a sorted, de-duplicated file list."""
    found: list[Path] = []
    for raw in inputs:
        path = Path(raw)
        if any(ch in raw for ch in "*?["):
            matches = sorted(Path(p) for p in glob.glob(raw, recursive=True))
            files = [m for m in matches if m.is_file()]
            if not files:
                raise UserError(f"{raw}: the pattern matches no files")
            found.extend(files)
        elif path.is_dir():
            files = sorted(p for p in path.rglob("*") if p.is_file() and _accepts(p, input_format))
            if not files:
                wanted = "supported data files" if input_format == "auto" else f"{input_format} files"
                raise UserError(f"{raw}: directory holds no {wanted} (.txt, .jsonl, .parquet, .arrow, .xml[.gz|.zst])")
            found.extend(files)
        elif path.is_file():
            found.append(path)
        else:
            raise UserError(f"{raw}: no such file or directory")
    unique = list(dict.fromkeys(found))
    if not unique:
        raise UserError("no input files given")
    return unique


def _accepts(path: Path, input_format: InputFormat) -> bool:
    """auto: files with a known extension. An explicit format also takes files with an unknown or no extension
    (LICENSE, /usr/share/common-licenses/GPL-3, notes.org), since the user said what they are; files of another
    known format (.parquet in a text directory) and, then, hidden files (.DS_Store) are left out."""
    fmt = detect_format(path)
    if input_format == "auto":
        return fmt is not None
    return fmt == input_format or (fmt is None and not path.name.startswith("."))


def read_documents(
    paths: Iterable[Path],
    *,
    input_format: InputFormat = "auto",
    text_field: str = "text",
    split_by: SplitBy = "file",
    strict: bool = False,
    skipped: Counter[str] | None = None,
) -> Iterator[str]:
    """Yield every document of every file in order; count anything dropped in `skipped` by reason."""
    skipped = skipped if skipped is not None else Counter()
    for path in paths:
        fmt = input_format if input_format != "auto" else detect_format(path)
        if fmt is None:
            raise UserError(f"{path}: unknown file type; pass --input-format text|jsonl|parquet|arrow|pubmed")
        reader = _READERS[fmt]
        for doc in reader(path, text_field=text_field, split_by=split_by, strict=strict, skipped=skipped):
            if doc.strip():
                yield doc
            else:
                skipped["empty"] += 1


def open_binary(path: Path) -> IO[bytes]:
    """Open a possibly compressed file for binary reading."""
    name = path.name.lower()
    if name.endswith(".gz"):
        return gzip.open(path, "rb")
    if name.endswith(".zst"):
        import zstandard

        return zstandard.ZstdDecompressor().stream_reader(open(path, "rb"), closefd=True)  # noqa: SIM115
    return open(path, "rb")  # noqa: SIM115


def _decode(raw: bytes, where: str, strict: bool, skipped: Counter[str]) -> str | None:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        if strict:
            raise UserError(f"{where}: invalid UTF-8 ({err.reason} at byte {err.start})") from None
        skipped["invalid_utf8"] += 1
        return None


def _read_text(path: Path, *, split_by: SplitBy, strict: bool, skipped: Counter[str], **_: object) -> Iterator[str]:
    with open_binary(path) as stream:
        if split_by == "file":
            text = _decode(stream.read(), str(path), strict, skipped)
            if text is not None:
                yield text
            return
        paragraph: list[bytes] = []
        start = 1
        for number, line in enumerate(io.BufferedReader(stream), start=1):  # type: ignore[arg-type]
            if line.strip():
                if not paragraph:
                    start = number
                paragraph.append(line)
                continue
            if paragraph:
                text = _decode(b"".join(paragraph), f"{path}:{start}", strict, skipped)
                if text is not None:
                    yield text.strip("\n")
                paragraph = []
        if paragraph:
            text = _decode(b"".join(paragraph), f"{path}:{start}", strict, skipped)
            if text is not None:
                yield text.strip("\n")


def _field(record: object, dotted: str) -> object:
    node = record
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            raise KeyError(part)
        node = node[part]
    return node


def text_field_hint(skipped: Counter[str], paths: list[Path], text_field: str) -> str:
    """When JSONL records lacked `text_field`: where the text might be instead (the string-valued keys of the
    first such record, dotted one level deep), as a sentence suggesting --text-field; otherwise ''."""
    if not skipped.get("missing_text_field"):
        return ""
    for path in paths:
        if detect_format(path) != "jsonl":
            continue
        with open_binary(path) as stream:
            for raw in io.BufferedReader(stream):  # type: ignore[arg-type]
                try:
                    record = json.loads(raw)
                except ValueError:
                    continue
                if not isinstance(record, dict) or _has_field(record, text_field):
                    continue
                keys = [k for k, v in record.items() if isinstance(v, str)]
                keys += [f"{k}.{n}" for k, v in record.items() if isinstance(v, dict)
                         for n, w in v.items() if isinstance(w, str)]
                found = ", ".join(keys[:8]) or "none holds a string"
                return (f"; {skipped['missing_text_field']:,} records have no '{text_field}' field: set "
                        f"--text-field to the key holding the text (string keys in {path.name}: {found})")
    return f"; {skipped['missing_text_field']:,} records have no '{text_field}' field: set --text-field"


def _has_field(record: object, dotted: str) -> bool:
    try:
        _field(record, dotted)
    except KeyError:
        return False
    return True


def _read_jsonl(
    path: Path, *, text_field: str, strict: bool, skipped: Counter[str], **_: object
) -> Iterator[str]:
    with open_binary(path) as stream:
        for number, raw in enumerate(io.BufferedReader(stream), start=1):  # type: ignore[arg-type]
            if not raw.strip():
                continue
            where = f"{path}:{number}"
            line = _decode(raw, where, strict, skipped)
            if line is None:
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                if strict:
                    raise UserError(f"{where}: malformed JSON ({err.msg} at column {err.colno})") from None
                skipped["malformed_json"] += 1
                continue
            try:
                text = _field(record, text_field)
            except KeyError:
                if strict:
                    raise UserError(f"{where}: no text field '{text_field}' (set --text-field)") from None
                skipped["missing_text_field"] += 1
                continue
            if not isinstance(text, str):
                if strict:
                    raise UserError(f"{where}: field '{text_field}' is {type(text).__name__}, expected a string")
                skipped["non_string_text_field"] += 1
                continue
            yield text


def _column_batches(table_batches: Iterable, path: Path, text_field: str, skipped: Counter[str]) -> Iterator[str]:
    for batch in table_batches:
        names = batch.schema.names
        if text_field not in names:
            raise UserError(f"{path}: no column '{text_field}' (columns: {', '.join(names)}); set --text-field")
        for value in batch.column(names.index(text_field)).to_pylist():
            if isinstance(value, str):
                yield value
            else:
                skipped["non_string_text_field"] += 1


def _read_parquet(path: Path, *, text_field: str, skipped: Counter[str], **_: object) -> Iterator[str]:
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(path)
    except Exception as err:  # pyarrow raises several types for a non-parquet file
        raise UserError(f"{path}: not a readable parquet file ({err})") from None
    if text_field not in parquet.schema_arrow.names:
        names = ", ".join(parquet.schema_arrow.names)
        raise UserError(f"{path}: no column '{text_field}' (columns: {names}); set --text-field")
    yield from _column_batches(parquet.iter_batches(columns=[text_field], batch_size=4096), path, text_field, skipped)


def _read_arrow(path: Path, *, text_field: str, skipped: Counter[str], **_: object) -> Iterator[str]:
    import pyarrow as pa

    # `datasets.save_to_disk` writes the IPC stream format; plain arrow files use the file format.
    with pa.memory_map(str(path)) as source:
        try:
            reader = pa.ipc.open_stream(source)
        except pa.ArrowInvalid:
            source.seek(0)
            try:
                file_reader = pa.ipc.open_file(source)
            except pa.ArrowInvalid as err:
                raise UserError(f"{path}: not an Arrow file ({err})") from None
            batches = (file_reader.get_batch(i) for i in range(file_reader.num_record_batches))
            yield from _column_batches(batches, path, text_field, skipped)
            return
        yield from _column_batches(reader, path, text_field, skipped)


def _element_text(element: ET.Element | None) -> str:
    return "".join(element.itertext()).strip() if element is not None else ""


def pubmed_article_text(article: ET.Element) -> str | None:
    """Title and abstract of one PubmedArticle (labelled sections kept as 'LABEL: text'), or None."""
    citation = article.find("MedlineCitation/Article")
    if citation is None:
        return None
    parts = []
    for section in citation.findall("Abstract/AbstractText"):
        text = _element_text(section)
        if text:
            label = section.get("Label")
            parts.append(f"{label}: {text}" if label else text)
    if not parts:
        return None
    title = _element_text(citation.find("ArticleTitle"))
    return "\n".join([title, *parts]) if title else "\n".join(parts)


def _read_pubmed(path: Path, *, strict: bool, skipped: Counter[str], **_: object) -> Iterator[str]:
    with open_binary(path) as stream:
        try:
            for _event, element in ET.iterparse(stream, events=("end",)):
                if element.tag != "PubmedArticle":
                    continue
                text = pubmed_article_text(element)
                if text is None:
                    skipped["no_abstract"] += 1
                else:
                    yield text
                element.clear()  # keep memory bounded on 100k-article baseline files
        except ET.ParseError as err:
            line = err.position[0] if err.position else "?"
            if strict:
                raise UserError(f"{path}:{line}: malformed XML ({err})") from None
            skipped["malformed_xml_file"] += 1
        except (OSError, EOFError) as err:
            raise UserError(f"{path}: cannot read ({err})") from None


_READERS = {
    "text": _read_text,
    "jsonl": _read_jsonl,
    "parquet": _read_parquet,
    "arrow": _read_arrow,
    "pubmed": _read_pubmed,
}
