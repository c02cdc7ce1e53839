"""A handful of the fuzz cases through real `foundry` subprocesses: what a user's terminal shows is one line
per problem on stderr, exit 1, no traceback; `--debug` shows the traceback."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.conftest import run_cli
from tests.fuzz.conftest import record

pytestmark = pytest.mark.slow


def _one_line_each(proc, count: int, *names: str) -> list[str]:  # noqa: ANN001
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == count and all(line.startswith("error: ") for line in lines), proc.stderr
    for name in names:
        assert name in proc.stderr, (name, proc.stderr)
    return lines


def test_several_config_mistakes_then_debug(tiny: dict[str, Path], tmp_path: Path) -> None:
    args = ["train", str(tiny["base"]), "optimizer.lr=-1", "optimizer.betas=[1.5,0.95]", "seed=99999999999999999999",
            "model.n_heads=0", "train_loader.num_workers=-1", "eval_subset_num_batches=0", f"save_folder={tmp_path}"]
    _one_line_each(run_cli(*args), 6, "optimizer.lr", "optimizer.betas", "seed", "model.n_heads",
                   "train_loader.num_workers", "eval_subset_num_batches")
    debug = run_cli("--debug", *args)
    assert debug.returncode == 1 and "Traceback" in debug.stderr and "UserError" in debug.stderr
    record("subprocess", True)


def test_relations_found_before_any_model_is_built(tiny: dict[str, Path], tmp_path: Path) -> None:
    proc = run_cli("train", str(tiny["base"]), "model.vocab_size=100", "train_loader.dataset.max_seq_len=64",
                   "eval_loader.dataset.max_seq_len=64", "model.max_seq_len=16", "model.d_model=10000000000",
                   "model.n_heads=1", f"save_folder={tmp_path / 'run'}")
    lines = _one_line_each(proc, 6, "model.vocab_size", "smaller than the 350 tokens", "model's learned positions",
                           "32-token samples of train_loader", "32-token samples of eval_loader", "per process")
    assert sum("save_folder" in line for line in lines) == 1  # no room on this disk for a checkpoint of that size
    assert not (tmp_path / "run").exists()
    record("subprocess", True)


def test_damaged_shard_in_a_subprocess(tiny: dict[str, Path], tmp_path: Path) -> None:
    data = tmp_path / "data"
    shutil.copytree(tiny["data"], data)
    shard = data / "train" / "shard.00000.mds"
    shard.write_bytes(shard.read_bytes()[:-10] + b"0123456789")
    proc = run_cli("train", str(tiny["base"]), f"train_loader.dataset.local={data}", f"save_folder={tmp_path / 'run'}",
                   "train_loader.num_workers=1")  # the error crosses a DataLoader worker and stays one line
    _one_line_each(proc, 1, str(shard), "xxh64")
    record("subprocess", True)


def test_bad_eval_item_in_a_subprocess(tmp_path: Path) -> None:
    task = tmp_path / "task.jsonl"
    task.write_bytes(b'{"query": "q", "choices": ["a", "b"], "gold": 0}\n[1, 2]\n')
    cfg = tmp_path / "eval.yaml"
    cfg.write_text(f"models:\n- model_name: m\n  model: {{name: hf_causal_lm, "
                   f"pretrained_model_name_or_path: {tmp_path}}}\n  tokenizer: {{name: {tmp_path}}}\nicl_tasks:\n- label: t\n  dataset_uri: {task}\n"
                   "  icl_task_type: multiple_choice\n")
    (tmp_path / "config.json").write_text("{}")
    proc = run_cli("eval", str(cfg))
    _one_line_each(proc, 1, f"{task}:2", "JSON object")
    record("subprocess", True)
