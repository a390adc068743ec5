"""Data: raw splits, subsets, a validation split and the loaders, from the `dataset` and
`augment` config groups."""

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import numpy as np
import torch

from eva.config import options
from eva.data.datasets import ImageSet
from eva.data.loaders import TensorBatches, augmented_loader
from eva.data.rules import mean_fill
from eva.errors import EvaError

__all__ = [
    "Data",
    "ImageSet",
    "build_augment",
    "build_data",
    "load_split",
    "mean_fill",
    "split_indices",
]


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
    full_train, full_test = load_split(cfg, train=True), load_split(cfg, train=False)
    train_idx, val_idx, test_idx = split_indices(len(full_train), len(full_test), dcfg, cfg.seed)
    train_set, test_set = full_train.subset(train_idx), full_test.subset(test_idx)
    mean, std = list(dcfg.mean), list(dcfg.std)

    fresh_train = partial(train_batches, cfg, train_set, device, num_workers)

    def evaluation(s: ImageSet) -> TensorBatches:  # never shuffled
        return TensorBatches(s.images, s.labels, mean, std, cfg.batch_size, device=device)

    val = evaluation(full_train.subset(val_idx)) if len(val_idx) else None
    test = evaluation(test_set)
    return Data(fresh_train(), test, val, train_set, test_set, full_train.classes, fresh_train)


# The splits this process loaded last, by (dataset config, split): a sweep's trials in one
# process, and the reports its best trial gets at the end, read and decode the files once.
_loaded: dict[tuple[str, bool], ImageSet] = {}


def load_split(cfg, train: bool) -> ImageSet:
    """The whole training or test split from the dataset's builder (eva/data/datasets.py
    gives the contract), checked against what the config says of it. Kept for the next
    run of this process with the same dataset config (each run subsets a copy)."""
    import json

    from omegaconf import OmegaConf

    from eva.config.validate import dataset_inputs, eva_keys

    d = cfg.dataset
    inputs = dataset_inputs(cfg, train)
    node = OmegaConf.to_container(d, resolve=True)
    same = {**node, **{k: v for k, v in inputs.items() if k != "train"}}
    key = (json.dumps(same, sort_keys=True, default=str), train)
    if key in _loaded:
        return _loaded[key]
    split = options.build("dataset", d, eva_keys("dataset"), inputs)
    which = "training" if train else "test"
    if not isinstance(split, ImageSet):
        raise EvaError(
            f"dataset._target_={d._target_}: returned a {type(split).__name__} for the "
            f"{which} split, expected an eva.data.ImageSet (uint8 images, labels, classes)"
        )
    expected = (d.image_size, d.image_size, d.in_channels)
    if split.images.ndim != 4 or split.images.shape[1:] != expected:
        raise EvaError(
            f"dataset {d.name}: {which} images are {split.images.shape[1:]} (H, W, C), the "
            f"config says image_size={d.image_size}, in_channels={d.in_channels}"
        )
    if split.images.dtype != np.uint8 or len(split.labels) != len(split.images):
        raise EvaError(
            f"dataset {d.name}: {which} split has {split.images.dtype} images and "
            f"{len(split.labels)} labels for {len(split.images)} images (expected uint8, one each)"
        )
    if len(split.labels) and not 0 <= split.labels.min() <= split.labels.max() < d.num_classes:
        raise EvaError(
            f"dataset {d.name}: {which} labels run {split.labels.min()}..{split.labels.max()}, "
            f"outside 0..{d.num_classes - 1} (dataset.num_classes={d.num_classes})"
        )
    if len(split.classes) != d.num_classes:
        raise EvaError(
            f"dataset {d.name}: {len(split.classes)} class names, dataset.num_classes="
            f"{d.num_classes}"
        )
    if not any(k[0] == key[0] for k in _loaded):  # another dataset: forget the last one
        _loaded.clear()
    _loaded[key] = split
    return split


def augment_builder_node(cfg, batched: bool):
    """The augment node with `_target_` set to the builder of the backend asked for."""
    from omegaconf import OmegaConf

    a = cfg.augment
    return OmegaConf.merge(a, {options.TARGET: a.batched}) if batched else a


def build_augment(cfg):
    """The run's training augmentation: None (nothing random), a seeded albumentations
    Compose (backend=albumentations), or a batch augmentation (backend=torch).

    An albumentations builder returns its list of transforms (eva adds Normalize and the
    tensor conversion, and seeds the pipeline); a batched builder returns a callable
    (uint8 (B, C, H, W) batch, torch.Generator) -> uint8 batch, with `.active` False when
    it would change nothing.
    """
    from eva.config.validate import augment_inputs, eva_keys

    a = cfg.augment
    if options.TARGET not in a:
        return None
    torch_backend = a.get("backend") == "torch"
    node = augment_builder_node(cfg, torch_backend)
    made = options.build("augment", node, eva_keys("augment"), augment_inputs(cfg))
    if torch_backend:
        return made if getattr(made, "active", True) else None
    from eva.data.augment import compose  # albumentations: imported only when used

    return compose(made, cfg.dataset.mean, cfg.dataset.std, cfg.seed)


def train_batches(cfg, train_set: ImageSet, device: torch.device, num_workers: int = 0):
    """Shuffled, augmented training batches; the same order and augmentations for the same
    seed (one seeded generator orders the batches and seeds each batch's augmentation)."""
    d = cfg.dataset
    mean, std = list(d.mean), list(d.std)
    generator = torch.Generator().manual_seed(cfg.seed)
    images, labels = train_set.images, train_set.labels
    augment = build_augment(cfg)
    if augment is None:  # nothing random but the order: slices of one tensor
        return TensorBatches(
            images, labels, mean, std, cfg.batch_size, True, generator, device=device
        )
    if cfg.augment.get("backend") == "torch":  # per batch, with tensor ops on the run's device
        from eva.data.batched import DeviceBatches

        return DeviceBatches(images, labels, mean, std, cfg.batch_size, device, augment, generator)
    pin = device.type == "cuda"  # page-locked batches copy to the GPU asynchronously
    return augmented_loader(images, labels, augment, cfg.batch_size, generator, num_workers, pin)
