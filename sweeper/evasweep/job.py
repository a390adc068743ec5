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
Hydra launcher carries to the job, in this process or another), so the job reaches the
study's storage itself; the pruner is stored with the study.
"""

import os

STORAGE_ENV = "EVASWEEP_STORAGE"  # the study's storage URL
STUDY_ENV = "EVASWEEP_STUDY"  # the study's name
TRIAL_ID_ENV = "EVASWEEP_TRIAL_ID"  # the trial's id in the storage (Optuna's _trial_id)
TRIAL_NUMBER_ENV = "EVASWEEP_TRIAL_NUMBER"  # its number in the study
PRUNER_ATTR = "evasweep_pruner"  # study user attr: the pruner's config (a _target_ dict)
JOB_ATTR = "job_process"  # trial user attr: which process trains it (evasweep.stale)

_current: "JobTrial | None" = None


class JobTrial:
    """One trial of a study, seen from the job that runs it; Optuna's Trial underneath."""

    def __init__(self, storage_url: str, study_name: str, trial_id: int, number: int):
        self.storage_url = storage_url
        self.study_name = study_name
        self.trial_id = trial_id
        self.number = number  # the trial's number in the study (it names the job's folder)
        self._trial = None

    @property
    def optuna_trial(self):
        """optuna.trial.Trial of this job, loaded once: its study has the sweep's pruner."""
        if self._trial is None:
            import optuna

            from evasweep.stale import this_process
            from evasweep.storage import open_storage

            optuna.logging.set_verbosity(optuna.logging.WARNING)
            storage = open_storage(self.storage_url)
            study = optuna.load_study(study_name=self.study_name, storage=storage)
            study.pruner = build_pruner(study.user_attrs.get(PRUNER_ATTR))
            self._trial = optuna.trial.Trial(study, self.trial_id)
            # Which process trains it: one killed outside the sweep's sight is found dead.
            self._trial.set_user_attr(JOB_ATTR, this_process())
        return self._trial

    @property
    def params(self) -> dict:
        """The values the sampler drew for this trial (the job's config has them too)."""
        return dict(self.optuna_trial.params)

    @property
    def user_attrs(self) -> dict:
        return dict(self.optuna_trial.user_attrs)

    def set_user_attr(self, key: str, value) -> None:
        """Recorded on the trial (optimization_results.yaml names the best one's)."""
        self.optuna_trial.set_user_attr(key, value)

    def report(self, value: float, step: int) -> None:
        """An intermediate value (e.g. the epoch's accuracy) at a step (the epoch)."""
        self.optuna_trial.report(float(value), step=step)

    def should_prune(self) -> bool:
        """Whether the sweep's pruner stops this trial now; then raise TrialPruned."""
        return self.optuna_trial.should_prune()


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
    if _current is None or _current.trial_id != int(trial_id):  # the basic launcher: a
        _current = JobTrial(  # new job in the same process
            os.environ[STORAGE_ENV],
            os.environ[STUDY_ENV],
            int(trial_id),
            int(os.environ.get(TRIAL_NUMBER_ENV, "-1")),
        )
    return _current
