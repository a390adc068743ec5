"""Model zoo: one file per architecture, built from the `model` config group.

Every model takes in_channels/num_classes from the dataset and returns raw logits
(cross-entropy is applied by the loss, never inside the model).
"""

from collections.abc import Callable

from torch import nn

from eva.errors import EvaError
from eva.models.custom_resnet import CustomResNet
from eva.models.receptive_field import receptive_field
from eva.models.resnet18 import ResNet18
from eva.models.session6 import Session6Net
from eva.models.ultimus import UltimusNet

__all__ = ["build_model", "count_parameters", "receptive_field", "MODELS"]


def _session6(cfg, in_channels, num_classes):
    return Session6Net(in_channels, num_classes, tuple(cfg.channels), cfg.dropout)


def _ultimus(cfg, in_channels, num_classes):
    return UltimusNet(
        in_channels,
        num_classes,
        variant=cfg.variant,
        blocks=cfg.blocks,
        embed_dim=cfg.embed_dim,
        attn_dim=cfg.attn_dim,
        dropout=cfg.dropout,
    )


def _custom_resnet(cfg, in_channels, num_classes):
    return CustomResNet(in_channels, num_classes, cfg.width, cfg.dropout)


def _resnet18(cfg, in_channels, num_classes):
    return ResNet18(in_channels, num_classes, cfg.width, cfg.dropout)


MODELS: dict[str, Callable[..., nn.Module]] = {
    "session6": _session6,
    "ultimus": _ultimus,
    "custom_resnet": _custom_resnet,
    "resnet18": _resnet18,
}


def build_model(model_cfg, in_channels: int, num_classes: int) -> nn.Module:
    """The network named by model_cfg.name, sized for the dataset."""
    try:
        builder = MODELS[model_cfg.name]
    except KeyError:
        raise EvaError(
            f"model.name={model_cfg.name!r} is not a known model (known: {', '.join(MODELS)})"
        ) from None
    try:
        return builder(model_cfg, in_channels, num_classes)
    except ValueError as e:  # a constructor rejecting a config value
        raise EvaError(str(e)) from None


def count_parameters(model: nn.Module) -> int:
    """Trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
