"""Report figures as PNG files: training curves, LR schedule, LR range test, confusion matrix,
per-class accuracy.

matplotlib's object API without pyplot: a Figure renders with Agg when saved, needs no display
and leaves no global state behind (nothing to close, safe in sweep workers and threads).
Sizes are in inches; at the default 110 dpi an 11-inch figure is 1210 px wide.
"""

import math
import textwrap
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, MaxNLocator, PercentFormatter

SCI = FuncFormatter(lambda v, _pos: f"{v:.1e}")  # tick labels like 2.0e-03, no offset text


def save_figure(fig: Figure, path: Path, dpi: int) -> Path:
    """Write fig as a PNG at path (parent folders created) and return path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi, format="png")
    return path


def add_title(fig: Figure, title: str, fontsize: float = 12) -> None:
    """fig.suptitle, wrapped onto more lines when it would be wider than the figure.

    Titles name the model, dataset and split, so they can outgrow a small figure; a glyph of
    DejaVu Sans averages ~0.6 em, so a line holds about width / (0.6 * fontsize) characters.
    """
    width_in = fig.get_size_inches()[0]
    chars = max(20, int(width_in * 72 / (0.6 * fontsize)))
    lines = [textwrap.fill(line, chars) for line in title.split("\n")]
    fig.suptitle("\n".join(lines), fontsize=fontsize)


def plot_message(path: Path, title: str, message: str = "none", dpi: int = 110) -> Path:
    """A small figure with a title and one word in its middle, for a report with nothing to
    show (no misclassified image, an empty history) so the report's file list stays fixed."""
    fig = Figure(figsize=(6, 2.2), layout="constrained")
    add_title(fig, title)
    ax = fig.add_subplot()
    ax.axis("off")
    ax.text(0.5, 0.5, message, ha="center", va="center", fontsize=14, color="0.4")
    return save_figure(fig, path, dpi)


def plot_curves(history: list[dict], path: Path, title: str, dpi: int = 110) -> Path:
    """Loss and accuracy per epoch, train/test (and val when logged), side by side."""
    if not history:
        return plot_message(path, title, "no epochs recorded", dpi)
    fig = Figure(figsize=(11, 4.2), layout="constrained")
    add_title(fig, title)
    ax_loss, ax_acc = fig.subplots(1, 2)
    epochs = [int(r["epoch"]) for r in history]
    lo, hi = min(epochs), max(epochs)
    pad = max(0.5, 0.03 * (hi - lo))  # a 1-epoch run still gets a range with integer ticks
    styles = {"train": ("C0", "o"), "test": ("C1", "s"), "val": ("C2", "^")}
    for ax, metric in ((ax_loss, "loss"), (ax_acc, "acc")):
        for split, (color, marker) in styles.items():
            # val columns may be absent or None on some rows: plot the epochs that have them
            rows = [r for r in history if r.get(f"{split}_{metric}") is not None]
            if not rows:
                continue
            x = [int(r["epoch"]) for r in rows]
            y = [float(r[f"{split}_{metric}"]) for r in rows]
            ax.plot(x, y, color=color, marker=marker, markersize=4, label=split)
        ax.set_xlabel("epoch")
        ax.set_xlim(lo - pad, hi + pad)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
        ax.grid(alpha=0.3)
        ax.legend()
    ax_loss.set_title("Loss")
    ax_loss.set_ylabel("cross-entropy")
    ax_acc.set_title("Accuracy")
    ax_acc.set_ylabel("accuracy")
    ax_acc.yaxis.set_major_formatter(PercentFormatter(xmax=1.0))
    return save_figure(fig, path, dpi)


def plot_lr_schedule(
    lrs: list[float], steps_per_epoch: int, path: Path, title: str, dpi: int = 110
) -> Path:
    """Learning rate of every optimizer step, with epoch boundaries and the peak marked."""
    if len(lrs) == 0:
        return plot_message(path, title, "no optimizer steps", dpi)
    lr = np.asarray(lrs, dtype=np.float64)
    steps = np.arange(len(lr))  # optimizer step index, from 0
    fig = Figure(figsize=(10, 4.2), layout="constrained")
    add_title(fig, title)
    ax = fig.add_subplot()
    dots = "." if len(lr) < 30 else None  # a short run shows its individual steps
    ax.plot(steps, lr, color="C0", linewidth=1.5, marker=dots, label="learning rate")
    epochs = math.ceil(len(lr) / steps_per_epoch) if steps_per_epoch > 0 else 0
    if 1 < epochs <= 60:  # more lines than that would turn into a grey wash
        for k in range(1, epochs):
            label = "epoch boundaries" if k == 1 else None  # one legend entry for all
            ax.axvline(k * steps_per_epoch, color="0.6", linewidth=0.6, alpha=0.5, label=label)
        top = ax.secondary_xaxis(
            "top", functions=(lambda s: s / steps_per_epoch, lambda e: e * steps_per_epoch)
        )
        top.set_xlabel("epoch")
        top.xaxis.set_major_locator(MaxNLocator(integer=True))
    peak = int(np.argmax(lr))  # first step at the highest LR
    where = peak / max(len(lr) - 1, 1)  # 0 = left edge, 1 = right edge
    ax.plot([peak], [lr[peak]], "o", color="C3")
    # Above the marker (the y range has headroom for it), never across the curve.
    ax.annotate(
        f"peak {lr[peak]:.2e} at step {peak}",
        xy=(peak, lr[peak]),
        xytext=(0, 7),
        textcoords="offset points",
        ha="left" if where < 0.15 else "right" if where > 0.85 else "center",
        va="bottom",
        fontsize=9,
        color="C3",
    )
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("learning rate")
    ax.yaxis.set_major_formatter(SCI)
    pad = max(0.5, 0.01 * len(lr))  # steps: keeps a peak on the first or last step in view
    ax.set_xlim(-pad, len(lr) - 1 + pad)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylim(bottom=min(0.0, float(lr.min())), top=float(lr.max()) * 1.15 or 1.0)
    ax.grid(axis="y", alpha=0.3)  # vertical guides are the epoch boundaries
    ax.legend(loc="upper right" if where < 0.5 else "upper left")
    return save_figure(fig, path, dpi)


def _lr_find_ylim(y: np.ndarray, raw: np.ndarray | None) -> tuple[float, float]:
    """y range that keeps the descending part readable when the tail diverges.

    Top: 1.3x the highest smoothed loss up to its minimum (the start of the curve, usually),
    unless the whole curve stays lower. Bottom: 5% of the range under the lowest loss, raw
    losses included (they dip under the smoothed curve, which lags behind them).
    """
    low = float(y.min())
    if raw is not None and np.isfinite(raw).any():
        low = min(low, float(np.nanmin(raw)))
    cap = 1.3 * float(y[: int(np.argmin(y)) + 1].max())
    high = min(float(y.max()), cap)
    span = high - low
    if span <= 0:  # a flat curve (or a single point): centre it
        span = abs(low) * 0.1 or 1.0
        return low - span, high + span
    return low - 0.05 * span, high + 0.05 * span


def plot_lr_find(
    lrs,
    losses,
    path: Path,
    *,
    suggested_lr: float | None,
    min_loss_lr: float | None,
    title: str,
    raw_losses=None,
    suggested_by: str = "steepest descent",
    dpi: int = 110,
) -> Path:
    """LR range test: smoothed loss against the LR on a log axis, with the two suggestions.

    `suggested_by` names the rule that picked suggested_lr (the marker's label).
    """
    lr = np.asarray(lrs, dtype=np.float64)
    y = np.asarray(losses, dtype=np.float64)
    ok = np.isfinite(lr) & np.isfinite(y) & (lr > 0)  # a diverged run ends in inf/nan
    lr, y = lr[ok], y[ok]
    if len(lr) == 0:
        return plot_message(path, title, "no finite losses", dpi)
    order = np.argsort(lr, kind="stable")
    lr, y = lr[order], y[order]
    fig = Figure(figsize=(9, 5), layout="constrained")
    add_title(fig, title)
    ax = fig.add_subplot()
    raw = None
    if raw_losses is not None:
        raw = np.asarray(raw_losses, dtype=np.float64)[ok][order]
        raw[~np.isfinite(raw)] = np.nan  # drawn as a gap
        ax.plot(lr, raw, color="0.7", linewidth=0.8, alpha=0.7, label="raw loss")
    dots = "." if len(lr) < 30 else None  # a short test shows its individual points
    ax.plot(lr, y, color="C0", linewidth=1.8, marker=dots, label="smoothed loss")
    if suggested_lr is not None and np.isfinite(suggested_lr) and suggested_lr > 0:
        at = float(np.interp(np.log(suggested_lr), np.log(lr), y))  # on the drawn curve
        label = f"{suggested_by}: {suggested_lr:.1e} (suggested)"
        ax.plot([suggested_lr], [at], "o", color="C3", markersize=9, label=label)
    if min_loss_lr is not None and np.isfinite(min_loss_lr) and min_loss_lr > 0:
        label = f"min loss / 10: {min_loss_lr:.1e}"
        ax.axvline(min_loss_lr, color="C2", linestyle="--", linewidth=1.3, label=label)
    ax.set_xscale("log")
    ax.set_xlabel("learning rate (log scale)")
    ax.set_ylabel("training loss (smoothed)")
    ax.set_ylim(*_lr_find_ylim(y, raw))
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left")  # the loss starts high on the left: that corner is free
    return save_figure(fig, path, dpi)


def _text_color(rgba) -> str:
    """Black on light cells, white on dark ones (relative luminance, ITU-R BT.709)."""
    r, g, b = rgba[:3]
    return "black" if 0.2126 * r + 0.7152 * g + 0.0722 * b > 0.5 else "white"


def plot_confusion_matrix(
    cm: np.ndarray, classes: list[str], path: Path, title: str, dpi: int = 110
) -> Path:
    """Counts in every cell; the colour is the share of the row (the true class).

    Colouring by row share rather than raw count keeps the off-diagonal mistakes visible
    when the diagonal holds ~90% of the samples, and treats small classes like large ones.
    """
    cm = np.asarray(cm, dtype=np.int64)
    n = len(classes)
    rows = cm.sum(axis=1, keepdims=True)
    share = np.divide(cm, rows, out=np.zeros(cm.shape), where=rows != 0)
    side = min(20.0, max(4.5, 0.6 * n + 3.0))  # inches: ~0.6 in per cell, room for labels
    fig = Figure(figsize=(side + 1.0, side), layout="constrained")
    ax = fig.add_subplot()
    im = ax.imshow(share, cmap="Blues", vmin=0.0, vmax=1.0)
    cbar = fig.colorbar(im, ax=ax, shrink=0.8)
    cbar.set_label("share of the true class (row)")
    cbar.ax.yaxis.set_major_formatter(PercentFormatter(xmax=1.0))
    fontsize = 9 if n <= 10 else max(5, 9 - (n - 10) // 3)
    cells = np.ndenumerate(cm) if n <= 30 else ()  # past 30 classes counts get unreadable
    for (i, j), count in cells:
        color = _text_color(im.cmap(im.norm(share[i, j])))
        ax.text(j, i, str(count), ha="center", va="center", fontsize=fontsize, color=color)
    ax.set_xticks(range(n), classes, rotation=45, ha="right", rotation_mode="anchor")
    ax.set_yticks(range(n), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    add_title(fig, title)
    return save_figure(fig, path, dpi)


def plot_per_class_accuracy(
    accuracy: list[float],
    classes: list[str],
    overall: float,
    path: Path,
    title: str,
    dpi: int = 110,
) -> Path:
    """One horizontal bar per class (its recall), the overall accuracy as a dashed line."""
    acc = np.asarray(accuracy, dtype=np.float64)
    n = len(classes)
    fig = Figure(figsize=(8, min(22.0, 0.4 * n + 1.8)), layout="constrained")
    ax = fig.add_subplot()
    pos = np.arange(n)
    ax.barh(pos, acc, color="C0", height=0.7)
    for p, v in zip(pos, acc, strict=True):
        # a white box keeps the label readable where the overall line runs behind it
        box = {"facecolor": "white", "edgecolor": "none", "pad": 1.0}
        ax.text(v + 0.01, p, f"{v:.3f}", va="center", fontsize=9, zorder=4, bbox=box)
    label = f"overall accuracy {overall:.3f}"
    ax.axvline(overall, color="C3", linestyle="--", linewidth=1.3, zorder=3, label=label)
    ax.set_yticks(pos, classes)
    ax.invert_yaxis()  # first class on top, as in the confusion matrix
    ax.set_xlim(0, 1.1)  # room for the value labels right of a bar at 1.0
    ax.set_xticks(np.linspace(0, 1, 6))
    ax.set_xlabel("accuracy (recall of the class)")
    add_title(fig, title)
    ax.grid(axis="x", alpha=0.3)
    fig.legend(loc="outside lower center", fontsize=9)
    return save_figure(fig, path, dpi)
