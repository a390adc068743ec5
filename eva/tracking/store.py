"""Where runs are recorded: the tracking URI, a server that answers, a store that exists.

MLflow's sqlite store takes seconds to create, and two processes creating it at once crash,
so the launching process prepares it (under a file lock) before any job starts; jobs then
find it ready.
"""

import logging
import os
import re
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit

from eva.errors import EvaError

# The rules for database URLs are the sweeper's (one set for MLflow and Optuna stores).
from evasweep.storage import (
    SQLITE,
    database_url,
    missing_driver,
    redact,
    sqlite_path,
    with_driver,
)
from evasweep.storage import file_lock as store_lock

__all__ = ["SQLITE", "database_url", "redact", "sqlite_path", "store_lock", "with_driver"]

DEFAULT_DB = "mlflow.db"

# MLflow 3's UI opens an experiment on the page its kind names; without this tag it
# guesses, and shows eva's experiments on the GenAI overview ("Traces 0") first.
KIND_TAG = "mlflow.experimentKind"
TRAINING = "custom_model_development"  # the UI's name for model-training experiments


def resolve_uri(uri: str | None, launch_dir: Path) -> str:
    """tracking.uri, else $MLFLOW_TRACKING_URI, else sqlite:///<launch dir>/mlflow.db.

    Relative sqlite paths are made absolute from the launch dir, so every job of a sweep
    (whatever its working directory) writes to the same file.
    """
    return database_url(uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_DB, launch_dir)


def is_http(uri: str) -> bool:
    return uri.startswith(("http://", "https://"))


def check_reachable(uri: str, timeout: float) -> None:
    """Fail in seconds, before any training, when a tracking server does not answer.

    (MLflow's own client retries with back-off for minutes before it gives up.) It asks the
    REST API, not /health: MLflow's server answers /health for any host name but refuses
    API calls addressed to a name outside its --allowed-hosts, which would fail the run at
    its first real call instead.
    """
    if not is_http(uri):
        return
    url = uri.rstrip("/") + "/api/2.0/mlflow/experiments/get-by-name?experiment_name=Default"
    try:
        with urllib.request.urlopen(url, timeout=timeout):
            return
    except urllib.error.HTTPError as e:
        body = e.read(200).decode(errors="replace")
        if e.code in (401, 404):  # it answers: credentials are the client's, Default may be gone
            return
        if e.code == 403 and "Invalid Host header" in body:
            host = urlsplit(uri).hostname
            raise EvaError(
                f"tracking.uri={redact(uri)}: the MLflow server refuses the host name {host} "
                f"(Invalid Host header); start it with --allowed-hosts '{host}:*', or use "
                "a name it allows"
            ) from None
        reason = f"HTTP {e.code}"
    except (urllib.error.URLError, OSError) as e:
        reason = str(getattr(e, "reason", e))
    raise EvaError(
        f"tracking.uri={redact(uri)}: no MLflow server answers ({reason}); start one, "
        "point tracking.uri elsewhere, or set tracking.enabled=false"
    )


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_") or "experiment"


def prepare_experiment(uri: str, name: str, timeout: float = 10.0) -> str:
    """Create the store and the experiment if needed; return the experiment id.

    On sqlite, artifacts go next to the database (<db dir>/mlartifacts/<experiment>), not
    into whatever directory the process happens to run in.
    """
    check_reachable(uri, timeout)
    db = sqlite_path(uri)
    if db is None:
        return _get_or_create(uri, name, artifact_location=None)
    try:
        db.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise EvaError(f"tracking.uri={uri}: cannot create {db.parent} ({e.strerror})") from e
    # Creating the tables logs a dozen INFO lines from alembic; they say nothing to users.
    for noisy in ("alembic", "mlflow.store.db.utils"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    with store_lock(db):
        artifacts = (db.parent / "mlartifacts" / _slug(name)).as_uri()
        return _get_or_create(uri, name, artifact_location=artifacts)


def _get_or_create(uri: str, name: str, artifact_location: str | None) -> str:
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    try:
        client = MlflowClient(uri)  # a database store: SQLAlchemy imports its driver here
        experiment = client.get_experiment_by_name(name)
        if experiment is None:
            try:
                return client.create_experiment(
                    name, artifact_location=artifact_location, tags={KIND_TAG: TRAINING}
                )
            except MlflowException:  # another process created it in the meantime
                experiment = client.get_experiment_by_name(name)
                if experiment is None:
                    raise
        if experiment.lifecycle_stage == "deleted":
            # Deleted in the UI: runs cannot be added to it until it is restored.
            logging.getLogger(__name__).warning("restoring deleted MLflow experiment %r", name)
            client.restore_experiment(experiment.experiment_id)
        if KIND_TAG not in experiment.tags:  # made by an earlier eva; a kind set by hand stays
            client.set_experiment_tag(experiment.experiment_id, KIND_TAG, TRAINING)
        return experiment.experiment_id
    except MlflowException as e:
        message = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise EvaError(f"tracking.uri={redact(uri)}: {message}") from e
    except ImportError as e:  # MLflow lets SQLAlchemy's import of the driver through
        reason = missing_driver(e)
        if reason is None:
            raise
        raise EvaError(f"tracking.uri={redact(uri)}: {reason}") from e
