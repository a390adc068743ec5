"""Batches for the loop: a DataLoader over albumentations for augmented training, and a
plain tensor batcher (no per-image work at all) for evaluation and un-augmented training.
"""

import random

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset


def normalize_batch(images: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """uint8 (B, C, H, W) -> float32 (x / 255 - mean) / std, as albumentations' Normalize."""
    return images.float().div_(255.0).sub_(mean).div_(std)


class TensorBatches:
    """Iterates (normalized images, labels) batches over uint8 tensors held in memory.

    Evaluation uses it with shuffle=False (fixed order, every sample once); un-augmented
    training with shuffle=True and a seeded generator.
    """

    def __init__(
        self,
        images: np.ndarray,
        labels: np.ndarray,
        mean,
        std,
        batch_size: int,
        shuffle: bool = False,
        generator: torch.Generator | None = None,
    ):
        self.images = torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2)))
        self.labels = torch.from_numpy(labels)
        self.mean = torch.tensor(list(mean)).view(1, -1, 1, 1)
        self.std = torch.tensor(list(std)).view(1, -1, 1, 1)
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.generator = generator

    def __len__(self) -> int:
        return -(-len(self.labels) // self.batch_size)  # ceil: the last batch may be short

    def __iter__(self):
        n = len(self.labels)
        order = torch.randperm(n, generator=self.generator) if self.shuffle else None
        for start in range(0, n, self.batch_size):
            if order is None:
                idx = slice(start, start + self.batch_size)
            else:
                idx = order[start : start + self.batch_size]
            yield normalize_batch(self.images[idx], self.mean, self.std), self.labels[idx]


class AugmentedImages(Dataset):
    """One albumentations call per image: uint8 HWC in, normalized float CHW tensor out."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, transform):
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        return self.transform(image=self.images[i])["image"], int(self.labels[i])


def seed_worker(worker_id: int) -> None:
    """Give each DataLoader worker its own, reproducible random streams.

    torch seeds each worker with base_seed + worker_id (base_seed drawn from the loader's
    seeded generator); numpy, python and the albumentations pipeline follow that seed, so
    workers do not repeat each other's augmentations and a rerun repeats them exactly.
    """
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)
    info = torch.utils.data.get_worker_info()
    info.dataset.transform.set_random_seed(seed)


def augmented_loader(
    images: np.ndarray,
    labels: np.ndarray,
    transform,
    batch_size: int,
    generator: torch.Generator,
    num_workers: int,
    pin_memory: bool,
) -> DataLoader:
    return DataLoader(
        AugmentedImages(images, labels, transform),
        batch_size=batch_size,
        shuffle=True,
        generator=generator,
        num_workers=num_workers,
        worker_init_fn=seed_worker if num_workers > 0 else None,
        persistent_workers=num_workers > 0,  # no worker start-up cost every epoch
        pin_memory=pin_memory,
    )
