"""The L1 penalty of the course, on the weights that carry features only."""

import torch
from torch import nn


class L1Penalty:
    """weight * sum(|w|) over the weights of conv and linear layers.

    BatchNorm/LayerNorm parameters and biases are left alone: shrinking a norm's scale or a
    bias to zero removes no feature, it only fights the normalization.
    """

    def __init__(self, model: nn.Module, weight: float):
        self.weight = weight
        kinds = (nn.Conv1d, nn.Conv2d, nn.Linear)
        self.params = [m.weight for m in model.modules() if isinstance(m, kinds)]

    def __bool__(self) -> bool:
        return self.weight > 0

    def __call__(self) -> torch.Tensor:
        return self.weight * sum(p.abs().sum() for p in self.params)
