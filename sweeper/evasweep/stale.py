"""Trials whose process died: FAIL, at once where that can be known.

A process killed with `kill -9` (or by the OOM killer, or with its machine) does not tell
Optuna: its trials stay RUNNING (and so would whatever else it tracks). Every sweep
process stamps the trials it asks with who it is (user attr `process`: host, pid, start
time), every job stamps its trial too (`job_process`, evasweep.job), and every loop of
every sweep process looks at the study's RUNNING trials:

- its job (or, before the job started, its sweep process) is a process of this machine
  whose pid is gone (or a zombie, or reused by a process started at another time): dead,
  known at once. The same command after `kill -9` goes on without waiting grace_period.
  A job that outlives its killed sweep process (a SLURM job, an orphaned joblib worker)
  keeps its trial: it tells the study its result itself.
- any other (another machine: its pids mean nothing here): dead once the heartbeats of
  both its processes stopped for grace_period (evasweep.heartbeat records them).

Either way the trial becomes FAIL with an `error` attr saying why, so it no longer counts and
a new trial replaces it; the app's integration hears of it (Integration.trial_died: eva ends
the trial's MLflow run). The workers of evasweep.workers get SIGTERM when it dies.
"""

import functools
import logging
import os
import signal
import socket
import sys
import time
from pathlib import Path

from evasweep.heartbeat import stale_ids

log = logging.getLogger(__name__)

# {"host", "machine", "pid", "started"}: the sweep process that tells Optuna how the trial
# ended (it asked it), and the job process that runs it (the same process with the basic
# launcher, a joblib worker otherwise; evasweep.job stamps it, JOB_ATTR).
OWNER_ATTR = "process"
JOB_ATTR = "job_process"
LAUNCHER_ENV = "EVASWEEP_LAUNCHER_PID"  # evasweep.workers' pid, in each worker's environment
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
    # A zombie is dead but not yet reaped (the launcher waits on its workers in order).
    return state in ("Z", "X") or owner.get("started") not in (None, started)


def lives_elsewhere_here(process) -> bool:
    """Another process of this machine, alive (False for one of another machine: unknown)."""
    if not isinstance(process, dict) or process.get("machine") != _machine():
        return False
    return process.get("pid") != os.getpid() and not is_gone(process)


def stop_with_launcher() -> None:
    """In a worker: be sent SIGTERM when its launcher dies, `kill -9` included (Linux).

    A worker left behind would run on unseen (its output went to the launcher) while the
    same command, run again, starts new workers beside it; with SIGTERM it stops as after
    Ctrl-C instead: its trial FAIL.
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
    """Finds the RUNNING trials of dead processes in one study and fails them.

    on_dead(number, attrs, why, until): called for each trial failed here, with its user
    attrs and a monotonic deadline until which a live job of it may still end its own work.
    """

    def __init__(self, study, storage, on_dead=None, interval=None, grace=None):
        self.study = study
        self.storage = storage
        # Heartbeat settings; an RDB storage opened with them knows its own.
        self.interval = interval or getattr(storage, "heartbeat_interval", None)
        self.grace = grace or getattr(storage, "grace_period", None)
        self.owner = this_process()
        self.on_dead = on_dead or (lambda number, attrs, why, until: None)

    def claim(self, trial) -> None:
        """Stamp a trial this process asked: who will tell Optuna how it ended."""
        trial.set_user_attr(OWNER_ATTR, self.owner)

    def fail(self) -> int:
        """Trials of dead processes -> FAIL; how many."""
        from optuna.exceptions import UpdateFinishedTrialError
        from optuna.trial import TrialState

        running = self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
        if not running:
            return 0
        why = {}
        for trial in running:
            # The job, once it started, is what does the work; before, its sweep process.
            process = trial.user_attrs.get(JOB_ATTR) or trial.user_attrs.get(OWNER_ATTR)
            if is_gone(process):
                which = "job" if JOB_ATTR in trial.user_attrs else "sweep process"
                why[trial._trial_id] = (
                    f"its process died: pid {process['pid']} on {process['host']} is gone "
                    f"(its {which}; killed, e.g. kill -9 or out of memory)"
                )
        if self.interval:
            grace = self.grace or 2 * self.interval
            for trial_id in stale_ids(self.storage, self.study._study_id, running, grace):
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
            self._tell_app(trial.number, trial.user_attrs, why[trial._trial_id], 0.0)
        return n

    def stop(self, trials, why: str) -> None:
        """This process stops early: its trials in flight FAIL (a later command replaces
        them); their jobs get a few seconds to end their own work (Ctrl-C reached them)."""
        from optuna.trial import TrialState

        until = time.monotonic() + 5
        for trial in trials:
            try:
                trial.set_user_attr("error", why)
                self.study.tell(trial, state=TrialState.FAIL)
                attrs = self.storage.get_trial_user_attrs(trial._trial_id)  # the job's too
            except Exception as e:
                log.warning("could not mark trial %d FAIL: %s", trial.number, e)
                continue
            self._tell_app(trial.number, attrs, f"the sweep stopped: {why}", until)

    def _tell_app(self, number: int, attrs: dict, why: str, until: float) -> None:
        try:
            self.on_dead(number, attrs, why, until)
        except Exception as e:  # the app's bookkeeping never fails the sweep
            log.warning("trial %d: the integration failed on its end: %s", number, e)
