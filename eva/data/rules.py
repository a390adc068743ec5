"""Rules both augmentation backends share (albumentations in eva/data/augment.py, batched
tensors in eva/data/batched.py): what fills a hole, which arguments fit an image.

Imports neither albumentations nor torch.
"""

from dataclasses import dataclass, fields

from eva.errors import EvaError


def mean_fill(mean: list[float]) -> tuple[float, ...]:
    """The dataset mean in uint8 pixel units, one value per channel: what holes, padding
    and affine borders are filled with (before Normalize, so they normalize to ~0)."""
    return tuple(round(m * 255.0) for m in mean)


@dataclass(frozen=True)
class StandardAugment:
    """The standard augmentation's arguments (eva/data/augment.py `standard` and its batched
    twin): pad + random crop, flip, shift-scale-rotate, one cutout hole. 0 turns one off."""

    hflip_p: float = 0.0  # probability of a horizontal flip
    affine_p: float = 0.0  # probability of shift-scale-rotate
    shift: float = 0.0625  # fraction of the image size, each way
    scale: float = 0.1  # zoom 1 +- scale
    rotate: float = 15.0  # degrees, each way
    pad: int = 0  # pixels padded on each side, then a random crop back to size
    pad_mode: str = "reflect"  # reflect | constant (the dataset mean)
    cutout_size: int = 0  # side of one square hole filled with the mean
    cutout_p: float = 0.5


def check_standard_augment(image_size: int, **kwargs) -> None:
    """The standard augmentation's arguments (both backends), before any work: geometry
    that does not fit the image, probabilities outside [0, 1]."""
    names = {f.name for f in fields(StandardAugment)}
    a = StandardAugment(**{k: v for k, v in kwargs.items() if k in names})
    for key, p in (("hflip_p", a.hflip_p), ("affine_p", a.affine_p), ("cutout_p", a.cutout_p)):
        if not 0 <= p <= 1:
            raise EvaError(f"augment.{key}={p}: a probability, must be in [0, 1]")
    if not 0 <= a.cutout_size <= image_size:
        raise EvaError(
            f"augment.cutout_size={a.cutout_size}: the hole must fit the {image_size}x"
            f"{image_size} image (0 to {image_size}; 0 = off)"
        )
    if a.pad < 0 or (a.pad_mode == "reflect" and a.pad >= image_size):
        most = image_size - 1 if a.pad_mode == "reflect" else "any"
        raise EvaError(
            f"augment.pad={a.pad}: must be 0 or more and, with pad_mode=reflect, below the "
            f"image size {image_size} (at most {most})"
        )
    if not 0 <= a.shift < 1 or not 0 <= a.scale < 1 or a.rotate < 0:
        raise EvaError(
            f"augment.shift={a.shift}, scale={a.scale}, rotate={a.rotate}: shift and scale "
            "are fractions in [0, 1), rotate degrees >= 0"
        )
