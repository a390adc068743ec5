"""The standard training augmentation with albumentations (2.x API): conf/augment/*.yaml.

`standard` is an augmentation builder: its keyword arguments are the YAML's keys, eva adds
the dataset's `image_size` and `mean`, and it returns the list of random transforms; eva's
`compose` adds Normalize and the tensor conversion and seeds the pipeline. A user's own
albumentations builder follows the same contract (any subset of image_size, mean, std).

Fills (cutout holes, padding, affine borders) use the dataset mean in the image's own
uint8 scale: the transforms run before Normalize, so a hole becomes exactly 0 afterwards.
"""

import os
from typing import TYPE_CHECKING, Literal

from eva.data.rules import check_standard_augment, mean_fill

if TYPE_CHECKING:
    import albumentations as A

# albumentations and cv2 are imported inside the functions, not here: eva's config check
# imports this module for `standard`'s signature and its check even with
# augment.backend=torch, which never uses albumentations; the GPU check (benchmarks/gpu.py)
# runs where neither is installed.


def _albumentations():
    """(albumentations, cv2), imported on first use."""
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # no network check at import
    import albumentations
    import cv2

    return albumentations, cv2


def standard(
    image_size: int,
    mean: list[float],
    hflip_p: float = 0.0,
    affine_p: float = 0.0,
    shift: float = 0.0625,
    scale: float = 0.1,
    rotate: float = 15.0,
    pad: int = 0,
    pad_mode: Literal["reflect", "constant"] = "reflect",
    cutout_size: int = 0,
    cutout_p: float = 0.5,
) -> list:
    """The random transforms asked for, in order; empty when nothing is.

    pad: pixels padded on each side, then a random crop back to size (0 = off); pad_mode
    constant pads with the mean. hflip_p: probability of a horizontal flip. affine_p:
    probability of shift-scale-rotate (shift: fraction of the size each way, scale: zoom
    1 +- scale, rotate: degrees each way). cutout_size: side of one square hole filled with
    the mean, with probability cutout_p (0 = off).
    """
    A, cv2 = _albumentations()
    fill = mean_fill(mean)
    steps = []
    if pad > 0:
        size = image_size + 2 * pad
        border = {"reflect": cv2.BORDER_REFLECT_101, "constant": cv2.BORDER_CONSTANT}[pad_mode]
        steps += [
            A.PadIfNeeded(size, size, border_mode=border, fill=fill),
            A.RandomCrop(image_size, image_size),
        ]
    if hflip_p > 0:
        steps.append(A.HorizontalFlip(p=hflip_p))
    if affine_p > 0:
        steps.append(
            A.Affine(
                translate_percent=(-shift, shift),
                scale=(1 - scale, 1 + scale),
                rotate=(-rotate, rotate),
                border_mode=cv2.BORDER_CONSTANT,
                fill=fill,
                p=affine_p,
            )
        )
    if cutout_size > 0:
        s = cutout_size
        steps.append(
            A.CoarseDropout(
                num_holes_range=(1, 1),
                hole_height_range=(s, s),
                hole_width_range=(s, s),
                fill=fill,
                p=cutout_p,
            )
        )
    return steps


standard.check = check_standard_augment  # eva/config/validate.py runs it before any work


def compose(steps, mean, std, seed: int) -> "A.Compose | None":
    """A builder's transforms -> uint8 HWC image in, normalized float CHW tensor out, seeded;
    None when there are no transforms (nothing random to do)."""
    A, _ = _albumentations()
    from albumentations.pytorch import ToTensorV2

    if isinstance(steps, A.BaseCompose):
        steps = list(steps.transforms)
    elif isinstance(steps, A.BasicTransform):
        steps = [steps]
    steps = list(steps or [])
    if not steps:
        return None
    normalize = A.Normalize(mean=list(mean), std=list(std), max_pixel_value=255.0)
    return A.Compose([*steps, normalize, ToTensorV2()], seed=seed)
