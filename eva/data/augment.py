"""Training augmentation with albumentations (2.x API), built from the `augment` group.

Fills (cutout holes, padding, affine borders) use the dataset mean in the image's own
uint8 scale: the transforms run before Normalize, so a hole becomes exactly 0 afterwards.
"""

import os

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # no network check at import

import albumentations as A  # noqa: E402
import cv2  # noqa: E402
from albumentations.pytorch import ToTensorV2  # noqa: E402

from eva.data import check_pad_mode, mean_fill  # noqa: E402, F401  (mean_fill: re-exported)

BORDERS = {"reflect": cv2.BORDER_REFLECT_101, "constant": cv2.BORDER_CONSTANT}


def augment_steps(aug, image_size: int, mean: list[float]) -> list:
    """The random transforms the config asks for, in order; empty for augment=none."""
    fill = mean_fill(mean)
    steps = []
    check_pad_mode(aug)
    if aug.pad > 0:
        size = image_size + 2 * aug.pad
        steps += [
            A.PadIfNeeded(size, size, border_mode=BORDERS[aug.pad_mode], fill=fill),
            A.RandomCrop(image_size, image_size),
        ]
    if aug.hflip_p > 0:
        steps.append(A.HorizontalFlip(p=aug.hflip_p))
    if aug.affine_p > 0:
        steps.append(
            A.Affine(
                translate_percent=(-aug.shift, aug.shift),
                scale=(1 - aug.scale, 1 + aug.scale),
                rotate=(-aug.rotate, aug.rotate),
                border_mode=cv2.BORDER_CONSTANT,
                fill=fill,
                p=aug.affine_p,
            )
        )
    if aug.cutout_size > 0:
        s = aug.cutout_size
        steps.append(
            A.CoarseDropout(
                num_holes_range=(1, 1),
                hole_height_range=(s, s),
                hole_width_range=(s, s),
                fill=fill,
                p=aug.cutout_p,
            )
        )
    return steps


def build_train_transform(aug, image_size: int, mean, std, seed: int) -> A.Compose | None:
    """uint8 HWC image -> normalized float CHW tensor; None when nothing random is asked for."""
    steps = augment_steps(aug, image_size, list(mean))
    if not steps:
        return None
    normalize = A.Normalize(mean=list(mean), std=list(std), max_pixel_value=255.0)
    return A.Compose([*steps, normalize, ToTensorV2()], seed=seed)
