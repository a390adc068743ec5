"""Batch launching vs async workers on SLURM, for trials of uneven length.

    python benchmarks/cluster.py                  # 8 trials of 1-3 epochs, 2 at once
    python benchmarks/cluster.py --repeats 3      # batch, async, batch, ... ; medians

A throwaway single-node SLURM cluster starts on this machine (tests/slurm.py: slurmctld,
slurmd and munged on 127.0.0.1, stopped by PID at the end), and both sides run the same
eva study of --trials trials whose `epochs` are drawn from 1, 2, 3, two at a time:
  batch: python train.py -m ... hydra/launcher=slurm_cpu hydra.sweeper.n_jobs=2
         (hydra-submitit-launcher: each trial a SLURM job; a batch waits for its slowest)
  async: eva-sweep --workers 2 --launcher slurm_cpu ...
         (each worker a SLURM job that asks for its next trial as soon as its last ends)
each in a fresh temporary folder (own mlflow.db, optuna.log, multirun/). Measured: wall
time, and idle worker-seconds: 2 x wall time minus the time trials held their MLflow run
open (so a job's start-up counts as idle, as it would for its GPU). After each side the
study must hold exactly --trials COMPLETE trials, else the script stops with one line.
The JSON's "ratio" is batch's wall time over async's: > 1 when async finishes sooner.
"""

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import REPO, alternate, command_line, emit, median, parser, publish, table

TRAIN = REPO / "train.py"
AT_ONCE = 2  # trials (SLURM jobs) at once: this machine's cores, one each
SIDES = {
    "batch": "`train.py -m hydra/launcher=slurm_cpu hydra.sweeper.n_jobs=2`",
    "async": "`eva-sweep --workers 2 --launcher slurm_cpu`",
}


def study_overrides(trials: int, train_size: int) -> list[str]:
    return [
        "hparams_search=optuna",
        "hydra/sweeper/pruner=none",  # every trial trains all its epochs
        f"hydra.sweeper.n_trials={trials}",
        "hydra.sweeper.sampler.seed=1",
        "epochs=choice(1, 2, 3)",  # uneven trials
        "model=session6",
        "model.channels=[8,16,16,16]",
        "dataset=synthetic",
        f"dataset.train_size={train_size}",
        "dataset.test_size=256",
        "progress=false",
        "report.enabled=false",
        "tracking.log_model=false",
        "threads=1",
        "hydra.launcher.cpus_per_task=1",
    ]


def side_command(side: str, overrides: list[str], python: str = sys.executable) -> list[str]:
    if side == "batch":
        launcher = ["hydra/launcher=slurm_cpu", f"hydra.sweeper.n_jobs={AT_ONCE}"]
        return [python, str(TRAIN), "-m", *overrides, *launcher]
    if side == "async":
        workers = [f"--workers={AT_ONCE}", "--launcher=slurm_cpu", f"--train={TRAIN}"]
        return [python, "-m", "eva.sweep.workers", *workers, *overrides]
    raise ValueError(f"side {side!r}: expected one of {', '.join(SIDES)}")


def busy_seconds(folder: Path) -> tuple[float, int]:
    """(seconds the trials' MLflow runs were open, COMPLETE trials) of folder's study."""
    import optuna
    from mlflow import MlflowClient

    from evasweep.storage import open_storage

    storage = open_storage(f"journal:///{folder / 'optuna.log'}")
    (name,) = optuna.get_all_study_names(storage)
    study = optuna.load_study(study_name=name, storage=storage)
    complete = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    client = MlflowClient(f"sqlite:///{folder / 'mlflow.db'}")
    busy = 0.0
    for trial in complete:
        run = client.get_run(trial.user_attrs["mlflow_run_id"]).info
        busy += (run.end_time - run.start_time) / 1000
    return busy, len(complete)


def run_side(side: str, trials: int, train_size: int) -> dict:
    folder = Path(tempfile.mkdtemp(prefix=f"eva-cluster-{side}-"))
    overrides = study_overrides(trials, train_size)
    overrides.append(f"tracking.uri=sqlite:///{folder / 'mlflow.db'}")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("EVA_", "EVASWEEP_"))}
    env.pop("MLFLOW_TRACKING_URI", None)
    log = folder / "sweep.log"
    started = time.perf_counter()
    with open(log, "w") as out:
        rc = subprocess.run(
            side_command(side, overrides), cwd=folder, env=env, stdout=out, stderr=out
        ).returncode
    wall = time.perf_counter() - started
    busy, done = busy_seconds(folder) if rc == 0 else (0.0, None)
    if done != trials:
        sys.exit(f"{side}: exit {rc}, {done} of {trials} trials COMPLETE; see {log}")
    shutil.rmtree(folder)
    return {"wall": wall, "idle": AT_ONCE * wall - busy}


def main(argv: list[str] | None = None) -> dict:
    p = parser(__doc__.splitlines()[0], quick=True)
    p.add_argument("--repeats", type=int, default=1, help="runs of each side, alternated")
    p.add_argument("--trials", type=int, default=8)
    p.add_argument("--train-size", type=int, default=6144, help="synthetic images per epoch")
    args = p.parse_args(argv)
    trials = 4 if args.quick else args.trials
    sys.path.insert(0, str(REPO / "tests"))  # the throwaway cluster of the test suite
    from slurm import slurm_unavailable, start_slurm

    if (why := slurm_unavailable()) is not None:
        sys.exit(f"no SLURM cluster can start here: {why}")
    cluster = start_slurm()
    os.environ.update(cluster.env)
    try:
        runs = {side: [] for side in SIDES}

        def side(name: str):
            def run() -> float:
                runs[name].append(run_side(name, trials, args.train_size))
                return runs[name][-1]["wall"]

            return run

        alternate({name: side(name) for name in SIDES}, args.repeats, warmup=0)
    finally:
        cluster.stop()
    wall = {s: median([r["wall"] for r in runs[s]]) for s in SIDES}
    idle = {s: median([r["idle"] for r in runs[s]]) for s in SIDES}
    rows = [[SIDES[s], f"{wall[s]:.1f} s", f"{idle[s]:.1f} s"] for s in SIDES]
    markdown = table(
        [f"{trials} trials of 1-3 epochs, 2 at once", "wall time", "idle worker-seconds"], rows
    )
    print(markdown)
    if args.publish:
        publish("scaling.md", "cluster-async", markdown, command_line(__file__, argv))
    return emit(
        {
            "trials": trials,
            "wall": wall,
            "idle": idle,
            "runs": runs,
            "ratio": wall["batch"] / wall["async"],
        }
    )


if __name__ == "__main__":
    main()
