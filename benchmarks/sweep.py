"""Wall time of one tiny Optuna sweep on a 2-core CPU: 2 workers x 1 thread vs 1 worker x 2.

    python benchmarks/sweep.py                     # 8 trials of session6, 1 epoch each
    python benchmarks/sweep.py --repeats 3         # A, B, A, B, A, B; medians

A: `eva-sweep --workers 2 ... threads=1`: two worker processes, one torch thread each.
B: `python train.py -m ... threads=2`: one process, its trials one after another.
Both run the same study (hparams_search=optuna, the pruner off so every trial trains its
epoch), each in a fresh temporary folder of its own: own mlflow.db, optuna.log and multirun/,
with output going to sweep.log there. Creating MLflow's sqlite store takes seconds; both
sides pay it. The JSON's "ratio" is B's wall time over A's: > 1 when two 1-thread workers
finish the study sooner than one 2-thread process. After each side the study must hold
exactly --trials COMPLETE trials, else the script stops with one line and keeps the folder.
Data: Fashion-MNIST from $EVA_DATA (else data/ in the checkout); `dataset=synthetic` when
eva cannot load it from there without downloading.
"""

import os
import resource
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import REPO, alternate, command_line, emit, machine, median, parser, publish, table

TRAIN = REPO / "train.py"
WORKERS = 2  # side A's processes; side B uses as many threads in one process
SIDES = {  # JSON key -> how it is shown
    "two_workers": f"eva-sweep, {WORKERS} workers x 1 thread",
    "one_worker": f"train.py -m, 1 worker x {WORKERS} threads",
}
# Environment of a sweep eva itself may have set (when this runs inside a job): not passed on.
KEEP_ENV = ("EVA_DATA",)
DROP_ENV = ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_NAME", "MLFLOW_RUN_ID")


def data_root() -> Path:
    """Where the jobs look for data: $EVA_DATA, else data/ in the checkout (absolute, since
    the jobs run in a temporary folder)."""
    return Path(os.environ.get("EVA_DATA") or REPO / "data").expanduser().absolute()


def fashion_mnist_missing(root: Path) -> str | None:
    """None when eva loads Fashion-MNIST from root without a download, else why not.

    Loading it here also unpacks the Debian copy once, so neither side pays for that.
    """
    from eva.data.datasets import fashion_mnist
    from eva.errors import EvaError

    try:
        for train in (True, False):
            fashion_mnist(train, root, download=False)
    except (EvaError, OSError) as e:
        return str(e).splitlines()[0]
    return None


def data_overrides(dataset: str, root: Path, train_subset: int, test_subset: int) -> list[str]:
    if dataset == "synthetic":  # generated: its sizes are the sizes
        return [
            "dataset=synthetic",
            f"dataset.train_size={train_subset}",
            f"dataset.test_size={test_subset}",
        ]
    return [
        f"dataset={dataset}",
        f"dataset.root={root}",
        f"dataset.train_subset={train_subset}",
        f"dataset.test_subset={test_subset}",
    ]


def sweep_overrides(trials: int, data: list[str]) -> list[str]:
    """What both sides train: a tiny study of `trials` one-epoch trials."""
    return [
        "hparams_search=optuna",
        "hydra/sweeper/pruner=none",  # a pruned trial is not COMPLETE and trains less
        f"hydra.sweeper.n_trials={trials}",
        "model=session6",
        *data,
        "epochs=1",
        "progress=false",
        "report.enabled=false",
        "tracking.log_model=false",
    ]


def side_command(side: str, overrides: list[str], python: str = sys.executable) -> list[str]:
    """The command of one side. eva-sweep runs as `python -m eva.sweep.workers` (what the
    eva-sweep script runs) so that both sides use this interpreter and this checkout."""
    if side == "two_workers":
        launcher = ["-m", "eva.sweep.workers", f"--workers={WORKERS}", f"--train={TRAIN}"]
        return [python, *launcher, *overrides, "threads=1"]
    if side == "one_worker":
        return [python, str(TRAIN), "-m", *overrides, f"threads={WORKERS}"]
    raise ValueError(f"side {side!r}: expected one of {', '.join(SIDES)}")


def shown(command: list[str]) -> str:
    """A command as people type it: `eva-sweep` / `python train.py`, shared overrides elided."""
    if command[1:3] == ["-m", "eva.sweep.workers"]:
        return f"eva-sweep {command[3]} ... {command[-1]}"
    return f"python train.py -m ... {command[-1]}"


def shown_overrides(overrides: list[str]) -> list[str]:
    """The overrides as the docs show them: the data folder of this machine as <root>."""
    return ["dataset.root=<root>" if o.startswith("dataset.root=") else o for o in overrides]


def child_env() -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in DROP_ENV and (not key.startswith("EVA_") or key in KEEP_ENV)
    }
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    return env


def children_cpu() -> float:
    """CPU seconds (user + system) of all waited-for child processes so far."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def machine_busy() -> float | None:
    """CPU seconds all processes on this machine have used since boot (from /proc/stat:
    everything but idle and iowait, steal included); None where there is no /proc/stat."""
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    except OSError:
        return None
    ticks = [int(f) for f in fields[:8]]  # user nice system idle iowait irq softirq steal
    return (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")


def study_summary(folder: Path) -> dict:
    """The one study in folder/optuna.log: trials by state, and how many processes trained
    its COMPLETE trials (user attribute job_process, set by eva for each job)."""
    import optuna

    from evasweep.storage import open_storage

    storage = open_storage(f"journal:///{folder / 'optuna.log'}")
    names = optuna.get_all_study_names(storage)
    if len(names) != 1:
        raise RuntimeError(f"{folder / 'optuna.log'} holds {len(names)} studies, expected 1")
    study = optuna.load_study(study_name=names[0], storage=storage)
    states: dict[str, int] = {}
    processes = set()
    for trial in study.get_trials(deepcopy=False):
        states[trial.state.name] = states.get(trial.state.name, 0) + 1
        job = trial.user_attrs.get("job_process")
        if trial.state.name == "COMPLETE" and isinstance(job, dict):
            processes.add((job.get("host"), job.get("pid")))
    return {"study": names[0], "states": states, "processes": len(processes)}


def logged_threads(folder: Path) -> list[str]:
    """The distinct `threads` params of the trials' MLflow runs in folder/mlflow.db."""
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{folder / 'mlflow.db'}")
    experiments = [e.experiment_id for e in client.search_experiments()]
    runs = client.search_runs(experiments, "tags.mlflow.parentRunId != ''", max_results=1000)
    return sorted({run.data.params.get("threads", "?") for run in runs})


def check(side: str, rc: int, summary: dict | None, trials: int, log: Path) -> str | None:
    """Why a side failed (one line), or None."""
    if rc != 0:
        return f"{SIDES[side]}: exit code {rc}; see {log}"
    complete = (summary or {}).get("states", {}).get("COMPLETE", 0)
    if complete != trials:
        states = (summary or {}).get("states")
        return f"{SIDES[side]}: {complete} COMPLETE trials, expected {trials} ({states}); see {log}"
    return None


def run_side(side: str, command: list[str], trials: int, keep: bool) -> dict:
    """Run one side in a fresh folder, output to its sweep.log; its measurements."""
    folder = Path(tempfile.mkdtemp(prefix=f"eva-bench-sweep-{side}-"))
    log = folder / "sweep.log"
    cpu_before, busy_before = children_cpu(), machine_busy()
    with open(log, "w") as out:
        out.write(f"$ {shlex.join(command)}\n")
        out.flush()
        start = time.perf_counter()
        rc = subprocess.call(
            command, cwd=folder, env=child_env(), stdout=out, stderr=subprocess.STDOUT
        )
        wall = time.perf_counter() - start
    cpu = children_cpu() - cpu_before
    busy = machine_busy()
    # CPU the rest of the machine took meanwhile (other users' jobs): > 0.2 cores is noise.
    others = None if busy is None else max(0.0, (busy - busy_before - cpu) / wall)
    summary, threads, problem = None, [], None
    try:
        summary = study_summary(folder) if rc == 0 else None
        threads = logged_threads(folder) if rc == 0 else []
    except Exception as e:  # no study, unreadable store: the side failed
        problem = f"{SIDES[side]}: cannot read its results ({type(e).__name__}: {e}); see {log}"
    problem = problem or check(side, rc, summary, trials, log)
    if problem:
        sys.exit(f"sweep.py: {problem}")  # the folder stays, for the log
    complete = summary["states"].get("COMPLETE", 0)
    print(
        f"  {SIDES[side]}: {wall:.1f} s, {complete}/{trials} COMPLETE, "
        f"{summary['processes']} process(es), cpu {cpu / wall:.2f} cores, threads={threads}"
        + (f", others took {others:.2f} cores" if others is not None else "")
        + (f", kept {folder}" if keep else ""),
        flush=True,
    )
    if not keep:
        shutil.rmtree(folder, ignore_errors=True)
    return {
        "wall": wall,
        "cpu_seconds": cpu,
        "others_cores": others,
        "complete": complete,
        "states": summary["states"],
        "processes": summary["processes"],
        "threads_logged": threads,
    }


def warm_caches() -> None:
    """Import what every job imports once, unmeasured, so the first side measured does not
    pay for reading torch, MLflow and Optuna from a cold disk."""
    subprocess.run(
        [sys.executable, "-c", "import torch, torchvision, mlflow, optuna, hydra, eva.cli"],
        env=child_env(),
        stdout=subprocess.DEVNULL,
        check=False,
    )


def summarize(runs: dict[str, list[dict]], trials: int) -> dict:
    """Medians over the repeats of each side, and the ratio B / A of their wall times."""
    wall = {side: median([r["wall"] for r in records]) for side, records in runs.items()}
    cpu = {  # cores used: median over the runs of CPU seconds / wall seconds
        side: median([r["cpu_seconds"] / r["wall"] for r in records])
        for side, records in runs.items()
    }
    return {
        "ratio": round(wall["one_worker"] / wall["two_workers"], 3),
        "two_workers_seconds": round(wall["two_workers"], 1),
        "one_worker_seconds": round(wall["one_worker"], 1),
        "two_workers_per_trial_seconds": round(wall["two_workers"] / trials, 2),
        "one_worker_per_trial_seconds": round(wall["one_worker"] / trials, 2),
        "two_workers_cpu_cores": round(cpu["two_workers"], 2),
        "one_worker_cpu_cores": round(cpu["one_worker"], 2),
        "two_workers_complete": [r["complete"] for r in runs["two_workers"]],
        "one_worker_complete": [r["complete"] for r in runs["one_worker"]],
        "two_workers_processes": [r["processes"] for r in runs["two_workers"]],
        "one_worker_processes": [r["processes"] for r in runs["one_worker"]],
        "two_workers_threads_logged": runs["two_workers"][-1]["threads_logged"],
        "one_worker_threads_logged": runs["one_worker"][-1]["threads_logged"],
        "two_workers_others_cores": others(runs["two_workers"]),
        "one_worker_others_cores": others(runs["one_worker"]),
        "trials": trials,
    }


def others(records: list[dict]) -> list[float | None]:
    """CPU cores other processes took during each run of a side (rounded)."""
    return [None if r["others_cores"] is None else round(r["others_cores"], 2) for r in records]


def main(argv: list[str] | None = None) -> dict:
    p = parser(__doc__.splitlines()[0], quick=False)
    p.add_argument("--trials", type=int, default=8, help="trials of the study (default 8)")
    p.add_argument("--repeats", type=int, default=1, help="runs of each side, alternated")
    p.add_argument("--train-subset", type=int, default=2000, help="training images per trial")
    p.add_argument("--test-subset", type=int, default=1000, help="test images per trial")
    p.add_argument("--dataset", default="fashion_mnist", help="fashion_mnist | synthetic | ...")
    p.add_argument("--keep", action="store_true", help="keep each run's folder (and its log)")
    args = p.parse_args(argv)
    if args.trials < 1 or args.repeats < 1:
        p.error("--trials and --repeats must be at least 1")
    # --threads (from common.parser) would change what is compared: both sides set their own.
    if args.threads:
        p.error("--threads: each side sets its own (threads=1 per worker, threads=2 alone)")

    root = data_root()
    dataset, note = args.dataset, None
    if dataset == "fashion_mnist":
        why = fashion_mnist_missing(root)
        if why:
            dataset, note = "synthetic", f"Fashion-MNIST not loadable from {root} ({why})"
            print(f"note: {note}; using dataset=synthetic", flush=True)
    overrides = sweep_overrides(
        args.trials, data_overrides(dataset, root, args.train_subset, args.test_subset)
    )
    commands = {side: side_command(side, overrides) for side in SIDES}

    print(
        f"{args.trials} trials of 1 epoch, {dataset}, train {args.train_subset} / test "
        f"{args.test_subset} images, {args.repeats} run(s) per side; shared overrides:\n  "
        + " ".join(overrides),
        flush=True,
    )
    warm_caches()
    runs: dict[str, list[dict]] = {side: [] for side in SIDES}

    def side(name: str):
        def run() -> float:
            record = run_side(name, commands[name], args.trials, args.keep)
            runs[name].append(record)
            return record["wall"]

        return run

    alternate({name: side(name) for name in SIDES}, args.repeats, warmup=0)
    result = summarize(runs, args.trials)

    rows = []
    for name in SIDES:
        wall = result[f"{name}_seconds"]
        rows.append(
            [
                SIDES[name],
                f"`{shown(commands[name])}`",
                f"{wall:.1f}",
                f"{result[f'{name}_per_trial_seconds']:.2f}",
                "/".join(str(c) for c in result[f"{name}_complete"]) + f" of {args.trials}",
            ]
        )
    results = table(["how", "command", "wall s", "per trial s", "trials COMPLETE"], rows)
    print(f"\n{results}")
    busiest = max((c for side in SIDES for c in result[f"{side}_others_cores"] if c), default=0)
    noisy = f"other processes took up to {busiest:.2f} cores during a run: noisy"
    if busiest > 0.2:
        print(f"\nwarning: {noisy}")
    summary = (
        f"ratio = 1x{WORKERS} wall / {WORKERS}x1 wall = {result['ratio']:.2f} "
        f"(> 1: {WORKERS} one-thread workers are faster; medians of {args.repeats} run(s))"
    )
    print(f"\n{summary}")
    if args.publish:
        setup = (
            f"{args.trials} trials of 1 epoch, {dataset}, train {args.train_subset} / test "
            f"{args.test_subset} images, {args.repeats} run(s) per side; shared overrides: "
            f"`{' '.join(shown_overrides(overrides))}`"
        )
        parts = [setup + ".", results, summary + "."]
        parts += [f"Warning: {noisy}."] if busiest > 0.2 else []
        markdown = "\n\n".join(parts)
        publish("sweeps.md", "sweep-workers", markdown, command_line(__file__, argv))
    result.update(
        dataset=dataset,
        train_subset=args.train_subset,
        test_subset=args.test_subset,
        repeats=args.repeats,
        note=note,
        machine=machine(),
    )
    return emit(result)


if __name__ == "__main__":
    main()
