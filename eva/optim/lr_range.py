"""The LR range test (Smith 2015, "Cyclical Learning Rates", section 3.3).

Train for `num_iter` steps while the LR grows exponentially from `start_lr` to `end_lr`,
record the loss of every step, stop once it diverges, then put the model and the optimizer
back exactly as they were. The suggested peak LR is where the smoothed loss falls fastest
(steepest descent against log LR); the "lowest loss / 10" rule is reported beside it.

Smoothing: an exponential average lags behind the LR (with smoothing 0.1, by 9 steps: 0.7
of a decade when 100 steps span 8 decades), which would push the suggestion too high. The
divergence stop needs the online, lagging average; the curve that is plotted and read for
the suggestion is averaged forwards and then backwards, which cancels the lag.

eva's own version rather than torch-lr-finder's: that one prints to stdout, always draws a
progress bar, takes only DataLoaders and has no L1 term. tests/test_lr_find.py checks that
both give the same losses on the same problem.
"""

import copy
import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from eva.cli.startup import resume_gc
from eva.config.validate import check_range_test
from eva.errors import EvaError


@dataclass
class RangeTest:
    lrs: list[float]  # LR of each step taken
    losses: list[float]  # smoothed training loss, without lag (what the suggestion reads)
    raw_losses: list[float]  # the loss of each step's batch, unsmoothed
    diverged: bool  # stopped before num_iter because the loss blew up
    steepest_lr: float | None  # None when too few points fall before the loss minimum
    min_loss_lr: float  # LR at the lowest smoothed loss, divided by 10
    rule: str
    seconds: float = 0.0
    note: str = ""  # why the suggestion fell back to the other rule, if it did
    suggested_lr: float = field(init=False)

    def __post_init__(self):
        if self.rule == "steepest" and self.steepest_lr is not None:
            self.suggested_lr = self.steepest_lr
        else:
            self.suggested_lr = self.min_loss_lr

    def summary(self) -> dict:
        """The numbers results.json keeps (the curve itself is in the plot)."""
        return {
            "suggested_lr": self.suggested_lr,
            "rule": self.rule,
            "steepest_lr": self.steepest_lr,
            "min_loss_lr": self.min_loss_lr,
            "iterations": len(self.lrs),
            "diverged": self.diverged,
            "lr_range": [self.lrs[0], self.lrs[-1]],
            "seconds": self.seconds,
            "note": self.note,
        }


def exponential_lrs(start_lr: float, end_lr: float, num_iter: int) -> np.ndarray:
    """start_lr * (end_lr / start_lr) ** (i / (num_iter - 1)), i = 0 .. num_iter - 1."""
    return start_lr * (end_lr / start_lr) ** (np.arange(num_iter) / (num_iter - 1))


def running_average(values, smoothing: float) -> np.ndarray:
    """Bias-corrected exponential average: unbiased from the first value on."""
    beta = 1.0 - smoothing  # weight of the past
    out, average = np.empty(len(values)), 0.0
    for i, v in enumerate(values):
        average = beta * average + (1 - beta) * v
        out[i] = average / (1 - beta ** (i + 1)) if beta < 1 else v
    return out


def zero_lag(values, smoothing: float) -> np.ndarray:
    """The running average taken forwards, then backwards over that: no shift in LR.

    Losses above the starting level (the mean of the first tenth) are clipped to it first:
    otherwise the backward pass would carry a diverging tail (losses of 100 and more) back
    over the minimum and hide it.
    """
    values = np.asarray(values, dtype=float)
    if smoothing == 0 or len(values) < 2:
        return values
    start = values[: max(1, len(values) // 10)].mean()
    clipped = np.minimum(values, max(start, values.min()))
    forwards = running_average(clipped, smoothing)
    return running_average(forwards[::-1], smoothing)[::-1]


def endless(batches):
    """Batches epoch after epoch: a range test may need more steps than one epoch has."""
    while True:
        empty = True
        for batch in batches:
            empty = False
            yield batch
        if empty:
            raise EvaError("the training loader is empty: no data for the LR range test")


def suggest(lrs, losses) -> tuple[float | None, float]:
    """(steepest-descent LR, lowest-loss LR / 10) of a smoothed loss curve.

    The steepest point is looked for between the first 10% of the curve (the average is
    still settling there) and the lowest loss: past the minimum the loss only rises, and
    the noise of the diverging tail would otherwise pass for a steep fall.
    """
    lrs, losses = np.asarray(lrs, dtype=float), np.asarray(losses, dtype=float)
    lowest = int(np.argmin(losses))
    min_loss_lr = float(lrs[lowest] / 10)
    skip = len(lrs) // 10
    if lowest - skip + 1 < 3:  # np.gradient needs 3 points to be more than a difference
        return None, min_loss_lr
    window = slice(skip, lowest + 1)
    slopes = np.gradient(losses[window], np.log10(lrs[window]))  # loss per decade of LR
    return float(lrs[window][int(np.argmin(slopes))]), min_loss_lr


def range_test(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    batches,
    device: torch.device,
    settings,
    l1=None,
    progress: bool = False,
) -> RangeTest:
    """Run the test on `batches` (the training loader) with `optimizer` (the configured one).

    The model's weights and buffers and the optimizer's state are restored afterwards, even
    when the test fails. `settings` is the lr_find config (start_lr, end_lr, num_iter,
    smoothing, diverge_threshold, rule).
    """
    check_range_test(settings)
    saved_model = copy.deepcopy(model.state_dict())
    saved_optimizer = copy.deepcopy(optimizer.state_dict())
    schedule = exponential_lrs(settings.start_lr, settings.end_lr, settings.num_iter)
    beta = 1.0 - settings.smoothing  # weight of the past in the online average
    lrs, raw = [], []
    average, best, diverged = 0.0, math.inf, False
    started = time.perf_counter()
    non_blocking = device.type == "cuda"
    resume_gc()  # start-up is over (eva/cli/startup.py)
    model.train()
    data = endless(batches)
    bar = tqdm(schedule, desc="lr range test", disable=None if progress else True, leave=False)
    try:
        for step, lr in enumerate(bar):
            for group in optimizer.param_groups:
                group["lr"] = float(lr)
            images, labels = next(data)
            images = images.to(device, non_blocking=non_blocking)
            labels = labels.to(device, non_blocking=non_blocking)
            loss = F.cross_entropy(model(images), labels)
            if l1:
                loss = loss + l1()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            value = loss.item()  # one sync per step: the test needs every loss anyway
            if not math.isfinite(value):
                diverged = True
                break
            # Online bias-corrected running average (as running_average), for the stop only.
            average = beta * average + (1 - beta) * value
            smoothed = average / (1 - beta ** (step + 1)) if beta < 1 else value
            lrs.append(float(lr))
            raw.append(value)
            best = min(best, smoothed)
            if smoothed > settings.diverge_threshold * best:
                diverged = True
                break
    finally:
        bar.close()
        model.load_state_dict(saved_model)
        optimizer.load_state_dict(saved_optimizer)
    if len(lrs) < 2:
        raise EvaError(
            f"lr range test: the loss was not finite from the first steps "
            f"(lr_find.start_lr={settings.start_lr}): try a smaller start_lr"
        )
    losses = zero_lag(raw, settings.smoothing).tolist()
    steepest, min_loss = suggest(lrs, losses)
    note = ""
    if settings.rule == "steepest" and steepest is None:
        note = "too few points before the loss minimum for a slope: used min loss / 10"
    return RangeTest(
        lrs, losses, raw, diverged, steepest, min_loss, str(settings.rule),
        seconds=time.perf_counter() - started, note=note,
    )  # fmt: skip
