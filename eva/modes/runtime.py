"""What every mode (train, test, lr_find) does before its own work, once it has validated
the config: open the tracking store (a dead server fails here, in seconds), share the
CPU cores or pick the GPU of a sweep slot, seed, then load the data and build the model.
"""

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from eva.config.validate import check_scheduler
from eva.data import Data, build_data
from eva.engine.device import auto_workers, resolve_device, slot_device, slot_threads
from eva.engine.precision import Precision, build_precision, compiled
from eva.engine.seed import seed_everything, set_deterministic
from eva.engine.timing import job_started_at
from eva.models import build_model, check_output, count_parameters, gradcam_layer
from eva.tracking import Launch, Tracker
from eva.tracking.datasets import describe as describe_datasets
from eva.tracking.params import config_params, derived_params, run_tags
from eva.tracking.writer import RemoteTracker

log = logging.getLogger(__name__)


@dataclass
class Runtime:
    cfg: DictConfig
    output_dir: Path
    launch: Launch
    tracker: Tracker | RemoteTracker
    device: torch.device
    started: float  # time.perf_counter() at start-up, for the run's wall time
    job_started: float | None  # when this job started, for its start-up time (None: unknown)
    data: Data | None = None
    model: torch.nn.Module | None = None  # what checkpoints save and reports explain
    net: torch.nn.Module | None = None  # what the loop calls: the model, or torch.compile(model)
    precision: Precision | None = None  # autocast dtype and fp16's GradScaler
    params: int = 0  # trainable parameters of the model
    extra_params: dict[str, str] = field(default_factory=dict)  # derived.* added by a mode

    @property
    def input_shape(self) -> tuple[int, int, int]:
        d = self.cfg.dataset
        return (d.in_channels, d.image_size, d.image_size)


def start(cfg: DictConfig, output_dir: str | Path, launch: Launch | None = None) -> Runtime:
    """Seed, build the model (its output shape checked), open tracking, pick the device, for
    a config the mode validated first (eva.config.validate). No data yet, no MLflow run: a
    bad model fails before either."""
    launch = launch or Launch()
    threads = slot_threads(cfg.threads, launch.slots)  # parallel sweep jobs share the cores
    if threads:
        torch.set_num_threads(threads)
    seed_everything(cfg.seed)
    set_deterministic(cfg.deterministic)
    d = cfg.dataset
    model = build_model(cfg.model, d.in_channels, d.num_classes)  # the seeded initial weights
    input_shape = (d.in_channels, d.image_size, d.image_size)
    check_output(model, cfg.model.name, input_shape, d.num_classes)
    if cfg.report.enabled and cfg.report.gradcam > 0:  # a typo here would cost the run
        gradcam_layer(model, cfg.model.get("gradcam_layer"))
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    # A writer process opens MLflow (seconds) while the data loads and the run starts; it
    # also samples the machine while the run is open (tracking.system_metrics).
    opener = RemoteTracker if cfg.tracking.process else Tracker
    tracker = opener.open(cfg.tracking, launch, monitor=True)
    device = resolve_device(slot_device(cfg.device, launch.slot))  # one GPU per sweep job
    job_started = launch.started_at if launch.started_at is not None else job_started_at()
    return Runtime(
        cfg, output_dir, launch, tracker, device, time.perf_counter(), job_started, model=model
    )


def model_summary(model: torch.nn.Module, input_shape: tuple[int, ...], device) -> str:
    """torchinfo's table: layers, output shapes, parameter counts."""
    import torchinfo

    # Its forward pass of one image on one CPU thread: with more, every op waits for the
    # other threads, and at start-up one of them shares a core with the MLflow writer's
    # imports.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        stats = torchinfo.summary(
            model,
            input_size=(1, *input_shape),
            device=device,
            col_names=("output_size", "num_params"),
            depth=4,  # deep enough to show the convs inside depthwise-separable blocks
            verbose=0,
        )
    finally:
        torch.set_num_threads(threads)
    return str(stats)


def build(rt: Runtime) -> None:
    """Load the data and put the (freshly initialised) model on the run's device."""
    cfg = rt.cfg
    d = cfg.dataset
    workers = auto_workers(d.num_workers, rt.device, rt.launch.slots)
    rt.data = build_data(cfg, rt.device, workers)
    check_scheduler(cfg, steps_per_epoch=len(rt.data.train))  # before any run or range test
    rt.precision = build_precision(str(cfg.precision), rt.device)
    rt.model = rt.model.to(rt.device)
    if cfg.channels_last:
        rt.model = rt.model.to(memory_format=torch.channels_last)
    rt.net = compiled(rt.model, cfg.compile)
    rt.params = count_parameters(rt.model)
    summary = model_summary(rt.model, rt.input_shape, rt.device)
    (rt.output_dir / "model_summary.txt").write_text(summary + "\n")
    log.info("model %s on %s\n%s", cfg.model.name, rt.device, summary)
    log.info("data %s: %s", d.name, rt.data.sizes)


def start_run(rt: Runtime, run_name: str | None = None) -> dict:
    """After build(): write config.yaml (as run, max_lr=find already resolved), create
    the MLflow run with every config key as a param, and record its data splits as the
    run's inputs. Returns the resolved config as a dict. A resume that reopens its run
    never comes here: its inputs are on record already."""
    cfg, launch = rt.cfg, rt.launch
    (rt.output_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    config = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
    rt.tracker.start(
        launch.run_name or run_name or cfg.tracking.run_name or cfg.name,
        params={
            **config_params(config),
            **derived_params(
                parameters=rt.params,
                sizes=rt.data.sizes,
                device=rt.device,
                steps_per_epoch=len(rt.data.train),
            ),
            **rt.extra_params,
        },
        tags={**run_tags(cfg, rt.output_dir), **launch.tags},
        parent=launch.parent_run_id,
    )
    if rt.tracker.enabled:
        rt.tracker.log_datasets(describe_datasets(cfg))
    return config


def run_files(output_dir: Path) -> dict[str, Path]:
    """{MLflow artifact folder: file or folder} a run uploads at its end (missing: skipped)."""
    return {
        "": output_dir / "config.yaml",
        ".hydra": output_dir / ".hydra",  # only under Hydra: its config, overrides, hydra.yaml
        "summary": output_dir / "model_summary.txt",
        "results": output_dir / "results.json",
        "logs": output_dir / "train.log",  # Hydra's log of this job, up to this point
        "plots": output_dir / "plots",
        "reports": output_dir / "reports",
    }
