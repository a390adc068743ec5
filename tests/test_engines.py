"""eva's sweeps on the engines people run: SLURM (through hydra-submitit-launcher) and Ray
(hydra-ray-launcher), each a real cluster on this machine (tests/slurm.py,
tests/ray_cluster.py), and eva-sweep's async workers as SLURM jobs.

On both: 4 trials, 2 at once, reach the study's total with one MLflow parent and a FINISHED
child per trial; `kill -9` of the sweep's own process and the same command again complete
the study with no trial lost or run twice; a job that fails is a FAIL trial while the sweep
goes on. A SLURM job (and a job of submitit's local executor) outlives the killed sweep process: it
tells its result itself and its trial is not run again.

The clusters themselves come first: they do what the tests after them take for granted (SLURM
schedules single CPUs, submitit gets results and failures back, Ray runs a task in the
cluster's own processes). All of them sit in this one file so that `pytest -n` (--dist
loadfile) runs them in one worker, where each cluster starts once.
"""

import operator
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import yaml
from helpers import REPO, TINY_CLI, experiment_name, run_cli, runs_of
from sweep_checks import check_mlflow, check_study, load, running_with_run, wait_for

from evasweep.stale import JOB_ATTR
from evasweep.storage import open_storage

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux only")

SLOW = ["dataset.train_size=768", "dataset.train_subset=null", "epochs=2"]  # ~2 s a trial


# --------------------------------------------------------------------------- the clusters


def _wait(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"not within {timeout} s: {what}")
        time.sleep(0.2)


def test_slurm_runs_two_one_cpu_jobs_at_the_same_time(slurm_cluster, tmp_path):
    out = f"--output={tmp_path}/%j.out"
    jobs = [slurm_cluster.sbatch("--cpus-per-task=1", out, "--wrap", "sleep 4") for _ in "ab"]

    # The node has 2 CPUs: with CR_CPU both fit on it at once, instead of one after the other.
    _wait(lambda: set(jobs) <= set(slurm_cluster.squeue("RUNNING")), 10, "both jobs running")
    _wait(lambda: not set(jobs) & set(slurm_cluster.squeue()), 15, "both jobs finished")
    assert slurm_cluster.states(jobs) == {job: "COMPLETED" for job in jobs}
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(f"{job}.out" for job in jobs)


def _executor(folder: Path):
    import submitit

    executor = submitit.AutoExecutor(folder=folder, cluster="slurm")
    executor.update_parameters(timeout_min=5, slurm_partition="debug", cpus_per_task=1)
    return executor


def test_a_submitit_job_returns_its_result(slurm_cluster, tmp_path):
    # A function of the standard library: the job's Python imports it by name.
    job = _executor(tmp_path).submit(operator.mul, 6, 7)
    assert job.result() == 42

    # The job writes its result file before it exits, so SLURM may still call it RUNNING.
    def ended() -> bool:
        return slurm_cluster.states([job.job_id])[job.job_id] not in ("RUNNING", "COMPLETING")

    _wait(ended, 15, "SLURM sees the job ended")
    assert slurm_cluster.states([job.job_id]) == {job.job_id: "COMPLETED"}


def _job_python(folder: Path) -> list[int]:
    """PIDs of the Python processes that run submitit jobs out of `folder`."""
    pids = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            args = cmdline.read_bytes().split(b"\0")
        except OSError:
            continue
        # Not srun, whose arguments are the same command line after its own.
        python = Path(args[0].decode(errors="replace")).name.startswith("python")
        if python and b"submitit.core._submit" in args and str(folder).encode() in args:
            pids.append(int(cmdline.parent.name))
    return pids


def test_a_killed_submitit_job_raises_instead_of_hanging(slurm_cluster, tmp_path, monkeypatch):
    """Without accounting, sacct cannot say the job failed; the cluster's own sacct (squeue's
    view, tests/slurm.py) does, so result() raises as on a real cluster instead of waiting."""
    from submitit.core.utils import UncompletedJobError

    job = _executor(tmp_path).submit(time.sleep, 60)
    _wait(lambda: _job_python(tmp_path), 15, "the job's Python running")
    for pid in _job_python(tmp_path):
        os.kill(pid, signal.SIGKILL)

    # force_check: ask sacct now, not on submitit's back-off (2 s, 4, 8, 16 ...).
    _wait(lambda: job.done(force_check=True), 15, "submitit sees the job ended")
    # submitit gives a job that ended 15 s for its result file to show up (slow shared disks);
    # this disk is local.
    monkeypatch.setattr(job, "_results_timeout_s", 1)
    with pytest.raises(UncompletedJobError, match=r"has not produced any output \(state: FAILED"):
        job.result()


def test_a_ray_task_runs_in_the_local_cluster(ray_cluster):
    import ray

    ray.init(address=ray_cluster.address)
    try:

        @ray.remote(num_cpus=1)
        def session_of_worker(x: int) -> tuple[int, int]:
            return 2 * x, os.getsid(0)

        results = ray.get([session_of_worker.remote(x) for x in (1, 2)])
    finally:
        ray.shutdown()
    # The tasks ran in workers of the cluster started for the tests, not in this process.
    assert results == [(2, ray_cluster.sid), (4, ray_cluster.sid)]


# --------------------------------------------------------------------------- eva on them


def launcher_of(request) -> tuple[str, list[str]]:
    """(name, the launcher's overrides): one CPU per trial, so that 2 run at once here.
    local: submitit's local executor, a process per job on this machine."""
    if request.param == "local":
        return "local", ["hydra/launcher=submitit_local"]
    if request.param == "slurm":
        request.getfixturevalue("slurm_cluster")
        return "slurm", ["hydra/launcher=slurm_cpu", "hydra.launcher.cpus_per_task=1"]
    cluster = request.getfixturevalue("ray_cluster")
    return "ray", [
        "hydra/launcher=ray",
        f"hydra.launcher.ray.init.address={cluster.address}",
        "+hydra.launcher.ray.init.object_store_memory=null",  # as ray_gpu: joins a cluster
        "+hydra.launcher.ray.remote.num_cpus=1",
    ]


@pytest.fixture(params=["slurm", "ray", "local"])
def engine(request):
    """Every engine: SLURM, Ray and submitit's local executor."""
    return launcher_of(request)


@pytest.fixture(params=["slurm", "ray"])
def cluster(request):
    """The two clusters. submitit's local executor runs its jobs through the same launcher
    code as SLURM (hydra-submitit-launcher, another executor): the kill -9 test and the docs'
    commands cover it, and what differs for it, its GPU slots, is checked there."""
    return launcher_of(request)


def slots_of(tmp_path) -> set[tuple[str, str]]:
    """(EVA_SLOT, EVA_SLOTS) of every job the sweeps in tmp_path ran."""
    slots = set()
    for path in tmp_path.glob("multirun/*/*/*/.hydra/hydra.yaml"):
        env = yaml.safe_load(path.read_text())["hydra"]["job"]["env_set"]
        slots.add((env["EVA_SLOT"], env["EVA_SLOTS"]))
    return slots


def sweep_args(tmp_path, experiment: str, launcher: list[str], *extra: str) -> list[str]:
    return [
        "-m",
        "hparams_search=optuna",
        *TINY_CLI,
        f"tracking.experiment={experiment}",
        f"hydra.sweeper.storage={tmp_path / 'optuna.db'}",
        "hydra.sweeper.sampler.seed=3",
        "hydra.sweeper.n_trials=4",
        "hydra.sweeper.n_jobs=2",
        "threads=1",
        *launcher,
        *extra,
    ]


def start(args: list[str], tmp_path, log: str) -> subprocess.Popen:
    with open(tmp_path / log, "w") as out:
        return subprocess.Popen(
            [sys.executable, str(REPO / "train.py"), *args],
            cwd=tmp_path,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def test_kill_9_of_the_sweep_then_the_same_command_completes_it(engine, mlflow_store, tmp_path):
    name, launcher = engine
    experiment = experiment_name()
    args = sweep_args(tmp_path, experiment, launcher, *SLOW)
    first = start(args, tmp_path, "first.log")
    trials = wait_for(first, tmp_path, "first.log", lambda ts: len(running_with_run(ts)) == 2)
    batch = running_with_run(trials)
    os.kill(first.pid, signal.SIGKILL)
    assert first.wait(timeout=30) == -signal.SIGKILL
    assert all(t.user_attrs[JOB_ATTR]["pid"] != first.pid for t in batch)  # jobs of the engine

    again = run_cli(args, tmp_path)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    study = load(tmp_path)
    check_study(study, 4)  # the total, none RUNNING, no parameter set twice
    failed = [t for t in study.trials if t.state.name == "FAIL"]
    if name != "ray":  # its jobs outlived the sweep process and told their results
        assert failed == [], [t.user_attrs.get("error") for t in failed]
        assert [study.trials[t.number].state.name for t in batch] == ["COMPLETE"] * 2
    else:  # Ray ends the tasks of a driver that died: they may fail, and are replaced
        assert {t.number for t in failed} <= {t.number for t in batch}
    # A Ray task stopped with SIGTERM ends its own run KILLED ("interrupted"), unless it
    # went too fast for that and the sweep's next command ended it ("died").
    why = ("died", "interrupted (Ctrl-C or SIGTERM)") if name == "ray" else ("died",)
    check_mlflow(mlflow_store, experiment, study, failed, why)
    # GPU placement: SLURM and Ray give each job devices of its own (slot 0 of 1);
    # submitit's local executor runs the batch side by side here (slot k of 2)
    slots = slots_of(tmp_path)
    assert slots == ({("0", "2"), ("1", "2")} if name == "local" else {("0", "1")}), slots


def test_a_failing_job_is_a_fail_trial_and_the_sweep_goes_on(cluster, mlflow_store, tmp_path):
    name, launcher = cluster
    experiment = experiment_name()
    args = sweep_args(
        tmp_path,
        experiment,
        launcher,
        "hydra/sweeper/sampler=grid",
        "hydra.sweeper.params=null",
        "scheduler=constant",
        "optimizer.lr=choice(0.05, 1e12)",  # 1e12: the loss is NaN in the first epoch
        "seed=choice(1, 2)",
        "hydra.sweeper.n_trials=2",
        "hydra.sweeper.max_failure_rate=0.75",
    )
    r = run_cli(args, tmp_path)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    study = load(tmp_path)
    states = [t.state.name for t in study.trials]
    assert states.count("COMPLETE") == 2 and states.count("FAIL") >= 1  # this seed meets 1e12
    for trial in study.trials:
        assert (trial.state.name == "FAIL") == (trial.params["optimizer.lr"] == 1e12)
        if trial.state.name == "FAIL":
            assert "NonFiniteLoss" in trial.user_attrs["error"], trial.user_attrs["error"]
    assert slots_of(tmp_path) == {("0", "1")}  # a job of SLURM or Ray: devices of its own
    runs = runs_of(mlflow_store, experiment)
    (parent,) = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert parent.info.status == "FINISHED"
    status = {r.info.run_id: r.info.status for r in runs if r is not parent}
    for trial in study.trials:
        expected = "FINISHED" if trial.state.name == "COMPLETE" else "FAILED"
        assert status[trial.user_attrs["mlflow_run_id"]] == expected, trial.number


def test_eva_sweep_workers_run_as_jobs_of_the_engine(cluster, mlflow_store, tmp_path):
    """`eva-sweep --workers 2 --launcher slurm_cpu` (or ray): each worker a job of the
    engine that asks for its next trial as soon as its last ends; together they reach the
    total, under one parent run."""
    name, (choice, *launcher) = cluster
    experiment = experiment_name()
    args = sweep_args(tmp_path, experiment, launcher, *SLOW)
    args = [a for a in args if a not in ("-m", "hydra.sweeper.n_jobs=2")]
    workers = ["--workers=2", f"--launcher={choice.split('=', 1)[1]}"]
    r = subprocess.run(
        [sys.executable, "-m", "eva.sweep.workers", *workers, *args],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    job = {"slurm": "SLURM job", "ray": "Ray task"}[name]
    assert f"worker 0: {job}" in r.stderr and f"worker 1: {job}" in r.stderr, r.stderr
    study = load(tmp_path)
    check_study(study, 4)
    # each trial ran inside one of the 2 workers' jobs, one process each
    assert len({t.user_attrs[JOB_ATTR]["pid"] for t in study.trials}) == 2
    check_mlflow(mlflow_store, experiment, study, [])


DOC_COMMAND = re.compile(
    r"^python train\.py -m hparams_search=optuna hydra/launcher=submitit_.*$", re.MULTILINE
)


def test_the_submitit_commands_of_the_docs_work_as_written(slurm_cluster, tmp_path):
    commands = DOC_COMMAND.findall((REPO / "docs" / "scaling.md").read_text())
    launchers = [shlex.split(c)[4] for c in commands]
    assert launchers == ["hydra/launcher=submitit_local", "hydra/launcher=submitit_slurm"]
    for launcher, command in zip(launchers, commands, strict=True):
        folder = tmp_path / launcher.rsplit("_", 1)[1]
        folder.mkdir()
        r = run_cli(shlex.split(command)[2:], folder)  # python train.py: this clone's
        assert r.returncode == 0, command + "\n" + r.stdout[-2000:] + r.stderr[-2000:]
        storage = open_storage(f"journal:///{folder / 'optuna.log'}")  # the default
        (name,) = optuna.get_all_study_names(storage)
        study = optuna.load_study(study_name=name, storage=storage)
        assert [t.state.name for t in study.trials] == ["COMPLETE"] * 4, launcher
