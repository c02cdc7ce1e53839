"""Every training yaml LLM Foundry v0.21 ships, with path edits only: `--print-config` accepts it, and a sample
trains 2 steps (shrunk by overrides) on tiny generated data and models."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tests.foundry_yamls import OUT_OF_SCOPE, foundry_train_yamls, make_resources, relative_name, write_edited

ALL = [f"{kind}/{name}" for kind, names in {
    "finetune": ["1b_local_data_sft", "7b_dolly_sft", "dbrx-full-ft", "gpt2-arc-easy-cpu-streaming-dataset",
                 "mpt-30b-instruct", "mpt-7b_dolly_sft", "t5-small_dolly_sft"],
    "pretrain": ["gpt-neo-125m", "gpt-neo-125m_eval", "gpt2-small", "hf-llama-3.1-8B", "mpt-125m", "mpt-1b",
                 "mpt-30b", "mpt-350m", "mpt-3b", "mpt-70b", "mpt-760m", "mpt-7b", "mpt-small-cpu", "opt-3b",
                 "testing-moe", "testing"],
}.items() for name in (f"{n}.yaml" for n in names)]


@pytest.fixture(scope="module")
def resources(shared_dir, tmp_path_factory):
    return make_resources(tmp_path_factory.mktemp("foundry"), shared_dir)


@pytest.fixture(autouse=True)
def _no_run_name(monkeypatch):
    monkeypatch.delenv("RUN_NAME", raising=False)


def test_the_shipped_files_are_the_ones_listed(shared_dir):
    assert [relative_name(p) for p in foundry_train_yamls(shared_dir)] == sorted(ALL)


@pytest.mark.parametrize("name", ALL)
def test_print_config_accepts_the_shipped_yaml(name, resources, tmp_path):
    from typer.testing import CliRunner

    from llmfoundry.cli import app

    path = resources.shared / "foundry-v0.21" / "train" / name
    edited = write_edited(path, resources, tmp_path)
    result = CliRunner().invoke(app, ["train", str(edited), "--print-config"])
    if name in OUT_OF_SCOPE:  # refused by name, in one line
        assert result.exit_code == 1
        lines = result.output.strip().splitlines()
        assert len(lines) == 1 and "not supported" in lines[0], result.output
        return
    assert result.exit_code == 0, result.output
    printed = yaml.safe_load(result.output)
    assert printed["max_duration"] and printed["model"]["name"]


def _train(edited: Path, *overrides: str) -> tuple[dict, list[str]]:
    from llmfoundry.config import load_typed
    from llmfoundry.config.schema import TrainConfig
    from llmfoundry.train.loop import Trainer

    cfg, loaded = load_typed(TrainConfig, edited, list(overrides))
    trainer = Trainer(cfg, loaded)
    trainer.fit()
    rows = [json.loads(line) for line in (Path(cfg.save_folder) / "metrics.jsonl").read_text().splitlines()]
    return rows, trainer.notes


SMALL = ["max_duration=2ba", "global_train_batch_size=2", "device_train_microbatch_size=1", "device_eval_batch_size=2",
         "eval_interval=2ba", "eval_subset_num_batches=1", "save_interval=0", "variables.max_seq_len=32",
         "max_seq_len=32", "train_loader.num_workers=0", "precision=fp32"]
TINY_MPT = ["model.d_model=32", "model.n_heads=2", "model.n_layers=2", "model.attn_config.attn_impl=torch"]


def composer_shape(shared: Path) -> list[str]:
    """The shape (and tokenizer) of the real Composer run in ../shared, for yamls whose load_path it stands for."""
    artifacts = shared / "foundry-v0.21" / "artifacts"
    return ["model.d_model=128", "model.n_heads=4", "model.n_layers=2", "model.vocab_size=8192", "model.no_bias=true",
            "model.learned_pos_emb=false", "model.attn_config.alibi=true", "model.attn_config.attn_impl=torch",
            f"tokenizer.name={artifacts / 'tokenizer'}"]


def trained_steps(rows: list[dict]) -> list[dict]:
    return list({r["step"]: r for r in rows if "loss/train" in r}.values())


@pytest.mark.slow
@pytest.mark.parametrize("name,extra", [
    ("pretrain/mpt-small-cpu.yaml", ["eval_loader.num_workers=0"]),
    ("pretrain/mpt-125m.yaml", TINY_MPT + ["eval_loader.num_workers=0"]),
    ("finetune/7b_dolly_sft.yaml", ["eval_interval=0"]),  # + the Composer run's shape: its load_path
    ("finetune/gpt2-arc-easy-cpu-streaming-dataset.yaml", ["eval_interval=0"]),
    ("pretrain/hf-llama-3.1-8B.yaml", ["model.use_flash_attention_2=false", "fsdp_config=null"]),
])
def test_a_shipped_yaml_trains_two_steps(name, extra, resources, tmp_path):
    path = resources.shared / "foundry-v0.21" / "train" / name
    edited = write_edited(path, resources, tmp_path)
    if yaml.safe_load(path.read_text()).get("load_path"):
        extra = [*extra, *composer_shape(resources.shared)]
    rows, notes = _train(edited, *SMALL, *extra, f"save_folder={tmp_path / 'run'}")
    steps = trained_steps(rows)
    assert [r["step"] for r in steps] == [1, 2]
    assert all(r["loss/train"] > 0 for r in steps)
    raw = yaml.safe_load(path.read_text())
    if "activation_checkpointing_reentrant" in (raw.get("fsdp_config") or {}) and "fsdp_config=null" not in extra:
        assert any(n.startswith("fsdp_config: ignored, no FSDP2 meaning: limit_all_gathers") for n in notes)


@pytest.mark.slow
def test_local_data_sft_starts_from_the_composer_checkpoint(resources, tmp_path):
    """1b_local_data_sft.yaml: hf_name json + hf_kwargs.data_dir + the user's preprocessing_fn + a Composer
    load_path, shrunk to the shape of the real Composer run in ../shared (its tokenizer too)."""
    path = resources.shared / "foundry-v0.21" / "train" / "finetune" / "1b_local_data_sft.yaml"
    edited = write_edited(path, resources, tmp_path)
    shape = [*composer_shape(resources.shared), "eval_loader.num_workers=0", "eval_loader.persistent_workers=false",
             "train_loader.persistent_workers=false"]
    rows, notes = _train(edited, *SMALL, *shape, f"save_folder={tmp_path / 'run'}")
    assert any("weights from the Composer checkpoint ep0-ba60-rank0.pt after 60 batches" in n for n in notes)
    steps = trained_steps(rows)
    assert [r["step"] for r in steps] == [1, 2]
    # a model that starts from the trained checkpoint is far better than chance (ln 8192 = 9.0) on this text
    assert steps[0]["loss/train"] < 7.5
    assert any("loss/val" in r for r in rows)
