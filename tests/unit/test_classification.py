"""GLUE-style classification: metrics against hand computations, data reading, classifier-head warm starts."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from llmfoundry.config import build
from llmfoundry.config.schema import ClassificationDatasetConfig
from llmfoundry.data.classification import build_classification_dataset
from llmfoundry.errors import UserError
from llmfoundry.eval.classification import accuracy, evaluate_classifier, f1, matthews, pearson, ranks, spearman
from llmfoundry.models import ModelConfig, build_model


def test_binary_metrics_by_hand():
    pred, gold = np.array([1, 0, 1, 1, 0, 1]), np.array([1, 0, 0, 1, 1, 1])
    # tp=3 tn=1 fp=1 fn=1
    assert accuracy(pred, gold) == pytest.approx(4 / 6)
    assert f1(pred, gold) == pytest.approx(2 * 3 / (2 * 3 + 1 + 1))
    assert matthews(pred, gold) == pytest.approx((3 * 1 - 1 * 1) / np.sqrt(4 * 4 * 2 * 2))
    assert matthews(np.array([0, 0]), np.array([0, 0])) == 0.0
    assert f1(np.zeros(3, int), np.zeros(3, int)) == 0.0


def test_multiclass_matthews_by_hand():
    # confusion: 3 correct of 4; class sums true [1,2,1], predicted [1,1,2]
    assert matthews(np.array([0, 1, 2, 2]), np.array([0, 1, 1, 2])) == pytest.approx((3 * 4 - 5) / np.sqrt(10 * 10))


def test_correlations_by_hand():
    assert pearson(np.array([1, 2, 3, 4.0]), np.array([2, 4, 5, 9.0])) == pytest.approx(11 / np.sqrt(5 * 26))
    assert ranks(np.array([10, 20, 20, 30])).tolist() == [1, 2.5, 2.5, 4]
    assert spearman(np.array([1, 2, 2, 3.0]), np.array([1, 3, 2, 4.0])) == pytest.approx(4.5 / np.sqrt(4.5 * 5))


@pytest.fixture(scope="module")
def bert_tok(minilm_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(minilm_dir)


def test_pairs_from_tsv_csv_jsonl(tmp_path, bert_tok):
    (tmp_path / "train.tsv").write_text('sentence1\tsentence2\tlabel\nHe said "hi\tA dog.\tentailment\n'
                                        "Cats sleep.\tThey nap a lot today\tneutral\n")
    first = bert_tok('He said "hi', "A dog.")
    n = len(first["input_ids"])
    assert len(bert_tok("Cats sleep.", "They nap a lot today")["input_ids"]) > n
    cfg = ClassificationDatasetConfig(local=str(tmp_path), text_fields=["sentence1", "sentence2"], max_seq_len=n,
                                      label_names=["entailment", "neutral", "contradiction"], shuffle=False)
    ds, collate, report = build_classification_dataset(cfg, bert_tok, 3, where="w")
    batch = collate(list(ds))
    assert batch["labels"].tolist() == [0, 1]
    assert report.examples == 2 and report.truncated == 1  # the second pair is longer than max_seq_len
    assert batch["input_ids"][0, :n].tolist() == first["input_ids"]
    assert batch["token_type_ids"][0, :n].tolist() == first["token_type_ids"]
    assert batch["attention_mask"].all() and batch["input_ids"].shape == (2, n)
    (tmp_path / "r.jsonl").write_text(json.dumps({"s": "a", "score": "3.5"}) + "\n")
    ds, collate, _ = build_classification_dataset(
        ClassificationDatasetConfig(local=str(tmp_path / "r.jsonl"), text_fields=["s"], label_field="score"),
        bert_tok, 1, where="w")
    assert collate(list(ds))["labels"].tolist() == [3.5]


@pytest.mark.parametrize("content, message", [
    ('{"sentence": "x"}\n', r"x.jsonl:1: no label field 'label'"),
    ('{"text": "x", "label": 0}\n', r"x.jsonl:1: no text field 'sentence'"),
    ('{"sentence": "x", "label": 5}\n', r"x.jsonl:1: label 5 is outside 0..1"),
    ('{"sentence": "x", "label": "yes"}\n', r"x.jsonl:1: label 'yes' is not a class id"),
    ('{"sentence": "x", "label": 1}\n{"sentence": \n', r"x.jsonl:2: malformed JSON"),
])
def test_bad_inputs(tmp_path, bert_tok, content, message):
    (tmp_path / "x.jsonl").write_text(content)
    with pytest.raises(UserError, match=message):
        build_classification_dataset(ClassificationDatasetConfig(local=str(tmp_path / "x.jsonl")), bert_tok, 2, where="w")


def tiny_bert(num_labels, **kw):
    args = build(ModelConfig, {"name": "bert", "preset": "bert-tiny", "vocab_size": 30522, "num_labels": num_labels,
                               "hidden_dropout": 0.0, "attn_dropout": 0.0, **kw})
    torch.manual_seed(num_labels)
    model = build_model(args)
    model.init_weights()
    return model


def test_evaluate_classifier_matches_metrics_of_its_predictions(tmp_path, bert_tok):
    rows = [{"sentence": f"example number {i}", "label": i % 3} for i in range(10)]
    (tmp_path / "v.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = ClassificationDatasetConfig(local=str(tmp_path / "v.jsonl"), shuffle=False)
    ds, collate, _ = build_classification_dataset(cfg, bert_tok, 3, where="w")
    model = tiny_bert(3).eval()
    from contextlib import nullcontext

    out = evaluate_classifier(model, torch.utils.data.DataLoader(ds, batch_size=4, collate_fn=collate),
                              ["accuracy", "matthews"], torch.device("cpu"), nullcontext)
    batch = collate(list(ds))
    labels = batch.pop("labels")
    with torch.no_grad():
        logits = model(**batch)
    pred = logits.argmax(-1).numpy()
    assert out["metrics/val/accuracy"] == pytest.approx(accuracy(pred, labels.numpy()))
    assert out["loss/val"] == pytest.approx(float(torch.nn.functional.cross_entropy(logits, labels)), rel=1e-5)


def test_warm_start_reinitializes_a_head_of_another_shape(tmp_path):
    from llmfoundry.checkpoint.reader import save_model_checkpoint
    from llmfoundry.train.warm_start import warm_start_keys

    mnli = save_model_checkpoint(tiny_bert(3), {"model": {}}, tmp_path / "mnli")
    rte = tiny_bert(2)
    load, notes = warm_start_keys(rte.state_dict(), mnli)
    assert "pooler.weight" in load and "classifier.weight" not in load and "classifier.bias" not in load
    assert len(load) == len(rte.state_dict()) - 2
    assert "classifier head re-initialized: classifier.weight (2, 128) (checkpoint: (3, 128))" in notes[0]
    load, _ = warm_start_keys(tiny_bert(3).state_dict(), mnli)  # same shape: the MNLI head is kept
    assert "classifier.weight" in load
    mlm = build_model(build(ModelConfig, {"name": "bert", "preset": "bert-tiny"}))
    mlm.init_weights()
    load, notes = warm_start_keys(rte.state_dict(), save_model_checkpoint(mlm, {"model": {}}, tmp_path / "mlm"))
    assert {k for k in rte.state_dict() if k not in load} == {"pooler.weight", "pooler.bias", "classifier.weight",
                                                               "classifier.bias"}
    with pytest.raises(UserError, match="does not match this model: bert.embeddings.word_embeddings.weight"):
        warm_start_keys(tiny_bert(2, d_model=64, n_heads=4).state_dict(), mnli)
