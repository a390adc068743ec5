"""Reports of a trained model, as the course's students drew them in notebooks.

make_reports() writes PNGs to <run dir>/plots and the classification report to
<run dir>/reports; the run uploads both folders to MLflow (plots/, reports/). Every image
comes from the model being reported on (the best checkpoint after training) and the test
split. Figures are drawn with matplotlib's Agg renderer (no display needed).

A report that fails is logged as a warning and listed in Reports.errors: a plotting
problem never costs the trained model or its checkpoint.
"""

import logging
import time
import traceback
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from eva.data.loaders import normalize_batch
from eva.engine.loop import Predictions, evaluate

log = logging.getLogger(__name__)


@dataclass
class Reports:
    files: dict[str, Path] = field(default_factory=dict)  # report name -> file written
    metrics: dict[str, float] = field(default_factory=dict)  # per-class numbers for MLflow
    per_class: dict[str, dict] = field(default_factory=dict)  # class -> precision, recall...
    seconds: dict[str, float] = field(default_factory=dict)  # report name -> time it took
    errors: dict[str, str] = field(default_factory=dict)  # report name -> what went wrong

    @contextmanager
    def making(self, name: str):
        started = time.perf_counter()
        try:
            yield
        except Exception as e:  # a figure is not worth the run: record, warn, go on
            self.errors[name] = f"{type(e).__name__}: {e}"
            log.warning("report %s failed: %s\n%s", name, e, traceback.format_exc())
        finally:
            self.seconds[name] = time.perf_counter() - started

    def summary(self) -> dict:
        return {
            "files": {name: str(path) for name, path in self.files.items()},
            "seconds": {name: round(s, 3) for name, s in self.seconds.items()},
            "total_seconds": round(sum(self.seconds.values()), 3),
            "errors": self.errors,
        }


def make_reports(
    cfg,
    model: torch.nn.Module,
    data,
    device: torch.device,
    output_dir: Path,
    history: list[dict] | None = None,
    lrs: list[float] | None = None,
    predictions: Predictions | None = None,
) -> Reports:
    """All reports for `model` (already holding the weights to report on).

    history and lrs (per-epoch rows, per-step LRs) come from training; mode=test has
    neither and skips the curves, the LR schedule and the augmented samples.

    predictions: what `evaluate(model, data.test, device, keep_predictions=True)` returned
    for this model, so a caller that has just evaluated it (mode=test) does not pay for a
    second pass over the test split; without them the reports make that pass themselves.
    """
    if predictions is not None:  # a caller's mistake, not a report's: raised, not recorded
        if not isinstance(predictions, Predictions):
            raise TypeError(
                "make_reports(predictions=...) takes evaluate(..., keep_predictions=True)'s "
                f"result, not a {type(predictions).__name__}"
            )
        if len(predictions.labels) != len(data.test_set.images):
            raise ValueError(
                f"make_reports: {len(predictions.labels)} predictions for the "
                f"{len(data.test_set.images)} images of the test split"
            )
    from eva.report.figures import (
        plot_confusion_matrix,
        plot_curves,
        plot_lr_schedule,
        plot_per_class_accuracy,
    )
    from eva.report.metrics import (
        classification_report,
        confusion_matrix,
        metric_key,
        per_class_metrics,
    )

    rc, classes = cfg.report, list(data.classes)
    plots, texts = output_dir / "plots", output_dir / "reports"
    what = f"{cfg.model.name} on {cfg.dataset.name}"
    out = Reports()

    if history:
        with out.making("loss_accuracy_curves"):
            out.files["loss_accuracy_curves"] = plot_curves(
                history, plots / "loss_accuracy_curves.png", f"{what}: loss and accuracy",
                dpi=rc.dpi,
            )  # fmt: skip
    if lrs:
        with out.making("lr_schedule"):
            out.files["lr_schedule"] = plot_lr_schedule(
                lrs, len(data.train), plots / "lr_schedule.png",
                f"LR schedule: {cfg.scheduler.name}, per optimizer step", dpi=rc.dpi,
            )  # fmt: skip
    if history and rc.samples > 0:
        with out.making("augmented_samples"):
            out.files["augmented_samples"] = augmented_samples(cfg, data, plots, what)

    if predictions is None:
        with out.making("predictions"):
            predictions = evaluate(model, data.test, device, keep_predictions=True)
        if "predictions" in out.errors:
            return out
    n = len(predictions.labels)
    y, yhat = predictions.labels, predictions.preds
    cm = confusion_matrix(y, yhat, len(classes))
    split = f"test split (n={n}, acc {predictions.acc:.4f})"

    with out.making("confusion_matrix"):
        out.files["confusion_matrix"] = plot_confusion_matrix(
            cm, classes, plots / "confusion_matrix.png", f"Confusion matrix: {what}, {split}",
            dpi=rc.dpi,
        )  # fmt: skip
    with out.making("classification_report"):
        out.per_class = per_class_metrics(y, yhat, classes)
        texts.mkdir(parents=True, exist_ok=True)
        path = texts / "classification_report.txt"
        path.write_text(f"{what}, {split}\n\n{classification_report(y, yhat, classes)}\n")
        out.files["classification_report"] = path
        for name, row in out.per_class.items():
            for stat in ("precision", "recall", "f1"):
                out.metrics[f"class.{metric_key(name)}.{stat}"] = row[stat]
    with out.making("per_class_accuracy"):
        recall = [out.per_class[c]["recall"] for c in classes] if out.per_class else []
        out.files["per_class_accuracy"] = plot_per_class_accuracy(
            recall, classes, predictions.acc, plots / "per_class_accuracy.png",
            f"Accuracy per class: {what}, {split}", dpi=rc.dpi,
        )  # fmt: skip

    wrong = predictions.wrong[: rc.misclassified]  # most confident mistakes first
    titles = [
        f"true: {classes[predictions.labels[i]]}\n"
        f"pred: {classes[predictions.preds[i]]} ({predictions.confidence[i]:.2f})"
        for i in wrong
    ]
    images = data.test_set.images
    with out.making("misclassified"):
        from eva.report.images import plot_image_grid

        out.files["misclassified"] = plot_image_grid(
            images[wrong], titles, plots / "misclassified.png",
            f"Misclassified: {what}, {len(predictions.wrong)} of {n} test images wrong; "
            f"{len(wrong)} most confident shown", dpi=rc.dpi,
        )  # fmt: skip
    with out.making("gradcam_misclassified"):
        out.files["gradcam_misclassified"] = gradcam_report(
            cfg, model, data, predictions, wrong[: rc.gradcam], titles, plots, what
        )
    took = ", ".join(f"{k} {v:.2f}s" for k, v in out.seconds.items())
    log.info("reports in %.1fs (%s) -> %s", sum(out.seconds.values()), took, plots)
    return out


def augmented_samples(cfg, data, plots: Path, what: str) -> Path:
    """The first training batch as the model saw it: augmented, then un-normalized."""
    from eva.report.images import denormalize, plot_image_grid

    images, labels = next(iter(data.fresh_train()))
    k = min(cfg.report.samples, len(labels))
    pixels = denormalize(images[:k], list(cfg.dataset.mean), list(cfg.dataset.std))
    titles = [data.classes[int(y)] for y in labels[:k]]
    return plot_image_grid(
        pixels,
        titles,
        plots / "augmented_samples.png",
        f"Training samples after augment={cfg.augment.name}: {what}",
        dpi=cfg.report.dpi,
    )


def gradcam_report(cfg, model, data, predictions, picked: np.ndarray, titles, plots, what):
    """GradCAM of the predicted class over the most confident mistakes."""
    from eva.models import gradcam_layer
    from eva.report.gradcam import gradcam_maps, plot_gradcam

    layer = cfg.model.get("gradcam_layer") or "last conv"
    test = data.test  # uint8 (N, C, H, W) tensor and the normalization constants
    if len(picked):
        layer = gradcam_layer(model, cfg.model.get("gradcam_layer"))  # null: the last conv
        inputs = normalize_batch(test.images[torch.as_tensor(picked)], test.mean, test.std)
        targets = [int(predictions.preds[i]) for i in picked]
        cams = gradcam_maps(model, layer, inputs, targets)
    else:  # no mistakes at all: the figure says so
        cams = np.zeros((0, *test.images.shape[2:]), dtype=np.float32)
    return plot_gradcam(
        data.test_set.images[picked],
        cams,
        titles[: len(picked)],
        plots / "gradcam_misclassified.png",
        f"GradCAM of the predicted class ({cfg.model.name}.{layer}): {what}",
        dpi=cfg.report.dpi,
    )
