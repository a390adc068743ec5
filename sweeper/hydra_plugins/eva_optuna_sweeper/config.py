"""Config of `hydra/sweeper=eva_optuna`, registered when Hydra scans its plugins.

The keys are hydra-optuna-sweeper's (direction, study_name, storage, n_trials, n_jobs,
sampler, params, custom_search_space, max_failure_rate), so its sweep files carry over;
this sweeper adds the pruner, heartbeats and the meaning of n_trials as the study's total.
Samplers and pruners are sub-groups (`hydra/sweeper/sampler=random`,
`hydra/sweeper/pruner=median`) whose keys are the keyword arguments of Optuna's classes,
with Optuna's defaults (sweeper/tests/test_plugin_config.py holds them to Optuna's signatures).

Hydra imports this module for every command, `--help` included: keep it free of optuna.
"""

from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore

# ----------------------------------------------------------------------------- samplers
# Arguments that take objects (callables, samplers, trials) are Any: give them as configs
# with a _target_ (and _partial_: true for a function), built when the sweep starts.


@dataclass
class SamplerConfig:
    _target_: str = "optuna.samplers.TPESampler"
    # null: a fresh random seed. Set: trials are reproducible; a resumed study and each
    # worker of evasweep.workers draw from their own stream derived from it.
    seed: int | None = None


@dataclass
class TPESamplerConfig(SamplerConfig):
    _target_: str = "optuna.samplers.TPESampler"
    consider_prior: bool | None = None
    prior_weight: float | None = None
    consider_magic_clip: bool | None = None
    consider_endpoints: bool | None = None
    n_startup_trials: int = 10  # random trials before TPE starts modelling
    n_ei_candidates: int = 24
    gamma: Any = None
    weights: Any = None
    multivariate: bool | None = None
    group: bool = False
    warn_independent_sampling: bool | None = None
    constant_liar: bool = True  # parallel trials avoid each other's running points
    constraints_func: Any = None


@dataclass
class RandomSamplerConfig(SamplerConfig):
    _target_: str = "optuna.samplers.RandomSampler"


@dataclass
class CmaEsSamplerConfig(SamplerConfig):
    _target_: str = "optuna.samplers.CmaEsSampler"
    x0: Any = None
    sigma0: float | None = None
    n_startup_trials: int = 1
    independent_sampler: Any = None
    warn_independent_sampling: bool = True
    consider_pruned_trials: bool = False
    restart_strategy: str | None = None
    popsize: int | None = None
    inc_popsize: int = -1
    use_separable_cma: bool = False
    with_margin: bool = False
    lr_adapt: bool = False
    source_trials: Any = None


@dataclass
class GridSamplerConfig(SamplerConfig):
    # The grid is every value of the params (choice / range); n_trials is capped at its size.
    _target_: str = "optuna.samplers.GridSampler"


@dataclass
class NSGAIISamplerConfig(SamplerConfig):
    _target_: str = "optuna.samplers.NSGAIISampler"
    population_size: int = 50
    mutation: Any = None
    mutation_prob: float | None = None
    crossover: Any = None
    crossover_prob: float = 0.9
    swapping_prob: float = 0.5
    constraints_func: Any = None
    elite_population_selection_strategy: Any = None
    child_generation_strategy: Any = None
    after_trial_strategy: Any = None


@dataclass
class NSGAIIISamplerConfig(NSGAIISamplerConfig):
    _target_: str = "optuna.samplers.NSGAIIISampler"
    reference_points: Any = None
    dividing_parameter: int = 3


@dataclass
class QMCSamplerConfig(SamplerConfig):
    # Optuna's quasi-Monte Carlo sampler needs scipy installed.
    _target_: str = "optuna.samplers.QMCSampler"
    qmc_type: str = "sobol"
    scramble: bool = False
    independent_sampler: Any = None
    warn_asynchronous_seeding: bool = True
    warn_independent_sampling: bool = True


@dataclass
class GPSamplerConfig(SamplerConfig):
    # Optuna's Gaussian-process sampler needs torch and scipy installed.
    _target_: str = "optuna.samplers.GPSampler"
    independent_sampler: Any = None
    n_startup_trials: int = 10
    deterministic_objective: bool = False
    constraints_func: Any = None
    warn_independent_sampling: bool = True


@dataclass
class BruteForceSamplerConfig(SamplerConfig):
    _target_: str = "optuna.samplers.BruteForceSampler"
    avoid_premature_stop: bool = False


SAMPLERS = {
    "tpe": TPESamplerConfig,
    "random": RandomSamplerConfig,
    "cmaes": CmaEsSamplerConfig,
    "grid": GridSamplerConfig,
    "nsgaii": NSGAIISamplerConfig,
    "nsgaiii": NSGAIIISamplerConfig,
    "qmc": QMCSamplerConfig,
    "gp": GPSamplerConfig,
    "bruteforce": BruteForceSamplerConfig,
}

# ----------------------------------------------------------------------------- pruners
# A pruner stops a trial whose intermediate values (evasweep.current_trial().report) lag.


@dataclass
class PrunerConfig:
    _target_: str = "optuna.pruners.NopPruner"


@dataclass
class MedianPrunerConfig(PrunerConfig):
    # Stop a trial whose value at a step is below the median of earlier trials there.
    _target_: str = "optuna.pruners.MedianPruner"
    n_startup_trials: int = 5  # finished trials before anything is pruned
    n_warmup_steps: int = 0  # steps below this are never pruned
    interval_steps: int = 1
    n_min_trials: int = 1


@dataclass
class PercentilePrunerConfig(PrunerConfig):
    _target_: str = "optuna.pruners.PercentilePruner"
    percentile: float = 25.0  # keep the trials in the best (100 - percentile) %
    n_startup_trials: int = 5
    n_warmup_steps: int = 0
    interval_steps: int = 1
    n_min_trials: int = 1


@dataclass
class HyperbandPrunerConfig(PrunerConfig):
    _target_: str = "optuna.pruners.HyperbandPruner"
    min_resource: int = 1  # steps
    max_resource: Any = "auto"  # steps, or auto: learnt from the first finished trials
    reduction_factor: int = 3
    bootstrap_count: int = 0


@dataclass
class SuccessiveHalvingPrunerConfig(PrunerConfig):
    _target_: str = "optuna.pruners.SuccessiveHalvingPruner"
    min_resource: Any = "auto"
    reduction_factor: int = 4
    min_early_stopping_rate: int = 0
    bootstrap_count: int = 0


@dataclass
class ThresholdPrunerConfig(PrunerConfig):
    _target_: str = "optuna.pruners.ThresholdPruner"
    lower: float | None = None
    upper: float | None = None
    n_warmup_steps: int = 0
    interval_steps: int = 1


@dataclass
class WilcoxonPrunerConfig(PrunerConfig):
    _target_: str = "optuna.pruners.WilcoxonPruner"
    p_threshold: float = 0.1
    n_startup_steps: int = 2


PRUNERS = {
    "none": PrunerConfig,
    "median": MedianPrunerConfig,
    "percentile": PercentilePrunerConfig,
    "hyperband": HyperbandPrunerConfig,
    "successive_halving": SuccessiveHalvingPrunerConfig,
    "threshold": ThresholdPrunerConfig,
    "wilcoxon": WilcoxonPrunerConfig,
}

# ----------------------------------------------------------------------------- sweeper


@dataclass
class EvaOptunaSweeperConfig:
    _target_: str = "hydra_plugins.eva_optuna_sweeper.sweeper.EvaOptunaSweeper"
    # The sweeper gets sampler and pruner as configs (it seeds and builds them itself).
    _recursive_: bool = False
    defaults: list[Any] = field(
        default_factory=lambda: ["_self_", {"sampler": "tpe"}, {"pruner": "none"}]
    )
    sampler: Any = None  # hydra/sweeper/sampler: tpe | random | cmaes | grid | nsgaii | ...
    pruner: Any = None  # hydra/sweeper/pruner: none | median | hyperband | ...
    # maximize | minimize the task's return value, or a list of them for a task that
    # returns several values. null: the app's integration decides (minimize unless it says).
    direction: Any = None
    # The names of the values the task returns, one per direction: what optuna-dashboard
    # and the results show; an app's integration may let them choose what its task returns
    # (eva: any numeric key of results.json, e.g. [best_test_acc, params]).
    objectives: Any = None
    # Each trial trains this many seeds, as jobs differing only in seed_key (the sweep's
    # seed s, then s+1, ...); its value is their mean (evasweep/repeats.py).
    repeats: int = 1
    seed_key: str = "seed"
    # null: "<job name>-<hash of the search space and fixed overrides>", so the same
    # command always continues the same study and a changed command starts a new one.
    study_name: str | None = None
    # null: the journal file optuna.log in the launch folder (or where the app's
    # integration says); x.db or sqlite:///x.db: sqlite; postgresql://... for many machines.
    storage: str | None = None
    n_trials: int = 20  # total finished (complete + pruned) trials of the study
    n_jobs: int = 1  # trials launched at once (with hydra/launcher=joblib: in parallel)
    # The sweep stops when more than this fraction of its trials fail (0: at the first).
    max_failure_rate: float = 0.25
    params: dict[str, str] | None = None  # key: sweep, e.g. x: interval(-5.0, 5.0)
    # module.function(cfg, trial) that adds define-by-run params: trial.suggest_float(...)
    custom_search_space: str | None = None
    # hydra-optuna-sweeper's older form, {x: {type: float, low: 0, high: 1}}: read as params
    search_space: Any = None
    # Trials whose process stopped sending heartbeats for grace_period seconds are FAIL.
    heartbeat_interval: int = 10
    grace_period: int = 40
    poll_seconds: float = 2.0  # how often a worker waiting on others' trials looks again


def register() -> None:
    cs = ConfigStore.instance()
    sweeper = EvaOptunaSweeperConfig
    cs.store(group="hydra/sweeper", name="eva_optuna", node=sweeper, provider="evasweep")
    for name, node in SAMPLERS.items():
        cs.store(group="hydra/sweeper/sampler", name=name, node=node, provider="evasweep")
    for name, node in PRUNERS.items():
        cs.store(group="hydra/sweeper/pruner", name=name, node=node, provider="evasweep")


register()
