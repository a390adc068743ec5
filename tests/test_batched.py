"""augment.backend=torch (eva/data/batched.py): batches, seeds and resume, and the same
augmentations as the albumentations pipeline, compared as distributions on a few hundred
samples (5-sigma binomial bounds, fixed seeds: not flaky)."""

import importlib.util
import json
import math
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from albumentations.augmentations.geometric import functional as fgeometric

from eva.data import build_augment, mean_fill
from eva.data.augment import standard
from eva.data.batched import BatchAugment, DeviceBatches, affine_theta, warp
from eva.data.loaders import SeededBatches, TensorBatches, epoch_plan, normalize_batch
from eva.errors import EvaError

torch.set_num_threads(1)
REPO = Path(__file__).resolve().parents[1]
MEAN, STD = [0.4914, 0.4822, 0.4465], [0.2470, 0.2435, 0.2616]
FILL = np.array(mean_fill(MEAN), dtype=np.uint8)  # (125, 123, 114)
N = 400  # samples per distribution check


# The arguments of the standard augmentation (augment.standard, BatchAugment), with
# everything random off.
AUGMENT_OFF = {
    "hflip_p": 0.0,
    "affine_p": 0.0,
    "shift": 0.0625,
    "scale": 0.1,
    "rotate": 15.0,
    "pad": 0,
    "pad_mode": "reflect",
    "cutout_size": 0,
    "cutout_p": 0.0,
}


def config(**on) -> dict:
    """The augmentation's arguments with everything random off except `on`."""
    assert set(on) <= set(AUGMENT_OFF), set(on) - set(AUGMENT_OFF)
    return {**AUGMENT_OFF, **on}


def albumentations(aug, images: np.ndarray, seed: int = 0) -> np.ndarray:
    """uint8 (N, H, W, C) through eva's albumentations steps (before Normalize), per image."""
    import albumentations as A

    pipeline = A.Compose(standard(32, MEAN, **aug), seed=seed)
    return np.stack([pipeline(image=image)["image"] for image in images])


def batched(aug, images: np.ndarray, seed: int = 0) -> np.ndarray:
    """The same images through BatchAugment, as one batch, back to (N, H, W, C)."""
    x = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()
    out = BatchAugment(32, MEAN, **aug)(x, torch.Generator().manual_seed(seed))
    assert out.dtype == torch.uint8 and out.shape == x.shape
    return out.permute(0, 2, 3, 1).numpy()


def both(aug, image: np.ndarray, n: int = N) -> dict[str, np.ndarray]:
    images = np.repeat(image[None], n, axis=0)
    return {"albumentations": albumentations(aug, images), "torch": batched(aug, images)}


def positions() -> np.ndarray:
    """32x32x3: channel 0 is the row, 1 the column, 2 a mix: where every pixel came from."""
    rows, cols = np.mgrid[0:32, 0:32]
    return np.stack([rows, cols, (rows * 7 + cols * 3) % 256], -1).astype(np.uint8)


def framed(image: np.ndarray, pad: int, mode: str) -> np.ndarray:
    """The image padded as cv2 pads it: numpy's reflect is BORDER_REFLECT_101 (no edge
    pixel repeated); constant is the dataset mean."""
    if mode == "reflect":
        return np.pad(image, ((pad, pad), (pad, pad), (0, 0)), mode="reflect")
    out = np.empty((32 + 2 * pad, 32 + 2 * pad, 3), np.uint8)
    out[:] = FILL
    out[pad:-pad, pad:-pad] = image
    return out


def windows(padded: np.ndarray, pad: int, dy: np.ndarray, dx: np.ndarray) -> np.ndarray:
    """The 32x32 windows of `padded` whose corners are (dy, dx) from the unpadded image's."""
    return np.stack(
        [
            padded[pad + y : pad + y + 32, pad + x : pad + x + 32]
            for y, x in zip(dy, dx, strict=True)
        ]
    )


def assert_rate(hits: np.ndarray, p: float, name: str) -> None:
    sigma = math.sqrt(p * (1 - p) / len(hits))
    assert abs(hits.mean() - p) < 5 * sigma, f"{name}: rate {hits.mean():.3f}, expected {p}"


@pytest.mark.parametrize("mode", ["reflect", "constant"])
def test_pad_crop_offsets_and_border_pixels_match_albumentations(mode):
    image, pad = positions(), 4
    freqs = {}
    for name, out in both(config(pad=pad, pad_mode=mode), image, n=450).items():
        # The centre pixel is never padding: it says where the crop window was.
        dy, dx = (out[:, 16, 16, :2].astype(int) - 16).T
        expected = windows(framed(image, pad, mode), pad, dy, dx)
        np.testing.assert_array_equal(out, expected, err_msg=name)  # every pixel, fills too
        for axis, d in {"y": dy, "x": dx}.items():
            assert sorted(set(d)) == list(range(-pad, pad + 1)), (name, axis)
            freqs[name, axis] = np.bincount(d + pad, minlength=2 * pad + 1) / len(d)
            for offset in range(2 * pad + 1):
                assert_rate(d + pad == offset, 1 / (2 * pad + 1), f"{name} {axis}={offset}")
    p = 1 / (2 * pad + 1)
    for axis in "yx":  # and the two are uniform alike (difference of two frequencies)
        sigma = math.sqrt(2 * p * (1 - p) / 450)
        assert np.abs(freqs["albumentations", axis] - freqs["torch", axis]).max() < 5 * sigma


def test_flip_rate_and_pixels_match_albumentations():
    image = positions()
    for name, out in both(config(hflip_p=0.5), image, n=1600).items():  # 5 sigma: +-0.06
        flipped = out[:, 0, 0, 1] == 31
        assert_rate(flipped, 0.5, name)
        np.testing.assert_array_equal(
            out[flipped], np.broadcast_to(image[:, ::-1], out[flipped].shape)
        )
        np.testing.assert_array_equal(out[~flipped], np.broadcast_to(image, out[~flipped].shape))


def test_cutout_hole_size_fill_rate_and_placement_match_albumentations():
    size, white = 8, np.full((32, 32, 3), 255, np.uint8)
    corners = {}
    for name, out in both(config(cutout_size=size, cutout_p=0.5), white, n=1600).items():
        hole = (out != 255).any(-1)
        has = hole.any((1, 2))
        assert_rate(has, 0.5, name)
        np.testing.assert_array_equal(out[hole], np.broadcast_to(FILL, (hole.sum(), 3)))
        assert (hole[has].sum((1, 2)) == size * size).all(), name
        top = hole[has].any(2).argmax(1)
        left = hole[has].any(1).argmax(1)
        for i, (y, x) in enumerate(zip(top, left, strict=True)):  # one square, exactly size x size
            assert hole[has][i, y : y + size, x : x + size].all(), name
        corners[name] = np.concatenate([top, left])
    for name, c in corners.items():  # the whole hole inside the image, every corner possible
        assert c.min() == 0 and c.max() == 32 - size, name
        sigma = math.sqrt(((32 - size + 1) ** 2 - 1) / 12 / len(c))  # discrete uniform
        assert abs(c.mean() - (32 - size) / 2) < 5 * sigma, name


def test_affine_with_zero_ranges_is_the_identity():
    images = np.random.default_rng(0).integers(0, 256, (16, 32, 32, 3), dtype=np.uint8)
    aug = config(affine_p=1.0, shift=0.0, scale=0.0, rotate=0.0)
    np.testing.assert_array_equal(batched(aug, images), images)


@pytest.mark.parametrize(
    "translate, scale, angle",
    [((1, -1), (1.1, 0.9), 12.0), ((-2, 0), (0.93, 1.04), -14.5), ((0, 2), (1.0, 1.0), 90.0)],
)
def test_warp_matches_cv2_with_the_albumentations_matrix(translate, scale, angle):
    """Same geometry as A.Affine: its matrix (centre, rotation sense, x/y scale), warped by
    cv2 with the mean as border, against affine_theta + warp (bilinear, float)."""
    image = np.random.default_rng(1).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    matrix = fgeometric.create_affine_transformation_matrix(
        {"x": translate[0], "y": translate[1]},
        {"x": 0.0, "y": 0.0},
        {"x": scale[0], "y": scale[1]},
        angle,
        fgeometric.center((32, 32)),
    )
    expected = cv2.warpAffine(
        image, matrix[:2], (32, 32), flags=cv2.INTER_LINEAR, borderValue=tuple(map(int, FILL))
    )
    theta = affine_theta(
        torch.tensor([translate], dtype=torch.float32),
        torch.tensor([scale]),
        torch.tensor([angle]),
        32,
    )
    x = torch.from_numpy(image).permute(2, 0, 1)[None].contiguous()
    out = warp(x, theta, torch.from_numpy(FILL))[0].permute(1, 2, 0).numpy()
    # cv2 interpolates in fixed point (1/32 pixel steps): a level off at most, and rarely.
    diff = np.abs(out.astype(int) - expected.astype(int))
    assert diff.max() <= 1 and (diff > 0).mean() < 0.01


def test_affine_translation_is_whole_pixels_drawn_like_albumentations():
    """translate_percent=(-s, s) becomes int(U(-s, s) * 32) pixels, toward zero: with
    s = 0.0625 that is -1, 0, 1 with probabilities 1/4, 1/2, 1/4, an exact shift."""
    image = positions()
    for name, out in both(config(affine_p=1.0, shift=0.0625, scale=0.0, rotate=0.0), image).items():
        ty, tx = (16 - out[:, 16, 16, :2].astype(int)).T
        expected = windows(framed(image, 1, "constant"), 1, -ty, -tx)  # moved by (ty, tx)
        np.testing.assert_array_equal(out, expected, err_msg=name)
        for t in (tx, ty):
            for value, p in {-1: 0.25, 0: 0.5, 1: 0.25}.items():
                assert_rate(t == value, p, f"{name} translate {value}")


def test_affine_scales_x_and_y_apart_like_albumentations():
    """scale=(1 - s, 1 + s) is drawn for x and for y separately (keep_ratio=False): how far
    a white image shrinks across (border in the middle row) says nothing of how far it
    shrinks down (border in the middle column)."""
    white = np.full((32, 32, 3), 255, np.uint8)
    widths = {}
    for name, out in both(
        config(affine_p=1.0, shift=0.0, scale=0.1, rotate=0.0), white, 300
    ).items():
        across = (out[:, 16] != 255).any(-1).sum(1)
        down = (out[:, :, 16] != 255).any(-1).sum(1)
        assert abs(np.corrcoef(across, down)[0, 1]) < 5 / math.sqrt(len(out)), name
        widths[name] = across
    a, b = widths["albumentations"], widths["torch"]
    assert abs(a.mean() - b.mean()) < 5 * math.sqrt(a.var() / len(a) + b.var() / len(b))
    assert b.mean() > 0.5  # the scale range is used: shrunk images show a border


def test_affine_rotation_range_matches_albumentations():
    """rotate=(-r, r) uniformly. The angle shows in the position channels, which bilinear
    sampling keeps exact up to uint8 rounding: two output pixels 24 apart on the middle row
    read source points whose direction is the angle, +-2.4 degrees (atan(1 / 24))."""
    angles = {}
    for name, out in both(
        config(affine_p=1.0, shift=0.0, scale=0.0, rotate=15.0), positions(), 300
    ).items():
        dy, dx = (out[:, 16, 28, :2].astype(float) - out[:, 16, 4, :2]).T
        angles[name] = np.abs(np.degrees(np.arctan2(dy, dx)))
        assert 12 < angles[name].max() < 15 + 2.4, name
    a, b = angles["albumentations"], angles["torch"]
    assert abs(a.mean() - b.mean()) < 5 * math.sqrt(a.var() / len(a) + b.var() / len(b))


def test_affine_border_fraction_matches_albumentations():
    """A white image warped with session6's ranges: the share of pixels the mean border
    reaches depends on every parameter's distribution (translation truncated to whole
    pixels, x and y scale drawn apart, rotation)."""
    aug = config(affine_p=1.0, shift=0.0625, scale=0.1, rotate=15.0)
    white = np.full((32, 32, 3), 255, np.uint8)
    fractions = {
        name: (out != 255).any(-1).mean((1, 2)) for name, out in both(aug, white, 300).items()
    }
    a, b = fractions["albumentations"], fractions["torch"]
    # Two independent sample means: 5 standard errors of their difference, plus 0.005 for
    # cv2's fixed-point weights (a pixel 1/64 inside the border rounds back to white there).
    tolerance = 5 * math.sqrt(a.var() / len(a) + b.var() / len(b)) + 0.005
    assert abs(a.mean() - b.mean()) < tolerance, (a.mean(), b.mean(), tolerance)
    assert 0.02 < b.mean() < 0.5  # the border shows, but the image stays mostly image
    # applied with probability affine_p: images with any border pixel, at p = 0.5
    aug["affine_p"] = 0.5
    touched = {name: (out != 255).any((1, 2, 3)) for name, out in both(aug, white).items()}
    p = touched["albumentations"].mean()
    assert_rate(touched["torch"], p, "torch affine_p")


def labelled(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Images whose every pixel says which they are: channel 0 the index, 1 the label."""
    labels = np.arange(n) % 10
    images = np.zeros((n, 32, 32, 3), np.uint8)
    images[..., 0] = np.arange(n)[:, None, None]
    images[..., 1] = (20 * labels + 5)[:, None, None]
    images[..., 2] = 200
    return images, labels.astype(np.int64)


def session6_like():
    return config(hflip_p=0.5, pad=4, affine_p=0.5, cutout_size=8, cutout_p=0.5)


def session6_augment() -> BatchAugment:
    """The batch augmentation the batcher tests run (every step on)."""
    return BatchAugment(32, MEAN, **session6_like())


def device_batches(images, labels, seed=0, augment=True, device="cpu", generator=None):
    aug = session6_augment() if augment else None
    generator = generator or torch.Generator().manual_seed(seed)
    return DeviceBatches(images, labels, MEAN, STD, 32, torch.device(device), aug, generator)


def epoch(batches) -> list:
    return [(x.clone(), y.clone()) for x, y in batches]


def test_batches_keep_shapes_and_labels_paired_with_their_images():
    images, labels = labelled(100)
    batches = device_batches(images, labels)
    assert len(batches) == 4 and batches.labels.dtype == torch.int64
    seen = []
    for i, (x, y) in enumerate(batches):
        assert x.shape == (4 if i == 3 else 32, 3, 32, 32) and x.dtype == torch.float32
        assert y.dtype == torch.int64 and x.device == y.device == torch.device("cpu")
        mean, std = torch.tensor(MEAN).view(1, 3, 1, 1), torch.tensor(STD).view(1, 3, 1, 1)
        pixels = ((x * std + mean) * 255).round().to(torch.uint8)
        # most of each image is still its own constant (holes and borders are the rest)
        index = pixels[:, 0].flatten(1).mode(1).values
        label = pixels[:, 1].flatten(1).mode(1).values
        assert torch.equal((label.long() - 5) // 20, y)
        assert torch.equal(torch.from_numpy(labels)[index.long()], y)
        seen += index.tolist()
    assert sorted(seen) == list(range(100))  # every sample once per epoch


def test_batches_and_tensors_stay_on_the_given_device():
    images, labels = labelled(40)
    for x, y in device_batches(images, labels, device="meta"):  # no data, only placement
        assert x.device.type == y.device.type == "meta" and x.dtype == torch.float32
    evaluation = TensorBatches(images, labels, MEAN, STD, 16, device=torch.device("meta"))
    assert all(x.device.type == y.device.type == "meta" for x, y in evaluation)
    on_cpu = TensorBatches(images, labels, MEAN, STD, 16, device=torch.device("cpu"))
    default = TensorBatches(images, labels, MEAN, STD, 16)
    for (a, b), (c, d) in zip(on_cpu, default, strict=True):
        assert torch.equal(a, c) and torch.equal(b, d)


def test_same_seed_same_batches_and_the_generator_state_decides_the_next_epoch():
    images = np.random.default_rng(0).integers(0, 256, (96, 32, 32, 3), dtype=np.uint8)
    labels = np.arange(96) % 10
    a, b = device_batches(images, labels, seed=5), device_batches(images, labels, seed=5)
    first = epoch(a)
    assert all(
        torch.equal(x, u) and torch.equal(y, v)
        for (x, y), (u, v) in zip(first, epoch(b), strict=True)
    )
    other = epoch(device_batches(images, labels, seed=6))
    assert not torch.equal(first[0][0], other[0][0])

    state = a.order.get_state()  # at an epoch boundary, as a checkpoint saves it
    second = epoch(a)
    assert not torch.equal(first[0][0], second[0][0])  # a new order and new augmentations
    restored = torch.Generator()
    restored.set_state(state)
    resumed = epoch(device_batches(images, labels, generator=restored))
    assert all(
        torch.equal(x, u) and torch.equal(y, v)
        for (x, y), (u, v) in zip(second, resumed, strict=True)
    )


def test_batches_follow_the_seeded_batches_scheme():
    """The order and the per-batch seeds are SeededBatches' (same generator, same draws);
    each batch is augmented from a fresh generator seeded with its own seed."""
    images = np.repeat(np.random.default_rng(0).integers(0, 256, (1, 32, 32, 3), np.uint8), 64, 0)
    labels = np.arange(64) % 10
    augment = session6_augment()
    keys = list(SeededBatches(64, 32, torch.Generator().manual_seed(4)))
    got = epoch(device_batches(images, labels, seed=4))
    mean, std = torch.tensor(MEAN).view(1, 3, 1, 1), torch.tensor(STD).view(1, 3, 1, 1)
    for (x, y), batch in zip(got, keys, strict=True):
        index = [i for i, _ in batch]
        chw = torch.from_numpy(images[index]).permute(0, 3, 1, 2).contiguous()
        expected = augment(chw, torch.Generator().manual_seed(batch[0][1]))
        assert torch.equal(x, normalize_batch(expected, mean, std))
        assert y.tolist() == labels[index].tolist()
    assert not torch.equal(got[0][0], got[1][0])  # same images, other seeds: other images


def test_without_augmentation_the_batches_are_tensor_batches_shuffled_alike():
    """DeviceBatches is TensorBatches with a batch augmentation: without one, the same
    batches epoch after epoch (no seeds drawn by either)."""
    images = np.random.default_rng(0).integers(0, 256, (70, 32, 32, 3), dtype=np.uint8)
    labels = np.arange(70) % 10
    ours = device_batches(images, labels, seed=3, augment=False)
    plain = TensorBatches(images, labels, MEAN, STD, 32, True, torch.Generator().manual_seed(3))
    for _ in range(2):
        for (x, y), (u, v) in zip(ours, plain, strict=True):
            assert torch.equal(x, u) and torch.equal(y, v)


def reference_epochs(seed: int, seeded: bool, epochs: int = 2, n: int = 70, size: int = 32):
    """The batchers' streams written out with torch calls, as they were before epoch_plan:
    per epoch a permutation, then (seeded) one seed per batch. Returns [(index batches,
    seeds)] and the generator moved on by those draws."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(epochs):
        order = torch.randperm(n, generator=g).tolist()
        count = -(-n // size)
        seeds = torch.randint(0, 2**62, (count,), generator=g).tolist() if seeded else None
        out.append(([order[i : i + size] for i in range(0, n, size)], seeds))
    return out, g


@pytest.mark.parametrize("seeded", [True, False])
def test_epoch_plan_is_a_permutation_then_one_seed_per_batch(seeded):
    g = torch.Generator().manual_seed(7)
    plan = epoch_plan(70, 32, g, seeded=seeded)
    [(batches, seeds)], moved = reference_epochs(7, seeded, epochs=1)
    assert [idx.tolist() for idx, _ in plan] == batches
    assert [len(b) for b in batches] == [32, 32, 6]  # the last one short
    assert [seed for _, seed in plan] == (seeds if seeded else [None] * 3)
    assert torch.equal(g.get_state(), moved.get_state())  # nothing else drawn


KINDS = ["tensor", "device", "seeded"]  # TensorBatches (not augmented), DeviceBatches, keys


def batcher(kind: str, generator: torch.Generator):
    """70 samples in batches of 32, labelled with their index."""
    images, labels = np.zeros((70, 32, 32, 3), np.uint8), np.arange(70)
    if kind == "seeded":
        return SeededBatches(70, 32, generator)
    if kind == "tensor":
        return TensorBatches(images, labels, MEAN, STD, 32, True, generator)
    return device_batches(images, labels, generator=generator)


def drawn(batches) -> tuple[list[list[int]], list[int] | None]:
    """One epoch: the index batches, and the batch seeds where the batcher shows them."""
    if isinstance(batches, SeededBatches):
        keys = list(batches)
        return [[i for i, _ in b] for b in keys], [b[0][1] for b in keys]
    return [y.tolist() for _, y in batches], None


def rng(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("kind", KINDS)
def test_every_batcher_repeats_for_a_generator_state_and_covers_each_sample_once(kind):
    a = batcher(kind, rng(5))
    assert len(a) == 3  # ceil(70 / 32): the last batch is short
    first, seeds = drawn(a)
    assert [len(b) for b in first] == [32, 32, 6]
    assert sorted(i for b in first for i in b) == list(range(70))  # each once an epoch
    assert (first, seeds) == drawn(batcher(kind, rng(5)))  # same seed, same batches
    assert first != drawn(batcher(kind, rng(6)))[0]  # another seed, another order

    state = a.generator.get_state() if kind == "seeded" else a.order.get_state()
    second = drawn(a)
    assert second[0] != first and sorted(i for b in second[0] for i in b) == list(range(70))
    restored = torch.Generator()
    restored.set_state(state)  # a resume at the epoch boundary repeats the next epoch
    assert drawn(batcher(kind, restored)) == second


@pytest.mark.parametrize("kind", KINDS)
def test_the_streams_are_the_ones_written_before_epoch_plan(kind):
    """Reproducibility across versions: the same seed gives the same order (and batch seeds)
    as the draws each batcher made before; un-augmented TensorBatches draws no seeds."""
    batches = batcher(kind, rng(11))
    expected, _ = reference_epochs(11, seeded=kind != "tensor")
    for order, seeds in expected:
        got, got_seeds = drawn(batches)
        assert got == order
        if kind == "seeded":
            assert got_seeds == seeds


def test_an_augmentation_needs_shuffled_seeded_batches():
    images, labels = labelled(8)
    with pytest.raises(ValueError, match="augment needs shuffle=True"):
        TensorBatches(images, labels, MEAN, STD, 4, augment=lambda x, generator: x)


def test_nothing_random_builds_nothing_and_a_bad_pad_mode_is_one_line(compose):
    assert not BatchAugment(32, MEAN, **config()).active
    assert build_augment(compose("augment=none", "augment.backend=torch")) is None
    with pytest.raises(EvaError, match="augment.pad_mode='wrap'") as e:
        build_augment(compose("augment=resnet", "augment.backend=torch", "augment.pad_mode=wrap"))
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("preset", ["resnet", "session6"])
def test_conf_presets_run_and_change_images(compose, preset):
    augment = build_augment(compose(f"augment={preset}", "augment.backend=torch"))
    assert isinstance(augment, BatchAugment)
    images = torch.randint(0, 256, (64, 3, 32, 32), dtype=torch.uint8)
    out = augment(images, torch.Generator().manual_seed(0))
    assert out.shape == images.shape and out.dtype == torch.uint8
    changed = (out != images).flatten(1).any(1)
    assert 0.5 < changed.float().mean() <= 1.0  # most images see a flip, crop, warp or hole


def test_benchmark_runs_in_process(capsys):
    benchmarks = str(REPO / "benchmarks")
    sys.path.insert(0, benchmarks)  # augment.py imports `common` from there
    try:
        spec = importlib.util.spec_from_file_location(
            "benchmark_augment", f"{benchmarks}/augment.py"
        )
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        result = module.main(["--images", "256", "--repeats", "1", "--augment", "resnet"])
    finally:
        sys.path.remove(benchmarks)
    assert result["ratio"] > 0 and result["albumentations_img_per_s"] > 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert json.loads(last) == result  # the JSON line for tools is the returned dict
