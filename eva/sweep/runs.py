"""The MLflow runs of trials whose process died: ended KILLED, not left RUNNING.

A job killed with `kill -9` (or by the OOM killer) cannot end its MLflow run. When the
sweeper fails such a trial (evasweep/stale.py), eva ends the trial's run KILLED with an
`error` tag, unless its job is a live process of its own (a joblib worker orphaned by a
killed sweep), which ends its run itself.
"""

import logging
import time

from eva.tracking.run import MAX_TAG
from evasweep.job import JOB_ATTR
from evasweep.repeats import all_of
from evasweep.stale import lives_elsewhere_here

log = logging.getLogger(__name__)


class TrialRuns:
    def __init__(self, tracker):
        self.tracker = tracker  # eva.tracking.run.Tracker of the study's parent run: the store
        self._client = None

    @property
    def client(self):
        if self._client is None:
            from mlflow import MlflowClient

            self._client = MlflowClient(self.tracker.uri)
        return self._client

    def end_orphans(self, study) -> None:
        """End the runs still RUNNING of FAIL trials: their job process died while its
        sweep process lived on (a joblib job killed), then the sweep stopped before it
        could end them."""
        from optuna.trial import TrialState

        failed = study.get_trials(deepcopy=False, states=(TrialState.FAIL,))
        parent = self.tracker.run_id
        if not parent or not failed:  # no MLflow query (nor its import) for a clean study
            return
        try:
            runs = self.client.search_runs(
                [self.tracker.experiment_id],
                filter_string=f"tags.`mlflow.parentRunId` = '{parent}' "
                "and attributes.status = 'RUNNING'",
            )
        except Exception as e:
            log.warning("could not look for MLflow runs of dead jobs: %s", e)
            return
        if not runs:
            return
        trials = {run_id: t for t in failed for run_id in all_of(t.user_attrs, "mlflow_run_id")}
        for run in runs:
            trial = trials.get(run.info.run_id)
            if trial is not None:
                error = str(trial.user_attrs.get("error", "")).splitlines()[:1]
                why = ": ".join(["its job process died; the trial is FAIL", *error])
                self.end(trial.number, trial.user_attrs, why)

    def end(self, number: int, attrs: dict, why: str, until: float = 0.0) -> None:
        """The trial's MLflow run(s) (one per seed with repeats), if still RUNNING, end
        KILLED; unless its job is another live process of this machine, which ends its run
        itself (waited for until the monotonic time `until`, to do so or die). Never fails
        the sweep."""
        if not self.tracker.enabled:
            return
        for run_id in all_of(attrs, "mlflow_run_id"):
            self._end(run_id, number, attrs, why, until)

    def _end(self, run_id: str, number: int, attrs: dict, why: str, until: float) -> None:
        try:
            while True:
                if self.client.get_run(run_id).info.status != "RUNNING":
                    return  # its job ended it: FINISHED, FAILED, or KILLED by Ctrl-C
                if not lives_elsewhere_here(attrs.get(JOB_ATTR)):
                    break
                if time.monotonic() >= until:
                    return  # an orphaned job still training: it ends its run itself
                time.sleep(0.2)
            self.client.set_tag(run_id, "error", why[:MAX_TAG])
            self.client.set_terminated(run_id, status="KILLED")
            log.info("MLflow run %s of trial %d ended KILLED", run_id, number)
        except Exception as e:  # deleted, another store, a server that does not answer
            log.warning("could not end MLflow run %s of trial %d: %s", run_id, number, e)
