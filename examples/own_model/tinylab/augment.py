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


def jitter(
    mean: list[float],
    brightness: float = 0.2,
    contrast: float = 0.2,
    shift: int = 2,
    p: float = 0.5,
) -> list:
    """Random brightness/contrast (each +- its fraction) and a shift of up to `shift`
    pixels each way, each with probability p; the border is filled with the mean."""
    if not 0 <= p <= 1:
        raise ValueError(f"p={p}: a probability, must be in [0, 1]")
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
