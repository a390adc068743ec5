"""Batches for the loop: a DataLoader over albumentations for augmented training, and a
tensor batcher (no per-image work at all) for evaluation, un-augmented training and, with
eva/data/batched.py's batch augmentation, augment.backend=torch. Every shuffled epoch is
one epoch_plan().
"""

from collections.abc import Callable

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


def batch_count(n: int, batch_size: int) -> int:
    return -(-n // batch_size)  # ceil: the last batch may be short


def epoch_plan(
    n: int,
    batch_size: int,
    generator: torch.Generator | None,
    seeded: bool = True,
    device: torch.device | None = None,
) -> list[tuple[torch.Tensor, int | None]]:
    """One shuffled epoch as (indices, seed) batches: the one scheme every training batcher
    follows, so that the generator's state at an epoch boundary decides everything random
    about the data after it (what a resumable checkpoint saves as "the data order").

    From `generator`: a permutation of range(n), then, when `seeded`, one seed per batch for
    its augmentation (None without). The indices are views of the permutation, moved to
    `device` (None: left on the CPU) in one copy.
    """
    order = torch.randperm(n, generator=generator)
    count = batch_count(n, batch_size)
    if seeded:
        seeds = torch.randint(0, 2**62, (count,), generator=generator).tolist()
    else:  # nothing to seed: the generator moves by the permutation alone
        seeds = [None] * count
    if device is not None:
        order = to_device(order, torch.device(device))
    return list(zip(order.split(batch_size), seeds, strict=True))


def to_device(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A CPU tensor of drawn numbers (indices, offsets) on `device`, without making the host
    wait for the GPU: a copy from pageable memory waits for the device's queue, one from
    page-locked memory does not (torch keeps the pinned block until the copy is done)."""
    if device.type != "cuda":
        return t.to(device)
    return t.pin_memory().to(device, non_blocking=True)


class TensorBatches:
    """Iterates (normalized images, labels) batches over uint8 tensors held in memory, on
    `device` (moved there once, here; None: the CPU), with an optional batch augmentation.

    Evaluation uses it with shuffle=False (the stored order, every sample once, nothing
    drawn); training with shuffle=True and a seeded generator, whose draws follow
    epoch_plan(). augment(images, generator) takes a uint8 (B, C, H, W) batch and a fresh
    generator seeded with its batch's seed (eva.data.batched.BatchAugment; DeviceBatches).
    Without it no seeds are drawn: un-augmented training takes one permutation an epoch
    from its generator, as it always has.
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
        augment: Callable[[torch.Tensor, torch.Generator], torch.Tensor] | None = None,
    ):
        if augment is not None and not shuffle:
            raise ValueError("TensorBatches: augment needs shuffle=True (seeds per batch)")
        self.images, self.labels, self.mean, self.std = on_device(images, labels, mean, std, device)
        self.device = self.images.device
        self.batch_size, self.shuffle, self.augment = batch_size, shuffle, augment
        self.order = generator  # None when not shuffled: what a checkpoint saves, if any

    def __len__(self) -> int:
        return batch_count(len(self.labels), self.batch_size)

    def __iter__(self):
        n, size = len(self.labels), self.batch_size
        if self.shuffle:
            plan = epoch_plan(n, size, self.order, self.augment is not None, self.device)
        else:
            plan = [(idx, None) for idx in torch.arange(n, device=self.device).split(size)]
        for idx, seed in plan:
            images = self.images.index_select(0, idx)  # much faster than images[idx]
            if self.augment is not None:
                images = self.augment(images, torch.Generator().manual_seed(seed))
            yield normalize_batch(images, self.mean, self.std), self.labels.index_select(0, idx)


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

    Each epoch is epoch_plan(): a permutation, then one seed per batch, from the generator.
    """

    def __init__(self, n: int, batch_size: int, generator: torch.Generator):
        self.n, self.batch_size, self.generator = n, batch_size, generator

    def __len__(self) -> int:
        return batch_count(self.n, self.batch_size)

    def __iter__(self):
        for idx, seed in epoch_plan(self.n, self.batch_size, self.generator):
            yield [(i, seed) for i in idx.tolist()]


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
