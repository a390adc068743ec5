"""The best trial's reports, drawn ahead while a sweep's later trials train.

report.trials=best makes the reports of the study's best trial once the study is complete
(eva/modes/finish.py): seconds at the end of every sweep. A sweep whose trials run one
after another in its own process (the basic launcher) starts, each time its best trial so
far changes, `python -m eva.modes.finish RUN_DIR` in a process of its own, on the CPU, at
idle priority (it runs only on a core the trials leave free): it draws that trial's reports
into RUN_DIR/.staged. If the trial is still the best at the end, finish_run moves them into
place; if another one is, its reports are drawn then as before. One such process at a
time: a newer best stops the older one's. One left by a sweep killed with kill -9 ends by
itself once drawn; the study's next command removes what it drew
(eva/sweep/integration.py remove_staged).
"""

import os
import subprocess
import sys
from pathlib import Path


class Stager:
    def __init__(self):
        self.process: subprocess.Popen | None = None
        self.folder: Path | None = None  # the run folder it draws for

    def stage(self, folder: Path) -> None:
        """Draw the reports of the run in `folder` ahead (once per folder)."""
        folder = Path(folder)
        if folder == self.folder:
            return
        self.stop()
        here = str(Path(__file__).resolve().parents[2])  # this eva, installed or not
        path = os.environ.get("PYTHONPATH")
        env = {**os.environ, "PYTHONPATH": here if not path else here + os.pathsep + path}
        env.pop("EVA_SLOT", None)  # not a trial: no GPU slot, one CPU thread
        self.folder = folder
        self.process = subprocess.Popen(
            [sys.executable, "-m", "eva.modes.finish", str(folder)],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,  # a failure only means finish_run draws them itself
        )
        idle_priority(self.process.pid)

    def stop(self) -> None:
        """Stop drawing (the sweep has a newer best, or has ended)."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self.process, self.folder = None, None


def idle_priority(pid: int) -> None:
    """Let process `pid` run only on a core nothing else wants: Linux's SCHED_IDLE (its
    threads inherit it), else nice 19. A nice value alone still takes a share of a core
    that a trial's thread or the MLflow writer is busy on, when they share two cores."""
    try:
        os.sched_setscheduler(pid, os.SCHED_IDLE, os.sched_param(0))
    except (AttributeError, OSError):  # not Linux, or refused
        try:
            os.setpriority(os.PRIO_PROCESS, pid, 19)
        except OSError:  # already gone
            pass
