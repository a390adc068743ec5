"""Predictions of a trained model on a fixed evaluation set, and the numbers derived from them.

Everything after `predict` works on plain numpy arrays, so the confusion matrix, per-class
metrics and the text report can be computed (and tested) without a model.
"""

import re
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn


@dataclass
class Predictions:
    """One model's verdict on every evaluation sample, in the batcher's order."""

    labels: np.ndarray  # int64 (N,): true class index
    preds: np.ndarray  # int64 (N,): argmax of the logits
    confidence: np.ndarray  # float32 (N,): softmax probability of the predicted class
    loss: float  # mean cross-entropy over the N samples (nats)
    acc: float  # fraction of samples predicted correctly, in [0, 1]

    @property
    def wrong(self) -> np.ndarray:
        """Indices of the misclassified samples, most confident mistakes first.

        A stable sort keeps ties in sample order, so the same predictions always pick the same
        images for the report.
        """
        idx = np.flatnonzero(self.preds != self.labels)
        order = np.argsort(-self.confidence[idx], kind="stable")
        return idx[order]


def predict(
    model: nn.Module, batches: Iterable[tuple[Tensor, Tensor]], device: torch.device | str
) -> Predictions:
    """Run the model over (normalized images, int64 labels) batches in eval mode, no gradients.

    Results stay on the device until the end: one transfer to the host instead of one per
    batch (each .cpu() on a GPU is a synchronisation point).
    """
    model.eval()
    labels, preds, conf = [], [], []
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)  # summed nats
    with torch.no_grad():
        for images, targets in batches:
            images = images.to(device, non_blocking=True)
            targets = targets.to(device, non_blocking=True)
            logits = model(images).float()
            loss_sum += nn.functional.cross_entropy(logits, targets, reduction="sum")
            p, cls = torch.softmax(logits, dim=1).max(dim=1)
            labels.append(targets)
            preds.append(cls)
            conf.append(p)
    if not labels:
        raise ValueError("predict: the evaluation batches were empty")
    y = torch.cat(labels).cpu().numpy().astype(np.int64)
    yhat = torch.cat(preds).cpu().numpy().astype(np.int64)
    confidence = torch.cat(conf).cpu().numpy().astype(np.float32)
    n = len(y)
    return Predictions(
        labels=y,
        preds=yhat,
        confidence=confidence,
        loss=float(loss_sum.item()) / n,
        acc=float((y == yhat).mean()),
    )


def confusion_matrix(labels: np.ndarray, preds: np.ndarray, num_classes: int) -> np.ndarray:
    """int64 (C, C) counts: row = true class, column = predicted class."""
    labels = np.asarray(labels, dtype=np.int64)
    preds = np.asarray(preds, dtype=np.int64)
    if labels.shape != preds.shape:
        raise ValueError(f"labels {labels.shape} and preds {preds.shape} differ in shape")
    for name, v in (("labels", labels), ("preds", preds)):
        if v.size and (v.min() < 0 or v.max() >= num_classes):
            raise ValueError(f"{name} outside [0, {num_classes}): {v.min()}..{v.max()}")
    # Each (true, pred) pair gets one flat bin; bincount counts them all in one pass.
    flat = np.bincount(labels * num_classes + preds, minlength=num_classes * num_classes)
    return flat.reshape(num_classes, num_classes).astype(np.int64)


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """num / den elementwise, 0.0 where den == 0 (a class never predicted or never present)."""
    num = np.asarray(num, dtype=np.float64)
    den = np.asarray(den, dtype=np.float64)
    out = np.zeros_like(num)
    np.divide(num, den, out=out, where=den != 0)  # no division happens where den == 0
    return out


def _scores(cm: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per-class precision, recall, f1 (float64) and support (int64) from a confusion matrix."""
    cm = np.asarray(cm, dtype=np.int64)
    tp = np.diag(cm)
    support = cm.sum(axis=1)  # samples whose true class is c
    predicted = cm.sum(axis=0)  # samples predicted as c
    precision = _ratio(tp, predicted)
    recall = _ratio(tp, support)
    f1 = _ratio(2 * precision * recall, precision + recall)
    return precision, recall, f1, support


def per_class_metrics(cm: np.ndarray, classes: list[str]) -> dict[str, dict[str, float]]:
    """{class name: {precision, recall, f1, support}}; recall is the per-class accuracy."""
    if len(classes) != len(cm):
        raise ValueError(f"{len(classes)} class names for a {len(cm)}x{len(cm)} matrix")
    precision, recall, f1, support = _scores(cm)
    return {
        name: {
            "precision": float(precision[i]),
            "recall": float(recall[i]),
            "f1": float(f1[i]),
            "support": int(support[i]),
        }
        for i, name in enumerate(classes)
    }


def classification_report(cm: np.ndarray, classes: list[str]) -> str:
    """A plain-text table in the layout of scikit-learn's classification_report (4 decimals).

    The averages follow scikit-learn: macro = plain mean over classes, weighted = mean
    weighted by support; accuracy = trace / total.
    """
    precision, recall, f1, support = _scores(cm)
    total = int(support.sum())
    accuracy = float(np.trace(cm)) / total if total else 0.0
    w = _ratio(support, total) if total else np.zeros(len(support))
    width = max([len(c) for c in classes] + [len("weighted avg")])
    head = ["precision", "recall", "f1-score", "support"]
    lines = [" " * width + " " + "".join(f"{h:>10}" for h in head), ""]

    def row(name: str, p: float, r: float, f: float, s: int) -> str:
        return f"{name:>{width}} {p:>10.4f}{r:>10.4f}{f:>10.4f}{s:>10d}"

    for i, name in enumerate(classes):
        lines.append(row(name, precision[i], recall[i], f1[i], int(support[i])))
    lines.append("")
    lines.append(f"{'accuracy':>{width}} {'':>10}{'':>10}{accuracy:>10.4f}{total:>10d}")
    lines.append(row("macro avg", precision.mean(), recall.mean(), f1.mean(), total))
    lines.append(
        row("weighted avg", (precision * w).sum(), (recall * w).sum(), (f1 * w).sum(), total)
    )
    return "\n".join(lines) + "\n"


def metric_key(name: str) -> str:
    """A class name as part of an MLflow metric key: "T-shirt/top" -> "t_shirt_top"."""
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")
