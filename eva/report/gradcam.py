"""GradCAM heat maps (Selvaraju et al. 2017) through the grad-cam package, and their figure.

The map for class c at a layer with activations A (C, h, w) is ReLU(sum_k w_k A_k) with
w_k = mean over h, w of d logit_c / d A_k, scaled to [0, 1] per image and resized to the
input. It shows which regions of the layer's map raised the logit of c.
"""

import math
from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure
from torch import nn

from eva.errors import EvaError
from eva.report.figures import add_title, plot_message, save_figure
from eva.report.images import CELL_H, CELL_W, show_image, to_rgb_float

CHUNK = 64  # images per GradCAM pass: bounds the memory of the kept graph


def resolve_layer(model: nn.Module, name: str) -> nn.Module:
    """The submodule at dotted path `name` ("layer3", "stem.2"), or a one-line EvaError."""
    from eva.models import gradcam_layer  # the one rule for which layers exist

    if not name:  # "" would be the model itself, whose output is logits
        raise EvaError(f"model.gradcam_layer={name!r}: name a layer (null: the last conv)")
    return model.get_submodule(gradcam_layer(model, name))


def _diagnose(model: nn.Module, name: str, shapes: list) -> str | None:
    """A one-line reason when the layer cannot be explained, or None if its output looked fine."""
    if not shapes:
        return f"model.gradcam_layer={name!r}: that layer never runs in {type(model).__name__}"
    if shapes[0] is None or len(shapes[0]) != 4:
        return (
            f"model.gradcam_layer={name!r}: its output has shape {shapes[0]}, "
            "GradCAM needs a (N, C, H, W) feature map"
        )
    return None


def gradcam_maps(
    model: nn.Module, layer: str, inputs: torch.Tensor, targets: list[int]
) -> np.ndarray:
    """float32 (N, H, W) in [0, 1] at the input resolution: the map of class targets[i] for
    inputs[i] (normalized images, (N, C, H, W)), on the device of the model's parameters.

    The model is left as it was: every module's train/eval flag, every parameter's
    requires_grad and .grad, and no hooks. Parameters are frozen during the pass: GradCAM
    needs gradients at the layer only, and frozen weights get no .grad accumulated. The input
    is made to require grad instead, so the layer's output is on the autograd graph.
    """
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    target_layer = resolve_layer(model, layer)
    if len(targets) != len(inputs):
        raise ValueError(f"{len(targets)} targets for {len(inputs)} inputs")
    n, _, height, width = inputs.shape
    if n == 0:
        return np.zeros((0, height, width), dtype=np.float32)
    device = next(model.parameters()).device
    modes = {m: m.training for m in model.modules()}
    params = list(model.parameters())
    flags = [p.requires_grad for p in params]
    grads = [p.grad for p in params]
    shapes: list = []  # output shape of the layer per forward pass, to explain a failure
    probe = target_layer.register_forward_hook(
        lambda _m, _i, out: shapes.append(tuple(out.shape) if torch.is_tensor(out) else None)
    )
    cam = None
    out = []
    try:
        # A caller inside no_grad or inference_mode would otherwise get no gradients at all.
        with torch.inference_mode(False), torch.enable_grad():
            for p in params:
                p.requires_grad_(False)
            cam = GradCAM(model=model, target_layers=[target_layer])  # sets model.eval()
            for start in range(0, n, CHUNK):
                # clone: a normal tensor even if `inputs` was made under inference_mode
                x = inputs[start : start + CHUNK].detach().clone().to(device).requires_grad_(True)
                chosen = [ClassifierOutputTarget(int(t)) for t in targets[start : start + CHUNK]]
                try:
                    out.append(cam(input_tensor=x, targets=chosen))
                except (ValueError, AttributeError, IndexError, TypeError) as e:
                    reason = _diagnose(model, layer, shapes)
                    if reason is None:
                        raise
                    raise EvaError(reason) from e
    finally:
        # Not `with GradCAM(...)`: its __exit__ swallows IndexError, hiding a failure.
        if cam is not None:
            cam.activations_and_grads.release()
        probe.remove()
        for p, flag, grad in zip(params, flags, grads, strict=True):
            p.requires_grad_(flag)
            p.grad = grad
        for m, mode in modes.items():
            m.training = mode
    maps = np.concatenate(out, axis=0).astype(np.float32)
    # Bilinear resizing keeps [0, 1]; the clip only removes float round-off. NaN only comes
    # from a model that outputs NaN: draw it as "no evidence" rather than crash the figure.
    return np.clip(np.nan_to_num(maps, nan=0.0), 0.0, 1.0)


def plot_gradcam(
    images: np.ndarray,
    cams: np.ndarray,
    titles: list[str],
    path: Path,
    title: str,
    cols: int = 4,
    dpi: int = 110,
) -> Path:
    """Each sample as a pair: the image, and its heat map blended over it (jet colormap)."""
    from pytorch_grad_cam.utils.image import show_cam_on_image

    n = len(images)
    if n == 0:
        return plot_message(path, title, "none", dpi)
    if len(cams) != n or len(titles) != n:
        raise ValueError(f"{n} images, {len(cams)} maps, {len(titles)} titles")
    rgb = to_rgb_float(images)
    if cams.shape[1:] != rgb.shape[1:3]:
        raise ValueError(f"maps {cams.shape[1:]} differ from images {rgb.shape[1:3]}")
    cols = max(1, min(cols, n))
    rows = math.ceil(n / cols)
    fig = Figure(figsize=(max(6.0, cols * 2 * CELL_W), rows * CELL_H + 0.8), layout="constrained")
    add_title(fig, f"{title}\nred = regions that drove the predicted class", fontsize=11)
    cells = np.atleast_1d(fig.subfigures(rows, cols, squeeze=False).ravel())
    for i, sub in enumerate(cells):
        if i >= n:
            continue  # an empty subfigure draws nothing
        overlay = show_cam_on_image(
            rgb[i], cams[i].astype(np.float32), use_rgb=True, image_weight=0.5
        )
        left, right = sub.subplots(1, 2)
        show_image(left, images[i])
        show_image(right, overlay)
        sub.suptitle(titles[i], fontsize=7.5)
    return save_figure(fig, path, dpi)
