"""An own augmentation builder, albumentations only.

The contract (eva/data/augment.py): the builder returns a list of albumentations
transforms for uint8 (H, W, C) images; eva appends Normalize and the tensor conversion and
seeds the pipeline. eva passes `image_size`, `mean` and `std` when the signature names
them (here `mean`, to fill the shifted-in border); the other arguments are the YAML's keys
(conf/augment/jitter.yaml). Its YAML names no `batched` builder, so eva refuses
augment.backend=torch for it with one line.
"""

import albumentations as A
import cv2

from eva.errors import EvaError


def jitter(
    mean: list[float],
    brightness: float = 0.2,
    contrast: float = 0.2,
    shift: int = 2,
    p: float = 0.5,
) -> list:
    """Random brightness/contrast (each +- its fraction) and a shift of up to `shift`
    pixels each way, each with probability p; the border is filled with the mean."""
    check_jitter(mean, brightness, contrast, shift, p)
    fill = tuple(round(m * 255) for m in mean)
    return [
        A.RandomBrightnessContrast(brightness_limit=brightness, contrast_limit=contrast, p=p),
        A.Affine(
            translate_px={"x": (-shift, shift), "y": (-shift, shift)},
            border_mode=cv2.BORDER_CONSTANT,
            fill=fill,
            p=p,
        ),
    ]


def check_jitter(mean, brightness=0.2, contrast=0.2, shift=2, p=0.5, **_inputs) -> None:
    """The arguments' ranges. As `jitter.check`, eva runs it with the same arguments while
    it validates the command, before any data loads: a bad value costs one line, at once."""
    if not 0 <= p <= 1:
        raise EvaError(f"augment.p={p}: a probability, must be in [0, 1]")
    if not (0 <= brightness <= 1 and 0 <= contrast <= 1) or shift < 0:
        raise EvaError(
            f"augment.brightness={brightness}, contrast={contrast}, shift={shift}: "
            "brightness and contrast are fractions in [0, 1], shift pixels >= 0"
        )


jitter.check = check_jitter
