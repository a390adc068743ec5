"""Seeding of every random stream a run touches."""

import os
import random

import numpy as np
import torch


def seed_everything(seed: int) -> None:
    """python, numpy and torch (CPU and every CUDA device). DataLoader workers and the
    albumentations pipeline are seeded where they are built (eva.data)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def set_deterministic(enabled: bool) -> None:
    """`deterministic=true`: the same numbers on every rerun and resume, on the GPU too.

    CPU kernels are deterministic already (for a given thread count). On CUDA this turns off
    cuDNN autotuning, picks deterministic kernels (warning where one has none) and fixes the
    cuBLAS workspace: slower, so off by default. Set per run, as it is process-wide.
    """
    if enabled:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    # Only touched when it changes: the call imports torch._inductor, seconds of start-up.
    if enabled or torch.are_deterministic_algorithms_enabled():
        torch.use_deterministic_algorithms(enabled, warn_only=True)
    torch.backends.cudnn.deterministic = enabled
    torch.backends.cudnn.benchmark = False
