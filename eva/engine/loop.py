"""One training epoch and one evaluation pass, written plainly.

Loss and accuracy are summed on the device and read back only when the progress bar is
redrawn (every 10 steps) or the loss is checked (every 50), so the loop does not wait on the
GPU every step. benchmarks/overhead.py measures it against a bare hand-written loop.

The evaluation pass serves both training (loss and accuracy after every epoch) and the
reports (keep_predictions: per-sample predictions from the same pass, eva/report/).
"""

import math
import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from eva.cli.startup import resume_gc
from eva.engine.precision import Precision, memory_format
from eva.errors import EvaError

FP32 = Precision("fp32", "cpu")  # no autocast, no scaler

CHECK_EVERY = 50  # steps between checks that the loss is finite (each one syncs the device)


class NonFiniteLoss(EvaError):
    """The training loss became NaN or infinite: the run stops instead of training garbage."""


def check_finite(loss_sum: float, steps: int, total: int, lr: float, description: str) -> None:
    if not math.isfinite(loss_sum):
        raise NonFiniteLoss(
            f"{description}: the training loss is {loss_sum} by step {steps} of {total} "
            f"(lr {lr:.3g}): lower the learning rate (scheduler.max_lr, or optimizer.lr)"
        )


@dataclass
class EpochStats:
    loss: float  # mean training loss over samples (cross-entropy, without the L1 term)
    acc: float  # fraction of training samples classified correctly, in [0, 1]
    seconds: float
    images_per_second: float
    lr: float  # LR of the epoch's last batch
    lrs: list[float]  # LR of every step, in order (for the LR schedule plot)
    first_batch_clock: float  # time.perf_counter() when the first batch was in hand


def train_one_epoch(
    model: nn.Module,
    batches,
    optimizer: torch.optim.Optimizer,
    schedule,
    device: torch.device,
    l1=None,
    progress: bool = True,
    description: str = "train",
    precision: Precision = FP32,
    channels_last: bool = False,
) -> EpochStats:
    resume_gc()  # start-up is over (eva/cli/startup.py)
    model.train()
    non_blocking = device.type == "cuda"  # copies from pinned memory overlap the compute
    layout = memory_format(channels_last)
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    seen = steps = 0
    lr = optimizer.param_groups[0]["lr"]
    lrs: list[float] = []  # python floats read from the optimizer: no device sync
    start = first_batch_clock = time.perf_counter()
    # disable=None: no bar when stderr is not a terminal (CI logs, sweep jobs)
    bar = tqdm(batches, desc=description, disable=None if progress else True, leave=False)
    for images, labels in bar:
        if not steps:
            first_batch_clock = time.perf_counter()
        # A no-op for batches already on the device (augment.backend=torch).
        images = images.to(device, non_blocking=non_blocking, memory_format=layout)
        labels = labels.to(device, non_blocking=non_blocking)
        with precision.autocast():
            logits = model(images)
            loss = F.cross_entropy(logits, labels)  # autocast computes it in fp32
        total = loss + l1() if l1 else loss
        optimizer.zero_grad(set_to_none=True)
        lr = optimizer.param_groups[0]["lr"]  # the LR this step uses
        lrs.append(lr)
        precision.backward_step(total, optimizer)
        schedule.step_batch()

        n = labels.shape[0]
        seen += n
        steps += 1
        loss_sum += loss.detach() * n
        correct += (logits.detach().argmax(1) == labels).sum()
        if not bar.disable and steps % 10 == 0:  # .item() syncs the device: only every 10 steps
            elapsed = time.perf_counter() - start
            total_loss = loss_sum.item()
            check_finite(total_loss, steps, len(batches), lr, description)
            bar.set_postfix(
                loss=f"{total_loss / seen:.4f}",
                acc=f"{correct.item() / seen:.3f}",
                lr=f"{lr:.2e}",
                img_s=f"{seen / elapsed:.0f}",
                refresh=False,
            )
        elif steps % CHECK_EVERY == 0:
            check_finite(loss_sum.item(), steps, len(batches), lr, description)
    bar.close()
    seconds = time.perf_counter() - start
    check_finite(loss_sum.item(), steps, len(batches), lr, description)
    return EpochStats(
        loss=loss_sum.item() / max(seen, 1),
        acc=correct.item() / max(seen, 1),
        seconds=seconds,
        images_per_second=seen / seconds,
        lr=lr,
        lrs=lrs,
        first_batch_clock=first_batch_clock,
    )


@dataclass
class Evaluation:
    """A model's loss and accuracy on a fixed split; unpacks as `loss, acc = evaluate(...)`."""

    loss: float  # mean cross-entropy over the samples (nats)
    acc: float  # fraction of samples predicted correctly, in [0, 1]

    def __iter__(self):
        return iter((self.loss, self.acc))


@dataclass
class Predictions(Evaluation):
    """An Evaluation with the model's verdict on every sample, in the batches' order."""

    labels: np.ndarray  # int64 (N,): true class index
    preds: np.ndarray  # int64 (N,): argmax of the logits
    confidence: np.ndarray  # float32 (N,): softmax probability of the predicted class

    @property
    def wrong(self) -> np.ndarray:
        """Indices of the misclassified samples, most confident mistakes first.

        A stable sort keeps ties in sample order, so the same predictions always pick the same
        images for the report.
        """
        idx = np.flatnonzero(self.preds != self.labels)
        order = np.argsort(-self.confidence[idx], kind="stable")
        return idx[order]


@torch.no_grad()
def evaluate(
    model: nn.Module,
    batches,
    device: torch.device | str,
    precision: Precision = FP32,
    channels_last: bool = False,
    keep_predictions: bool = False,
) -> Evaluation:
    """Mean cross-entropy and accuracy on a fixed, unshuffled split, in eval mode.

    With keep_predictions the result is a Predictions (labels, argmax, confidence per sample)
    from the same pass: the reports need no second one. They stay on the device until the
    end, then come to the host in one copy each; without keep_predictions nothing per sample
    is kept, and only the two sums are read back.
    """
    resume_gc()
    model.eval()
    device = torch.device(device)
    non_blocking = device.type == "cuda"
    layout = memory_format(channels_last)
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    seen = 0
    labels, preds, confidence = [], [], []
    for images, targets in batches:
        images = images.to(device, non_blocking=non_blocking, memory_format=layout)
        targets = targets.to(device, non_blocking=non_blocking)
        with precision.autocast():
            logits = model(images)
        logits = logits.float()  # exact for fp16/bf16 logits: the argmax does not change
        loss_sum += F.cross_entropy(logits, targets, reduction="sum")
        cls = logits.argmax(1)
        correct += (cls == targets).sum()
        seen += targets.shape[0]
        if keep_predictions:
            labels.append(targets)
            preds.append(cls)
            confidence.append(torch.softmax(logits, dim=1).gather(1, cls[:, None])[:, 0])
    if not seen:
        raise ValueError("evaluate: the evaluation batches were empty")
    loss, acc = loss_sum.item() / seen, correct.item() / seen
    if not keep_predictions:
        return Evaluation(loss=loss, acc=acc)
    return Predictions(
        loss=loss,
        acc=acc,
        labels=torch.cat(labels).cpu().numpy().astype(np.int64),
        preds=torch.cat(preds).cpu().numpy().astype(np.int64),
        confidence=torch.cat(confidence).cpu().numpy().astype(np.float32),
    )
