"""Journal storage and heartbeats, and jobs that tell their own result.

The Optuna FAQ advises a journal file over sqlite for parallel processes; Optuna 5's
journal storage keeps no heartbeats, so the sweeper records its own there. Jobs send
heartbeats and tell the study how they ended themselves (evasweep.job.JobReporter): a job
that outlives a killed sweep process still counts, and is not run again.
"""

import importlib.util
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from apps import TIMEOUT, clean_env, load, results, states, sweep, sweep_args, write_app
from optuna.trial import TrialState

from evasweep.heartbeat import BEAT_ATTR
from evasweep.stale import JOB_ATTR, OWNER_ATTR, DeadTrials
from evasweep.storage import file_lock, open_storage, storage_url


def test_journal_urls_follow_the_sqlite_rule_of_slashes(tmp_path):
    assert storage_url("journal:///runs/optuna.log", tmp_path) == (
        f"journal:///{tmp_path.resolve()}/runs/optuna.log"
    )
    assert storage_url("journal:////abs/x.log", tmp_path) == "journal:////abs/x.log"
    assert storage_url("study.log", tmp_path) == f"journal:///{tmp_path.resolve()}/study.log"
    assert storage_url("/abs/study.log", tmp_path) == "journal:////abs/study.log"
    assert storage_url("optuna.db", tmp_path) == f"sqlite:///{tmp_path.resolve()}/optuna.db"


def test_a_sweep_on_a_journal_file_keeps_its_study_there(quadratic):
    command = ("x=interval(-5,5)", "hydra.sweeper.n_trials=3", "hydra.sweeper.storage=opt.log")
    sweep(quadratic, *command)
    assert not (quadratic / "optuna.db").exists()
    storage = open_storage(f"journal:///{quadratic}/opt.log")
    (name,) = optuna.get_all_study_names(storage)
    study = optuna.load_study(study_name=name, storage=storage)
    assert states(study) == {"COMPLETE": 3}
    assert all(JOB_ATTR in t.user_attrs for t in study.trials)  # each job stamped its trial
    assert results(quadratic)["storage"] == f"journal:///{quadratic.resolve()}/opt.log"
    sweep(quadratic, *command)  # the same command: the study is complete, nothing runs
    assert len(optuna.load_study(study_name=name, storage=storage).trials) == 3


def test_by_default_a_study_lives_in_optuna_log_unless_an_earlier_optuna_db_holds_it(tmp_path):
    from evasweep.study import resolve_storage

    assert resolve_storage(None, None, tmp_path) == f"journal:///{tmp_path.resolve()}/optuna.log"
    (tmp_path / "optuna.db").touch()  # left by an earlier version: its studies go on there
    assert resolve_storage(None, None, tmp_path) == f"sqlite:///{tmp_path.resolve()}/optuna.db"
    (tmp_path / "optuna.log").touch()
    assert resolve_storage(None, None, tmp_path) == f"journal:///{tmp_path.resolve()}/optuna.log"


def test_a_journal_trial_without_recent_heartbeats_is_dead(tmp_path):
    storage = open_storage(f"journal:///{tmp_path}/j.log")
    study = optuna.create_study(storage=storage)
    elsewhere = {"host": "far", "machine": "far boot ns", "pid": 1, "started": 1}
    quiet, beating = study.ask(), study.ask()
    for trial, beat in ((quiet, time.time() - 100), (beating, time.time())):
        trial.set_user_attr(OWNER_ATTR, elsewhere)  # another machine: its pid says nothing
        trial.set_user_attr(BEAT_ATTR, beat)
    assert DeadTrials(study, storage, interval=10, grace=40).fail() == 1
    assert study.trials[quiet.number].state == TrialState.FAIL
    assert "no heartbeat for 40 s" in study.trials[quiet.number].user_attrs["error"]
    assert study.trials[beating.number].state == TrialState.RUNNING


GATED = """
number = os.environ["EVASWEEP_TRIAL_NUMBER"]
with open(os.path.join(os.environ["RUNS"], number), "a") as f:
    f.write("run\\n")  # one line per time the trial's job ran
if number == "0":
    open(os.path.join(out, "started"), "w").close()
    while not os.path.exists(os.environ["GATE"]):
        time.sleep(0.1)
return (cfg.x - 1) ** 2
"""


@pytest.mark.skipif(
    importlib.util.find_spec("hydra_plugins.hydra_submitit_launcher") is None,
    reason="hydra-submitit-launcher is not installed (pip install 'hydra-evasweep[slurm]')",
)
def test_a_job_that_outlives_its_killed_sweep_tells_its_result_and_runs_once(tmp_path):
    (tmp_path / "app").mkdir()
    app = write_app(tmp_path / "app", GATED)
    runs, gate = tmp_path / "runs", tmp_path / "gate"
    runs.mkdir()
    env = clean_env(RUNS=str(runs), GATE=str(gate))
    command = sweep_args(
        "x=interval(-5,5)",
        "hydra.sweeper.n_trials=2",
        "hydra.sweeper.n_jobs=1",
        "hydra/launcher=submitit_local",
    )
    first = subprocess.Popen([sys.executable, "app.py", *command], cwd=app, env=env)
    try:
        wait_for(lambda: (app / "multirun" / "0" / "started").exists(), "trial 0 to start")
        os.kill(first.pid, signal.SIGKILL)  # its submitit job lives on, waiting on the gate
        first.wait(timeout=10)
        again = subprocess.Popen(
            [sys.executable, "app.py", *command],
            cwd=app,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        # The rerun runs trial 1 beside the live job of trial 0, which it does not fail.
        wait_for(lambda: (runs / "1").exists(), "the rerun to start trial 1")
        study = load(app)
        assert study.trials[0].state == TrialState.RUNNING
        gate.touch()
        out, _ = again.communicate(timeout=TIMEOUT)
        assert again.returncode == 0, out[-3000:]
    finally:
        gate.touch()
        for proc in (first, locals().get("again")):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()
    study = load(app)
    assert states(study) == {"COMPLETE": 2}
    assert study.trials[0].user_attrs[JOB_ATTR]["pid"] != first.pid  # its own process told
    assert sorted(p.name for p in runs.iterdir()) == ["0", "1"]
    assert [(runs / n).read_text() for n in ("0", "1")] == ["run\n", "run\n"]  # once each


def wait_for(condition, what: str, timeout: float = TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


SLOW = """
time.sleep(0.5)
return (cfg.x - 1) ** 2
"""


@pytest.mark.parametrize("storage", ["optuna.db", "journal:///optuna.log"])
def test_kill_9_of_one_of_4_workers_then_the_same_command_loses_and_repeats_nothing(
    tmp_path, storage
):
    app = write_app(tmp_path, SLOW)
    args = [
        "--workers",
        "4",
        "--train",
        "app.py",
        "hydra/sweeper=eva_optuna",
        "x=interval(-5,5)",
        "hydra.sweeper.n_trials=12",
        "hydra.sweep.dir=multirun",
        f"hydra.sweeper.storage={storage}",
    ]
    command = [sys.executable, "-m", "evasweep", *args]
    url = storage_url(storage, app)
    path = app / Path(storage.removeprefix("journal:///"))

    opened = []

    def study():
        if not opened:
            if not path.exists():  # opening it would create it, racing worker 0
                return None
            # Worker 0 creates the file, then its tables and the study, holding the lock
            # the sweeper takes for that: opened under it, the storage never races it.
            with file_lock(path if storage.endswith(".db") else path.with_suffix(".study")):
                opened.append(open_storage(url))
        names = optuna.get_all_study_names(opened[0])
        return optuna.load_study(study_name=names[0], storage=opened[0]) if names else None

    proc = subprocess.Popen(
        command, cwd=app, env=clean_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:

        def a_worker_runs():
            s = study()
            running = s.get_trials(states=(TrialState.RUNNING,)) if s else []
            return running[0] if running and JOB_ATTR in running[0].user_attrs else None

        wait_for(a_worker_runs, "a trial to run")
        victim = a_worker_runs()
        os.kill(victim.user_attrs[JOB_ATTR]["pid"], signal.SIGKILL)  # a worker: the basic
        out, _ = proc.communicate(timeout=TIMEOUT)  # launcher runs jobs in the worker
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode != 0, out[-2000:]  # one worker was killed: the sweep says so
    again = subprocess.run(command, cwd=app, env=clean_env(), capture_output=True, text=True)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    s = study()
    by_state = states(s)
    assert by_state["COMPLETE"] == 12 and set(by_state) <= {"COMPLETE", "FAIL"}
    # the trial the killed worker was running (it may have moved on to its next one
    # between the look and the kill) is FAIL, and it alone
    pid = victim.user_attrs[JOB_ATTR]["pid"]
    ran = [t for t in s.trials if JOB_ATTR in t.user_attrs]  # not a withdrawn surplus draw
    (killed,) = [t for t in ran if t.state == TrialState.FAIL]
    assert killed.user_attrs[JOB_ATTR]["pid"] == pid
    assert f"process died: pid {pid}" in killed.user_attrs["error"]
    complete = s.get_trials(states=(TrialState.COMPLETE,))
    assert len({t.params["x"] for t in complete}) == 12  # no parameter set ran twice
    # every trial that ran has its own job folder, none was run by two workers
    assert sorted(int(p.name) for p in (app / "multirun").iterdir() if p.name.isdigit()) == (
        sorted(t.number for t in s.trials if JOB_ATTR in t.user_attrs)
    )


def test_a_job_whose_trial_already_ended_is_not_run_again(tmp_path, monkeypatch):
    """A job that starts late (queued while its sweep was killed and its trial replaced)."""
    from evasweep.job import TrialEnded, current_trial

    url = f"journal:///{tmp_path}/j.log"
    study = optuna.create_study(storage=open_storage(url), study_name="s")
    ended = study.ask()
    study.tell(ended, state=TrialState.FAIL)
    env = {"STORAGE": url, "STUDY": "s", "TRIAL_ID": str(ended._trial_id), "TRIAL_NUMBER": "0"}
    for key, value in env.items():
        monkeypatch.setenv(f"EVASWEEP_{key}", value)
    with pytest.raises(TrialEnded, match="trial 0 of study s is FAIL already"):
        current_trial().ensure_running()
    live = study.ask()
    monkeypatch.setenv("EVASWEEP_TRIAL_ID", str(live._trial_id))
    monkeypatch.setenv("EVASWEEP_TRIAL_NUMBER", "1")
    current_trial().ensure_running()  # a RUNNING trial: its job goes on
