"""Sweeps survive `kill -9`: of the sweep, of an eva-sweep worker, of a joblib job. The same
command again completes the study to n_trials, no trial lost, repeated or left RUNNING, and
no MLflow run left RUNNING.

The sweeps are real `train.py -m` subprocesses, killed with SIGKILL mid-trial; their jobs are
made slow enough (SLOW) to be caught running. A killed joblib job is played by stand-in
processes instead (the real thing takes about a minute here).
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from helpers import REPO, TINY_CLI, experiment_name, run_cli
from mlflow import MlflowClient
from optuna.distributions import FloatDistribution
from sweep_checks import (
    check_mlflow,
    check_study,
    load,
    running_with_run,
    states,
    wait_for,
)

from eva.sweep.runs import TrialRuns
from eva.tracking.run import Tracker
from evasweep import stale

# The process rules read /proc; eva-sweep's workers follow their launcher with prctl.
pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux only")

# about 2 s of training per trial here (the whole split, not debug's subset)
SLOW = ["dataset.train_size=768", "dataset.train_subset=null", "epochs=2"]


def sweep_args(tmp_path, experiment, *extra) -> list[str]:
    return [
        "-m",
        "hparams_search=optuna",
        *TINY_CLI,
        *SLOW,
        "tracking.log_model=false",
        f"tracking.experiment={experiment}",
        f"hydra.sweeper.storage={tmp_path / 'optuna.db'}",
        "hydra.sweeper.sampler.seed=3",
        "hydra.sweeper.n_trials=3",
        *extra,
    ]


def start(command: list[str], tmp_path: Path, log: str, env=None) -> subprocess.Popen:
    out = open(tmp_path / log, "w")  # a file, not a pipe: nothing blocks on a full pipe
    proc = subprocess.Popen(command, cwd=tmp_path, stdout=out, stderr=subprocess.STDOUT, env=env)
    out.close()
    return proc


def cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def is_worker_1(process: dict) -> bool:
    try:
        return b"EVASWEEP_WORKER=1\0" in Path(f"/proc/{process['pid']}/environ").read_bytes()
    except OSError:
        return False


# ----------------------------------------------------------------------------- process rules


def test_a_process_is_gone_only_when_it_certainly_ended(tmp_path):
    me = stale.this_process()
    assert me["pid"] == os.getpid() and not stale.is_gone(me)
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    stamped = {**me, "pid": child.pid, "started": stale._proc_stat(child.pid)[1]}
    deadline = time.monotonic() + 30
    while stale._proc_stat(child.pid)[0] != "Z":  # exited, not yet reaped: a zombie
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert stale.is_gone(stamped)
    child.wait()
    assert stale.is_gone(stamped)  # reaped: no such pid
    assert stale.is_gone({**me, "started": me["started"] + 1})  # the pid of another process
    assert not stale.is_gone({**me, "machine": "elsewhere"})  # unknowable here: alive
    assert not stale.is_gone(None)


def test_eva_sweep_workers_get_sigterm_when_eva_sweep_is_killed(tmp_path):
    """kill -9 of eva-sweep: its workers stop as after Ctrl-C instead of training on unseen."""
    marker = tmp_path / "sigterm"
    worker = (
        "import os, signal, sys, time\n"
        "from evasweep.stale import stop_with_launcher\n"
        f"signal.signal(signal.SIGTERM, lambda *a: (open({str(marker)!r}, 'w'), sys.exit(0)))\n"
        "stop_with_launcher()\n"
        "print('ready', flush=True)\n"
        "time.sleep(60)\n"
    )
    launcher = (
        "import os, subprocess, sys, time\n"
        f"env = {{**os.environ, {stale.LAUNCHER_ENV!r}: str(os.getpid())}}\n"
        f"subprocess.Popen([sys.executable, '-c', {worker!r}], env=env)\n"
        "time.sleep(60)\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", launcher],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    try:
        assert proc.stdout.readline().strip() == "ready"  # the worker's, through the pipe
        os.kill(proc.pid, signal.SIGKILL)
        deadline = time.monotonic() + 20
        while not marker.exists():
            assert time.monotonic() < deadline, "the worker outlived eva-sweep"
            time.sleep(0.1)
    finally:
        proc.kill()
        proc.wait()


def test_a_reopened_parent_run_forgets_why_an_earlier_command_stopped(mlflow_store):
    """A study completed by the next command ends FINISHED, not FINISHED with an error:
    the reopened parent drops the tag, in this process or through eva's writer process."""
    from omegaconf import OmegaConf

    from eva.tracking.run import Launch
    from eva.tracking.writer import RemoteTracker

    client = MlflowClient(mlflow_store)
    name = experiment_name()
    tracker = Tracker(mlflow_store, client.create_experiment(name))
    tracking = OmegaConf.create({"enabled": True, "uri": mlflow_store, "experiment": name})
    tracking.timeout = 10.0
    for reopened in (tracker, RemoteTracker.open(tracking, Launch())):
        tracker.start("study", params={}, tags={})
        tracker.end("KILLED", "interrupted (Ctrl-C or SIGTERM)")
        assert reopened.reopen(tracker.run_id)
        reopened.delete_tag("error")  # what eva.sweep.parent does when it reopens the run
        reopened.delete_tag("error")  # none left: no error either
        reopened.end("FINISHED")
        run = client.get_run(tracker.run_id)
        assert "error" not in run.data.tags and run.info.status == "FINISHED"


# ----------------------------------------------------------------------------- kill -9


def test_kill_9_of_a_sweep_then_the_same_command_completes_the_study(mlflow_store, tmp_path):
    experiment = experiment_name()
    args = sweep_args(tmp_path, experiment)  # grace_period stays at its 40 s default
    first = start([sys.executable, str(REPO / "train.py"), *args], tmp_path, "first.log")
    trials = wait_for(
        first,
        tmp_path,
        "first.log",
        lambda ts: running_with_run(ts) and any(t.state.name == "COMPLETE" for t in ts),
    )
    os.kill(first.pid, signal.SIGKILL)
    assert first.wait(timeout=30) == -signal.SIGKILL
    (victim,) = running_with_run(trials)
    assert victim.user_attrs["process"]["pid"] == first.pid  # the trial names its process

    started = time.monotonic()
    again = run_cli(args, tmp_path)
    took = time.monotonic() - started
    assert again.returncode == 0, again.stderr[-3000:]

    study = load(tmp_path)
    check_study(study, 3)
    failed = [t for t in study.trials if t.state.name == "FAIL"]
    assert [t.number for t in failed] == [victim.number]
    # The rerun saw at once that the process was gone (heartbeats would have taken 40 s
    # and say "no heartbeat"); the killed trial's values may come again, it did not finish.
    error = failed[0].user_attrs["error"]
    assert error.startswith(f"its process died: pid {first.pid} on "), error
    assert f"trial {victim.number} FAIL: its process died" in again.stdout + again.stderr
    print(f"rerun took {took:.1f} s")
    check_mlflow(mlflow_store, experiment, study, failed)


def test_trials_of_other_machines_fail_by_heartbeat_and_their_runs_end(mlflow_store, tmp_path):
    """A RUNNING trial stamped by a process of another machine: its pid means nothing here,
    so it becomes FAIL only once its heartbeats stop; its MLflow run then ends KILLED."""
    experiment = experiment_name()
    args = sweep_args(
        tmp_path,
        experiment,
        "hydra.sweeper.study_name=s",
        "hydra.sweeper.params=null",
        "model.dropout=interval(0.0, 0.3)",
        "hydra.sweeper.n_trials=1",
        "hydra.sweeper.heartbeat_interval=1",
        "hydra.sweeper.grace_period=1",
        "dataset.train_size=96",
        "epochs=1",
    )
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    storage = optuna.storages.RDBStorage(url, heartbeat_interval=1, grace_period=1)
    study = optuna.create_study(study_name="s", storage=storage, direction="maximize")
    dead = study.ask({"model.dropout": FloatDistribution(0.0, 0.3)})
    other = {**stale.this_process(), "machine": "another machine", "host": "elsewhere"}
    dead.set_user_attr("process", other)
    client = MlflowClient(mlflow_store)
    experiment_id = client.create_experiment(experiment)
    run = client.create_run(experiment_id, run_name="0: its run")
    dead.set_user_attr("mlflow_run_id", run.info.run_id)
    storage.record_heartbeat(dead._trial_id)  # ... and then nothing: that process died

    r = run_cli(args, tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    study = load(tmp_path)
    assert states(study) == ["FAIL", "COMPLETE"]
    assert "no heartbeat for 1 s" in study.trials[0].user_attrs["error"]
    ended = client.get_run(run.info.run_id)
    assert ended.info.status == "KILLED"
    assert "no heartbeat" in ended.data.tags["error"]


def test_kill_9_of_an_eva_sweep_worker_the_other_worker_completes_the_study(mlflow_store, tmp_path):
    experiment = experiment_name()
    args = sweep_args(tmp_path, experiment, f"hydra.sweep.dir={tmp_path / 'multirun'}")
    command = [sys.executable, "-m", "eva.sweep.workers", "--workers", "2", *args[1:]]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    sweep = start(command, tmp_path, "workers.log", env)

    def of_worker_1(trials) -> list:
        return [t for t in running_with_run(trials) if is_worker_1(t.user_attrs["process"])]

    # Worker 1: eva-sweep waits on worker 0 first, so the killed one stays a zombie (its pid
    # still taken) until the end; it is dead all the same. Worker 0 lives on: the study
    # cannot complete while worker 1's trial runs.
    (victim,) = of_worker_1(wait_for(sweep, tmp_path, "workers.log", of_worker_1))
    victim_pid = victim.user_attrs["process"]["pid"]
    os.kill(victim_pid, signal.SIGKILL)
    assert sweep.wait(timeout=120) != 0  # a worker failed, and eva-sweep says so
    out = (tmp_path / "workers.log").read_text()
    said = f"trial {victim.number} FAIL: its process died: pid {victim_pid} on"
    (line,) = [line for line in out.splitlines() if said in line]
    assert line.startswith("[w0] ")  # the live worker saw it, without waiting 40 s

    study = load(tmp_path)  # worker 0 replaced the trial and completed the study
    check_study(study, 3)
    failed = [t for t in study.trials if t.state.name == "FAIL"]
    assert [t.number for t in failed] == [victim.number]
    check_mlflow(mlflow_store, experiment, study, failed)


def job(*code: str) -> tuple[subprocess.Popen, dict]:
    """A stand-in for a sweep's job process: (it, the stamp it records in its trial)."""
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import json; from evasweep.stale import this_process; "
            "print(json.dumps(this_process()), flush=True); " + "; ".join(code),
        ],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    return proc, json.loads(proc.stdout.readline())


def test_runs_of_dead_jobs_end_killed_and_live_jobs_end_their_own(mlflow_store, tmp_path):
    """A killed joblib job breaks the pool (TerminatedWorkerError): the sweep stops and its
    trials FAIL, but no job will end their MLflow runs any more. The sweep ends them, except
    the run of a job still alive, which ends its own; a later command ends what is left.

    (The path of a real `kill -9` of a joblib job, ~60 s here, run by hand: both trials of
    the broken pool FAIL and their runs KILLED; the same command again completes.)
    """
    client = MlflowClient(mlflow_store)
    tracker = Tracker(mlflow_store, client.create_experiment(experiment_name()))
    tracker.start("study", params={}, tags={})
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    storage = optuna.storages.RDBStorage(url)
    study = optuna.create_study(storage=storage, direction="maximize")
    killed, killed_stamp = job()
    killed.wait()  # it exited: gone
    live, live_stamp = job("import time", "time.sleep(60)")
    trials, runs = [], []
    try:
        for stamp in (killed_stamp, live_stamp):
            trial = study.ask({"x": FloatDistribution(0, 1)})
            child = {"mlflow.parentRunId": tracker.run_id}
            run = client.create_run(tracker.experiment_id, tags=child)
            trial.set_user_attr("mlflow_run_id", run.info.run_id)
            trial.set_user_attr("job_process", stamp)  # what evasweep.job stamps
            trials.append(trial)
            runs.append(run.info.run_id)
        runs_ended = TrialRuns(tracker)
        dead = stale.DeadTrials(study, storage, runs_ended.end)
        runs_ended.end_orphans(study)  # both trials RUNNING: nothing to end yet
        assert [client.get_run(r).info.status for r in runs] == ["RUNNING", "RUNNING"]

        why = "TerminatedWorkerError: a worker was killed"
        dead.stop(trials, why)
        assert states(study) == ["FAIL", "FAIL"]
        assert all("TerminatedWorkerError" in t.user_attrs["error"] for t in study.trials)
        ended, alive = (client.get_run(r) for r in runs)
        assert ended.info.status == "KILLED"
        assert ended.data.tags["error"] == f"the sweep stopped: {why}"
        assert alive.info.status == "RUNNING"  # waited for, then left to its job

        live.kill()
        live.wait()  # ... which died too, before it could end its run
        TrialRuns(tracker).end_orphans(study)  # the next command
        late = client.get_run(runs[1])
        assert late.info.status == "KILLED"
        assert late.data.tags["error"].startswith("its job process died; the trial is FAIL")
    finally:
        live.kill()
        live.wait()
