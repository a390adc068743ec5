"""The job's side of an Optuna trial: report each epoch's score, stop when pruned.

The sweeper hands each job its trial and its slot through environment variables (the
study through the sweeper's own environment, inherited by joblib workers; the trial and
slot through the job's `hydra.job.env_set`), so train() needs no Hydra to take part.
"""

import json
import logging
import os

log = logging.getLogger(__name__)

STUDY_ENV = "EVA_OPTUNA_STUDY"  # JSON {"storage": url, "study": name}, set by the sweeper
TRIAL_ID_ENV = "EVA_TRIAL_ID"  # the trial's id in the storage
TRIAL_NUMBER_ENV = "EVA_TRIAL_NUMBER"  # its number in the study (names the job)
SLOT_ENV = "EVA_SLOT"  # 0..SLOTS-1: which device / share of the CPU cores the job takes
SLOTS_ENV = "EVA_SLOTS"  # how many jobs run at once on this machine
WORKER_ENV = "EVA_WORKER"  # set by eva-sweep in each worker process: its index
WORKERS_ENV = "EVA_WORKERS"  # and how many workers run on this machine


class TrialLink:
    """One trial of a study in the storage, as seen from the job training it."""

    def __init__(self, storage_url: str, study_name: str, trial_id: int, number: int, pruner):
        self.storage_url = storage_url
        self.study_name = study_name
        self.trial_id = trial_id
        self.number = number
        self.pruner = pruner
        self._trial = None

    @classmethod
    def from_env(cls, pruner_cfg=None) -> "TrialLink | None":
        """The job's trial, or None outside an eva_optuna sweep."""
        study = os.environ.get(STUDY_ENV)
        trial_id = os.environ.get(TRIAL_ID_ENV)
        if not study or trial_id is None:
            return None
        study = json.loads(study)
        return cls(
            study["storage"],
            study["study"],
            int(trial_id),
            int(os.environ.get(TRIAL_NUMBER_ENV, "0")),
            pruner_cfg,
        )

    @property
    def trial(self):
        if self._trial is None:
            import optuna
            from hydra.utils import instantiate

            from eva.sweep.study import open_storage

            optuna.logging.set_verbosity(optuna.logging.WARNING)
            pruner = instantiate(self.pruner) if self.pruner is not None else None
            study = optuna.load_study(
                study_name=self.study_name,
                storage=open_storage(self.storage_url),
                pruner=pruner,
            )
            self._trial = optuna.trial.Trial(study, self.trial_id)
        return self._trial

    def record(self, attrs: dict[str, str]) -> None:
        """User attributes of the trial, e.g. its MLflow run id and output dir.

        Also which process trains it: a sweep that finds the trial dead ends its MLflow run
        only once that process is gone too (eva/sweep/stale.py).
        """
        from eva.sweep.stale import JOB_ATTR, this_process

        for key, value in {**attrs, JOB_ATTR: this_process()}.items():
            self.trial.set_user_attr(key, value)

    def report(self, score: float, epoch: int) -> bool:
        """Report an epoch's score; True when the pruner says to stop this trial."""
        trial = self.trial
        trial.report(score, step=epoch)
        if trial.should_prune():
            log.info("trial %d pruned at epoch %d (score %.4f)", self.number, epoch, score)
            return True
        return False


def slot_from_env() -> tuple[int | None, int]:
    """(slot, slots) of this job: set per job by the sweeper; (None, 1) otherwise."""
    slot = os.environ.get(SLOT_ENV)
    return (int(slot) if slot is not None else None), int(os.environ.get(SLOTS_ENV, "1"))
