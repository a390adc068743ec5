"""Numbers derived from a model's predictions (eva.engine.loop.Predictions), by scikit-learn.

Everything here works on plain numpy arrays of class indices, so the confusion matrix,
per-class metrics and the text report can be computed (and tested) without a model. eva
checks the inputs first, so a mistake reads as one clear error rather than deep in sklearn.
"""

import re

import numpy as np
from sklearn import metrics


def _checked(labels, preds, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """labels and preds as int64 arrays of one shape, every value in [0, num_classes)."""
    labels = np.asarray(labels, dtype=np.int64)
    preds = np.asarray(preds, dtype=np.int64)
    if labels.shape != preds.shape:
        raise ValueError(f"labels {labels.shape} and preds {preds.shape} differ in shape")
    for name, v in (("labels", labels), ("preds", preds)):
        if v.size and (v.min() < 0 or v.max() >= num_classes):
            raise ValueError(f"{name} outside [0, {num_classes}): {v.min()}..{v.max()}")
    return labels, preds


def confusion_matrix(labels, preds, num_classes: int) -> np.ndarray:
    """int64 (C, C) counts: row = true class, column = predicted class."""
    labels, preds = _checked(labels, preds, num_classes)
    cm = metrics.confusion_matrix(labels, preds, labels=range(num_classes))
    return cm.astype(np.int64)


def per_class_metrics(labels, preds, classes: list[str]) -> dict[str, dict[str, float]]:
    """{class name: {precision, recall, f1, support}}; recall is the per-class accuracy.

    A class never predicted (or never present) scores 0.0 where its ratio is undefined.
    """
    labels, preds = _checked(labels, preds, len(classes))
    precision, recall, f1, support = metrics.precision_recall_fscore_support(
        labels, preds, labels=range(len(classes)), zero_division=0
    )
    return {
        name: {
            "precision": float(precision[i]),
            "recall": float(recall[i]),
            "f1": float(f1[i]),
            "support": int(support[i]),
        }
        for i, name in enumerate(classes)
    }


def classification_report(labels, preds, classes: list[str]) -> str:
    """scikit-learn's plain-text classification report, 4 decimals, every class listed."""
    labels, preds = _checked(labels, preds, len(classes))
    return metrics.classification_report(
        labels,
        preds,
        labels=range(len(classes)),
        target_names=list(classes),
        digits=4,
        zero_division=0,
    )


def metric_key(name: str) -> str:
    """A class name as part of an MLflow metric key: "T-shirt/top" -> "t_shirt_top"."""
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")
