"""Structured-config schemas for every config group, registered in Hydra's ConfigStore.

Each YAML option conf/<group>/<option>.yaml starts its defaults list with the schema stored
here (`/schema/<group>@_here_: <option>`), so Hydra type-checks every value and rejects
unknown keys at compose time: `epochs=abc` or `model.dropuot=0.1` fail before any work.

This module must stay cheap to import (no torch): `train.py --help` imports it.
"""

from dataclasses import dataclass, field
from typing import Any, List, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

# --------------------------------------------------------------------------- model


@dataclass
class ModelConfig:
    name: str = MISSING
    dropout: float = 0.0  # probability, applied inside the net; never on the logits
    # Module (dotted path, as in model.get_submodule) whose activations GradCAM explains:
    # the last spatial feature map before pooling. Each model's YAML sets its own.
    gradcam_layer: str = MISSING


@dataclass
class Session6Config(ModelConfig):
    name: str = "session6"
    dropout: float = 0.0
    # Output channels of blocks C1..C4. The default gives ~125k parameters (< 200k budget).
    channels: List[int] = field(default_factory=lambda: [24, 48, 64, 96])


@dataclass
class UltimusConfig(ModelConfig):
    name: str = "ultimus"
    dropout: float = 0.0
    variant: str = "stable"  # spec: the assignment verbatim | stable: pre-LayerNorm residual
    blocks: int = 4
    embed_dim: int = 48  # width of the stem's output vector X
    attn_dim: int = 8  # width of Q, K, V


@dataclass
class CustomResNetConfig(ModelConfig):
    name: str = "custom_resnet"
    dropout: float = 0.0
    width: int = 64  # channels of the prep layer; layers 1-3 use 2x, 4x, 8x


@dataclass
class ResNet18Config(ModelConfig):
    name: str = "resnet18"
    dropout: float = 0.0
    width: int = 64  # channels of the first stage; stages use 1x, 2x, 4x, 8x


# --------------------------------------------------------------------------- dataset


@dataclass
class DatasetConfig:
    name: str = MISSING
    # Folder holding the data; relative paths are taken from the launch directory.
    root: str = "${oc.env:EVA_DATA,data}"
    download: bool = True  # allow torchvision to download when the files are missing
    num_classes: int = MISSING
    in_channels: int = MISSING
    image_size: int = MISSING
    # Per-channel mean/std of the training split in [0, 1] scale (source in each YAML).
    mean: List[float] = MISSING
    std: List[float] = MISSING
    train_subset: Optional[int] = None  # null = whole split; N = N samples chosen from the seed
    test_subset: Optional[int] = None
    # Samples held out of the training split to pick the best checkpoint; 0 = pick on test.
    val_size: int = 0
    # DataLoader worker processes for augment.backend=albumentations. null: auto, one per
    # core of this job's share (at most 8) on a GPU, 0 on a CPU (the cores train the net).
    num_workers: Optional[int] = None


@dataclass
class SyntheticConfig(DatasetConfig):
    name: str = "synthetic"
    num_classes: int = 10
    in_channels: int = 3
    image_size: int = 32
    train_size: int = 512
    test_size: int = 256


# --------------------------------------------------------------------------- augment


@dataclass
class AugmentConfig:
    """Training-time augmentation (albumentations). Evaluation only normalizes."""

    name: str = MISSING
    hflip_p: float = 0.0  # probability of a horizontal flip
    # Shift-scale-rotate (albumentations Affine); applied with probability affine_p.
    affine_p: float = 0.0
    shift: float = 0.0625  # fraction of the image size, each direction
    scale: float = 0.1  # zoom range 1 +- scale
    rotate: float = 15.0  # degrees, each direction
    pad: int = 0  # pad by this many pixels, then random-crop back to size; 0 = off
    pad_mode: str = "reflect"  # reflect | constant (constant pads with the dataset mean)
    cutout_size: int = 0  # side in pixels of one square hole filled with the mean; 0 = off
    cutout_p: float = 0.5
    # albumentations: per image, in DataLoader workers (the course's way; CPU-bound) |
    # torch: per batch with tensor ops on the run's device, the data held there as uint8
    # (eva/data/batched.py; what a GPU needs to be fed). Same augmentations, other streams.
    backend: str = "albumentations"


# --------------------------------------------------------------------------- optimizer


@dataclass
class OptimizerConfig:
    name: str = MISSING
    # The learning rate; under scheduler=onecycle it is the default peak (scheduler.max_lr).
    lr: float = MISSING
    weight_decay: float = 0.0  # L2 penalty (decoupled for adamw)


@dataclass
class SGDConfig(OptimizerConfig):
    name: str = "sgd"
    lr: float = 0.05
    weight_decay: float = 5e-4
    momentum: float = 0.9
    nesterov: bool = True


@dataclass
class AdamConfig(OptimizerConfig):
    name: str = "adam"
    lr: float = 3e-3
    weight_decay: float = 0.0
    betas: List[float] = field(default_factory=lambda: [0.9, 0.999])


@dataclass
class AdamWConfig(AdamConfig):
    name: str = "adamw"
    weight_decay: float = 1e-2


# --------------------------------------------------------------------------- scheduler


@dataclass
class SchedulerConfig:
    name: str = MISSING


@dataclass
class OneCycleConfig(SchedulerConfig):
    name: str = "onecycle"
    # The peak LR: a positive number, or "find" to run the LR range test first and peak at
    # its suggestion (Any, because OmegaConf 2.3 has no float-or-string type; eva/validate.py
    # rejects anything else). The YAML option defaults it to ${optimizer.lr}.
    max_lr: Any = 0.05
    # Epoch at which the LR peaks (5 of 24 in the course). null: use pct_start instead.
    peak_epoch: Optional[float] = None
    pct_start: float = 0.25  # fraction of all steps spent warming up, when peak_epoch is null
    div_factor: float = 10.0  # start LR = max_lr / div_factor
    # end LR = start LR / final_div_factor; 1.0 is the course's "no annihilation".
    final_div_factor: float = 100.0
    anneal: str = "linear"  # linear | cos
    cycle_momentum: bool = True  # SGD momentum / Adam beta1 cycle inversely to the LR
    base_momentum: float = 0.85
    max_momentum: float = 0.95


@dataclass
class StepConfig(SchedulerConfig):
    name: str = "step"
    step_size: int = 10  # epochs between decays
    gamma: float = 0.1


@dataclass
class ConstantConfig(SchedulerConfig):
    name: str = "constant"


# --------------------------------------------------------------------------- tracking


@dataclass
class TrackingConfig:
    """Where and what a run records in MLflow (eva/tracking)."""

    enabled: bool = True
    # null: $MLFLOW_TRACKING_URI if set, else sqlite:///<launch dir>/mlflow.db.
    # Also sqlite:///other.db (relative to the launch dir) or http://host:port of a server.
    uri: Optional[str] = None
    experiment: str = "eva"  # experiment presets set their own
    run_name: Optional[str] = None  # null: the run's `name`; sweep jobs add job number + overrides
    log_model: bool = True  # mlflow.pytorch.log_model of the best weights (loadable, servable)
    log_checkpoint: bool = True  # checkpoints/best.pt as an artifact (ResNet-18: 45 MB)
    timeout: float = 10.0  # seconds to wait for an http tracking server before giving up
    # MLflow calls in a writer process of their own (eva/tracking/writer.py): its import and
    # store (~3 s) never delay training. false: in the training process (tracebacks there).
    process: bool = True


# --------------------------------------------------------------------------- lr_find, report


@dataclass
class LrFindConfig:
    """The LR range test (mode=lr_find, scheduler.max_lr=find): eva/optim/lr_find.py."""

    start_lr: float = 1e-7
    end_lr: float = 10.0
    num_iter: int = 100  # optimizer steps, LR growing exponentially from start_lr to end_lr
    # Weight of each new loss in the running average; the plotted curve is averaged forwards
    # and backwards, so it does not lag behind the LR.
    smoothing: float = 0.1
    diverge_threshold: float = 5.0  # stop once the smoothed loss exceeds this x its minimum
    # steepest: where the smoothed loss falls fastest | min_loss: LR of the lowest loss / 10
    rule: str = "steepest"


@dataclass
class ReportConfig:
    """Plots and per-class numbers after training and in mode=test: eva/report/."""

    enabled: bool = True
    samples: int = 32  # augmented training images in the samples grid
    misclassified: int = 24  # most confident mistakes shown
    gradcam: int = 12  # of those, explained with GradCAM heat maps
    dpi: int = 110


# --------------------------------------------------------------------------- run


@dataclass
class TrainConfig:
    model: Any = MISSING
    dataset: Any = MISSING
    augment: Any = MISSING
    optimizer: Any = MISSING
    scheduler: Any = MISSING
    tracking: Any = MISSING
    name: str = "${model.name}-${dataset.name}"  # names the output folder
    mode: str = "train"  # train | test (of `checkpoint`) | lr_find (LR range test only)
    seed: int = 1
    epochs: int = 24
    batch_size: int = 128
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    threads: Optional[int] = None  # torch CPU threads; null = torch's default
    l1_weight: float = 0.0  # lambda of the L1 penalty on conv/linear weights
    checkpoint: Optional[str] = None  # mode=test: a checkpoint eva wrote (relative: launch dir)
    resume: bool = False  # continue the run in hydra.run.dir from its checkpoints/last.pt
    # Deterministic GPU kernels (slower): bit-identical reruns and resumes on CUDA as on CPU.
    deterministic: bool = False
    progress: bool = True  # per-batch progress bar (per-epoch log lines are always written)
    # How the net computes (eva/engine/precision.py); for GPUs, off by default:
    precision: str = "fp32"  # fp32 | bf16 | fp16: autocast dtype (fp16 adds a GradScaler)
    channels_last: bool = False  # NHWC memory layout (faster tensor-core convolutions)
    compile: bool = False  # torch.compile the model (the first steps wait for compilation)
    lr_find: LrFindConfig = field(default_factory=LrFindConfig)
    report: ReportConfig = field(default_factory=ReportConfig)


SCHEMAS: dict[str, dict[str, type]] = {
    "model": {
        "session6": Session6Config,
        "ultimus": UltimusConfig,
        "custom_resnet": CustomResNetConfig,
        "resnet18": ResNet18Config,
    },
    "dataset": {
        "cifar10": DatasetConfig,
        "fashion_mnist": DatasetConfig,
        "synthetic": SyntheticConfig,
    },
    "augment": {"none": AugmentConfig, "session6": AugmentConfig, "resnet": AugmentConfig},
    "optimizer": {"sgd": SGDConfig, "adam": AdamConfig, "adamw": AdamWConfig},
    "scheduler": {"onecycle": OneCycleConfig, "step": StepConfig, "constant": ConstantConfig},
    "tracking": {"mlflow": TrackingConfig},
}


def register_configs() -> None:
    """Store the schemas; YAML option conf/<group>/<option>.yaml extends schema/<group>/<option>."""
    cs = ConfigStore.instance()
    cs.store(name="base_train", node=TrainConfig)
    for group, options in SCHEMAS.items():
        for option, schema in options.items():
            cs.store(group=f"schema/{group}", name=option, node=schema)


register_configs()
