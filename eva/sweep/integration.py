"""eva's integration with the generic sweeper (evasweep.integration.Integration).

What a sweep of eva adds to the generic core: each trial's config is checked by eva's own
validation before any trial runs; the study lives next to the MLflow store and is named
after the run's `name`; runtime keys (device, loader workers) leave the study's identity
alone; one MLflow parent run per study holds every trial's run (eva/sweep/parent.py);
jobs get a slot (GPU k, or 1/n of the cores); the MLflow run of a trial whose process died
ends KILLED (eva/sweep/runs.py). eva/cli/main.py opts in with evasweep.use_integration.
"""

import json
import os
from pathlib import Path

from eva.config.schemas import is_runtime_key
from eva.errors import EvaError
from evasweep.integration import Integration

SLOT_ENV = "EVA_SLOT"  # 0..SLOTS-1: which device / share of the CPU cores the job takes
SLOTS_ENV = "EVA_SLOTS"  # how many jobs run at once on this machine


def slot_from_env() -> tuple[int | None, int]:
    """(slot, slots) of this job: set per job by the sweeper; (None, 1) otherwise."""
    slot = os.environ.get(SLOT_ENV)
    return (int(slot) if slot is not None else None), int(os.environ.get(SLOTS_ENV, "1"))


class EvaIntegration(Integration):
    user_errors = (EvaError,)
    default_direction = "maximize"  # a run returns its best accuracy (eva.modes.train)

    def __init__(self):
        self.parent = None  # eva.sweep.parent.StudyParent, once the study is open
        self.runs = None  # eva.sweep.runs.TrialRuns: the trials' MLflow runs

    def study_prefix(self, config) -> str:
        return str(config.name)

    def default_storage(self, config, launch_dir: Path) -> str | None:
        """optuna.log (a journal file) next to the MLflow sqlite file, when there is one."""
        from eva.tracking.store import resolve_uri, sqlite_path

        if not config.tracking.enabled:
            return None
        mlflow_db = sqlite_path(resolve_uri(config.tracking.uri, launch_dir))
        return None if mlflow_db is None else str(mlflow_db.parent / "optuna.log")

    def in_identity(self, key: str) -> bool:
        return not is_runtime_key(key)

    def explain(self, error: BaseException) -> str:
        from eva.cli.errors import one_line

        return one_line(error)

    def check_job(self, job_cfg) -> None:
        from eva.config.validate import validate_job

        validate_job(job_cfg)

    def start(self, config, study, space, storage_url: str, sweep_dir: Path) -> None:
        from eva.sweep.parent import StudyParent
        from eva.sweep.runs import TrialRuns

        self.parent = StudyParent.open(config, study, space, storage_url, sweep_dir)
        self.runs = TrialRuns(self.parent.tracker)
        self.runs.end_orphans(study)

    def job_env(self, trial, slot: int, slots: int) -> dict[str, str]:
        env = {SLOT_ENV: str(slot), SLOTS_ENV: str(slots)}
        if self.parent is not None and self.parent.handle is not None:
            env[self.parent.ENV] = json.dumps(self.parent.handle)
        return env

    def best_details(self, trial) -> dict:
        return {
            "best_mlflow_run_id": trial.user_attrs.get("mlflow_run_id"),
            "best_output_dir": trial.user_attrs.get("output_dir"),
        }

    def trial_died(self, number: int, attrs: dict, why: str, until: float) -> None:
        if self.runs is not None:
            self.runs.end(number, attrs, why, until)

    def record(self, result: dict, results_file: Path) -> None:
        if self.parent is not None:
            self.parent.record(result, results_file)

    def end(self, status: str, error: str | None = None) -> None:
        if self.parent is not None:
            self.parent.end(status, error)
