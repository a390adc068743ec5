"""The Optuna study behind a sweep: where it is stored, what it is, what it holds.

A study is identified by what its trials run: the search space, the direction(s) and the
command line's fixed overrides. The default study name contains a hash of those, so the
same command always continues the same study (resume), and a changed command (other
epochs, another model) starts a new one instead of mixing incomparable trials. A study
named explicitly (`hydra.sweeper.study_name=x`) refuses a command that does not match it.
"""

import hashlib
import json
import logging
from collections.abc import Callable
from pathlib import Path

from evasweep.errors import SweepError
from evasweep.files import write_text
from evasweep.storage import (
    SQLITE,
    file_lock,
    journal_path,
    open_storage,
    redact,
    sqlite_path,
    storage_url,
)

log = logging.getLogger(__name__)

DEFAULT_STORAGE = "optuna.log"  # a journal file: faster than sqlite for parallel workers
LEGACY_DB = "optuna.db"  # the default before: used where it exists and no journal does
FINISHED = ("COMPLETE", "PRUNED")  # the states n_trials counts
IDENTITY_ATTR = "evasweep_identity"  # study user attr: what identity() gave at its creation
OLD_IDENTITY_ATTR = "eva_identity"  # what studies made before the generic core call it
DUPLICATE = "duplicate"  # trial user attr: a redrawn parameter set (FAIL, not launched)
SURPLUS = "surplus"  # trial user attr: asked beyond n_trials by a worker that lost a race


def resolve_storage(storage: str | None, default: str | None, launch_dir: Path) -> str:
    """hydra.sweeper.storage, else the integration's default, else the journal file
    optuna.log in the launch folder. Relative sqlite and journal paths start at the launch
    folder (evasweep.storage). A default journal that does not exist yet beside an
    optuna.db (the default of earlier versions) gives way to it: its studies go on."""
    launch_dir = Path(launch_dir)
    if storage:
        return storage_url(storage, launch_dir)
    url = storage_url(default or DEFAULT_STORAGE, launch_dir)
    journal = journal_path(url)
    if journal is not None and not journal.exists():
        legacy = journal.with_name(LEGACY_DB)
        if legacy.exists():
            log.info("storage: %s (from before optuna.log became the default)", legacy)
            return f"{SQLITE}{legacy}"
    return url


def identity(space, directions: list[str], counts: Callable[[str], bool] = lambda k: True):
    """What the study's trials run; stored in the study, hashed into its default name.
    `counts(key)`: does a fixed override of this key change what a trial computes?"""
    fixed = {key: line for key, line in space.fixed.items() if counts(key)}
    return {
        "direction": directions[0] if len(directions) == 1 else directions,
        "search_space": dict(sorted(space.describe().items())),
        "fixed_overrides": sorted(fixed.values()),
    }


def default_study_name(prefix: str, ident: dict) -> str:
    digest = hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:8]
    return f"{prefix}-{digest}"


def open_study(url: str, study_name: str, ident: dict, directions: list[str], heartbeat, grace):
    """(study, storage): create the study, or load it and check it means the same thing."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # the sweeper logs what matters
    storage = open_storage(url, heartbeat, grace)  # kept: the heartbeat thread needs it
    try:
        study = optuna.create_study(
            study_name=study_name, storage=storage, directions=directions, load_if_exists=True
        )
    except ValueError as e:  # an existing study of other directions
        raise SweepError(f"hydra.sweeper.study_name={study_name}: {e}") from None
    stored = study.user_attrs.get(IDENTITY_ATTR, study.user_attrs.get(OLD_IDENTITY_ATTR))
    if stored is None:
        study.set_user_attr(IDENTITY_ATTR, ident)
    elif stored != ident:
        changed = [key for key in ident if stored.get(key) != ident[key]]
        raise SweepError(
            f"hydra.sweeper.study_name={study_name}: the study was created with other "
            f"{' and '.join(changed)} ({stored[changed[0]]}); pass the same ones, or "
            "another study_name"
        )
    return study, storage


def open_study_locked(url: str, *args):
    """open_study, one process at a time on a sqlite file (creating its tables races) or a
    journal file (two first commands would both store the study's identity)."""
    path = sqlite_path(url)
    if journal_path(url) is not None:  # x.log.lock is the journal's own lock: not that one
        path = journal_path(url).with_suffix(".study")
    if path is None:
        return open_study(url, *args)
    with file_lock(path):
        return open_study(url, *args)


def counts(study) -> dict[str, int]:
    """Trials per state: {"COMPLETE": 4, "PRUNED": 1, "FAIL": 0, "RUNNING": 1, ...}."""
    from optuna.trial import TrialState

    result = {state.name: 0 for state in TrialState}
    for trial in study.get_trials(deepcopy=False):
        result[trial.state.name] += 1
    return result


def finished(by_state: dict[str, int]) -> int:
    """How many trials n_trials counts, from counts()."""
    return sum(by_state[s] for s in FINISHED)


def summary(study, n_trials: int, storage_url: str, details=lambda trial: {}) -> dict:
    """optimization_results.yaml: the best trial (the Pareto front of a multi-objective
    study, as `solutions`) and how the study's trials ended. `details(trial)`: more keys
    on the best trial, from the app's integration."""
    from optuna.trial import TrialState

    by_state = counts(study)
    # Draws of a parameter set that had already run: FAIL in Optuna, never launched.
    trials = study.get_trials(deepcopy=False)
    redrawn = sum(1 for t in trials if t.user_attrs.get(DUPLICATE))
    surplus = sum(1 for t in trials if t.user_attrs.get(SURPLUS))
    shown = {**by_state, "FAIL": by_state["FAIL"] - redrawn - surplus}
    directions = [d.name.lower() for d in study.directions]
    result = {
        "name": "eva_optuna",
        "study_name": study.study_name,
        "storage": redact(storage_url),
        "direction": directions[0] if len(directions) == 1 else directions,
        "n_trials": n_trials,
        "finished": finished(by_state),
        "counts": {k.lower(): v for k, v in shown.items() if v},  # fail: trials that failed
        "redrawn": redrawn,
        "surplus": surplus,
        "search_space": _stored_identity(study).get("search_space", {}),
    }
    if study.metric_names:  # what the values are (hydra.sweeper.objectives, the app's names)
        result["objectives"] = list(study.metric_names)
    if not study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        return result
    if len(directions) > 1:
        result["solutions"] = [
            {"number": t.number, "params": dict(t.params), "values": list(t.values), **spread(t)}
            for t in sorted(study.best_trials, key=lambda t: t.number)
        ]
        return result
    best = study.best_trial
    result.update(best_value=best.value, best_params=dict(best.params), best_trial=best.number)
    result.update({f"best_{k}": v for k, v in spread(best).items()})
    result.update(details(best))
    return result


def spread(trial) -> dict:
    """A trial of hydra.sweeper.repeats: {"std", "seed_values"} (evasweep/repeats.py)."""
    from evasweep.repeats import SEED_VALUES_ATTR, STD_ATTR

    if STD_ATTR not in trial.user_attrs:
        return {}
    by_seed = trial.user_attrs.get(SEED_VALUES_ATTR, {})
    return {
        "std": trial.user_attrs[STD_ATTR],
        "seed_values": {int(s): v for s, v in by_seed.items()},
    }


def _stored_identity(study) -> dict:
    return study.user_attrs.get(IDENTITY_ATTR, study.user_attrs.get(OLD_IDENTITY_ATTR, {}))


def write_summary(result: dict, sweep_dir: Path) -> Path:
    from omegaconf import OmegaConf

    path = Path(sweep_dir) / "optimization_results.yaml"
    return write_text(path, OmegaConf.to_yaml(OmegaConf.create(result)))
