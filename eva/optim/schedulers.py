"""LR schedules: one-cycle (stepped every batch), step decay and constant (every epoch)."""

from dataclasses import dataclass

import torch

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


def onecycle_pct_start(s, epochs: int) -> float:
    """Fraction of the steps spent rising to max_lr: peak_epoch / epochs, else pct_start."""
    if s.peak_epoch is None:
        pct = s.pct_start
        if not 0 < pct < 1:
            raise EvaError(f"scheduler.pct_start={pct}: must be between 0 and 1 (exclusive)")
        return pct
    if not 0 < s.peak_epoch < epochs:
        raise EvaError(
            f"scheduler.peak_epoch={s.peak_epoch}: must be above 0 and below epochs={epochs}"
        )
    return s.peak_epoch / epochs


def warmup_fraction(pct: float, total_steps: int) -> float:
    """pct, nudged so that warm-up and anneal each get at least one step.

    torch's OneCycleLR divides by zero when a phase is empty, which happens on very short
    runs (a 1-epoch smoke test of a few batches); long runs are never changed.
    """
    if total_steps < 3:
        raise EvaError(
            f"scheduler=onecycle needs at least 3 steps, the run has {total_steps} "
            "(epochs x batches): use more data or epochs, or scheduler=constant"
        )
    return min(max(pct, 1.5 / total_steps), (total_steps - 1.5) / total_steps)


def build_scheduler(cfg, optimizer, steps_per_epoch: int) -> Schedule:
    s, epochs = cfg.scheduler, cfg.epochs
    if s.name == "onecycle":
        if s.anneal not in ("linear", "cos"):
            raise EvaError(f"scheduler.anneal={s.anneal!r}: expected linear or cos")
        total_steps = epochs * steps_per_epoch  # computed, never hard-coded
        sched = torch.optim.lr_scheduler.OneCycleLR(
            optimizer,
            max_lr=s.max_lr,
            total_steps=total_steps,
            pct_start=warmup_fraction(onecycle_pct_start(s, epochs), total_steps),
            anneal_strategy=s.anneal,
            cycle_momentum=s.cycle_momentum,
            base_momentum=s.base_momentum,
            max_momentum=s.max_momentum,
            div_factor=s.div_factor,
            final_div_factor=s.final_div_factor,  # 1.0: end at the start LR (no annihilation)
            three_phase=False,
        )
        return Schedule(sched, per_batch=True)
    if s.name == "step":
        sched = torch.optim.lr_scheduler.StepLR(optimizer, step_size=s.step_size, gamma=s.gamma)
        return Schedule(sched, per_batch=False)
    if s.name == "constant":
        return Schedule(None, per_batch=False)
    raise EvaError(f"scheduler.name={s.name!r} is not known (known: onecycle, step, constant)")
