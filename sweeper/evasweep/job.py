"""The job's side of a trial: which trial it is, its params, report, should_prune.

    from evasweep import TrialPruned, current_trial

    trial = current_trial()  # None outside a sweep of hydra/sweeper=eva_optuna
    for epoch in range(1, epochs + 1):
        score = train_one_epoch()
        if trial is not None:
            trial.report(score, epoch)
            if trial.should_prune():
                raise TrialPruned(f"pruned at epoch {epoch}")

The sweeper gives each job its trial through the job's `hydra.job.env_set` (what every
Hydra launcher carries to the job, in this process, another, or on another machine), so
the job reaches the study's storage itself; the pruner is stored with the study. Around
each job, in the job's own process, JobReporter (a Hydra callback the sweeper adds to its
launcher) sends the trial's heartbeats and tells the study how the job ended: a job that
outlives a killed sweep process is not judged dead, and its result is not lost.
"""

import logging
import os

from hydra.experimental.callback import Callback

from evasweep.stale import JOB_ATTR  # trial user attr: which process runs it

log = logging.getLogger(__name__)

STORAGE_ENV = "EVASWEEP_STORAGE"  # the study's storage URL
STUDY_ENV = "EVASWEEP_STUDY"  # the study's name
TRIAL_ID_ENV = "EVASWEEP_TRIAL_ID"  # the trial's id in the storage (Optuna's _trial_id)
TRIAL_NUMBER_ENV = "EVASWEEP_TRIAL_NUMBER"  # its number in the study
HEARTBEAT_ENV = "EVASWEEP_HEARTBEAT"  # seconds between the job's heartbeats (0: none)
REPEAT_ENV = "EVASWEEP_REPEAT"  # hydra.sweeper.repeats > 1: which of the trial's seeds (0..)
REPEATS_ENV = "EVASWEEP_REPEATS"  # and how many seeds the trial trains (evasweep/repeats.py)
SEED_ENV = "EVASWEEP_SEED"  # the seed this job trains (also in its overrides)
OBJECTIVES_ENV = "EVASWEEP_OBJECTIVES"  # hydra.sweeper.objectives, comma-separated
PRUNER_ATTR = "evasweep_pruner"  # study user attr: the pruner's config (a _target_ dict)

_current: "JobTrial | None" = None


class TrialEnded(RuntimeError):
    """The job's trial already ended in the study: a job that started late (a SLURM job
    queued while its sweep command was killed, then replaced) is not run again."""


class JobTrial:
    """One trial of a study, seen from the job that runs it; Optuna's Trial underneath."""

    def __init__(self, storage_url: str, study_name: str, trial_id: int, number: int):
        self.storage_url = storage_url
        self.study_name = study_name
        self.trial_id = trial_id
        self.number = number  # the trial's number in the study (it names the job's folder)
        self.heartbeat_interval = float(os.environ.get(HEARTBEAT_ENV) or 0)
        # hydra.sweeper.repeats: this job is seed `repeat` of `repeats` (evasweep/repeats.py)
        self.repeat = int(os.environ.get(REPEAT_ENV) or 0)
        self.repeats = int(os.environ.get(REPEATS_ENV) or 1)
        self.seed = int(os.environ[SEED_ENV]) if os.environ.get(SEED_ENV) else None
        # hydra.sweeper.objectives: the names of the values the task is to return, in order
        names = os.environ.get(OBJECTIVES_ENV)
        self.objectives = names.split(",") if names else None
        self._curve: list = []  # this seed's intermediate values, with repeats
        self._trial = None
        self._storage = None

    @property
    def storage(self):
        if self._storage is None:
            from evasweep.storage import open_storage

            interval = round(self.heartbeat_interval) or None  # Optuna's takes whole seconds
            self._storage = open_storage(self.storage_url, interval)
        return self._storage

    @property
    def optuna_trial(self):
        """optuna.trial.Trial of this job, loaded once: its study has the sweep's pruner."""
        if self._trial is None:
            import optuna

            from evasweep.stale import this_process

            optuna.logging.set_verbosity(optuna.logging.WARNING)
            self.ensure_running()
            study = optuna.load_study(study_name=self.study_name, storage=self.storage)
            study.pruner = build_pruner(study.user_attrs.get(PRUNER_ATTR))
            self._trial = optuna.trial.Trial(study, self.trial_id)
            # Which process trains it: one killed outside the sweep's sight is found dead.
            self._trial.set_user_attr(JOB_ATTR, this_process())
        return self._trial

    def ensure_running(self) -> None:
        """Raise TrialEnded when the study already holds how this trial ended."""
        state = self.storage.get_trial(self.trial_id).state
        if state.is_finished():
            raise TrialEnded(
                f"trial {self.number} of study {self.study_name} is {state.name} already "
                "(its sweep was judged dead and the trial replaced): not run again"
            )

    @property
    def params(self) -> dict:
        """The values the sampler drew for this trial (the job's config has them too)."""
        return dict(self.optuna_trial.params)

    @property
    def user_attrs(self) -> dict:
        return dict(self.optuna_trial.user_attrs)

    def attr_key(self, key: str) -> str:
        """The user attr where this job keeps `key`: `key.k` for seed k of a trial with
        repeats (its seeds would overwrite each other's), else `key`."""
        from evasweep.repeats import attr_key

        return attr_key(key, self.repeat, self.repeats)

    def set_user_attr(self, key: str, value) -> None:
        """Recorded on the trial (optimization_results.yaml names the best one's); with
        repeats under attr_key(key), one per seed."""
        self.optuna_trial.set_user_attr(self.attr_key(key), value)

    @property
    def multi_objective(self) -> bool:
        return len(self.optuna_trial.study.directions) > 1

    def report(self, value: float, step: int) -> None:
        """An intermediate value (e.g. the epoch's accuracy) at a step (the epoch). With
        repeats, the trial's value at a step is the mean over its seeds (evasweep/repeats.py).
        A multi-objective study has none (Optuna cannot prune it): nothing is recorded."""
        from optuna.exceptions import UpdateFinishedTrialError

        if self.multi_objective:
            return
        if self.repeats <= 1:
            self.optuna_trial.report(float(value), step=step)
            return
        from evasweep.repeats import report_mean

        self.optuna_trial  # noqa: B018 (loads it: the study's process stamp, the pruner)
        try:
            self._curve = report_mean(
                self.storage, self.trial_id, self.repeat, self.repeats, self._curve, value, step
            )
        except UpdateFinishedTrialError:  # another seed of the trial failed or was pruned
            state = self.storage.get_trial(self.trial_id).state.name
            raise TrialEnded(
                f"trial {self.number} is {state} already (another of its seeds ended it): "
                f"seed {self.seed} stops"
            ) from None

    def should_prune(self) -> bool:
        """Whether the sweep's pruner stops this trial now; then raise TrialPruned."""
        if self.multi_objective:
            return False
        trial = self.optuna_trial
        if self.repeats <= 1:
            return trial.should_prune()
        # Optuna's Trial judges the values it reported itself; the mean over the seeds may
        # have been reported by another seed's job: the pruner judges the trial as stored.
        return trial.study.pruner.prune(trial.study, self.storage.get_trial(self.trial_id))

    def finish(self, job_return):
        """Tell the study how the job ended (evasweep.outcome); the trial as stored. With
        repeats, the job records its seed's outcome, and tells the trial when it is the
        last of its seeds to end (evasweep/repeats.py)."""
        from evasweep.outcome import outcome, tell

        trial = self.optuna_trial
        state, values, error = outcome(job_return, len(trial.study.directions))
        if self.repeats <= 1:
            return tell(trial.study, trial, state, values, error)
        from evasweep.repeats import settle

        seed = self.seed if self.seed is not None else self.repeat
        return settle(trial.study, trial, self.repeats, {self.repeat: (seed, state, values, error)})


class JobReporter(Callback):
    """In the job's process, around the task: heartbeats of its trial, then its outcome.

    The sweeper adds one to its launcher's callbacks (launchers carry them to the job with
    the rest of Hydra's context); outside an eva_optuna sweep it does nothing.
    """

    def __init__(self):
        self._trial: JobTrial | None = None
        self._heartbeat = None

    def __getstate__(self):  # pickled by launchers before any job: nothing to carry
        return {}

    def __setstate__(self, state):
        self.__init__()

    def on_job_start(self, config, **kwargs) -> None:
        from evasweep.heartbeat import Heartbeat

        trial = current_trial()  # hydra.job.env_set is in os.environ during on_job_start
        if trial is None:
            return
        self._trial = trial
        trial.optuna_trial  # noqa: B018 (loads it: stamps the job's process, JOB_ATTR)
        self._heartbeat = Heartbeat(trial.storage, trial.heartbeat_interval).__enter__()
        self._heartbeat.add(trial.trial_id)

    def on_job_end(self, config, job_return, **kwargs) -> None:
        trial, self._trial = self._trial, None
        if self._heartbeat is not None:
            self._heartbeat.__exit__(None, None, None)
            self._heartbeat = None
        if trial is not None:
            stored = trial.finish(job_return)
            log.debug("trial %d told: %s", trial.number, stored.state.name)


def build_pruner(config: dict | None):
    """The pruner of a study from its stored config: `{_target_: optuna.pruners.X, ...}`."""
    import optuna

    if not config:
        return optuna.pruners.NopPruner()
    from hydra.utils import instantiate

    return instantiate(config)


def current_trial() -> JobTrial | None:
    """The trial this job runs, or None outside an eva_optuna sweep."""
    global _current
    trial_id = os.environ.get(TRIAL_ID_ENV)
    if trial_id is None or STORAGE_ENV not in os.environ:
        return None
    repeat = int(os.environ.get(REPEAT_ENV) or 0)
    if _current is None or (_current.trial_id, _current.repeat) != (int(trial_id), repeat):
        _current = JobTrial(  # the basic launcher: a new job in the same process
            os.environ[STORAGE_ENV],
            os.environ[STUDY_ENV],
            int(trial_id),
            int(os.environ.get(TRIAL_NUMBER_ENV, "-1")),
        )
    return _current
