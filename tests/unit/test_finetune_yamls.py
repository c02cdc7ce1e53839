"""Every finetuning yaml we ship validates, and the GLUE tasks ask for the metrics GLUE reports."""

from __future__ import annotations

import pytest

from llmfoundry.config import load_typed
from llmfoundry.config.schema import ClassificationLoaderConfig, TrainConfig
from tests.conftest import REPO

FINETUNE = sorted(p for p in (REPO / "yamls" / "finetune").glob("*.yaml") if not p.name.startswith("_"))
GLUE = {"mnli": (3, ["accuracy"]), "qnli": (2, ["accuracy"]), "qqp": (2, ["accuracy", "f1"]),
        "rte": (2, ["accuracy"]), "sst2": (2, ["accuracy"]), "mrpc": (2, ["accuracy", "f1"]),
        "stsb": (1, ["pearson", "spearman"]), "cola": (2, ["matthews", "accuracy"])}


@pytest.mark.parametrize("path", FINETUNE, ids=[p.stem for p in FINETUNE])
def test_finetune_yaml_validates(path):
    cfg, _ = load_typed(TrainConfig, path)
    assert cfg.global_train_batch_size % cfg.device_train_microbatch_size == 0  # type: ignore[operator]


@pytest.mark.parametrize("task", sorted(GLUE))
def test_glue_tasks(task):
    cfg, _ = load_typed(TrainConfig, REPO / "yamls" / "finetune" / f"glue-{task}.yaml")
    labels, metrics = GLUE[task]
    assert cfg.model.num_labels == labels  # type: ignore[union-attr]
    assert isinstance(cfg.eval_loader, ClassificationLoaderConfig) and cfg.eval_loader.dataset.metrics == metrics
    assert cfg.eval_loader.dataset.text_fields == cfg.train_loader.dataset.text_fields
    assert (cfg.load_path == "runs/glue-mnli") == (task in ("rte", "mrpc", "stsb"))
