"""Heartbeats: each trial in flight says, every interval, that its processes are alive.

Both sides of a trial beat: the sweep process that asked it and the job that runs it
(evasweep.job.JobReporter), so a job that outlives a killed sweep process (a SLURM job, a
job on another machine) keeps its trial alive, and its trial is neither judged dead nor
run again. A trial none of whose processes beat for grace_period seconds is dead
(evasweep/stale.py).

Optuna's RDB storage (sqlite, PostgreSQL) records heartbeats in its own table; its
journal storage has none in Optuna 5, so there the time of the last beat is a trial user
attr (BEAT_ATTR, seconds since the epoch: clocks of the machines must roughly agree).
"""

import logging
import threading
import time

log = logging.getLogger(__name__)

BEAT_ATTR = "evasweep_heartbeat"  # trial user attr where the storage has no heartbeats


def native(storage) -> bool:
    """Does the storage keep heartbeats itself (Optuna's BaseHeartbeat, enabled)?"""
    from optuna.storages._heartbeat import BaseHeartbeat  # not public in Optuna 5.0

    return isinstance(storage, BaseHeartbeat) and bool(storage.get_heartbeat_interval())


def beat(storage, trial_id: int) -> None:
    if native(storage):
        storage.record_heartbeat(trial_id)
    else:
        storage.set_trial_user_attr(trial_id, BEAT_ATTR, time.time())


def stale_ids(storage, study_id: int, running, grace: float) -> set[int]:
    """Ids of the running trials whose last heartbeat is older than grace seconds."""
    if native(storage):
        # Optuna's own rule (what optuna.storages.fail_stale_trials applies), asked
        # directly so the trial gets its error attr before it is FAIL, after which no
        # attr can be set. Private, and exact to the pinned Optuna 5.0.
        return set(storage._get_stale_trial_ids(study_id))
    now = time.time()
    return {
        t._trial_id
        for t in running
        if isinstance(t.user_attrs.get(BEAT_ATTR), int | float)
        and now - t.user_attrs[BEAT_ATTR] > grace
    }


class Heartbeat:
    """Beats for every trial this process has in flight, every interval seconds."""

    def __init__(self, storage, interval: float):
        self.storage = storage
        self.interval = interval
        self.trial_ids: set[int] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="optuna-heartbeat", daemon=True)

    def __enter__(self):
        if self.interval:
            self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)

    def add(self, trial_id: int) -> None:
        self.trial_ids.add(trial_id)
        if self.interval:
            beat(self.storage, trial_id)

    def _beat(self) -> None:
        while not self._stop.wait(self.interval):
            for trial_id in list(self.trial_ids):
                try:
                    beat(self.storage, trial_id)
                except Exception as e:  # a busy database, a finished trial: next beat
                    log.debug("heartbeat of trial %d failed: %s", trial_id, e)
