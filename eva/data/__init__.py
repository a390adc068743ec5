"""Data: raw splits, subsets, a validation split and the loaders, from the `dataset` and
`augment` config groups."""

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import numpy as np
import torch

from eva.data.datasets import ImageSet, load_split
from eva.data.loaders import TensorBatches, augmented_loader
from eva.errors import EvaError

__all__ = ["Data", "build_data", "split_indices", "ImageSet", "load_split"]


@dataclass
class Data:
    train: object  # iterable of (images, labels) batches with len(): DataLoader or TensorBatches
    test: TensorBatches
    val: TensorBatches | None  # picks the best checkpoint when dataset.val_size > 0
    train_set: ImageSet  # raw uint8 training images (after subsetting), for reports
    test_set: ImageSet
    classes: list[str]
    # A new training loader like `train`, with its own seeded order and augmentation
    # streams: the LR range test and the report's sample grid use it, so neither changes
    # what training sees.
    fresh_train: Callable[[], object]

    @property
    def sizes(self) -> dict[str, int]:
        val = 0 if self.val is None else len(self.val.labels)
        return {"train": len(self.train_set), "val": val, "test": len(self.test_set)}


def _check_size(key: str, value, available: int) -> None:
    if value is not None and not 0 < value <= available:
        raise EvaError(f"{key}={value}: must be between 1 and {available}")


def split_indices(n_train: int, n_test: int, cfg, seed: int):
    """(train, val, test) index arrays, the same ones for the same seed.

    The validation samples come out of the training split first; train_subset then picks
    from what is left, so a validation sample is never trained on.
    """
    val_size = cfg.val_size
    if val_size < 0 or val_size >= n_train:
        raise EvaError(f"dataset.val_size={val_size}: must be between 0 and {n_train - 1}")
    _check_size("dataset.train_subset", cfg.train_subset, n_train - val_size)
    _check_size("dataset.test_subset", cfg.test_subset, n_test)

    train = np.arange(n_train)
    if val_size or cfg.train_subset:
        train = np.random.default_rng([seed, 0]).permutation(n_train)
    val, train = train[:val_size], train[val_size:]
    if cfg.train_subset:
        train = train[: cfg.train_subset]
    test = np.arange(n_test)
    if cfg.test_subset:
        test = np.random.default_rng([seed, 1]).permutation(n_test)[: cfg.test_subset]
    return np.sort(train), np.sort(val), np.sort(test)


def build_data(cfg, device: torch.device | None = None, num_workers: int = 0) -> Data:
    """Load the dataset named by cfg.dataset and wrap it in loaders for the run.

    Evaluation splits (and un-augmented or augment.backend=torch training) are held on
    `device` as uint8 once; `num_workers` feeds augment.backend=albumentations.
    """
    device = device or torch.device("cpu")
    dcfg = cfg.dataset
    full_train, full_test = load_split(dcfg, train=True), load_split(dcfg, train=False)
    if full_train.images.shape[1:] != (dcfg.image_size, dcfg.image_size, dcfg.in_channels):
        raise EvaError(
            f"dataset {dcfg.name}: images are {full_train.images.shape[1:]} (H, W, C), the "
            f"config says image_size={dcfg.image_size}, in_channels={dcfg.in_channels}"
        )
    train_idx, val_idx, test_idx = split_indices(len(full_train), len(full_test), dcfg, cfg.seed)
    train_set, test_set = full_train.subset(train_idx), full_test.subset(test_idx)
    mean, std = list(dcfg.mean), list(dcfg.std)

    fresh_train = partial(train_batches, cfg, train_set, device, num_workers)

    def evaluation(s: ImageSet) -> TensorBatches:  # never shuffled
        return TensorBatches(s.images, s.labels, mean, std, cfg.batch_size, device=device)

    val = evaluation(full_train.subset(val_idx)) if len(val_idx) else None
    test = evaluation(test_set)
    return Data(fresh_train(), test, val, train_set, test_set, full_train.classes, fresh_train)


PAD_MODES = ("reflect", "constant")


def mean_fill(mean: list[float]) -> tuple[float, ...]:
    """The dataset mean in uint8 pixel units, one value per channel: what holes, padding
    and affine borders are filled with (before Normalize, so they normalize to ~0)."""
    return tuple(round(m * 255.0) for m in mean)


def check_pad_mode(aug) -> None:
    if aug.pad > 0 and aug.pad_mode not in PAD_MODES:
        raise EvaError(f"augment.pad_mode={aug.pad_mode!r}: expected reflect or constant")


def is_augmented(aug) -> bool:
    """Does the augment config ask for anything random? (augment=none does not.)"""
    return aug.pad > 0 or aug.hflip_p > 0 or aug.affine_p > 0 or aug.cutout_size > 0


def train_batches(cfg, train_set: ImageSet, device: torch.device, num_workers: int = 0):
    """Shuffled, augmented training batches; the same order and augmentations for the same
    seed (one seeded generator orders the batches and seeds each batch's augmentation)."""
    d, aug = cfg.dataset, cfg.augment
    mean, std = list(d.mean), list(d.std)
    generator = torch.Generator().manual_seed(cfg.seed)
    images, labels = train_set.images, train_set.labels
    if not is_augmented(aug):  # nothing random but the order: slices of one tensor
        return TensorBatches(
            images, labels, mean, std, cfg.batch_size, True, generator, device=device
        )
    if aug.backend == "torch":  # per batch, with tensor ops on the run's device
        from eva.data.batched import DeviceBatches, build_batch_augment

        augment = build_batch_augment(aug, d.image_size, mean)
        return DeviceBatches(images, labels, mean, std, cfg.batch_size, device, augment, generator)
    from eva.data.augment import build_train_transform  # albumentations: ~0.3 s to import

    transform = build_train_transform(aug, d.image_size, mean, std, cfg.seed)
    pin = device.type == "cuda"  # page-locked batches copy to the GPU asynchronously
    return augmented_loader(images, labels, transform, cfg.batch_size, generator, num_workers, pin)
