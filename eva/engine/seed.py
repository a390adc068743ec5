"""Seeding of every random stream a run touches."""

import random

import numpy as np
import torch


def seed_everything(seed: int) -> None:
    """python, numpy and torch (CPU and every CUDA device). DataLoader workers and the
    albumentations pipeline are seeded where they are built (eva.data)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
