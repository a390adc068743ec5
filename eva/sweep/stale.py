"""Trials whose process died: FAIL (at once where that can be known), their MLflow runs ended.

A process killed with `kill -9` (or by the OOM killer, or with its machine) tells neither
Optuna nor MLflow: its trials stay RUNNING, and so does each trial's MLflow run. Every sweep
process stamps the trials it asks with who it is (user attr `process`: host, pid, start
time), and every loop of every sweep process looks at the study's RUNNING trials:

- stamped by a process of this machine whose pid is gone (or a zombie, or reused by a
  process started at another time): dead, known at once. The same command after `kill -9`
  goes on without waiting grace_period.
- any other (another machine: its pids mean nothing here): dead once its heartbeats stopped
  for grace_period, Optuna's rule (eva.sweep.sampling.Heartbeat records them).

Either way the trial becomes FAIL with an `error` attr saying why, so it no longer counts and
a new trial replaces it; its MLflow run, if still RUNNING, ends KILLED with an `error` tag
(unless its job is a live process of its own, e.g. a joblib worker orphaned by the kill:
that one ends its run itself). eva-sweep's workers get SIGTERM when eva-sweep dies.
"""

import functools
import logging
import os
import signal
import socket
import sys
import time
from pathlib import Path

from eva.tracking.run import MAX_TAG

log = logging.getLogger(__name__)

# {"host", "machine", "pid", "started"}: the sweep process that tells Optuna how the trial
# ended (it asked it), and the job process that trains it and ends its MLflow run (the same
# process with the basic launcher; a joblib worker otherwise).
OWNER_ATTR = "process"
JOB_ATTR = "job_process"
LAUNCHER_ENV = "EVA_SWEEP_PID"  # eva-sweep's pid, in each worker's environment
PROC = Path("/proc")


def _proc_stat(pid: int) -> tuple[str, int] | None:
    """(state letter, start time in clock ticks after boot) of a pid; None when it has none."""
    try:
        stat = (PROC / str(pid) / "stat").read_text()
    except (OSError, ValueError):
        return None
    fields = stat.rsplit(")", 1)[1].split()  # the command name, in (), may hold spaces
    return fields[0], int(fields[19])


@functools.cache
def _machine() -> str:
    """Where a pid names the same process: the host name, the kernel's boot and the pid
    namespace. Containers may share a host name, or a kernel, but not both a boot and a
    namespace; a rebooted machine is another machine."""
    parts = [socket.gethostname()]
    try:
        parts.append((PROC / "sys/kernel/random/boot_id").read_text().strip())
        parts.append(os.readlink(PROC / "self/ns/pid"))
    except OSError:  # no /proc (macOS): the host name alone
        pass
    return " ".join(parts)


def this_process() -> dict:
    stat = _proc_stat(os.getpid())
    return {
        "host": socket.gethostname(),
        "machine": _machine(),
        "pid": os.getpid(),
        "started": stat[1] if stat else None,
    }


def is_gone(owner) -> bool:
    """True only when the process certainly ended; False when alive or not knowable here."""
    if not isinstance(owner, dict) or owner.get("machine") != _machine():
        return False
    pid = owner.get("pid")
    if not isinstance(pid, int) or pid <= 0:
        return False
    if os.name == "nt":  # os.kill there terminates the process: cannot ask, so alive
        return False
    if not (PROC / "self").exists():
        try:
            os.kill(pid, 0)  # signal 0: only asks whether the pid exists
        except ProcessLookupError:
            return True
        except PermissionError:  # someone else's live process
            return False
        return False
    stat = _proc_stat(pid)
    if stat is None:
        return True
    state, started = stat
    # A zombie is dead but not yet reaped (eva-sweep waits on its workers in order).
    return state in ("Z", "X") or owner.get("started") not in (None, started)


def lives_elsewhere_here(process) -> bool:
    """Another process of this machine, alive (False for one of another machine: unknown)."""
    if not isinstance(process, dict) or process.get("machine") != _machine():
        return False
    return process.get("pid") != os.getpid() and not is_gone(process)


def stop_with_launcher() -> None:
    """In a worker: be sent SIGTERM when eva-sweep dies, `kill -9` included (Linux).

    A worker left behind would train on unseen (its output went to eva-sweep) while the
    same command, run again, starts new workers beside it; with SIGTERM it stops as after
    Ctrl-C instead: its trial FAIL, its MLflow runs KILLED.
    """
    launcher = os.environ.get(LAUNCHER_ENV)
    if not launcher or not sys.platform.startswith("linux"):
        return
    import ctypes

    pr_set_pdeathsig = 1  # <linux/prctl.h>
    try:
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError):  # no prctl (another libc): workers may outlive it
        return
    if os.getppid() != int(launcher):  # it died before prctl: no signal will come
        os.kill(os.getpid(), signal.SIGTERM)


class DeadTrials:
    """Finds the RUNNING trials of dead processes in one study, fails them, ends their runs."""

    def __init__(self, study, storage):
        self.study = study
        self.storage = storage
        self.owner = this_process()
        self.tracker = None  # eva.tracking.run.Tracker of the study's parent run: the store
        self._client = None

    def claim(self, trial) -> None:
        """Stamp a trial this process asked: who will tell Optuna how it ended."""
        trial.set_user_attr(OWNER_ATTR, self.owner)

    def fail(self) -> int:
        """Trials of dead processes -> FAIL, their MLflow runs -> KILLED; how many."""
        from optuna.exceptions import UpdateFinishedTrialError
        from optuna.trial import TrialState

        running = self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
        if not running:
            return 0
        why = {}
        for trial in running:
            owner = trial.user_attrs.get(OWNER_ATTR)
            if is_gone(owner):
                why[trial._trial_id] = (
                    f"its process died: pid {owner['pid']} on {owner['host']} is gone "
                    "(killed, e.g. kill -9 or out of memory)"
                )
        if self.storage.heartbeat_interval:
            grace = self.storage.grace_period or 2 * self.storage.heartbeat_interval
            # Optuna's own rule (what optuna.storages.fail_stale_trials applies), asked
            # directly so the trial gets its error attr before it is FAIL, after which no
            # attr can be set. Private, and exact to the pinned Optuna 5.0.
            for trial_id in self.storage._get_stale_trial_ids(self.study._study_id):
                why.setdefault(
                    trial_id, f"its process died or lost the storage: no heartbeat for {grace} s"
                )
        n = 0
        for trial in running:
            if trial._trial_id not in why:
                continue
            try:
                self.storage.set_trial_user_attr(trial._trial_id, "error", why[trial._trial_id])
                if not self.storage.set_trial_state_values(trial._trial_id, TrialState.FAIL):
                    continue
            except UpdateFinishedTrialError:  # its process, or another sweep, was first
                continue
            n += 1
            log.warning("trial %d FAIL: %s", trial.number, why[trial._trial_id])
            self.end_run(trial.number, trial.user_attrs, why[trial._trial_id])
        return n

    def stop(self, trials, why: str) -> None:
        """This process stops early: its trials in flight FAIL (a later command replaces
        them), and the runs of their jobs end KILLED if the jobs died (joblib reports a
        killed job with TerminatedWorkerError) or still RUNNING after a few seconds."""
        from optuna.trial import TrialState

        until = time.monotonic() + 5  # for live jobs to end their own runs (Ctrl-C)
        for trial in trials:
            try:
                trial.set_user_attr("error", why)
                self.study.tell(trial, state=TrialState.FAIL)
                attrs = self.storage.get_trial_user_attrs(trial._trial_id)  # the job's too
                self.end_run(trial.number, attrs, f"the sweep stopped: {why}", until)
            except Exception as e:
                log.warning("could not mark trial %d FAIL: %s", trial.number, e)

    def end_orphan_runs(self, tracker) -> None:
        """Remember where the trials' MLflow runs are (the parent run's Tracker); end those
        still RUNNING of FAIL trials: their job process died while its sweep process lived
        on (a joblib job killed), then the sweep stopped before it could end them."""
        from optuna.trial import TrialState

        self.tracker = tracker
        parent = tracker.run_id
        if not parent:
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
        failed = self.study.get_trials(deepcopy=False, states=(TrialState.FAIL,))
        trials = {t.user_attrs.get("mlflow_run_id"): t for t in failed}
        for run in runs:
            trial = trials.get(run.info.run_id)
            if trial is not None:
                error = str(trial.user_attrs.get("error", "")).splitlines()[:1]
                why = ": ".join(["its job process died; the trial is FAIL", *error])
                self.end_run(trial.number, trial.user_attrs, why)

    def end_run(self, number: int, attrs: dict, why: str, until: float = 0.0) -> None:
        """The trial's MLflow run, if still RUNNING, ends KILLED; unless its job is another
        live process of this machine, which ends its run itself (waited for until the
        monotonic time `until`, to do so or die). Never fails the sweep."""
        run_id = attrs.get("mlflow_run_id")
        if not run_id or self.tracker is None or not self.tracker.enabled:
            return
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

    @property
    def client(self):
        if self._client is None:
            from mlflow import MlflowClient

            self._client = MlflowClient(self.tracker.uri)
        return self._client
