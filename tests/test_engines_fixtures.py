"""The throwaway clusters the launcher tests run on (tests/slurm.py, tests/ray_cluster.py) do
what those tests will take for granted: SLURM schedules single CPUs and submitit gets results
and failures back; Ray runs a task in the cluster's own processes."""

import operator
import os
import signal
import time
from pathlib import Path

import pytest


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
