"""An own dataset builder: procedurally drawn stripes, one class per orientation.

The contract (eva/data/datasets.py): `builder(train: bool, **kwargs) -> eva.data.ImageSet`,
the whole split as uint8 images (N, H, W, C), int64 labels in [0, num_classes) and the
class names. eva passes `train` and, because this signature names them, `num_classes`,
`in_channels` and `image_size` (from conf/dataset/stripes.yaml); `train_size`, `test_size`
and `noise` are this builder's own keys. Nothing is downloaded: the images are drawn from
a fixed seed per split, so every run sees the same data.
"""

import numpy as np

from eva.data import ImageSet


def stripes(
    train: bool,
    num_classes: int,
    in_channels: int,
    image_size: int,
    train_size: int = 2000,
    test_size: int = 500,
    noise: float = 1.0,
) -> ImageSet:
    """Sine gratings at num_classes orientations (0 to 180 degrees), random frequency and
    phase, plus Gaussian noise of `noise` x the stripes' amplitude."""
    if train_size < 1 or test_size < 1:
        raise ValueError(f"train_size={train_size}, test_size={test_size}: must be positive")
    if noise < 0:
        raise ValueError(f"noise={noise}: must be 0 or more")
    n = train_size if train else test_size
    rng = np.random.default_rng(1 if train else 2)
    labels = rng.integers(0, num_classes, n)
    angle = np.pi * labels / num_classes + rng.normal(0, 0.05, n)
    freq = rng.uniform(0.1, 0.3, n)  # cycles per pixel
    phase = rng.uniform(0, 2 * np.pi, n)
    yy, xx = np.mgrid[0:image_size, 0:image_size].astype(np.float32)
    along = np.cos(angle)[:, None, None] * xx + np.sin(angle)[:, None, None] * yy
    wave = np.sin(2 * np.pi * freq[:, None, None] * along + phase[:, None, None])
    wave = wave[..., None] + noise * rng.standard_normal((n, image_size, image_size, in_channels))
    images = np.clip(127.5 + 50 * wave, 0, 255).astype(np.uint8)
    classes = [f"{round(180 * k / num_classes)}deg" for k in range(num_classes)]
    return ImageSet(images, labels.astype(np.int64), classes)
