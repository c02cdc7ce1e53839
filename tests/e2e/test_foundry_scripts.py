"""LLM Foundry's script entry points (scripts/...): each run once as a user runs it, its output equal to the verb's.

The references: the `foundry` verb on the same inputs (same MDS samples, same exported weights, same losses,
same metrics), and for packing, LLM Foundry v0.21's own algorithm (`ConcatTokensDataset`: buffer +=
bos + tokenizer(doc) + eos, cut every max_length tokens) run with transformers' tokenizer.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from argparse import Namespace
from pathlib import Path

import numpy as np
import pytest
import torch

from llmfoundry.data.convert import convert_dataset
from tests.conftest import REPO, _free_port, toy_corpus
from tests.e2e.test_train import TINY, losses, train_in_process, weights
from tests.unit.test_convert import read_mds


def run_script(script: str, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """`python scripts/SCRIPT ARGS`, as LLM Foundry's users run it."""
    return subprocess.run([sys.executable, str(REPO / "scripts" / script), *args], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})}, timeout=600)


def tokens(directory: Path) -> list[list[int]]:
    """Every sample's tokens; compressed shards are first decompressed (as StreamingDataset does) beside them."""
    from streaming.base.compression import decompress

    for info in json.loads((directory / "index.json").read_text())["shards"]:
        raw, zipped = directory / info["raw_data"]["basename"], info.get("zip_data")
        if zipped and not raw.exists():
            raw.write_bytes(decompress(info["compression"], (directory / zipped["basename"]).read_bytes()))
    return [np.asarray(s["tokens"]).tolist() for s in read_mds(directory)]


def foundry_concat(texts: list[str], tokenizer: Path, max_length: int, eos_text: str) -> list[list[int]]:
    """LLM Foundry v0.21's ConcatTokensDataset (wrapping, no bos_text), with transformers' tokenizer."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tokenizer))
    eos = tok(eos_text, add_special_tokens=False)["input_ids"]
    buffer: list[int] = []
    samples = []
    for text in texts:
        buffer = buffer + tok(text)["input_ids"] + eos
        while len(buffer) >= max_length:
            samples.append(buffer[:max_length])
            buffer = buffer[max_length:]
    return samples


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> tuple[Path, Path, list[str]]:
    root = tmp_path_factory.mktemp("scripts")
    folder, tok = toy_corpus(root)
    texts = [json.loads(line)["text"] for line in (folder / "docs.jsonl").read_text().splitlines()]
    return folder, tok, texts


def test_convert_dataset_json_writes_foundry_samples_into_out_root(corpus, tmp_path):
    folder, tok, texts = corpus
    result = run_script("data_prep/convert_dataset_json.py", "--path", str(folder / "docs.jsonl"), "--out_root",
                        str(tmp_path / "out"), "--split", "train", "--concat_tokens", "32", "--tokenizer", str(tok),
                        "--eos_text", "<|endoftext|>", "--compression", "zstd")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "out" / "index.json").is_file() and not (tmp_path / "out" / "train").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no staging folder left beside it
    ours = convert_dataset([str(folder)], str(tmp_path / "verb"), tokenizer=str(tok), max_seq_len=32, progress=False)
    assert tokens(tmp_path / "out") == tokens(tmp_path / "verb" / "train")
    assert tokens(tmp_path / "out") == foundry_concat(texts, tok, 32, "<|endoftext|>")
    assert ours.splits["train"].samples == len(tokens(tmp_path / "out")) > 100


def test_convert_dataset_json_without_concat_stores_text(corpus, tmp_path):
    from llmfoundry.foundry_scripts import convert_dataset_json

    folder, _, texts = corpus
    args = Namespace(path=str(folder), out_root=str(tmp_path / "out"), compression=None, concat_tokens=None,
                     split="train", tokenizer=None, bos_text=None, eos_text=None, no_wrap=False)
    assert convert_dataset_json(args) == 0
    assert [s["text"] for s in read_mds(tmp_path / "out")] == texts


def test_convert_text_to_mds_one_document_per_file_and_a_rerun_is_a_no_op(corpus, tmp_path, capsys):
    from llmfoundry.foundry_scripts import DONE_FILE, convert_text_to_mds

    _, tok, texts = corpus
    books = tmp_path / "books"
    (books / "more").mkdir(parents=True)
    for i, text in enumerate(texts[:40]):
        (books / ("more" if i % 2 else ".") / f"{i:03}.txt").write_text(text * 3)
    (books / "notes.md").write_text("not a .txt file: LLM Foundry skips it")
    result = run_script("data_prep/convert_text_to_mds.py", "--output_folder", str(tmp_path / "out"),
                        "--input_folder", str(books), "--concat_tokens", "16", "--tokenizer", str(tok),
                        "--use_tokenizer_eos", "--processes", "2")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "out" / DONE_FILE).is_file()
    convert_dataset([str(books / "**" / "*.txt")], str(tmp_path / "verb"), tokenizer=str(tok), max_seq_len=16,
                    input_format="text", compression="zstd", progress=False)
    assert tokens(tmp_path / "out") == tokens(tmp_path / "verb" / "train") and len(tokens(tmp_path / "out")) > 50
    index = json.loads((tmp_path / "out" / "index.json").read_text())
    assert {s["compression"] for s in index["shards"]} == {"zstd"}  # Foundry's default for this script
    args = Namespace(output_folder=str(tmp_path / "out"), input_folder=str(books), compression="zstd",
                     concat_tokens=16, tokenizer=str(tok), bos_text=None, eos_text=None, use_tokenizer_eos=True,
                     no_wrap=False, processes=1, reprocess=False, trust_remote_code=False, logging_level="INFO")
    assert convert_text_to_mds(args) == 0 and "already converted" in capsys.readouterr().err
    (books / "new.txt").write_text("a new file")  # a changed input: converting again meets the non-empty folder
    assert convert_text_to_mds(args) == 1 and "exists and is not empty" in capsys.readouterr().err


def test_convert_dataset_hf_one_folder_per_split_from_a_local_dataset(corpus, tmp_path):
    import datasets

    _, tok, texts = corpus
    local = tmp_path / "c4-local"
    datasets.DatasetDict({"train": datasets.Dataset.from_dict({"text": texts[:300]}),
                          "validation": datasets.Dataset.from_dict({"text": texts[300:]})}).save_to_disk(str(local))
    result = run_script("data_prep/convert_dataset_hf.py", "--dataset", str(local), "--out_root",
                        str(tmp_path / "out"), "--splits", "train", "val_xxsmall", "--concat_tokens", "32",
                        "--tokenizer", str(tok), "--eos_text", "<|endoftext|>")
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["train", "val_xxsmall"]
    for name, rows in (("train", texts[:300]), ("val_xxsmall", texts[300:])):
        assert tokens(tmp_path / "out" / name) == foundry_concat(rows, tok, 32, "<|endoftext|>")
    arrows = [f["filename"] for f in datasets.load_from_disk(str(local))["train"].cache_files]
    convert_dataset(arrows, str(tmp_path / "verb"), tokenizer=str(tok), max_seq_len=32, progress=False)
    assert tokens(tmp_path / "out" / "train") == tokens(tmp_path / "verb" / "train")


@pytest.mark.parametrize(("script", "flags", "message"), [
    ("json", {"no_wrap": True}, "--no_wrap: not supported"),
    ("json", {"split": "val"}, "--split val: json files hold one split"),
    ("json", {"eos_text": "</s>"}, "--eos_text '</s>': documents here always end with the tokenizer's eos token"),
    ("json", {"eos_text": None}, "--eos_text missing: documents here always end with the tokenizer's eos token"),
    ("json", {"bos_text": "<|endoftext|>"}, "--bos_text '<|endoftext|>': only the tokenizer's own bos token"),
    ("json", {"tokenizer": "EleutherAI/gpt-neox-20b"}, "EleutherAI/gpt-neox-20b: tokenizer directory does not exist"),
    ("json", {"out_root": "s3://bucket/x"}, "--out_root s3://bucket/x: this script writes a local folder"),
    ("hf", {"dataset": "allenai/c4"}, "--dataset allenai/c4: not a local directory; hub datasets are not downloaded"),
    ("hf", {"splits": ["test"]}, "--splits test: not one of LLM Foundry's split names"),
])
def test_flags_without_an_equivalent_are_one_line(corpus, tmp_path, capsys, script, flags, message):
    from llmfoundry import foundry_scripts

    folder, tok, _ = corpus
    parsed = dict(  # the Namespace argparse gives, before the flags under test
        path=str(folder), dataset=str(folder), data_subset=None, splits=["train"], out_root=str(tmp_path / "o"),
        compression=None, concat_tokens=32, split="train", tokenizer=str(tok), tokenizer_kwargs=None,
        bos_text=None, eos_text="<|endoftext|>", no_wrap=False, num_workers=None)
    convert = foundry_scripts.convert_dataset_json if script == "json" else foundry_scripts.convert_dataset_hf
    assert convert(Namespace(**{**parsed, **flags})) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {message}"), err
    assert not (tmp_path / "o").exists()


def test_convert_composer_to_hf_refuses_hub_uploads_in_one_line(tmp_path):
    result = run_script("inference/convert_composer_to_hf.py", "--composer_path", str(tmp_path / "x.pt"),
                        "--hf_output_path", str(tmp_path / "hf"), "--hf_repo_for_upload", "me/model")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == ["error: --hf_repo_for_upload: uploads to the Hugging Face Hub are "
                                                  "not done here (offline); push the exported folder yourself, e.g. "
                                                  "huggingface-cli upload REPO DIR"]


def test_convert_composer_to_hf_on_a_real_composer_checkpoint(shared_dir, tmp_path):
    from safetensors.torch import load_file
    from typer.testing import CliRunner

    from llmfoundry.cli import app

    composer_pt = shared_dir / "foundry-v0.21" / "artifacts" / "composer-checkpoint" / "ep0-ba60-rank0.pt"
    result = run_script("inference/convert_composer_to_hf.py", "--composer_path", str(composer_pt),
                        "--hf_output_path", str(tmp_path / "script-hf"), "--trust_remote_code")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "note: --trust_remote_code: not needed" in result.stderr
    verb = CliRunner().invoke(app, ["inference-convert", str(composer_pt), str(tmp_path / "verb-hf")])
    assert verb.exit_code == 0, verb.output
    theirs = load_file(tmp_path / "script-hf" / "model.safetensors")
    ours = load_file(tmp_path / "verb-hf" / "model.safetensors")
    assert theirs.keys() == ours.keys() and all(torch.equal(t, ours[k]) for k, t in theirs.items())
    assert json.loads((tmp_path / "script-hf" / "config.json").read_text())["architectures"] == ["MptForCausalLM"]


@pytest.fixture(scope="module")
def tiny_run(corpus, tmp_path_factory) -> tuple[Path, Path]:
    """A tiny MPT trained with `foundry train` (the verb, in process): its config and run folder."""
    folder, tok, _ = corpus
    root = tmp_path_factory.mktemp("run")
    convert_dataset([str(folder)], str(root / "data"), tokenizer=str(tok), max_seq_len=32, val_fraction=0.1,
                    progress=False)
    config = root / "tiny.yaml"
    config.write_text(TINY.format(base=REPO / "yamls" / "pretrain" / "_base.yaml", data=root / "data", tok=tok))
    train_in_process(config, f"save_folder={root / 'verb'}", "max_duration=3ba", "save_interval=3ba")
    return config, root / "verb"


def test_train_py_equals_foundry_train(tiny_run, tmp_path):
    config, verb = tiny_run
    result = run_script("train/train.py", str(config), f"save_folder={tmp_path / 'script'}", "max_duration=3ba",
                        "save_interval=3ba")
    assert result.returncode == 0, result.stderr[-3000:]
    assert losses(tmp_path / "script") == losses(verb) and sorted(losses(verb)) == [1, 2, 3]
    theirs, ours = weights(tmp_path / "script"), weights(verb)
    assert all(torch.equal(theirs[k], ours[k]) for k in ours)


@pytest.mark.slow
def test_train_py_under_composers_launcher_equals_one_process(tiny_run, tmp_path):
    """`composer -n 2 scripts/train/train.py`: two plain processes with RANK/WORLD_SIZE/... set, no torchrun."""
    config, verb = tiny_run
    port = str(_free_port())
    procs = [subprocess.Popen(
        [sys.executable, str(REPO / "scripts" / "train" / "train.py"), str(config), f"save_folder={tmp_path / 'two'}",
         "max_duration=3ba", "save_interval=3ba", "device_train_microbatch_size=4"],
        env={**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "RANK": str(rank), "LOCAL_RANK": str(rank),
             "WORLD_SIZE": "2", "LOCAL_WORLD_SIZE": "2", "NODE_RANK": "0", "MASTER_ADDR": "127.0.0.1",
             "MASTER_PORT": port},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for rank in range(2)]
    outputs = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs[0][1][-3000:] + outputs[1][1][-3000:]
    one, two = losses(verb), losses(tmp_path / "two")
    assert sorted(two) == [1, 2, 3] and all(abs(one[s] - two[s]) < 1e-5 for s in one)
    shards = sorted(p.name for p in (tmp_path / "two" / "checkpoints" / "step-00000003").glob("*.distcp"))
    assert shards == ["__0_0.distcp", "__1_0.distcp"]  # one group of two ranks, not two runs of one


@pytest.mark.slow
def test_convert_composer_to_hf_and_eval_py_equal_the_verbs(tiny_run, tmp_path, icl_dir):
    from safetensors.torch import load_file
    from typer.testing import CliRunner

    from llmfoundry.cli import app

    _, run = tiny_run
    result = run_script("inference/convert_composer_to_hf.py", "--composer_path", str(run), "--hf_output_path",
                        str(tmp_path / "script-hf"), "--output_precision", "bf16")
    assert result.returncode == 0, result.stderr[-3000:]
    verb = CliRunner().invoke(app, ["inference-convert", str(run), str(tmp_path / "verb-hf"), "--dtype", "bf16"])
    assert verb.exit_code == 0, verb.output
    theirs = load_file(tmp_path / "script-hf" / "model.safetensors")
    ours = load_file(tmp_path / "verb-hf" / "model.safetensors")
    assert theirs.keys() == ours.keys() and all(t.dtype == torch.bfloat16 and torch.equal(t, ours[k])
                                                for k, t in theirs.items())

    lines = (icl_dir / "copa.jsonl").read_text().splitlines()[:8]
    (tmp_path / "copa.jsonl").write_text("\n".join(lines) + "\n")
    config = tmp_path / "eval.yaml"
    config.write_text(f"""
models:
- model_name: tiny
  model: {{name: hf_causal_lm, pretrained_model_name_or_path: {tmp_path / 'verb-hf'}}}
icl_tasks:
- {{label: copa, dataset_uri: {tmp_path}/copa.jsonl, icl_task_type: multiple_choice, num_fewshot: [0, 1]}}
device_eval_batch_size: 4
precision: fp32
""")
    result = run_script("eval/eval.py", str(config), f"save_folder={tmp_path / 'script-eval'}")
    assert result.returncode == 0, result.stderr[-3000:]
    verb = CliRunner().invoke(app, ["eval", str(config), f"save_folder={tmp_path / 'verb-eval'}"])
    assert verb.exit_code == 0, verb.output
    theirs = json.loads((tmp_path / "script-eval" / "results.json").read_text())
    ours = json.loads((tmp_path / "verb-eval" / "results.json").read_text())
    assert theirs == ours and "copa/1-shot/acc_norm_token" in theirs["tiny"]
