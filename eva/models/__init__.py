"""Model zoo: one file per architecture, each named by a YAML in conf/model/ (`_target_`).

A model is any nn.Module class (or function returning one) that takes `in_channels` and
`num_classes` (eva passes them from the dataset when the signature has them) and returns
raw logits of shape (batch, num_classes): cross-entropy is applied by the loss, never
inside the model. Its other keyword arguments are the YAML's keys.
"""

import torch
from torch import nn

from eva.config import options
from eva.config.validate import eva_keys
from eva.errors import EvaError
from eva.models.receptive_field import receptive_field

__all__ = ["build_model", "check_output", "count_parameters", "gradcam_layer", "receptive_field"]


def build_model(model_cfg, in_channels: int, num_classes: int) -> nn.Module:
    """The network model_cfg names (its `_target_`), sized for the dataset."""
    inputs = {"in_channels": in_channels, "num_classes": num_classes}
    model = options.build("model", model_cfg, eva_keys("model"), inputs)
    if not isinstance(model, nn.Module):
        raise EvaError(
            f"model._target_={model_cfg._target_}: built a {type(model).__name__}, "
            "not a torch.nn.Module"
        )
    return model


def check_output(model: nn.Module, name: str, input_shape: tuple, num_classes: int) -> None:
    """One forward pass of two blank images (before any data loads): the model must return
    (batch, num_classes) logits."""
    batch = (2, *input_shape)  # 2: BatchNorm needs more than one value per channel
    expected = (2, num_classes)
    was_training = model.training
    device = next(model.parameters(), torch.zeros(())).device
    model.eval()
    try:
        with torch.no_grad():
            out = model(torch.zeros(batch, device=device))
    except Exception as e:
        why = " ".join(str(e).split())[:300]
        raise EvaError(
            f"model={name}: a forward pass of a {batch} batch failed ({type(e).__name__}: {why})"
        ) from None
    finally:
        model.train(was_training)
    shape = tuple(out.shape) if torch.is_tensor(out) else type(out).__name__
    if shape != expected:
        raise EvaError(
            f"model={name}: outputs {shape} for a batch of 2 images, expected {expected} "
            "= (batch, dataset.num_classes) logits"
        )


def gradcam_layer(model: nn.Module, configured: str | None) -> str:
    """model.gradcam_layer (checked to exist), or when null the last Conv2d the model has."""
    if configured:
        try:
            model.get_submodule(configured)
        except AttributeError:
            top = ", ".join(n for n, _ in model.named_children()) or "none"
            raise EvaError(
                f"model.gradcam_layer={configured!r}: no such layer in {type(model).__name__} "
                f"(top-level layers: {top}; null: the last conv layer)"
            ) from None
        return configured
    convs = [name for name, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    if not convs:
        raise EvaError(
            f"model.gradcam_layer: {type(model).__name__} has no Conv2d; name the layer to "
            "explain (model.gradcam_layer=...) or set report.gradcam=0"
        )
    return convs[-1]


def count_parameters(model: nn.Module) -> int:
    """Trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
