"""Dataset builders: the functions conf/dataset/*.yaml name with `_target_`.

The contract of a builder (eva's and a user's alike):
    builder(train: bool, **keyword arguments) -> ImageSet
returns the whole training split (train=True) or the whole test split (train=False) as
uint8 images (N, H, W, C), int64 labels (N,) in [0, num_classes) and the class names.
eva passes `train` and, when the signature names them, `root` (dataset.root as an absolute
path), `download`, `num_classes`, `in_channels` and `image_size`; the YAML's other keys
are the builder's own arguments. eva then checks the shape against the config and applies
dataset.val_size (held out of the training split first), train_subset and test_subset
itself (eva/data/__init__.py), so a builder never subsets.

Keeping the raw uint8 pixels (not PIL images, not pre-normalized floats) lets the same arrays
feed albumentations, the batched tensor path and the report plots.
"""

import gzip
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from eva.errors import EvaError
from eva.files import write_atomically

# Where the Debian package dataset-fashion-mnist puts the gzipped idx files.
DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"


@dataclass
class ImageSet:
    images: np.ndarray  # uint8, (N, H, W, C)
    labels: np.ndarray  # int64, (N,)
    classes: list[str]

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, indices: np.ndarray) -> "ImageSet":
        return ImageSet(self.images[indices], self.labels[indices], self.classes)


def _why(e: BaseException) -> str:
    """First line of why a load failed (URLError keeps the cause in .reason)."""
    text = str(getattr(e, "reason", e)).strip()
    return text.splitlines()[0] if text else type(e).__name__


def cifar10(train: bool, root: Path, download: bool = True) -> ImageSet:
    """torchvision's CIFAR-10 in <root>/cifar-10-batches-py, downloaded when missing."""
    from torchvision.datasets import CIFAR10

    root = Path(root)
    folder = root / "cifar-10-batches-py"
    try:
        ds = CIFAR10(root, train=train, download=False)
    except RuntimeError:  # missing, or a file fails its md5 check
        there = folder.is_dir() and any(folder.iterdir())
        state = "is corrupt or incomplete (md5 check failed)" if there else "is not there"
        if not download:
            raise EvaError(f"CIFAR-10 in {folder} {state} and dataset.download=false") from None
        try:
            ds = CIFAR10(root, train=train, download=True)
        except Exception as e:  # offline, proxy, disk full, a bad archive
            raise EvaError(
                f"CIFAR-10 in {folder} {state} and the download failed ({_why(e)}): put "
                f"{CIFAR10_URL.rsplit('/', 1)[1]} from {CIFAR10_URL} in {root}"
            ) from None
    except Exception as e:  # passed the md5 check, yet unreadable
        raise EvaError(f"CIFAR-10 in {folder} cannot be read ({_why(e)})") from None
    return ImageSet(np.asarray(ds.data), np.asarray(ds.targets, dtype=np.int64), list(ds.classes))


def _unpack_debian_fashion_mnist(raw: Path) -> None:
    """Gunzip the Debian package's idx files into raw/ (once), where torchvision looks."""
    raw.mkdir(parents=True, exist_ok=True)
    for name in FASHION_MNIST_FILES:
        target = raw / name
        if target.exists():
            continue
        with gzip.open(DEBIAN_FASHION_MNIST / f"{name}.gz", "rb") as src:
            # a killed unpack never leaves a truncated file behind
            write_atomically(target, lambda dst, src=src: shutil.copyfileobj(src, dst))


def read_idx(path: Path) -> np.ndarray:
    """An uncompressed idx file (the MNIST format) of unsigned bytes as an array.

    Header: two zero bytes, type 0x08 (uint8), the number of dimensions, then each size as
    a big-endian int32. Read here rather than through torchvision, whose import alone
    imports torch._dynamo: Fashion-MNIST runs start that much sooner.
    """
    data = path.read_bytes()
    if len(data) < 4 or data[:3] != b"\x00\x00\x08":
        raise ValueError(f"{path.name} is not an idx file of unsigned bytes")
    ndim = data[3]
    shape = tuple(int(n) for n in np.frombuffer(data, ">i4", count=ndim, offset=4))
    offset = 4 + 4 * ndim
    if len(data) - offset != int(np.prod(shape)):
        raise ValueError(f"{path.name} holds {len(data) - offset} bytes, its header says {shape}")
    return np.frombuffer(data, np.uint8, offset=offset).reshape(shape)


FASHION_MNIST_CLASSES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]  # fmt: skip


def fashion_mnist(train: bool, root: Path, download: bool = True) -> ImageSet:
    """The Debian package's files, unpacked once under <root>/FashionMNIST/raw (torchvision's
    layout); with none of them, torchvision downloads the dataset when download=true."""
    root = Path(root)
    raw = root / "FashionMNIST" / "raw"
    have = all((raw / f).exists() for f in FASHION_MNIST_FILES)
    debian = all((DEBIAN_FASHION_MNIST / f"{f}.gz").exists() for f in FASHION_MNIST_FILES)
    try:
        if not have and debian:
            _unpack_debian_fashion_mnist(raw)
        elif not have:
            from torchvision.datasets import FashionMNIST

            FashionMNIST(root, train=train, download=download)  # fails without the files
        prefix = "train" if train else "t10k"
        images = read_idx(raw / f"{prefix}-images-idx3-ubyte")
        labels = read_idx(raw / f"{prefix}-labels-idx1-ubyte")
        if images.ndim != 3 or labels.shape != images.shape[:1]:
            raise ValueError(f"{len(labels)} labels for images of shape {images.shape}")
    except Exception as e:  # missing, failed download, or files that cannot be parsed
        if have:  # the files are there but cannot be parsed
            fix = "delete them (eva unpacks the Debian package dataset-fashion-mnist again)"
        else:
            fix = "install the Debian package dataset-fashion-mnist, or put the *-ubyte files there"
        state = "cannot be read" if have else "not found"
        raise EvaError(f"Fashion-MNIST in {raw} {state} ({_why(e)}): {fix}") from None
    # (N, 28, 28) -> (N, 28, 28, 1); a copy, so the arrays own writable memory
    return ImageSet(images[..., None].copy(), labels.astype(np.int64), FASHION_MNIST_CLASSES)


def synthetic(
    train: bool,
    num_classes: int,
    in_channels: int,
    image_size: int,
    train_size: int = 512,
    test_size: int = 256,
) -> ImageSet:
    """Noise plus a faint fixed pattern per class: learnable, but not in one step."""
    if train_size < 1 or test_size < 1:
        raise ValueError(f"train_size={train_size}, test_size={test_size}: must be positive")
    shape = (image_size, image_size, in_channels)
    templates = np.random.default_rng(0).uniform(0, 255, (num_classes, *shape))
    rng = np.random.default_rng(1 if train else 2)
    n = train_size if train else test_size
    labels = rng.integers(0, num_classes, n)
    noise = rng.uniform(0, 255, (n, *shape))
    images = (0.3 * templates[labels] + 0.7 * noise).clip(0, 255).astype(np.uint8)
    classes = [f"class{i}" for i in range(num_classes)]
    return ImageSet(images, labels.astype(np.int64), classes)
