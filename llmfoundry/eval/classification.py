"""GLUE metrics written out from their definitions (no sklearn/scipy): accuracy, F1, Matthews, Pearson, Spearman.

`evaluate_classifier` runs a sequence classifier over eval batches and reports the loss plus the metrics a
task asks for (CoLA: matthews; MRPC/QQP: accuracy + f1; STS-B: pearson + spearman; the rest accuracy).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


def accuracy(pred: np.ndarray, gold: np.ndarray) -> float:
    return float((pred == gold).mean())


def f1(pred: np.ndarray, gold: np.ndarray, positive: int = 1) -> float:
    """Binary F1 of the positive class (GLUE's MRPC/QQP convention); 0 when there are no positives at all."""
    tp = float(((pred == positive) & (gold == positive)).sum())
    fp = float(((pred == positive) & (gold != positive)).sum())
    fn = float(((pred != positive) & (gold == positive)).sum())
    return 0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn)


def matthews(pred: np.ndarray, gold: np.ndarray) -> float:
    """Matthews correlation from the confusion matrix (Gorodkin's multi-class form; the usual MCC for 2 classes)."""
    classes = np.union1d(pred, gold)
    index = {c: i for i, c in enumerate(classes)}
    confusion = np.zeros((len(classes), len(classes)))
    for p, g in zip(pred, gold):
        confusion[index[g], index[p]] += 1
    n = confusion.sum()
    correct = np.trace(confusion)
    true_counts, pred_counts = confusion.sum(1), confusion.sum(0)
    cov = correct * n - float(true_counts @ pred_counts)
    denom = np.sqrt((n * n - float(pred_counts @ pred_counts)) * (n * n - float(true_counts @ true_counts)))
    return 0.0 if denom == 0 else float(cov / denom)


def pearson(x: np.ndarray, y: np.ndarray) -> float:
    x, y = x.astype(np.float64) - x.mean(), y.astype(np.float64) - y.mean()
    denom = np.sqrt((x * x).sum() * (y * y).sum())
    return 0.0 if denom == 0 else float((x * y).sum() / denom)


def ranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks, ties sharing the average of the ranks they span."""
    order = np.argsort(x, kind="stable")
    sorted_x = x[order]
    out = np.empty(len(x), dtype=np.float64)
    start = 0
    while start < len(x):
        end = start
        while end + 1 < len(x) and sorted_x[end + 1] == sorted_x[start]:
            end += 1
        out[order[start : end + 1]] = (start + end) / 2 + 1
        start = end + 1
    return out


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    return pearson(ranks(x), ranks(y))


METRICS: dict[str, Callable[[np.ndarray, np.ndarray], float]] = {
    "accuracy": accuracy, "f1": f1, "matthews": matthews, "pearson": pearson, "spearman": spearman,
}


def score(names: Iterable[str], predictions: np.ndarray, gold: np.ndarray) -> dict[str, float]:
    return {name: METRICS[name](predictions, gold) for name in names}


@torch.no_grad()
def evaluate_classifier(model: nn.Module, batches: Iterable[dict[str, torch.Tensor]], metrics: list[str],
                        device: torch.device, autocast: Callable[[], Any]) -> dict[str, float]:
    """Mean loss and the metrics over all batches (regression when the head has one output)."""
    was_training = model.training
    model.eval()
    preds, golds, loss_sum = [], [], 0.0
    for batch in batches:
        batch = {k: v.to(device) for k, v in batch.items()}
        labels = batch.pop("labels")
        with autocast():
            logits = model(**batch).float()
        if logits.shape[-1] == 1:
            values = logits.squeeze(-1)
            loss_sum += float(F.mse_loss(values, labels.float(), reduction="sum"))
        else:
            values = logits.argmax(-1)
            loss_sum += float(F.cross_entropy(logits, labels, reduction="sum"))
        preds.append(values.cpu().numpy())
        golds.append(labels.cpu().numpy())
    model.train(was_training)
    pred, gold = np.concatenate(preds), np.concatenate(golds)
    out = {"loss/val": loss_sum / max(len(gold), 1)}
    out.update({f"metrics/val/{k}": v for k, v in score(metrics, pred, gold).items()})
    return out
