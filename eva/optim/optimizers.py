"""SGD, Adam and AdamW. L2 regularization is the optimizer's weight_decay."""

import torch
from torch import nn

from eva.errors import EvaError


def initial_lr(cfg) -> float:
    """The LR the optimizer is created with: the one-cycle start, or optimizer.lr."""
    s = cfg.scheduler
    if s.name == "onecycle":
        return s.max_lr / s.div_factor
    return cfg.optimizer.lr


def build_optimizer(cfg, model: nn.Module, lr: float | None = None) -> torch.optim.Optimizer:
    """The configured optimizer; `lr` replaces the starting LR (the LR range test's)."""
    o = cfg.optimizer
    params, lr = model.parameters(), initial_lr(cfg) if lr is None else lr
    if o.name == "sgd":
        return torch.optim.SGD(
            params, lr=lr, momentum=o.momentum, nesterov=o.nesterov, weight_decay=o.weight_decay
        )
    if o.name == "adam":
        return torch.optim.Adam(params, lr=lr, betas=tuple(o.betas), weight_decay=o.weight_decay)
    if o.name == "adamw":
        return torch.optim.AdamW(params, lr=lr, betas=tuple(o.betas), weight_decay=o.weight_decay)
    raise EvaError(f"optimizer.name={o.name!r} is not known (known: sgd, adam, adamw)")
