"""The data verbs as a user runs them: real subprocesses, exit codes, one-line errors."""

from __future__ import annotations

import json
import re

from tests.conftest import run_cli


def test_help_lists_verbs_and_options():
    result = run_cli("--help")
    assert result.returncode == 0
    for verb in ("train", "convert-dataset", "tokenizer"):
        assert verb in result.stdout
    result = run_cli("convert-dataset", "--help")
    assert result.returncode == 0 and "--val-fraction" in result.stdout and "--workers" in result.stdout
    # fixed choices are listed as such, flags are shown without a value
    assert "--mode <concat|text>" in result.stdout and "--kind <pretraining|finetuning>" in result.stdout
    assert re.search(r"^  --overwrite +Replace", result.stdout, re.M) and "<bool>" not in result.stdout
    result = run_cli("inference-convert", "--help")
    assert "--dtype <fp32|bf16|fp16>" in result.stdout
    result = run_cli("eval", "--help")
    assert "foundry eval yamls/eval/core.yaml variables.model_dir=demo/hf" in result.stdout
    result = run_cli("train", "--help")
    assert "0 (the default) trains in this process" in " ".join(result.stdout.split())
    result = run_cli("--version")
    assert result.returncode == 0 and re.fullmatch(r"foundry \(llmfoundry\) \d+\.\d+\.\d+\n", result.stdout)


def test_tokenizer_then_convert_end_to_end(tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    with open(corpus / "docs.jsonl", "w") as f:
        for i in range(200):
            f.write(json.dumps({"body": f"Patient {i} received {i % 7} mg of drug {i % 13} daily."}) + "\n")
        f.write("{oops\n")
    tok = tmp_path / "tok"
    result = run_cli("tokenizer", "train", "--input", str(corpus), "--text-field", "body", "--kind", "bpe",
                     "--vocab-size", "400", "--out", str(tok))
    assert result.returncode == 0, result.stderr
    out = tmp_path / "mds"
    result = run_cli("convert-dataset", str(corpus), "--out", str(out), "--tokenizer", str(tok),
                     "--text-field", "body", "--max-seq-len", "32", "--val-fraction", "0.1", "--workers", "2")
    assert result.returncode == 0, result.stderr
    assert "records read: 201 = 200 documents written + 1 skipped (malformed_json: 1)" in result.stdout
    summary = json.loads((out / "conversion.json").read_text())
    assert summary["documents_read"] == 200 and summary["skipped"] == {"malformed_json": 1}

    from streaming import StreamingDataset

    dataset = StreamingDataset(local=str(out), split="train", shuffle=False, batch_size=1)
    assert len(dataset) == summary["splits"]["train"]["samples"]
    assert dataset[0]["tokens"].shape == (32,)


def test_user_errors_are_one_line_without_traceback(tmp_path):
    result = run_cli("convert-dataset", str(tmp_path / "nothing"), "--out", str(tmp_path / "o"), "--tokenizer", "x")
    assert result.returncode == 1
    assert result.stderr.strip().count("\n") == 0 and "Traceback" not in result.stderr
    assert "no such file or directory" in result.stderr
    result = run_cli("convert-dataset", str(tmp_path), "--out", str(tmp_path / "o"), "--mode", "bogus")
    assert result.returncode == 2 and "'bogus' is not one of 'concat', 'text'" in result.stderr  # a parser choice
    result = run_cli("convert-dataset")
    assert result.returncode == 2  # usage error from the parser
