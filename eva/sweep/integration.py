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
from evasweep.repeats import SEED_VALUES_ATTR, STD_ATTR, all_of, attr_of, best_repeat

log = logging.getLogger(__name__)

SLOT_ENV = "EVA_SLOT"  # 0..SLOTS-1: which device / share of the CPU cores the job takes
SLOTS_ENV = "EVA_SLOTS"  # how many jobs run at once on this machine
# What hydra.sweeper.objectives may name: the numbers of a run's results.json.
OBJECTIVES = (
    "best_test_acc",
    "best_val_acc",  # with dataset.val_size > 0
    "final_test_acc",
    "params",  # the model's parameter count
    "seconds",  # the run's wall time
    "best_epoch",
    "epochs_completed",
)


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
        self.study = None
        self.annotated: set[int] = set()  # trials with repeats whose runs have their mean

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

    def check_objectives(self, config, names: list[str]) -> None:
        for name in names:
            if name not in OBJECTIVES:
                raise EvaError(
                    f"hydra.sweeper.objectives: {name} is not a number of results.json; "
                    f"expected one of {', '.join(OBJECTIVES)}"
                )
            if name == "best_val_acc" and not config.dataset.get("val_size"):
                raise EvaError(
                    "hydra.sweeper.objectives: best_val_acc needs a validation split "
                    "(dataset.val_size > 0)"
                )

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
        self.config, self.study = config, study
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

    def chosen_repeat(self, trial) -> int | None:
        """Of a trial with repeats, the seed whose run stands for it (reports, model):
        the one with the best value. None without repeats."""
        from optuna.study import StudyDirection

        maximize = self.study is None or self.study.directions[0] == StudyDirection.MAXIMIZE
        return best_repeat(trial, maximize)

    def best_details(self, trial) -> dict:
        k = self.chosen_repeat(trial)
        return {
            "best_mlflow_run_id": attr_of(trial, "mlflow_run_id", k),
            "best_output_dir": attr_of(trial, "output_dir", k),
        }

    def trial_died(self, number: int, attrs: dict, why: str, until: float) -> None:
        if self.runs is not None:
            self.runs.end(number, attrs, why, until)

    def record(self, result: dict, results_file: Path) -> None:
        if self.parent is not None:
            self.parent.record(result, results_file)
            self.annotate_repeats()
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
        from omegaconf import OmegaConf

        from eva.engine.device import slot_device, slot_threads
        from eva.modes.finish import deferred, finish_run

        c = self.config
        if self.stager is not None:
            self.stager.stop()  # what it drew is taken below if it is complete
        # One trial stands for the study where one must (the registered model): the best,
        # or of a Pareto front the trial best on the first objective (docs/sweeps.md).
        sign = 1 if study.directions[0].name == "MAXIMIZE" else -1
        chosen = min(best, key=lambda t: (-sign * t.values[0], t.number)).number
        for trial in best:
            folder = attr_of(trial, "output_dir", self.chosen_repeat(trial))
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
                tracking = c.tracking
                if trial.number != chosen and tracking.get("register"):
                    tracking = OmegaConf.merge(tracking, {"register": None})
                finish_run(
                    Path(folder),
                    tracking,
                    self.launch_dir,
                    device=slot_device(c.device, self.slot),
                    threads=slot_threads(c.threads, 1),
                    study=study.study_name,
                )
            except EvaError as e:  # another worker is finishing it
                log.info("best trial %d: %s", trial.number, e)
        remove_staged(study)

    def annotate_repeats(self) -> None:
        """Each seed's MLflow run of a trial with repeats gets the trial's mean and std
        (trial_mean_<objective>, trial_std_<objective>) and every seed's value, once."""
        from optuna.trial import TrialState

        if self.study is None or not self.parent.run_id:
            return
        names = self.study.metric_names or ["value"]
        for trial in self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
            if trial.number in self.annotated or STD_ATTR not in trial.user_attrs:
                continue
            self.annotated.add(trial.number)
            stds = trial.user_attrs[STD_ATTR]
            stds = stds if isinstance(stds, list) else [stds]
            metrics = {}
            for name, mean, std in zip(names, trial.values, stds, strict=False):
                metrics.update({f"trial_mean_{name}": mean, f"trial_std_{name}": std})
            tags = {"trial_seed_values": json.dumps(trial.user_attrs.get(SEED_VALUES_ATTR))}
            for key, run_id in trial.user_attrs.items():
                if key.startswith("mlflow_run_id.") and run_id:
                    self.parent.tracker.log_to(run_id, metrics, tags)

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
        for folder in all_of(trial.user_attrs, "output_dir"):
            if (Path(folder) / STAGED).exists():
                shutil.rmtree(Path(folder) / STAGED, ignore_errors=True)
