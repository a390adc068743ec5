"""Config of `hydra/sweeper=eva_optuna`, registered when Hydra scans its plugins.

The keys are hydra-optuna-sweeper's (direction, study_name, storage, n_trials, n_jobs,
sampler, params, max_failure_rate), so its sweep files carry over; eva adds the pruner,
heartbeats and the meaning of n_trials as the study's total. Samplers and pruners are
sub-groups: `hydra/sweeper/sampler=random`, `hydra/sweeper/pruner=median`.

Hydra imports this module for every command, `--help` included: keep it free of optuna.
"""

from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore

# ----------------------------------------------------------------------------- samplers


@dataclass
class SamplerConfig:
    _target_: str = "optuna.samplers.TPESampler"
    # null: a fresh random seed. Set: trials are reproducible; a resumed study and each
    # worker of eva-sweep draw from their own stream derived from it, so nothing repeats.
    seed: int | None = None


@dataclass
class TPESamplerConfig(SamplerConfig):
    _target_: str = "optuna.samplers.TPESampler"
    n_startup_trials: int = 10  # random trials before TPE starts modelling
    multivariate: bool = False
    constant_liar: bool = True  # parallel trials avoid each other's running points


@dataclass
class RandomSamplerConfig(SamplerConfig):
    _target_: str = "optuna.samplers.RandomSampler"


@dataclass
class CmaEsSamplerConfig(SamplerConfig):
    _target_: str = "optuna.samplers.CmaEsSampler"
    n_startup_trials: int = 1
    sigma0: float | None = None


@dataclass
class GridSamplerConfig(SamplerConfig):
    # The grid is every value of the params (choice / range); n_trials is capped at its size.
    _target_: str = "optuna.samplers.GridSampler"


# ----------------------------------------------------------------------------- pruners


@dataclass
class PrunerConfig:
    _target_: str = "optuna.pruners.NopPruner"


@dataclass
class MedianPrunerConfig(PrunerConfig):
    # Stop a trial whose epoch score is below the median of earlier trials at that epoch.
    _target_: str = "optuna.pruners.MedianPruner"
    n_startup_trials: int = 5  # finished trials before anything is pruned
    n_warmup_steps: int = 1  # epochs (counted from 1) below this are never pruned
    interval_steps: int = 1


@dataclass
class HyperbandPrunerConfig(PrunerConfig):
    _target_: str = "optuna.pruners.HyperbandPruner"
    min_resource: int = 1  # epochs
    max_resource: Any = "auto"  # epochs, or auto: learnt from the first finished trials
    reduction_factor: int = 3


# ----------------------------------------------------------------------------- sweeper


@dataclass
class EvaOptunaSweeperConfig:
    _target_: str = "hydra_plugins.eva_optuna_sweeper.sweeper.EvaOptunaSweeper"
    # The sweeper gets sampler and pruner as configs (it seeds and builds them itself).
    _recursive_: bool = False
    defaults: list[Any] = field(
        default_factory=lambda: ["_self_", {"sampler": "tpe"}, {"pruner": "none"}]
    )
    sampler: Any = None  # hydra/sweeper/sampler: tpe | random | cmaes | grid
    pruner: Any = None  # hydra/sweeper/pruner: none | median | hyperband
    direction: str = "maximize"  # maximize | minimize the task's return value
    # null: "<name>-<hash of the search space and fixed overrides>", so the same command
    # always continues the same study and a changed command starts a new one.
    study_name: str | None = None
    # null: sqlite optuna.db next to the MLflow store. postgresql://... for many machines.
    storage: str | None = None
    n_trials: int = 20  # total finished (complete + pruned) trials of the study
    n_jobs: int = 1  # trials launched at once (with hydra/launcher=joblib: in parallel)
    # The sweep stops when more than this fraction of its trials fail (0: at the first).
    max_failure_rate: float = 0.25
    params: dict[str, str] | None = None  # key: sweep, e.g. model.dropout: interval(0, 0.5)
    # Trials whose process stopped sending heartbeats for grace_period seconds are FAIL.
    heartbeat_interval: int = 10
    grace_period: int = 40
    poll_seconds: float = 2.0  # how often a worker waiting on others' trials looks again


def register() -> None:
    cs = ConfigStore.instance()
    cs.store(group="hydra/sweeper", name="eva_optuna", node=EvaOptunaSweeperConfig, provider="eva")
    samplers = {
        "tpe": TPESamplerConfig,
        "random": RandomSamplerConfig,
        "cmaes": CmaEsSamplerConfig,
        "grid": GridSamplerConfig,
    }
    for name, node in samplers.items():
        cs.store(group="hydra/sweeper/sampler", name=name, node=node, provider="eva")
    pruners = {
        "none": PrunerConfig,
        "median": MedianPrunerConfig,
        "hyperband": HyperbandPrunerConfig,
    }
    for name, node in pruners.items():
        cs.store(group="hydra/sweeper/pruner", name=name, node=node, provider="eva")


register()
