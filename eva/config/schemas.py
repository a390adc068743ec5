"""The typed keys of a run, registered in Hydra's ConfigStore as `base_train`.

Run-level keys (mode, epochs, precision, ...) are typed here, so Hydra rejects a wrong
type, an unknown key or a closed choice outside its list at compose time: `epochs=abc`,
`mode=tset` and `precision=fp8` fail before any work.

The option groups (model, dataset, augment, optimizer, scheduler) are open: each option
names its builder with `_target_` and carries the builder's keyword arguments, which only
the builder's signature knows (eva/config/options.py checks them). eva's own keys in each
group are typed by the dataclasses in GROUP_KEYS and checked by eva/config/validate.py.

This module must stay cheap to import (no torch): `--help` and composition import it.
"""

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

# --------------------------------------------------------------------------- closed choices


class Mode(StrEnum):
    train = "train"
    test = "test"  # evaluate `checkpoint`
    lr_find = "lr_find"  # the LR range test only


class PrecisionName(StrEnum):
    fp32 = "fp32"
    bf16 = "bf16"
    fp16 = "fp16"  # adds a GradScaler


class RangeTestRule(StrEnum):
    steepest = "steepest"  # where the smoothed loss falls fastest
    min_loss = "min_loss"  # LR of the lowest loss / 10


class ReportTrials(StrEnum):
    # the best trial of an Optuna sweep (each trial of a Pareto front), once the study is
    # complete, from its checkpoint, into its own folder and MLflow run
    best = "best"
    all = "all"  # every trial as it ends, as a single run does
    none = "none"  # no trial of a sweep


class AugmentBackend(StrEnum):
    # per image, in DataLoader workers (the course's way; CPU-bound)
    albumentations = "albumentations"
    # per batch with tensor ops on the run's device (what a GPU needs to be fed)
    torch = "torch"


# --------------------------------------------------------------------------- eva's group keys


@dataclass
class ModelKeys:
    name: str = MISSING  # the option's name unless the YAML sets one
    # Module (dotted path, as in model.get_submodule) whose activations GradCAM explains.
    # null: the last Conv2d of the model.
    gradcam_layer: str | None = None


@dataclass
class DatasetKeys:
    name: str = MISSING
    # Folder holding the data; relative paths are taken from the launch directory.
    root: str = "data"
    download: bool = True  # allow the builder to download when the files are missing
    num_classes: int = MISSING
    in_channels: int = MISSING
    image_size: int = MISSING
    # Per-channel mean/std of the training split in [0, 1] scale (source in each YAML).
    mean: list[float] = MISSING
    std: list[float] = MISSING
    train_subset: int | None = None  # null = whole split; N = N samples chosen from the seed
    test_subset: int | None = None
    # Samples held out of the training split to pick the best checkpoint; 0 = pick on test.
    val_size: int = 0
    # DataLoader worker processes for augment.backend=albumentations. null: auto, one per
    # core of this job's share (at most 8) on a GPU, 0 on a CPU (the cores train the net).
    num_workers: int | None = None


@dataclass
class AugmentKeys:
    name: str = MISSING
    backend: AugmentBackend = AugmentBackend.albumentations
    # The builder of the same augmentation on whole uint8 batches, for backend=torch
    # (dotted path); null: the option runs on albumentations only.
    batched: str | None = None


@dataclass
class OptimizerKeys:
    name: str = MISSING
    # The learning rate; under scheduler=onecycle it is the default peak (scheduler.max_lr).
    lr: float = MISSING
    # true: weight decay on every parameter (torch's default, and the course recipes').
    # false: none on norm weights and biases, like the L1 penalty (eva/optim/optimizers.py).
    decay_norm_and_bias: bool = True


@dataclass
class SchedulerKeys:
    name: str = MISSING


GROUP_KEYS: dict[str, type] = {
    "model": ModelKeys,
    "dataset": DatasetKeys,
    "augment": AugmentKeys,
    "optimizer": OptimizerKeys,
    "scheduler": SchedulerKeys,
}


# --------------------------------------------------------------------------- tracking


@dataclass
class TrackingConfig:
    """Where and what a run records in MLflow (eva/tracking)."""

    enabled: bool = True  # false: no MLflow run, no store opened
    # null: $MLFLOW_TRACKING_URI if set, else sqlite:///<launch dir>/mlflow.db.
    # Also sqlite:///other.db (relative to the launch dir) or http://host:port of a server.
    uri: str | None = None
    experiment: str = "eva"  # experiment presets set their own
    run_name: str | None = None  # null: the run's `name`; sweep jobs add job number + overrides
    log_model: bool = True  # mlflow.pytorch.log_model of the best weights (loadable, servable)
    log_checkpoint: bool = True  # checkpoints/best.pt as an artifact (ResNet-18: 45 MB)
    timeout: float = 10.0  # seconds to wait for an http tracking server before giving up
    # MLflow calls in a writer process of their own (eva/tracking/writer.py): its import and
    # store never delay training. false: in the training process (tracebacks there).
    process: bool = True
    # CPU, memory, disk, network (and NVIDIA GPU) use sampled into the run's system/* metrics
    # by MLflow's monitor, in the writer process, while the run is open. false: none.
    system_metrics: bool = True
    system_metrics_interval: float = 5.0  # seconds between two samples
    # A registered model's name (e.g. session6-fmnist): the run's logged model becomes its
    # next version, and the alias champion moves to it when it scores best. null: none.
    register: str | None = None


# --------------------------------------------------------------------------- lr_find, report


@dataclass
class LrFindConfig:
    """The LR range test (mode=lr_find, scheduler.max_lr=find): eva/optim/lr_range.py."""

    start_lr: float = 1e-7  # the first LR of the test
    end_lr: float = 10.0  # the last, unless the loss diverges before
    num_iter: int = 100  # optimizer steps, LR growing exponentially from start_lr to end_lr
    # Weight of each new loss in the running average; the plotted curve is averaged forwards
    # and backwards, so it does not lag behind the LR.
    smoothing: float = 0.1
    diverge_threshold: float = 5.0  # stop once the smoothed loss exceeds this x its minimum
    rule: RangeTestRule = RangeTestRule.steepest


@dataclass
class ReportConfig:
    """Plots and per-class numbers after training and in mode=test: eva/report/."""

    enabled: bool = True  # false: no plots and no per-class report
    # Which trials of an Optuna sweep make the reports and log the MLflow model (the costly
    # records; every trial keeps params, metrics, results and its checkpoint). A single
    # run always makes both.
    trials: ReportTrials = ReportTrials.best
    samples: int = 32  # augmented training images in the samples grid
    misclassified: int = 24  # most confident mistakes shown
    gradcam: int = 12  # of those, explained with GradCAM heat maps
    dpi: int = 110  # resolution of the PNGs


# --------------------------------------------------------------------------- run


@dataclass
class TrainConfig:
    model: Any = MISSING
    dataset: Any = MISSING
    augment: Any = MISSING
    optimizer: Any = MISSING
    scheduler: Any = MISSING
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    name: str = "${model.name}-${dataset.name}"  # names the output folder
    mode: Mode = Mode.train
    seed: int = 1  # seeds python, numpy, torch and the training order and augmentations
    epochs: int = 24  # passes over the training split
    batch_size: int = 128  # images per optimizer step (training and evaluation)
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    threads: int | None = None  # torch CPU threads; null = torch's default
    l1_weight: float = 0.0  # lambda of the L1 penalty on conv/linear weights
    checkpoint: str | None = None  # mode=test: a checkpoint eva wrote (relative: launch dir)
    resume: bool = False  # continue the run in hydra.run.dir from its checkpoints/last.pt
    # Deterministic GPU kernels (slower): bit-identical reruns and resumes on CUDA as on CPU.
    deterministic: bool = False
    progress: bool = True  # per-batch progress bar (per-epoch log lines are always written)
    # How the net computes, for GPUs (eva/engine/precision.py); off by default.

    precision: PrecisionName = PrecisionName.fp32  # autocast dtype
    channels_last: bool = False  # NHWC memory layout (faster tensor-core convolutions)
    compile: bool = False  # torch.compile the model (the first steps wait for compilation)
    lr_find: LrFindConfig = field(default_factory=LrFindConfig)
    report: ReportConfig = field(default_factory=ReportConfig)


# --------------------------------------------------------------------------- runtime keys

# How a run is executed, not what it learns: a resume may change them, and a sweep's study
# stays the same study when a command changes them (device=cuda:1, progress=false, ...).
RUNTIME_KEYS = frozenset(
    {
        "resume",
        "progress",
        "device",
        "threads",
        "checkpoint",
        "deterministic",  # bit-exact kernels: the same training, other rounding on a GPU
        "channels_last",  # layout and compilation change the speed, not what is trained
        "compile",
        "dataset.root",
        "dataset.download",
        "dataset.num_workers",
    }
)
RUNTIME_PREFIXES = ("tracking.", "report.", "hydra.")


def is_runtime_key(key: str) -> bool:
    """Does this dotted key (a config key or an override's) leave the result unchanged?"""
    return key in RUNTIME_KEYS or key.startswith(RUNTIME_PREFIXES)


def register_configs() -> None:
    ConfigStore.instance().store(name="base_train", node=TrainConfig)


register_configs()
