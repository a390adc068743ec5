"""eva's integration with the generic sweeper (evasweep.integration.Integration).

What a sweep of eva adds to the generic core: each trial's config is checked by eva's own
validation before any trial runs; the study lives next to the MLflow store and is named
after the run's `name`; runtime keys (device, loader workers) leave the study's identity
alone; one MLflow parent run per study holds every trial's run (eva/sweep/parent.py);
jobs get a slot (GPU k, or 1/n of the cores); the MLflow run of a trial whose process died
ends KILLED (eva/sweep/runs.py); once the study is complete its best trial gets the
reports and MLflow model its job left to the sweep (report.trials=best, eva/modes/finish.py),
drawn ahead while later trials train where it can (eva/sweep/stage.py).
eva/cli/main.py opts in with evasweep.use_integration.
"""

import json
import logging
import os
from pathlib import Path

from eva.config.schemas import is_runtime_key
from eva.errors import EvaError
from evasweep.integration import Integration

log = logging.getLogger(__name__)

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
        self.config = None  # the sweep's config, once it starts
        self.launch_dir = None
        self.tracker = None  # the parent run's tracker, opening since prepare()
        self.opening_error = None  # why it could not open: raised by start()
        self.slot = None  # the slot of the last job launched: where the best is finished
        self.stager = None  # eva.sweep.stage.Stager: the best trial's reports, drawn ahead

    def prepare(self, config, launch_dir: Path) -> None:
        """Open the MLflow store for the parent run in eva's writer process (imports and
        store take seconds) while the sweeper composes the search space's probes."""
        from eva.sweep.parent import open_tracker

        self.config, self.launch_dir = config, Path(launch_dir)
        try:
            self.tracker = open_tracker(config, self.launch_dir)
        except EvaError as e:  # a tracking server that does not answer: after bad input
            self.opening_error = e

    def study_prefix(self, config) -> str:
        return str(config.name)

    def default_storage(self, config, launch_dir: Path) -> str | None:
        """optuna.log (a journal file) next to the MLflow sqlite file, when there is one."""
        from eva.tracking.store import resolve_uri, sqlite_path

        if not config.tracking.enabled:
            return None
        mlflow_db = sqlite_path(resolve_uri(config.tracking.uri, launch_dir))
        return None if mlflow_db is None else str(mlflow_db.parent / "optuna.log")

    def metric_names(self, config) -> list[str]:
        """The objective eva's task returns: best_val_acc when a validation split is held
        out (sweeps never tune on the test set), else best_test_acc (eva/modes/train.py)."""
        return ["best_val_acc" if config.dataset.get("val_size") else "best_test_acc"]

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

        if self.opening_error is not None:
            raise self.opening_error
        self.config = config
        self.parent = StudyParent.open(config, study, space, storage_url, sweep_dir, self.tracker)
        self.runs = TrialRuns(self.parent.tracker)
        self.runs.end_orphans(study)
        if stages_reports(config):
            from eva.sweep.stage import Stager

            self.stager = Stager()

    def job_env(self, trial, slot: int, slots: int) -> dict[str, str]:
        self.slot = slot
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
        folder = result.get("best_output_dir")
        more = result["finished"] < result["n_trials"]  # else finish() follows at once
        if self.stager is not None and folder and more and Path(folder).is_dir():
            from eva.modes.finish import deferred

            if "reports" in deferred(folder):
                self.stager.stage(Path(folder))

    def finish(self, study, best: list) -> None:
        """report.trials=best: the best trial(s) get the reports and the MLflow model their
        jobs left to the sweep (eva/modes/finish.py), on this process's device; a trial
        done before (a resumed command) is skipped."""
        if self.config is None or str(self.config.report.trials) != "best":
            return
        from eva.engine.device import slot_device, slot_threads
        from eva.modes.finish import deferred, finish_run

        c = self.config
        if self.stager is not None:
            self.stager.stop()  # what it drew is taken below if it is complete
        for trial in best:
            folder = trial.user_attrs.get("output_dir")
            if not folder:
                continue
            if not Path(folder).is_dir():
                log.warning(
                    "best trial %d: its run folder %s is not on this machine: its reports and "
                    "model are left to a command there (docs/sweeps.md)",
                    trial.number,
                    folder,
                )
                continue
            if not deferred(folder):
                continue
            log.info("best trial %d: making its reports and MLflow model", trial.number)
            try:
                finish_run(
                    Path(folder),
                    c.tracking,
                    self.launch_dir,
                    device=slot_device(c.device, self.slot),
                    threads=slot_threads(c.threads, 1),
                )
            except EvaError as e:  # another worker is finishing it
                log.info("best trial %d: %s", trial.number, e)
        remove_staged(study)

    def end(self, status: str, error: str | None = None) -> None:
        if self.stager is not None:
            self.stager.stop()
        if self.parent is not None:
            self.parent.end(status, error)


def stages_reports(config) -> bool:
    """Whether this process draws its best trial's reports ahead (eva/sweep/stage.py): it
    runs its trials one after another itself (the basic launcher, not an eva-sweep worker,
    whose siblings would draw the same ones), and they leave their reports to the sweep."""
    from evasweep.runner import WORKERS_ENV

    launcher = str(config.hydra.launcher.get("_target_", ""))
    return (
        str(config.report.trials) == "best"
        and bool(config.report.enabled)
        and launcher.endswith(".BasicLauncher")
        and WORKERS_ENV not in os.environ
    )


def remove_staged(study) -> None:
    """Reports drawn ahead for trials that were not the best in the end: gone."""
    import shutil

    from eva.modes.finish import STAGED

    for trial in study.get_trials(deepcopy=False):
        folder = trial.user_attrs.get("output_dir")
        if folder and (Path(folder) / STAGED).exists():
            shutil.rmtree(Path(folder) / STAGED, ignore_errors=True)
