"""Every yaml we ship validates against the schema (a broken example is a bug)."""

from __future__ import annotations

import pytest

from llmfoundry.config import load_typed
from llmfoundry.config.schema import TrainConfig
from llmfoundry.eval.run import EvalConfig
from tests.conftest import REPO

PRETRAIN = sorted(p for p in (REPO / "yamls" / "pretrain").glob("*.yaml") if not p.name.startswith("_"))


@pytest.mark.parametrize("path", PRETRAIN, ids=[p.stem for p in PRETRAIN])
def test_pretrain_yaml_validates(path):
    cfg, _ = load_typed(TrainConfig, path)
    assert cfg.global_train_batch_size % (cfg.device_train_microbatch_size if cfg.device_train_microbatch_size != "auto" else 1) == 0


@pytest.mark.parametrize("name", ["core.yaml", "demo.yaml", "biomedical.yaml"])
def test_eval_yaml_validates(name, monkeypatch):
    monkeypatch.setenv("MEDQA", "/data/medqa.jsonl")
    cfg, _ = load_typed(EvalConfig, REPO / "yamls" / "eval" / name)
    assert cfg.models
