"""augment.backend=torch: the training split held on the run's device as one uint8 tensor,
each batch augmented there with tensor ops (no per-image Python, no DataLoader workers).

The augmentations are the ones eva/data/augment.py builds with albumentations, in the same
order and with each random parameter drawn from the same distribution as albumentations
2.0.8 draws it; the streams differ, so the same seed gives other (equally likely) images.
Every random number is drawn on the CPU from a torch.Generator and only then moved to the
device, asynchronously from page-locked memory (loaders.to_device: the host never waits for
the GPU): a batch's parameters depend on its seed alone, on a CPU as on a GPU (so do its
pixels, but for the odd warped pixel whose float rounding lands the other way).
"""

from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

from eva.data.loaders import TensorBatches, to_device

# albumentations is not imported on this path (eva.data holds the shared rules)
from eva.data.rules import check_standard_augment, mean_fill
from eva.errors import EvaError


def affine_theta(translate: torch.Tensor, scale: torch.Tensor, angle: torch.Tensor, size: int):
    """(B, 2, 3) matrices for F.affine_grid (align_corners=False) from albumentations' params.

    translate (B, 2) is (x, y) in pixels, scale (B, 2) is (x, y), angle (B,) in degrees.
    Albumentations maps a source pixel p to c + t + R S (p - c), c the image centre
    (size / 2 - 0.5, where align_corners=False puts 0 too); cv2.warpAffine then samples each
    output pixel at the inverse of that. affine_grid wants the inverse in [-1, 1] units,
    which are centred pixels divided by size / 2.
    """
    rad = torch.deg2rad(angle.double())
    cos, sin = torch.cos(rad), torch.sin(rad)
    sx, sy = scale.double().unbind(1)
    # (R S)^-1 = S^-1 R^T with R = [[cos, sin], [-sin, cos]] (albumentations' rotation)
    inv = torch.stack(
        [torch.stack([cos / sx, -sin / sx], 1), torch.stack([sin / sy, cos / sy], 1)], 1
    )
    # The pixel-to-unit rescaling cancels in the linear part (square images).
    shift = -(inv @ translate.double().unsqueeze(2)) / (size / 2)
    return torch.cat([inv, shift], 2).float()


def affine_grid(theta: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """F.affine_grid(theta, align_corners=False), computed (B, 2, H, W) and handed over as a
    permuted view: F.affine_grid's (HW x 3) @ (3 x 2) products take ~5x as long on a CPU."""
    dev = theta.device
    xs = ((torch.arange(w, device=dev) * 2 + 1) / w - 1).view(1, 1, 1, w)
    ys = ((torch.arange(h, device=dev) * 2 + 1) / h - 1).view(1, 1, h, 1)
    t = theta.view(-1, 2, 3, 1, 1)
    return torch.addcmul(torch.addcmul(t[:, :, 2], t[:, :, 0], xs), t[:, :, 1], ys).permute(
        0, 2, 3, 1
    )


def warp(images: torch.Tensor, theta: torch.Tensor, fill: torch.Tensor) -> torch.Tensor:
    """Bilinear affine warp of uint8 images, pixels from outside the image set to `fill`.

    grid_sample blends in zeros at the border; warping (image - fill) and adding fill back
    blends in `fill` instead, as cv2.BORDER_CONSTANT with borderValue=fill does.
    """
    fill = fill.view(1, -1, 1, 1).float()
    grid = affine_grid(theta, images.shape[2], images.shape[3])
    x = images.float() - fill
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return x.add_(fill).round_().clamp_(0, 255).to(torch.uint8)


def _reflect_101(idx: torch.Tensor, size: int) -> torch.Tensor:
    """cv2.BORDER_REFLECT_101 (torch's 'reflect'): -1 -> 1, size -> size - 2, and on
    (periodically) for pads wider than the image, as cv2 does."""
    period = 2 * (size - 1)
    idx = idx.remainder(period)
    return torch.where(idx >= size, period - idx, idx)


class BatchAugment:
    """eva/data/augment.py's `standard`, on a whole uint8 (B, C, H, W) batch at once:
    pad + random crop, horizontal flip, shift-scale-rotate, one square cutout hole.

    A batched augmentation builder (augment.batched): the same keyword arguments as the
    albumentations builder it mirrors; `active` is False when it would change nothing.
    """

    check = staticmethod(check_standard_augment)  # run by eva/config/validate.py

    def __init__(
        self,
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
    ):
        check_standard_augment(
            image_size, hflip_p=hflip_p, affine_p=affine_p, shift=shift, scale=scale,
            rotate=rotate, pad=pad, pad_mode=pad_mode, cutout_size=cutout_size, cutout_p=cutout_p,
        )  # fmt: skip
        self.size = image_size
        self.pad, self.reflect = int(pad), pad_mode == "reflect"
        self.hflip_p = float(hflip_p)
        self.affine_p = float(affine_p)
        self.shift, self.scale, self.rotate = float(shift), float(scale), float(rotate)
        self.cutout = int(cutout_size)
        self.cutout_p = float(cutout_p)
        self.fill = torch.tensor(mean_fill(list(mean)), dtype=torch.uint8)

    def _fill_on(self, device: torch.device) -> torch.Tensor:
        """The fill colour on `device`, copied there once (not once per batch)."""
        if self.fill.device != device:
            self.fill = to_device(self.fill, device)
        return self.fill

    @property
    def active(self) -> bool:
        return self.pad > 0 or self.hflip_p > 0 or self.affine_p > 0 or self.cutout > 0

    def __call__(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        b, c, h, w = images.shape
        if (h, w) != (self.size, self.size):
            raise EvaError(f"batch augment: images are {h}x{w}, dataset.image_size={self.size}")
        fill = self._fill_on(images.device)
        out = self._crop_flip(images, fill, generator)
        if out is images:  # the steps below write in place: never into the caller's batch
            out = images.clone()
        if self.affine_p > 0:
            self._affine(out, fill, generator)
        if self.cutout > 0:
            self._cutout(out, fill, generator)
        return out

    def _crop_flip(self, images, fill, g):
        """Pad + random crop and the flip, as index arithmetic: each output row and column
        reads the (reflected or clamped) source row and column it shows."""
        b, c, h, w = images.shape
        if self.pad == 0 and self.hflip_p <= 0:
            return images
        # RandomCrop's corner: int((padded - size + 1) * U[0, 1)), uniform over 0..2 pad.
        offsets = torch.randint(0, 2 * self.pad + 1, (2, b, 1), generator=g) - self.pad
        flips = torch.rand(b, 1, generator=g) < self.hflip_p  # HorizontalFlip: U < p
        rows, cols = torch.arange(h).view(1, h), torch.arange(w).view(1, w)
        cols = torch.where(flips, w - 1 - cols, cols)  # flip after the crop: mirror the output
        dev = images.device
        rows, cols = to_device(rows + offsets[0], dev), to_device(cols + offsets[1], dev)
        inside = None
        if self.pad > 0:
            if self.reflect:
                rows, cols = _reflect_101(rows, h), _reflect_101(cols, w)
            else:  # read any pixel, then overwrite the ones from outside with the fill
                row_in, col_in = (rows >= 0) & (rows < h), (cols >= 0) & (cols < w)
                inside = (row_in.unsqueeze(2) & col_in.unsqueeze(1)).unsqueeze(1)
                rows, cols = rows.clamp(0, h - 1), cols.clamp(0, w - 1)
            # Whole rows of W pixels at once (index_select copies rows): cheap next to the
            # per-pixel gather the columns need.
            planes = torch.arange(b * c, device=dev).view(b, c, 1) * h
            index = (planes + rows.unsqueeze(1)).view(-1)
            images = images.reshape(b * c * h, w).index_select(0, index).view(b, c, h, w)
        out = images.gather(3, cols.view(b, 1, 1, w).expand(b, c, h, w))
        if inside is not None:  # PadIfNeeded's constant border: the dataset mean
            out = torch.where(inside, out, fill.view(1, c, 1, 1))
        return out

    def _affine(self, out, fill, g) -> None:
        """A.Affine(translate_percent, scale, rotate) of augment.py, in place where it hits."""
        b = out.shape[0]
        hit = torch.rand(b, generator=g) < self.affine_p
        # Drawn for every sample (one call, a fixed amount of the stream), used where hit.
        u = torch.rand(b, 5, generator=g)
        # translate_percent: U(-shift, shift) per axis, then int(t * size): toward zero.
        translate = ((2 * u[:, :2] - 1) * self.shift * self.size).trunc()
        scale = 1 + (2 * u[:, 2:4] - 1) * self.scale  # x and y drawn apart (keep_ratio=False)
        angle = (2 * u[:, 4] - 1) * self.rotate
        who = hit.nonzero().squeeze(1)  # known on the CPU: no device sync to find them
        if len(who) == 0:
            return
        theta = affine_theta(translate[who], scale[who], angle[who], self.size)
        who, theta = to_device(who, out.device), to_device(theta, out.device)
        out.index_copy_(0, who, warp(out.index_select(0, who), theta, fill))

    def _cutout(self, out, fill, g) -> None:
        """CoarseDropout with one size x size hole, its corner uniform over 0..H - size."""
        b, c, h, w = out.shape
        s = self.cutout
        hit = torch.rand(b, generator=g) < self.cutout_p
        corner = torch.randint(0, h - s + 1, (b, 2), generator=g)
        who = hit.nonzero().squeeze(1)
        if len(who) == 0:
            return
        dev = out.device
        top, left = to_device(corner[who], dev).unbind(1)
        ar = torch.arange(s, device=dev)
        # Writes only the holes' pixels (k * C * s * s), not a mask over the whole batch.
        pixels = (top[:, None] + ar).unsqueeze(2) * w + (left[:, None] + ar).unsqueeze(1)
        index = (
            to_device(who, dev).view(-1, 1, 1),
            torch.arange(c, device=dev).view(1, c, 1),
            pixels.view(-1, 1, s * s),
        )
        out.view(b, c, h * w).index_put_(index, fill.view(1, c, 1))


class DeviceBatches(TensorBatches):
    """Shuffled training batches of (normalized float images, labels), all on `device`,
    each augmented there by `augment`.

    The images stay there as uint8 (CIFAR-10's 50,000 are 150 MB): a batch is an index into
    them. Order and augmentation are epoch_plan()'s, as SeededBatches' are: per epoch one
    permutation and one seed per batch from `generator`. TensorBatches, with the argument
    order eva/data/__init__.py calls it with. augment=None (eva builds TensorBatches then)
    draws no seeds: from the second epoch on, another order than before epoch_plan, when
    unused seeds were drawn; with an augmentation every batch is as it was.
    """

    def __init__(
        self,
        images: np.ndarray,
        labels: np.ndarray,
        mean,
        std,
        batch_size: int,
        device: torch.device,
        augment: BatchAugment | None,
        generator: torch.Generator,
    ):
        super().__init__(images, labels, mean, std, batch_size, True, generator, device, augment)
