"""Rules both augmentation backends share (albumentations in eva/data/augment.py, batched
tensors in eva/data/batched.py): what fills a hole, which arguments fit an image.

Imports neither albumentations nor torch.
"""

from eva.errors import EvaError


def mean_fill(mean: list[float]) -> tuple[float, ...]:
    """The dataset mean in uint8 pixel units, one value per channel: what holes, padding
    and affine borders are filled with (before Normalize, so they normalize to ~0)."""
    return tuple(round(m * 255.0) for m in mean)


def check_standard_augment(
    image_size: int,
    hflip_p: float = 0.0,
    affine_p: float = 0.0,
    shift: float = 0.0625,
    scale: float = 0.1,
    rotate: float = 15.0,
    pad: int = 0,
    pad_mode: str = "reflect",
    cutout_size: int = 0,
    cutout_p: float = 0.5,
    **_inputs,
) -> None:
    """The standard augmentation's arguments (both backends), before any work: geometry
    that does not fit the image, probabilities outside [0, 1]."""
    for key, p in (("hflip_p", hflip_p), ("affine_p", affine_p), ("cutout_p", cutout_p)):
        if not 0 <= p <= 1:
            raise EvaError(f"augment.{key}={p}: a probability, must be in [0, 1]")
    if not 0 <= cutout_size <= image_size:
        raise EvaError(
            f"augment.cutout_size={cutout_size}: the hole must fit the {image_size}x{image_size} "
            f"image (0 to {image_size}; 0 = off)"
        )
    if pad < 0 or (pad_mode == "reflect" and pad >= image_size):
        most = image_size - 1 if pad_mode == "reflect" else "any"
        raise EvaError(
            f"augment.pad={pad}: must be 0 or more and, with pad_mode=reflect, below the image "
            f"size {image_size} (at most {most})"
        )
    if not 0 <= shift < 1 or not 0 <= scale < 1 or rotate < 0:
        raise EvaError(
            f"augment.shift={shift}, scale={scale}, rotate={rotate}: shift and scale are "
            "fractions in [0, 1), rotate degrees >= 0"
        )
