"""Batches for the loop: a DataLoader over albumentations for augmented training, and a
plain tensor batcher (no per-image work at all) for evaluation and un-augmented training.
"""

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler


def normalize_batch(images: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """uint8 (B, C, H, W) -> float32 (x / 255 - mean) / std, as albumentations' Normalize."""
    return images.float().div_(255.0).sub_(mean).div_(std)


def on_device(images: np.ndarray, labels: np.ndarray, mean, std, device=None) -> tuple:
    """uint8 (N, H, W, C) images and labels as (N, C, H, W) uint8 and int64 tensors on the
    device (None: CPU), with mean and std shaped (1, C, 1, 1) for normalize_batch."""
    device = torch.device("cpu") if device is None else torch.device(device)
    chw = torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2))).to(device)
    ys = torch.from_numpy(np.asarray(labels, dtype=np.int64)).to(device)

    def stat(values) -> torch.Tensor:
        return torch.tensor(list(values), dtype=torch.float32).view(1, -1, 1, 1).to(device)

    return chw, ys, stat(mean), stat(std)


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
        device: torch.device | None = None,
    ):
        # device: where the batches are made and land (moved there once, here); None = CPU.
        self.images, self.labels, self.mean, self.std = on_device(images, labels, mean, std, device)
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.generator = generator
        self.order = generator  # None when not shuffled; see SeededBatches

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
    """One albumentations call per image: uint8 HWC in, normalized float CHW tensor out.

    Keys come from SeededBatches: (index, seed of its batch). The pipeline is reseeded once
    per batch, so what a batch looks like depends on the loader's generator alone, not on
    which worker draws it, how many workers there are, or what ran before (resume).
    """

    def __init__(self, images: np.ndarray, labels: np.ndarray, transform):
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, key: tuple[int, int]):
        return self.__getitems__([key])[0]

    def __getitems__(self, keys: list[tuple[int, int]]) -> list:
        # The DataLoader hands a whole batch of keys here (torch >= 2.1): one reseed per batch.
        self.transform.set_random_seed(keys[0][1])
        return [
            (self.transform(image=self.images[i])["image"], int(self.labels[i])) for i, _ in keys
        ]


class SeededBatches(Sampler):
    """Shuffled batches of (index, batch seed) keys, drawn from one torch.Generator.

    Each epoch takes a permutation and one seed per batch from the generator: its state
    at an epoch boundary decides everything random about the data of the epochs after it.
    That state is what a resumable checkpoint saves as "the data order".
    """

    def __init__(self, n: int, batch_size: int, generator: torch.Generator):
        self.n, self.batch_size, self.generator = n, batch_size, generator

    def __len__(self) -> int:
        return -(-self.n // self.batch_size)

    def __iter__(self):
        order = torch.randperm(self.n, generator=self.generator).tolist()
        seeds = torch.randint(0, 2**62, (len(self),), generator=self.generator).tolist()
        for b, seed in enumerate(seeds):
            yield [(i, seed) for i in order[b * self.batch_size : (b + 1) * self.batch_size]]


def augmented_loader(
    images: np.ndarray,
    labels: np.ndarray,
    transform,
    batch_size: int,
    generator: torch.Generator,
    num_workers: int,
    pin_memory: bool,
) -> DataLoader:
    loader = DataLoader(
        AugmentedImages(images, labels, transform),
        batch_sampler=SeededBatches(len(labels), batch_size, generator),
        # The workers' own base seed: drawn from a generator of its own, so that creating a
        # loader iterator never consumes the global torch stream (dropout, init).
        generator=torch.Generator().manual_seed(generator.initial_seed()),
        num_workers=num_workers,
        persistent_workers=num_workers > 0,  # no worker start-up cost every epoch
        pin_memory=pin_memory,
    )
    loader.order = generator  # what a checkpoint saves to resume the data where it was
    return loader
