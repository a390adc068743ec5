"""Everything a run needs to continue exactly where it stopped: checkpoints/last.pt.

Written at the end of every epoch (atomically, like best.pt): model, optimizer, scheduler
and AMP scaler states, the epoch, the history and best row so far, and every random
stream the next epoch draws from (torch CPU and CUDA, numpy, python, and the training
loader's generator, which fixes the data order and augmentations). Loaded with
weights_only=True, so every value here is a tensor or a plain Python container.
"""

import random
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from eva.engine.checkpoint import load_checkpoint, save_checkpoint

FORMAT = 1  # bumped when the layout of last.pt changes


@dataclass
class Progress:
    """Where the epoch loop stands: what fit() returns and what last.pt restores."""

    epoch: int = 0  # epochs completed
    history: list[dict] = field(default_factory=list)  # one row of metrics per epoch
    best: dict = field(default_factory=dict)  # the best row so far, with "selected_on"
    lrs: list[float] = field(default_factory=list)  # the LR of every optimizer step
    finished: bool = False  # training, reports and MLflow uploads all done
    # This process only, not saved: seconds from launch to its first training batch.
    startup_seconds: float | None = None


def rng_states(order: torch.Generator | None) -> dict:
    """Every random stream a training epoch draws from, as weights_only-safe values."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    states = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "kind": kind,
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "gauss": float(gauss),
        },
        "python": random.getstate(),
        "data_order": order.get_state() if order is not None else None,
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def restore_rng_states(states: dict, order: torch.Generator | None) -> None:
    torch.set_rng_state(states["torch"])
    n = states["numpy"]
    keys = n["keys"].numpy().astype(np.uint32)
    np.random.set_state((n["kind"], keys, n["pos"], n["has_gauss"], n["gauss"]))
    version, internal, gauss_next = states["python"]
    random.setstate((version, tuple(internal), gauss_next))
    if order is not None and states["data_order"] is not None:
        order.set_state(states["data_order"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def save_last(path: Path, progress: Progress, *, model, optimizer, schedule, scaler, order, meta):
    """checkpoints/last.pt after an epoch; meta: model name, config, MLflow run id, ..."""
    best = {k: v for k, v in progress.best.items() if k != "checkpoint"}  # Path: not a tensor
    save_checkpoint(
        {
            "format": FORMAT,
            "epoch": progress.epoch,
            "history": progress.history,
            "best": best,
            "lrs": progress.lrs,
            "finished": progress.finished,
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": schedule.scheduler.state_dict() if schedule.scheduler else None,
            "scaler": scaler.state_dict() if scaler is not None else None,
            "rng": rng_states(order),
            **meta,
        },
        path,
    )


def mark_finished(path: Path) -> None:
    """Record in last.pt that the run is complete: resume=true then has nothing to do."""
    state = load_checkpoint(path)
    state["finished"] = True
    save_checkpoint(state, path)


def restore(state: dict, *, model, optimizer, schedule, scaler, order) -> Progress:
    """Put last.pt back into freshly built objects; returns the loop's progress.

    The RNG streams are restored last, after everything that building the run consumed.
    """
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    if schedule.scheduler is not None:
        schedule.scheduler.load_state_dict(state["scheduler"])
    if scaler is not None and state["scaler"] is not None:
        scaler.load_state_dict(state["scaler"])
    restore_rng_states(state["rng"], order)
    return Progress(
        epoch=state["epoch"],
        history=list(state["history"]),
        best=dict(state["best"]),
        lrs=list(state["lrs"]),
        finished=state["finished"],
    )


def improves(row: dict, best: dict, selected_on: str) -> bool:
    """The best-checkpoint rule: a strictly higher accuracy on the selection split (val,
    else test) than the best epoch so far; on a tie the earlier epoch stays best."""
    return not best or row[f"{selected_on}_acc"] > best[f"{selected_on}_acc"]


def epoch_metrics(row: dict, best: dict) -> dict[str, float]:
    """One epoch's MLflow batch: its row, and the best epoch's accuracies so far."""
    metrics = {k: v for k, v in row.items() if k != "epoch"}
    metrics["best_test_acc"] = best["test_acc"]
    if "val_acc" in best:
        metrics["best_val_acc"] = best["val_acc"]
    return metrics


def best_checkpoint_fits(path: Path, best: dict) -> bool:
    """Does best.pt hold the epoch last.pt calls best? Not after a kill between the two
    writes of an improving epoch (last.pt is written first)."""
    if not path.is_file():
        return False
    try:
        return load_checkpoint(path).get("epoch") == best.get("epoch")
    except Exception:  # a torn or foreign file: rewrite it
        return False
