"""Images for reports: undo the input normalization, and draw a captioned grid of samples."""

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure

from eva.report.figures import add_title, plot_message, save_figure

CELL_W, CELL_H = 1.45, 1.5  # inches per grid cell: a 32 px image plus a two-line caption


def to_rgb_float(images: np.ndarray) -> np.ndarray:
    """uint8 (N,H,W,C), C in {1,3} -> float32 (N,H,W,3) in [0,1], grey repeated on 3 channels.

    This is the form pytorch_grad_cam's show_cam_on_image blends a heat map into.
    """
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] not in (1, 3):
        raise ValueError(f"expected uint8 (N,H,W,C) with C in 1 or 3, got {images.shape}")
    rgb = images.astype(np.float32) / 255.0
    if rgb.shape[-1] == 1:
        rgb = np.repeat(rgb, 3, axis=-1)
    return rgb


def denormalize(batch: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """Normalized float (N,C,H,W) -> uint8 (N,H,W,C): x*std + mean, clipped to [0,1], *255.

    Rounding (not truncation) makes it the exact inverse of (x/255 - mean)/std for uint8
    pixels, up to float error far below half a grey level.
    """
    x = batch.detach().to("cpu", torch.float32)
    c = x.shape[1]
    m = torch.as_tensor(mean, dtype=torch.float32).reshape(-1)
    s = torch.as_tensor(std, dtype=torch.float32).reshape(-1)
    m = m.expand(c) if m.numel() == 1 else m  # one value for every channel is accepted
    s = s.expand(c) if s.numel() == 1 else s
    x = x * s.view(1, c, 1, 1) + m.view(1, c, 1, 1)
    x = (x.clamp(0.0, 1.0) * 255.0).round().to(torch.uint8)
    return x.permute(0, 2, 3, 1).contiguous().numpy()


def show_image(ax, image: np.ndarray, caption: str | None = None) -> None:
    """One image in an axes without ticks; grey (H,W,1) through a grey colormap, fixed range so
    a dark image is not stretched to look bright."""
    if image.ndim == 3 and image.shape[-1] == 1:
        ax.imshow(image[..., 0], cmap="gray", vmin=0, vmax=255 if image.dtype == np.uint8 else 1)
    else:
        ax.imshow(image)
    ax.set_xticks([])
    ax.set_yticks([])
    if caption is not None:
        ax.set_title(caption, fontsize=7.5, pad=3)


def plot_image_grid(
    images: np.ndarray,
    titles: list[str],
    path: Path,
    title: str,
    cols: int = 8,
    dpi: int = 110,
) -> Path:
    """uint8 (N,H,W,C) images in a grid, a small caption over each; N=0 writes a "none" figure."""
    n = len(images)
    if n == 0:
        return plot_message(path, title, "none", dpi)
    if len(titles) != n:
        raise ValueError(f"{len(titles)} titles for {n} images")
    cols = max(1, min(cols, n))
    rows = math.ceil(n / cols)
    # at least 6 in wide so the suptitle fits even for one or two images
    fig = Figure(figsize=(max(6.0, cols * CELL_W), rows * CELL_H + 0.6), layout="constrained")
    add_title(fig, title)
    axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False).ravel())
    for i, ax in enumerate(axes):
        if i < n:
            show_image(ax, np.asarray(images[i]), titles[i])
        else:
            ax.axis("off")  # empty cells of the last row
    return save_figure(fig, path, dpi)
