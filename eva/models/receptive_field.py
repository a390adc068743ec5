"""Receptive field of a network, computed from its modules rather than stated by hand."""

import torch
from torch import nn


def receptive_field(model: nn.Module, input_shape: tuple[int, int, int]) -> int:
    """Side in pixels of the input region that one output pixel of the last spatial layer sees.

    Runs one forward pass and walks the convolutions and poolings in the order they execute,
    with the usual recurrence: rf += (k_eff - 1) * jump, jump *= stride, where
    k_eff = dilation * (k - 1) + 1. Global (adaptive) pooling is not counted. The recurrence
    assumes a chain of layers: for a net with skip connections it gives the longest path's
    field only when no strided layer sits on a skip path.
    """
    layers: list[tuple[int, int, int]] = []  # (kernel, stride, dilation) in execution order

    def record(module, _inputs, _output):
        k, s, d = module.kernel_size, module.stride, getattr(module, "dilation", 1)
        first = lambda v: v[0] if isinstance(v, tuple) else v  # noqa: E731 (square kernels)
        layers.append((first(k), first(s), first(d)))

    kinds = (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d)
    hooks = [m.register_forward_hook(record) for m in model.modules() if isinstance(m, kinds)]
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros(1, *input_shape))
    finally:
        model.train(was_training)
        for h in hooks:
            h.remove()

    rf, jump = 1, 1
    for k, s, d in layers:
        rf += (d * (k - 1)) * jump
        jump *= s
    return rf
