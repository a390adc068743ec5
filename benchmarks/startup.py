"""Start-up: seconds from `python train.py ...` to its first training batch.

Also for a 1-trial Optuna sweep (`-m hparams_search=optuna`), whose first trial runs in the
launching process: what a sweep adds before its first batch (composing the search space's
probes, opening the study and the MLflow parent run).

Each launch is a fresh process, as a user types it, in a temporary folder. The number is
the run's own `startup_seconds` (results.json): from the OS starting the process (Python's
own start-up included, /proc/self/stat) to the first batch in the training loop's hands.
With MLflow on (the default) the first launch in a folder also creates mlflow.db (seconds,
once); later launches find it. `--help` and `--cfg job` are timed as whole commands.

    python benchmarks/startup.py --quick      # < 1 minute; the figure is seconds_to_first_batch
"""

import itertools
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import REPO, alternate, command_line, emit, machine, median, parser, publish, table


def fashion_mnist_here() -> bool:
    raw = Path(os.environ.get("EVA_DATA", "data")) / "FashionMNIST" / "raw"
    return raw.is_dir() or Path("/usr/share/datasets/fashion-mnist").is_dir()


def launch(args: list[str], cwd: Path) -> tuple[float, subprocess.CompletedProcess]:
    # The default store (cwd/mlflow.db), whatever MLFLOW_TRACKING_URI says here.
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, str(REPO / "train.py"), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        env=env,
    )
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["(no output)"]
        sys.exit(f"startup: `train.py {' '.join(args)}` failed: {tail[0]}")
    return seconds, done


# The floor: the least a PyTorch script does before its first batch, timed the same way.
PLAIN = """
import time, numpy as np, torch, torch.nn.functional as F
from eva.engine.timing import seconds_since_launch
from eva.models.session6 import Session6Net
x = torch.from_numpy(np.random.default_rng(0).random((512, 1, 28, 28), np.float32))
y = torch.randint(0, 10, (512,))
model = Session6Net(in_channels=1)
opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)  # imports torch._dynamo
print(seconds_since_launch())  # the first batch is in hand
loss = F.cross_entropy(model(x[:128]), y[:128])
loss.backward()
opt.step()
"""


def plain_first_batch(cwd: Path) -> float:
    done = subprocess.run(
        [sys.executable, "-c", PLAIN],
        cwd=cwd,
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    return float(done.stdout.split()[0])


def first_batch(run_args: list[str], cwd: Path, name: str) -> tuple[float, float]:
    """(seconds to the first training batch, wall seconds of the whole command)."""
    run_dir = cwd / "runs" / name
    wall, _ = launch([*run_args, f"hydra.run.dir={run_dir}"], cwd)
    results = json.loads((run_dir / "results.json").read_text())
    return results["startup_seconds"], wall


def sweep_first_batch(run_args: list[str], cwd: Path, name: str) -> tuple[float, float]:
    """The same for a 1-trial Optuna sweep (a new study each time, in the same store and
    study file): its first trial is the process's first job, timed from the launch."""
    sweep_dir = cwd / "sweeps" / name
    wall, _ = launch(
        [
            "-m",
            "hparams_search=optuna",
            "hydra/sweeper/pruner=none",
            "hydra.sweeper.n_trials=1",
            f"hydra.sweeper.study_name={name}",
            *run_args,
            f"hydra.sweep.dir={sweep_dir}",
        ],
        cwd,
    )
    results = json.loads((sweep_dir / "0" / "results.json").read_text())
    return results["startup_seconds"], wall


def measure(run_args: list[str], cwd: Path, repeats: int, others: int) -> tuple[list, dict]:
    """The table's rows and {kind: median seconds} of launches in `cwd`."""
    rows, measured = [], {}
    creating, wall = first_batch(run_args, cwd, "first")  # creates mlflow.db in cwd
    rows.append(["first launch here (creates mlflow.db)", f"{creating:.2f}", "", f"{wall:.1f}"])
    measured["creating"] = creating
    # The kinds of launch alternate (eva, eva without MLflow, a sweep, plain, eva, ...), so a
    # slow minute of this shared machine weighs on all of them; ratios are of the medians.
    walls: dict[str, list[float]] = {"tracking": [], "no_tracking": [], "sweep": []}
    launches = itertools.count()  # a run folder per launch

    def eva(extra: list[str], key: str, how=first_batch):
        def run() -> float:
            seconds, wall = how([*run_args, *extra], cwd, f"{key}{next(launches)}")
            walls[key].append(wall)
            return seconds

        return run

    times = alternate(
        {
            "tracking": eva([], "tracking"),
            "no_tracking": eva(["tracking.enabled=false"], "no_tracking"),
            "sweep": eva([], "sweep", sweep_first_batch),
            "plain": lambda: plain_first_batch(cwd),
        },
        repeats=repeats,
        warmup=0,  # the first launch above warmed the file cache
    )
    measured.update({key: median(values) for key, values in times.items()})
    for label, key in [
        ("MLflow on (store exists): the default", "tracking"),
        ("tracking.enabled=false", "no_tracking"),
        ("-m hparams_search=optuna, 1 trial (store exists)", "sweep"),
        ("plain PyTorch script (the floor)", "plain"),
    ]:
        every = " ".join(f"{s:.2f}" for s in times[key])
        ratio = f"{measured[key] / measured['plain']:.2f}"
        wall = f"{median(walls[key]):.1f}" if key in walls else ""
        rows.append([label, f"{measured[key]:.2f} ({every})", ratio, wall])
    for flag in ("--help", "--cfg job"):
        whole = [launch(flag.split(), cwd)[0] for _ in range(others)]
        measured[flag] = median(whole)
        rows.append([f"train.py {flag}", "", "", f"{measured[flag]:.2f}"])

    return rows, measured


def main(argv: list[str] | None = None) -> dict:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--dataset", help="fashion_mnist (default when on disk) or synthetic")
    p.add_argument("--model", default="session6")
    p.add_argument("--repeats", type=int, help="launches per variant")
    args = p.parse_args(argv)
    repeats = args.repeats or (3 if args.quick else 5)  # launches of each alternated kind
    others = max(1, repeats - 1)  # of --help and --cfg job
    dataset = args.dataset or ("fashion_mnist" if fashion_mnist_here() else "synthetic")
    run_args = [
        f"model={args.model}",
        f"dataset={dataset}",
        "epochs=1",
        "progress=false",
        "report.enabled=false",
        "tracking.log_model=false",
        "tracking.log_checkpoint=false",
    ]
    if dataset != "synthetic":
        run_args += ["dataset.train_subset=512", "dataset.test_subset=256"]
    if args.threads:
        run_args.append(f"threads={args.threads}")
    with tempfile.TemporaryDirectory(prefix="eva-startup-") as cwd:
        rows, measured = measure(run_args, Path(cwd), repeats, others)
    launched = f"train.py {' '.join(run_args)}"
    counts = (
        f"medians of {repeats} alternated launches of each kind, {others} of --help and "
        "--cfg job, 1 for the first launch"
    )
    headers = ["command", "first batch after (s)", "÷ plain", "whole command (s)"]
    results = table(headers, rows)
    print(launched, counts, results, sep="\n")
    if args.publish:
        markdown = f"Each launch: `python {launched}`; {counts}.\n\n{results}"
        publish("performance.md", "startup", markdown, command_line(__file__, argv))
    return emit(
        {
            "benchmark": "startup",
            "seconds_to_first_batch": round(measured["tracking"], 3),
            "seconds_to_first_batch_no_tracking": round(measured["no_tracking"], 3),
            "seconds_to_first_batch_creating_store": round(measured["creating"], 3),
            "seconds_to_first_batch_sweep": round(measured["sweep"], 3),
            "sweep_minus_single_seconds": round(measured["sweep"] - measured["tracking"], 3),
            "plain_pytorch_seconds_to_first_batch": round(measured["plain"], 3),
            "ratio_to_plain": round(measured["tracking"] / measured["plain"], 3),
            "ratio_to_plain_no_tracking": round(measured["no_tracking"] / measured["plain"], 3),
            "help_seconds": round(measured["--help"], 3),
            "cfg_job_seconds": round(measured["--cfg job"], 3),
            "dataset": dataset,
            "model": args.model,
            **machine(),
        }
    )


if __name__ == "__main__":
    main()
