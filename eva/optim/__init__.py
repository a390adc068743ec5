"""Optimizers, LR schedules and the L1 penalty, from the `optimizer` and `scheduler` groups."""

from eva.optim.optimizers import build_optimizer
from eva.optim.regularization import L1Penalty
from eva.optim.schedulers import Schedule, build_scheduler

__all__ = ["build_optimizer", "build_scheduler", "L1Penalty", "Schedule"]
