"""The Optuna study behind a sweep: where it is stored, what it is, what it holds.

A study is identified by what its trials train: the search space, the direction and the
command line's fixed overrides. The default study name contains a hash of those, so the
same command always continues the same study (resume), and a changed command (other
epochs, other model) starts a new one instead of mixing incomparable trials. A study named
explicitly (`hydra.sweeper.study_name=x`) refuses a command that does not match it.
"""

import hashlib
import json
import logging
from pathlib import Path

from eva.config.schemas import is_runtime_key
from eva.errors import EvaError
from eva.files import write_text
from eva.tracking.store import (
    SQLITE,
    database_url,
    missing_driver,
    redact,
    resolve_uri,
    sqlite_path,
    store_lock,
    with_driver,
)

log = logging.getLogger(__name__)

DEFAULT_DB = "optuna.db"
FINISHED = ("COMPLETE", "PRUNED")  # the states n_trials counts


def resolve_storage(storage: str | None, tracking_cfg, launch_dir: Path) -> str:
    """hydra.sweeper.storage, else sqlite optuna.db next to the MLflow store.

    Next to the MLflow sqlite file when there is one, else in the launch dir (an MLflow
    server or tracking.enabled=false). Relative sqlite paths are taken from the launch dir;
    postgresql:// means postgresql+psycopg2:// (eva.tracking.store.with_driver).
    """
    launch_dir = Path(launch_dir)
    if storage:
        return database_url(storage, launch_dir)
    folder = launch_dir.resolve()
    if tracking_cfg.enabled:
        mlflow_db = sqlite_path(resolve_uri(tracking_cfg.uri, launch_dir))
        if mlflow_db is not None:
            folder = mlflow_db.parent
    return f"{SQLITE}{folder / DEFAULT_DB}"


def identity(space, direction: str) -> dict:
    """What the study's trials train; stored in the study, hashed into its default name."""
    fixed = {key: line for key, line in space.fixed.items() if not is_runtime_key(key)}
    return {
        "direction": direction,
        "search_space": dict(sorted(space.describe().items())),
        "fixed_overrides": sorted(fixed.values()),
    }


def default_study_name(name: str, ident: dict) -> str:
    digest = hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:8]
    return f"{name}-{digest}"


def open_storage(url: str, heartbeat_interval: int | None = None, grace_period: int | None = None):
    """Optuna's RDB storage; sqlite waits for a busy file instead of failing at once."""
    import optuna

    url = with_driver(url)
    kwargs = {"connect_args": {"timeout": 60}} if url.startswith(SQLITE) else {}
    try:
        return optuna.storages.RDBStorage(
            url,
            engine_kwargs=kwargs,
            heartbeat_interval=heartbeat_interval,
            grace_period=grace_period,
        )
    except Exception as e:  # driver missing, server down, bad URL: one line
        reason = missing_driver(e)  # Optuna's own message does not say which one
        if reason is None:
            reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise EvaError(f"hydra.sweeper.storage={redact(url)}: cannot open ({reason})") from None


def open_study(url: str, study_name: str, ident: dict, direction: str, heartbeat, grace):
    """(study, storage): create the study, or load it and check it means the same thing."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # eva logs what matters itself
    path = sqlite_path(url)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
    storage = open_storage(url, heartbeat, grace)  # kept: the heartbeat thread needs it
    study = optuna.create_study(
        study_name=study_name, storage=storage, direction=direction, load_if_exists=True
    )
    stored = study.user_attrs.get("eva_identity")
    if stored is None:
        study.set_user_attr("eva_identity", ident)
    elif stored != ident:
        changed = [key for key in ident if stored.get(key) != ident[key]]
        raise EvaError(
            f"hydra.sweeper.study_name={study_name}: the study was created with other "
            f"{' and '.join(changed)} ({stored[changed[0]]}); pass the same ones, or "
            "another study_name"
        )
    return study, storage


def open_study_locked(url: str, *args):
    """open_study, one process at a time on a sqlite file (creating its tables races)."""
    path = sqlite_path(url)
    if path is None:
        return open_study(url, *args)
    path.parent.mkdir(parents=True, exist_ok=True)
    with store_lock(path):
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


def summary(study, n_trials: int, storage_url: str) -> dict:
    """optimization_results.yaml: the best trial and how the study's trials ended."""
    from optuna.trial import TrialState

    by_state = counts(study)
    result = {
        "name": "eva_optuna",
        "study_name": study.study_name,
        "storage": redact(storage_url),
        "direction": study.direction.name.lower(),
        "n_trials": n_trials,
        "finished": finished(by_state),
        "counts": {k.lower(): v for k, v in by_state.items() if v},
        "search_space": study.user_attrs.get("eva_identity", {}).get("search_space", {}),
    }
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if complete:
        best = study.best_trial
        result.update(
            best_value=best.value,
            best_params=dict(best.params),
            best_trial=best.number,
            best_mlflow_run_id=best.user_attrs.get("mlflow_run_id"),
            best_output_dir=best.user_attrs.get("output_dir"),
        )
    return result


def write_summary(result: dict, sweep_dir: Path) -> Path:
    from omegaconf import OmegaConf

    sweep_dir = Path(sweep_dir)
    sweep_dir.mkdir(parents=True, exist_ok=True)
    path = sweep_dir / "optimization_results.yaml"
    return write_text(path, OmegaConf.to_yaml(OmegaConf.create(result)))
