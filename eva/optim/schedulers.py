"""LR schedule builders, named by conf/scheduler/*.yaml with `_target_`: one-cycle
(stepped every batch), step decay and constant (every epoch).

The contract of a schedule builder: builder(optimizer, epochs, steps_per_epoch, **the
YAML's keys) -> Schedule (eva passes the three it knows when the signature names them).
A builder's `check` attribute, when it has one, gets the same arguments without the
optimizer before any work, with steps_per_epoch None until the data is loaded.
"""

from dataclasses import dataclass
from typing import Literal

import torch

from eva.config import options
from eva.config.validate import eva_keys
from eva.errors import EvaError


@dataclass
class Schedule:
    scheduler: torch.optim.lr_scheduler.LRScheduler | None
    per_batch: bool  # step after every batch (one-cycle) or after every epoch

    def step_batch(self) -> None:
        if self.scheduler is not None and self.per_batch:
            self.scheduler.step()

    def step_epoch(self) -> None:
        if self.scheduler is not None and not self.per_batch:
            self.scheduler.step()


def build_scheduler(cfg, optimizer, steps_per_epoch: int) -> Schedule:
    provided = {"optimizer": optimizer, "epochs": cfg.epochs, "steps_per_epoch": steps_per_epoch}
    schedule = options.build("scheduler", cfg.scheduler, eva_keys("scheduler"), provided)
    if not isinstance(schedule, Schedule):  # a bare torch scheduler: stepped every epoch
        schedule = Schedule(schedule, per_batch=False)
    return schedule


def onecycle_pct_start(peak_epoch: float | None, pct_start: float, epochs: int) -> float:
    """Fraction of the steps spent rising to max_lr: peak_epoch / epochs, else pct_start."""
    if peak_epoch is None:
        return pct_start
    return peak_epoch / epochs


def warmup_fraction(pct: float, total_steps: int) -> float:
    """pct, nudged so that warm-up and anneal each get at least one step.

    torch's OneCycleLR divides by zero when a phase is empty, which happens on very short
    runs (a 1-epoch smoke test of a few batches); long runs are never changed.
    """
    return min(max(pct, 1.5 / total_steps), (total_steps - 1.5) / total_steps)


def check_onecycle(
    epochs: int,
    steps_per_epoch: int | None,
    max_lr: float | str,
    peak_epoch: float | None = None,
    pct_start: float = 0.25,
    div_factor: float = 10.0,
    final_div_factor: float = 100.0,
    anneal: str = "linear",
    cycle_momentum: bool = True,
    base_momentum: float = 0.85,
    max_momentum: float = 0.95,
) -> None:
    if peak_epoch is None and not 0 < pct_start < 1:
        raise EvaError(f"scheduler.pct_start={pct_start}: must be between 0 and 1 (exclusive)")
    if peak_epoch is not None and not 0 < peak_epoch < epochs:
        raise EvaError(
            f"scheduler.peak_epoch={peak_epoch}: must be above 0 and below epochs={epochs}"
        )
    for key, value in (("div_factor", div_factor), ("final_div_factor", final_div_factor)):
        if not value > 0:
            raise EvaError(f"scheduler.{key}={value}: must be positive")
    if cycle_momentum and not 0 <= base_momentum <= max_momentum < 1:
        raise EvaError(
            f"scheduler.base_momentum={base_momentum}, max_momentum={max_momentum}: need "
            "0 <= base_momentum <= max_momentum < 1"
        )
    if steps_per_epoch is not None and epochs * steps_per_epoch < 3:
        raise EvaError(
            f"scheduler=onecycle needs at least 3 steps, the run has {epochs * steps_per_epoch} "
            "(epochs x batches): use more data or epochs, or scheduler=constant"
        )


def onecycle(
    optimizer,
    epochs: int,
    steps_per_epoch: int,
    max_lr: float | str,
    peak_epoch: float | None = None,
    pct_start: float = 0.25,
    div_factor: float = 10.0,
    final_div_factor: float = 100.0,
    anneal: Literal["linear", "cos"] = "linear",
    cycle_momentum: bool = True,
    base_momentum: float = 0.85,
    max_momentum: float = 0.95,
) -> Schedule:
    """torch's OneCycleLR over epochs x steps_per_epoch steps (computed, never hard-coded).

    max_lr: the peak ("find": eva runs the LR range test first and passes its number).
    peak_epoch: the epoch of the peak (5 of 24 in the course); null: pct_start of the steps.
    The LR starts at max_lr / div_factor and ends at that / final_div_factor (1.0 is the
    course's "no annihilation"). cycle_momentum: SGD momentum / Adam beta1 run inversely
    to the LR, from max_momentum down to base_momentum at the peak and back.
    """
    if max_lr == "find":
        raise EvaError("scheduler.max_lr=find: the LR range test has not run (mode=train runs it)")
    total_steps = epochs * steps_per_epoch
    check_onecycle(
        epochs, steps_per_epoch, max_lr, peak_epoch, pct_start, div_factor, final_div_factor,
        anneal, cycle_momentum, base_momentum, max_momentum,
    )  # fmt: skip
    pct = onecycle_pct_start(peak_epoch, pct_start, epochs)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        optimizer,
        max_lr=float(max_lr),
        total_steps=total_steps,
        pct_start=warmup_fraction(pct, total_steps),
        anneal_strategy=anneal,
        cycle_momentum=cycle_momentum,
        base_momentum=base_momentum,
        max_momentum=max_momentum,
        div_factor=div_factor,
        final_div_factor=final_div_factor,  # 1.0: end at the start LR (no annihilation)
        three_phase=False,
    )
    return Schedule(sched, per_batch=True)


onecycle.check = check_onecycle


def step(optimizer, step_size: int = 10, gamma: float = 0.1) -> Schedule:
    """Multiply the LR by gamma every step_size epochs."""
    if step_size < 1 or gamma <= 0:
        raise ValueError(f"step_size={step_size}, gamma={gamma}: need step_size >= 1, gamma > 0")
    sched = torch.optim.lr_scheduler.StepLR(optimizer, step_size=step_size, gamma=gamma)
    return Schedule(sched, per_batch=False)


def constant(optimizer) -> Schedule:
    """optimizer.lr for the whole run."""
    return Schedule(None, per_batch=False)
