"""One training epoch and one evaluation pass, written plainly.

Loss and accuracy are summed on the device and read back only when the progress bar is
redrawn (a few times a second at most), so the loop does not wait on the GPU every step.
"""

import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm


@dataclass
class EpochStats:
    loss: float  # mean training loss over samples (cross-entropy, without the L1 term)
    acc: float  # fraction of training samples classified correctly, in [0, 1]
    seconds: float
    images_per_second: float
    lr: float  # LR of the epoch's last batch
    lrs: list[float]  # LR of every step, in order (for the LR schedule plot)


def train_one_epoch(
    model: nn.Module,
    batches,
    optimizer: torch.optim.Optimizer,
    schedule,
    device: torch.device,
    l1=None,
    progress: bool = True,
    description: str = "train",
) -> EpochStats:
    model.train()
    non_blocking = device.type == "cuda"
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    seen = steps = 0
    lr = optimizer.param_groups[0]["lr"]
    lrs: list[float] = []  # python floats read from the optimizer: no device sync
    start = time.perf_counter()
    # disable=None: no bar when stderr is not a terminal (CI logs, sweep jobs)
    bar = tqdm(batches, desc=description, disable=None if progress else True, leave=False)
    for images, labels in bar:
        images = images.to(device, non_blocking=non_blocking)
        labels = labels.to(device, non_blocking=non_blocking)
        logits = model(images)
        loss = F.cross_entropy(logits, labels)
        total = loss + l1() if l1 else loss
        optimizer.zero_grad(set_to_none=True)
        total.backward()
        lr = optimizer.param_groups[0]["lr"]  # the LR this step used
        lrs.append(lr)
        optimizer.step()
        schedule.step_batch()

        n = labels.shape[0]
        seen += n
        steps += 1
        loss_sum += loss.detach() * n
        correct += (logits.detach().argmax(1) == labels).sum()
        if not bar.disable and steps % 10 == 0:  # .item() syncs the device: only every 10 steps
            elapsed = time.perf_counter() - start
            bar.set_postfix(
                loss=f"{loss_sum.item() / seen:.4f}",
                acc=f"{correct.item() / seen:.3f}",
                lr=f"{lr:.2e}",
                img_s=f"{seen / elapsed:.0f}",
                refresh=False,
            )
    bar.close()
    seconds = time.perf_counter() - start
    return EpochStats(
        loss=loss_sum.item() / max(seen, 1),
        acc=correct.item() / max(seen, 1),
        seconds=seconds,
        images_per_second=seen / seconds,
        lr=lr,
        lrs=lrs,
    )


@torch.no_grad()
def evaluate(model: nn.Module, batches, device: torch.device) -> tuple[float, float]:
    """(mean cross-entropy over samples, accuracy) on a fixed, unshuffled split."""
    model.eval()
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    seen = 0
    for images, labels in batches:
        images = images.to(device, non_blocking=device.type == "cuda")
        labels = labels.to(device, non_blocking=device.type == "cuda")
        logits = model(images)
        loss_sum += F.cross_entropy(logits, labels, reduction="sum")
        correct += (logits.argmax(1) == labels).sum()
        seen += labels.shape[0]
    return loss_sum.item() / seen, correct.item() / seen
