"""The optimizer of a run: conf/optimizer/*.yaml names a torch.optim class (or a user's)
with `_target_`; eva passes the parameters and the starting LR, the YAML the rest.

Parameter groups: with `optimizer.decay_norm_and_bias=false`, norm weights and biases
(every parameter of fewer than two dimensions) get no weight decay, the rule the L1
penalty follows too (eva/optim/regularization.py): shrinking a BatchNorm scale or a bias
removes no feature, it only fights the normalization. The default stays true, every
parameter decayed, because that is torch's default and what the course recipes and their
reported results use.
"""

import torch
from torch import nn

from eva.config import options
from eva.config.validate import eva_keys


def parameter_groups(model: nn.Module, decay_norm_and_bias: bool, weight_decay: float) -> list:
    params = [p for p in model.parameters() if p.requires_grad]
    if decay_norm_and_bias or not weight_decay:
        return [{"params": params}]
    decayed = [p for p in params if p.ndim >= 2]
    exempt = [p for p in params if p.ndim < 2]
    return [{"params": decayed}, {"params": exempt, "weight_decay": 0.0}]


def build_optimizer(cfg, model: nn.Module, lr: float | None = None) -> torch.optim.Optimizer:
    """The configured optimizer; `lr` replaces optimizer.lr as the starting LR (the LR
    range test's). A schedule then sets the LR of every step (one-cycle from its start)."""
    o = cfg.optimizer
    groups = parameter_groups(model, o.get("decay_norm_and_bias", True), o.get("weight_decay", 0.0))
    provided = {"params": groups, "lr": o.lr if lr is None else lr}
    return options.build("optimizer", o, eva_keys("optimizer"), provided)
