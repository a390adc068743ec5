"""Datasets, subsets, augmentation and loaders, on real files (fake CIFAR pickles, real
Fashion-MNIST from the Debian package)."""

import warnings

import numpy as np
import pytest
import torch
from helpers import options_of
from omegaconf import OmegaConf

from eva.data import build_augment, build_data, load_split, mean_fill, split_indices
from eva.data import datasets as ds
from eva.data.augment import compose as compose_pipeline
from eva.data.augment import standard
from eva.data.loaders import TensorBatches
from eva.errors import EvaError


def test_fake_cifar10_loads_through_the_real_torchvision_path(compose, fake_cifar10):
    root, info = fake_cifar10
    cfg = compose("dataset=cifar10", f"dataset.root={root}")
    train, test = load_split(cfg, train=True), load_split(cfg, train=False)
    assert train.images.shape == (100, 32, 32, 3) and train.images.dtype == np.uint8
    assert test.images.shape == (20, 32, 32, 3)
    assert train.classes == info["classes"]
    first_data, first_labels = info["written"]["train"][0]
    # rows are channel-major (R plane, G plane, B plane); eva holds HWC
    np.testing.assert_array_equal(
        train.images[0], first_data[0].reshape(3, 32, 32).transpose(1, 2, 0)
    )
    assert train.labels[:20].tolist() == first_labels
    assert test.labels.tolist() == info["written"]["test"][0][1]


def test_fake_cifar10_trains_end_to_end(compose, fake_cifar10, tmp_path):
    from eva.modes.train import train

    root, _ = fake_cifar10
    cfg = compose(
        "dataset=cifar10",
        f"dataset.root={root}",
        "augment=resnet",
        "model=session6",
        "epochs=1",
        "batch_size=32",
        "progress=false",
        "report.enabled=false",  # plots of RGB images: tests/test_report.py
        "tracking.log_model=false",  # the logged model: tests/test_tracking.py
    )
    results = train(cfg, tmp_path / "run")
    assert results["sizes"] == {"train": 100, "val": 0, "test": 20}
    assert results["epochs_completed"] == 1


def test_cifar10_missing_and_offline_is_one_clear_line(compose, tmp_path, monkeypatch):
    from urllib.error import URLError

    from torchvision.datasets import CIFAR10

    cfg = compose("dataset=cifar10", f"dataset.root={tmp_path}", "dataset.download=false")
    with pytest.raises(EvaError, match="dataset.download=false") as e:
        load_split(cfg, train=True)
    assert str(tmp_path) in str(e.value)

    def offline(self):
        raise URLError("[Errno -2] Name or service not known")

    monkeypatch.setattr(CIFAR10, "download", offline)
    cfg = compose("dataset=cifar10", f"dataset.root={tmp_path}")
    with pytest.raises(EvaError) as e:
        load_split(cfg, train=True)
    message = str(e.value)
    assert "\n" not in message
    assert "Name or service not known" in message and "cifar-10-python.tar.gz" in message
    assert str(tmp_path) in message


def test_fashion_mnist_unpacks_the_debian_package_once(compose, fmnist_root):
    cfg = compose("dataset=fashion_mnist", f"dataset.root={fmnist_root}")
    train = load_split(cfg, train=True)
    raw = fmnist_root / "FashionMNIST" / "raw"
    assert sorted(p.name for p in raw.iterdir()) == sorted(ds.FASHION_MNIST_FILES)
    stamp = (raw / "train-images-idx3-ubyte").stat().st_mtime_ns
    test = load_split(cfg, train=False)
    assert (raw / "train-images-idx3-ubyte").stat().st_mtime_ns == stamp  # not unpacked again
    assert train.images.shape == (60000, 28, 28, 1) and test.images.shape == (10000, 28, 28, 1)
    assert train.classes[0] == "T-shirt/top" and len(train.classes) == 10
    assert np.bincount(test.labels).tolist() == [1000] * 10


def test_fashion_mnist_reads_the_same_arrays_as_torchvision(compose, fmnist_root):
    from torchvision.datasets import FashionMNIST

    cfg = compose("dataset=fashion_mnist", f"dataset.root={fmnist_root}")
    ours = load_split(cfg, train=False)
    theirs = FashionMNIST(fmnist_root, train=False)
    assert np.array_equal(ours.images[..., 0], theirs.data.numpy())
    assert np.array_equal(ours.labels, theirs.targets.numpy())
    assert ours.classes == theirs.classes


def test_a_truncated_idx_file_names_its_size(tmp_path):
    header = bytes([0, 0, 8, 3]) + np.array([2, 28, 28], ">i4").tobytes()
    (tmp_path / "x-idx3-ubyte").write_bytes(header + bytes(100))
    with pytest.raises(ValueError, match="holds 100 bytes, its header says"):
        ds.read_idx(tmp_path / "x-idx3-ubyte")
    (tmp_path / "x-idx3-ubyte").write_bytes(header + bytes(2 * 28 * 28))
    assert ds.read_idx(tmp_path / "x-idx3-ubyte").shape == (2, 28, 28)


def test_fashion_mnist_stats_match_config(compose, fmnist_root):
    cfg = compose("dataset=fashion_mnist", f"dataset.root={fmnist_root}")
    pixels = load_split(cfg, train=True).images.astype(np.float64) / 255.0
    assert pixels.mean() == pytest.approx(cfg.dataset.mean[0], abs=5e-4)
    assert pixels.std() == pytest.approx(cfg.dataset.std[0], abs=5e-4)


def test_fashion_mnist_missing_everywhere_is_a_clear_error(compose, tmp_path, monkeypatch):
    monkeypatch.setattr(ds, "DEBIAN_FASHION_MNIST", tmp_path / "nowhere")
    cfg = compose("dataset=fashion_mnist", f"dataset.root={tmp_path}", "dataset.download=false")
    with pytest.raises(EvaError, match="dataset-fashion-mnist") as e:
        load_split(cfg, train=True)
    assert str(tmp_path / "FashionMNIST" / "raw") in str(e.value)


def subset_cfg(**kw):
    base = {"train_subset": None, "test_subset": None, "val_size": 0}
    return OmegaConf.create({**base, **kw})


def test_subsets_are_the_same_for_the_same_seed_and_disjoint_from_val():
    cfg = subset_cfg(train_subset=300, test_subset=50, val_size=100)
    a, b = split_indices(1000, 200, cfg, seed=7), split_indices(1000, 200, cfg, seed=7)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)
    train, val, test = a
    assert (len(train), len(val), len(test)) == (300, 100, 50)
    assert not set(train) & set(val)
    other = split_indices(1000, 200, cfg, seed=8)
    assert not np.array_equal(train, other[0])
    full = split_indices(1000, 200, subset_cfg(), seed=7)
    np.testing.assert_array_equal(full[0], np.arange(1000))  # null = whole split, in order


@pytest.mark.parametrize(
    ("kw", "named"),
    [
        ({"train_subset": 0}, "dataset.train_subset=0"),
        ({"train_subset": 1001}, "dataset.train_subset=1001"),
        ({"test_subset": 500}, "dataset.test_subset=500"),
        ({"val_size": 1000}, "dataset.val_size=1000"),
        ({"val_size": 900, "train_subset": 200}, "dataset.train_subset=200"),
    ],
)
def test_impossible_subsets_name_the_value(kw, named):
    with pytest.raises(EvaError, match=named.replace(".", r"\.")):
        split_indices(1000, 200, subset_cfg(**kw), seed=0)


@pytest.mark.parametrize("option", options_of("augment"))
@pytest.mark.parametrize("dataset", ["synthetic", "fashion_mnist"])
def test_augmentations_use_the_current_api_without_warnings(compose, option, dataset):
    cfg = compose(f"augment={option}", f"dataset={dataset}")
    d = cfg.dataset
    shape = (d.image_size, d.image_size, d.in_channels)
    image = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # albumentations warns on deprecated/ignored args
        transform = build_augment(cfg)
        if transform is None:  # nothing random: the option names no builder
            assert "_target_" not in cfg.augment
            return
        out = transform(image=image)["image"]
    assert out.shape == (d.in_channels, d.image_size, d.image_size) and out.dtype == torch.float32


def only(aug_overrides: dict, compose):
    """The standard augmentation's arguments with everything off except the given ones."""
    return dict(aug_overrides)


def build_train_transform(aug, size: int, mean, std, seed: int):
    """What eva runs per image for an augment node (or a dict of `standard`'s arguments)."""
    kwargs = OmegaConf.to_container(aug) if OmegaConf.is_config(aug) else dict(aug)
    kwargs = {
        k: v for k, v in kwargs.items() if k not in ("_target_", "name", "backend", "batched")
    }
    return compose_pipeline(standard(size, mean, **kwargs), mean, std, seed)


def test_cutout_hole_is_the_dataset_mean_so_zero_after_normalize(compose):
    mean, std = [0.4914, 0.4822, 0.4465], [0.2470, 0.2435, 0.2616]
    aug = only({"cutout_size": 8, "cutout_p": 1.0}, compose)
    transform = build_train_transform(aug, 32, mean, std, seed=0)
    image = np.full((32, 32, 3), 255, dtype=np.uint8)  # white: never equal to the mean
    out = transform(image=image)["image"]
    hole = (out.abs() < 0.02).all(0)  # the mean, rounded to uint8, normalizes to ~0
    assert hole.sum().item() == 64  # exactly one 8x8 hole
    rows, cols = hole.nonzero().T
    assert rows.max() - rows.min() == 7 and cols.max() - cols.min() == 7
    assert mean_fill(mean) == (125, 123, 114)


def test_flip_rate_and_pad_crop_keep_the_size(compose):
    aug = only({"hflip_p": 0.5}, compose)
    transform = build_train_transform(aug, 32, [0.5] * 3, [0.5] * 3, seed=1)
    image = np.zeros((32, 32, 3), dtype=np.uint8)
    image[:, :16] = 255  # left half white: a flip moves it right
    flips = sum(transform(image=image)["image"][0, 0, 0].item() < 0 for _ in range(400))
    assert 160 < flips < 240  # p = 0.5 (binomial sd = 10)

    aug = only({"pad": 4, "pad_mode": "constant"}, compose)
    transform = build_train_transform(aug, 32, [0.5] * 3, [0.5] * 3, seed=1)
    outs = [transform(image=np.full((32, 32, 3), 255, np.uint8))["image"] for _ in range(20)]
    assert all(o.shape == (3, 32, 32) for o in outs)
    assert any((o < 0.9).any() for o in outs)  # some crops show the mean-filled padding


def test_augmentation_is_reproducible_from_the_seed(compose):
    aug = compose("augment=session6").augment
    image = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)

    def draws(seed):
        t = build_train_transform(aug, 32, [0.5] * 3, [0.25] * 3, seed=seed)
        return torch.stack([t(image=image)["image"] for _ in range(5)])

    torch.testing.assert_close(draws(3), draws(3))
    assert not torch.equal(draws(3), draws(4))


def test_evaluation_batches_keep_order_and_cover_every_sample():
    images = np.arange(10, dtype=np.uint8).reshape(10, 1, 1, 1).repeat(2, 1).repeat(2, 2)
    labels = np.arange(10, dtype=np.int64)
    batches = TensorBatches(images, labels, [0.0], [1.0], batch_size=4)
    got = [lab for _, lab in batches]
    assert len(batches) == 3 and [len(b) for b in got] == [4, 4, 2]
    assert torch.cat(got).tolist() == list(range(10))
    x, _ = next(iter(batches))
    torch.testing.assert_close(x[:, 0, 0, 0], torch.arange(4) / 255.0)
    assert batches.order is None  # nothing drawn, nothing for a checkpoint to save
    assert torch.cat([lab for _, lab in batches]).tolist() == list(range(10))  # every epoch


def test_build_data_on_synthetic_with_a_validation_split(compose):
    cfg = compose("dataset=synthetic", "dataset.val_size=64", "batch_size=50")
    data = build_data(cfg)
    assert data.sizes == {"train": 448, "val": 64, "test": 256}
    assert len(data.train) == 9  # ceil(448 / 50)
    x, y = next(iter(data.train))
    assert x.shape == (50, 3, 32, 32) and x.dtype == torch.float32 and y.dtype == torch.int64


def test_augmented_loader_order_and_augmentation_repeat_for_the_same_seed(compose):
    def loader(seed, workers=0):
        cfg = compose(
            "dataset=synthetic",
            "augment=session6",
            f"seed={seed}",
            "batch_size=16",
            f"dataset.num_workers={workers}",
        )
        return build_data(cfg).train

    (xa, ya), (xb, yb) = next(iter(loader(5))), next(iter(loader(5)))
    torch.testing.assert_close(xa, xb)
    assert torch.equal(ya, yb)
    assert not torch.equal(next(iter(loader(6)))[0], xa)
    # Each batch is reseeded from the loader's generator: worker processes see exactly what
    # the main process would, whatever their number.
    (wa, wy) = next(iter(loader(5, workers=2)))
    torch.testing.assert_close(wa, xa)
    assert torch.equal(wy, ya)


def test_the_loader_generator_state_decides_the_next_epoch(compose):
    """What last.pt saves as the data order: restored, the next epoch repeats exactly."""
    cfg = compose("dataset=synthetic", "augment=session6", "batch_size=64")
    train = build_data(cfg).train
    first = [x for x, _ in train]
    saved = train.order.get_state()
    second = [x for x, _ in train]
    assert not torch.equal(first[0], second[0])  # a new order and new augmentations
    other = build_data(cfg).train  # a new process resuming after epoch 1
    other.order.set_state(saved)
    for x, y in zip(second, [x for x, _ in other], strict=True):
        assert torch.equal(x, y)
