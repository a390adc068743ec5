"""Async workers as jobs of an engine: SLURM (or submitit's local executor) and Ray.

    evasweep --workers 8 --launcher submitit_slurm --train app.py hydra.sweeper.n_trials=64
    eva-sweep --workers 8 --launcher slurm_gpu hparams_search=optuna

A Hydra launcher runs a batch of trials and waits for the slowest; here each worker is one
job of the engine (a SLURM job, a Ray task) that runs the app's sweep command as a worker
of evasweep.workers: it asks for its next trial as soon as its last one ends, and all
share one study. `--launcher` names a hydra/launcher option of the app, a plugin's own
(submitit_slurm, submitit_local, ray) or the app's preset (eva's slurm_gpu, ray_gpu): its
config says what each worker asks of the engine (GPUs, cores, time, partition). Inside
its job a worker runs its trials one after another (hydra/launcher=basic) on what the
engine gave it. The sweep folder must be on a file system the jobs share, as submitit's
own folder must.
"""

import os
import subprocess
import sys
from pathlib import Path

from evasweep.errors import SweepError

# The keys of hydra-submitit-launcher's config that submitit takes as they are; the others
# are the cluster's own and take its prefix (slurm_partition, ...).
SUBMITIT_SHARED = (
    "timeout_min",
    "cpus_per_task",
    "gpus_per_node",
    "tasks_per_node",
    "mem_gb",
    "nodes",
    "name",
    "stderr_to_stdout",
)


def run_worker(command: list[str], env: dict[str, str], cwd: str) -> int:
    """What each engine job runs: the app's sweep command as one worker."""
    proc = subprocess.run(command, env={**os.environ, **env}, cwd=cwd)
    return proc.returncode


def is_launcher_override(override: str) -> bool:
    """hydra.launcher.x=... and the like: the engine's, not the worker command's."""
    return override.lstrip("+~").startswith(("hydra.launcher", "hydra/launcher"))


def launcher_config(app: list[str], name: str, overrides: list[str], sweep_dir: str):
    """(the app's hydra/launcher=name config, the sweep dir), resolved as for its jobs:
    composed by the app itself (`--cfg all --resolve`, nothing runs) with the command's
    overrides that are not sweeps, so the app's keys in its sweep dir (eva: ${name})
    resolve as in the workers."""
    import yaml
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides(overrides)
    fixed = [line for line, o in zip(overrides, parsed, strict=True) if not o.is_sweep_override()]
    fixed = [o for o in fixed if not o.startswith("hydra.sweep.dir=")]
    job_name = app[2] if app[1] == "-m" else Path(app[1]).stem  # [python, -m, pkg | app.py]
    command = [
        *app,
        *fixed,
        f"hydra/launcher={name}",
        f"hydra.sweep.dir={sweep_dir}",
        f"hydra.job.name={job_name}",  # Hydra sets it when a job starts: submitit's job name
        *("--cfg", "all", "--resolve"),
    ]
    proc = subprocess.run(command, capture_output=True, text=True)
    if proc.returncode != 0:
        lines = [line for line in (proc.stderr or proc.stdout).splitlines() if line.strip()]
        why = lines[-1].removeprefix("Error: ") if lines else f"exit {proc.returncode}"
        raise SweepError(f"--launcher={name}: the app refuses it ({why})")
    hydra_cfg = yaml.safe_load(proc.stdout)["hydra"]
    return hydra_cfg["launcher"], hydra_cfg["sweep"]["dir"]


def open_engine(config: dict, name: str):
    target = str(config.get("_target_", ""))
    kind = target.rsplit(".", 1)[-1]
    if kind in ("SlurmLauncher", "LocalLauncher"):
        return SubmititEngine(config, "slurm" if kind == "SlurmLauncher" else "local")
    if kind == "RayLauncher":
        return RayEngine(config)
    raise SweepError(
        f"--launcher={name}: its _target_ {target} is not a submitit or Ray launcher; "
        "async workers run on submitit_slurm, submitit_local, ray or a preset of them"
    )


class SubmititEngine:
    """Workers as submitit jobs: one SLURM job each (its own GPUs), or local processes."""

    def __init__(self, config: dict, cluster: str):
        import submitit

        self.cluster = cluster
        self.placed = cluster == "slurm"  # SLURM gives each job its own devices
        params = {k: v for k, v in config.items() if k not in ("_target_", "submitit_folder")}
        init = {}
        if "max_num_timeout" in params:
            init[f"{cluster}_max_num_timeout"] = params.pop("max_num_timeout")
        self.folder = str(config["submitit_folder"])
        self.executor = submitit.AutoExecutor(folder=self.folder, cluster=cluster, **init)
        self.executor.update_parameters(
            **{k if k in SUBMITIT_SHARED else f"{cluster}_{k}": v for k, v in params.items()}
        )

    def start(self, index: int, command: list[str], env: dict, cwd: str):
        job = self.executor.submit(run_worker, command, env, cwd)
        where = f"SLURM job {job.job_id}" if self.cluster == "slurm" else f"job {job.job_id}"
        print(f"worker {index}: {where}, log {job.paths.stdout}", file=sys.stderr, flush=True)
        return job

    def running(self, job) -> bool:
        return not job.done()

    def wait(self, job) -> int:
        try:
            return int(job.result())
        except Exception as e:  # killed, cancelled, timed out: submitit says which
            print(f"worker job {job.job_id}: {str(e).splitlines()[0]}", file=sys.stderr)
            return 1

    def cancel(self, job) -> None:
        if not job.done():
            job.cancel(check=False)  # SIGTERM: the worker stops as after Ctrl-C

    def close(self) -> None:
        pass


class RayEngine:
    """Workers as Ray tasks, placed by the launcher config's ray.remote (num_gpus, ...)."""

    placed = True  # Ray sets each task's CUDA_VISIBLE_DEVICES to the GPUs it placed it on

    def __init__(self, config: dict):
        import ray

        self.ray = ray
        ray_cfg = config.get("ray") or {}
        init = {k: v for k, v in (ray_cfg.get("init") or {}).items() if v is not None}
        if not ray.is_initialized():
            ray.init(**init)
        self.remote = ray.remote(**(ray_cfg.get("remote") or {}))(run_worker)

    def start(self, index: int, command: list[str], env: dict, cwd: str):
        ref = self.remote.remote(command, env, cwd)
        print(f"worker {index}: Ray task {ref.task_id().hex()}", file=sys.stderr, flush=True)
        return ref

    def running(self, ref) -> bool:
        done, _ = self.ray.wait([ref], timeout=0)
        return not done

    def wait(self, ref) -> int:
        try:
            return int(self.ray.get(ref))
        except Exception as e:  # the task's worker died, or it was cancelled
            print(f"worker task: {type(e).__name__}: {str(e).splitlines()[0]}", file=sys.stderr)
            return 1

    def cancel(self, ref) -> None:
        self.ray.cancel(ref)  # KeyboardInterrupt in the task: the worker stops

    def close(self) -> None:
        self.ray.shutdown()
