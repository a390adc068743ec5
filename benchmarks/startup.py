"""Start-up: seconds from `python train.py ...` to its first training batch.

Each launch is a fresh process, as a user types it, in a temporary folder. The number is
the run's own `startup_seconds` (results.json): from the OS starting the process (Python's
own start-up included, /proc/self/stat) to the first batch in the training loop's hands.
With MLflow on (the default) the first launch in a folder also creates mlflow.db (seconds,
once); later launches find it. `--help` and `--cfg job` are timed as whole commands.

    python benchmarks/startup.py --quick      # < 1 minute; the figure is seconds_to_first_batch
"""

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import REPO, emit, machine, median, parser, table


def fashion_mnist_here() -> bool:
    raw = Path(os.environ.get("EVA_DATA", "data")) / "FashionMNIST" / "raw"
    return raw.is_dir() or Path("/usr/share/datasets/fashion-mnist").is_dir()


def launch(args: list[str], cwd: Path) -> tuple[float, subprocess.CompletedProcess]:
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, str(REPO / "train.py"), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
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


def main(argv: list[str] | None = None) -> dict:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--dataset", help="fashion_mnist (default when on disk) or synthetic")
    p.add_argument("--model", default="session6")
    p.add_argument("--repeats", type=int, help="launches per variant")
    args = p.parse_args(argv)
    repeats = args.repeats or (3 if args.quick else 5)  # launches of the headline row
    others = max(1, repeats - 1)  # of every other row
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
    cwd = Path(tempfile.mkdtemp(prefix="eva-startup-"))

    rows, measured = [], {}
    creating, wall = first_batch(run_args, cwd, "first")  # creates mlflow.db in cwd
    rows.append(["first launch here (creates mlflow.db)", f"{creating:.2f}", f"{wall:.1f}"])
    for label, extra, key in [
        ("MLflow on (store exists): the default", [], "tracking"),
        ("tracking.enabled=false", ["tracking.enabled=false"], "no_tracking"),
    ]:
        n = repeats if key == "tracking" else others
        runs = [first_batch([*run_args, *extra], cwd, f"{key}{i}") for i in range(n)]
        measured[key] = median([s for s, _ in runs])
        every = " ".join(f"{s:.2f}" for s, _ in runs)
        rows.append(
            [label, f"{measured[key]:.2f} ({every})", f"{median([w for _, w in runs]):.1f}"]
        )
    plain = [plain_first_batch(cwd) for _ in range(others)]
    measured["plain"] = median(plain)
    every = " ".join(f"{s:.2f}" for s in plain)
    rows.append(["plain PyTorch script (the floor)", f"{measured['plain']:.2f} ({every})", ""])
    for flag in ("--help", "--cfg job"):
        walls = [launch(flag.split(), cwd)[0] for _ in range(others)]
        measured[flag] = median(walls)
        rows.append([f"train.py {flag}", "", f"{measured[flag]:.2f}"])

    print(
        f"train.py {' '.join(run_args)}\nmedians of {repeats} launches for the default, "
        f"{others} for the other rows, 1 for the first launch"
    )
    print(table(["command", "first batch after (s)", "whole command (s)"], rows))
    return emit(
        {
            "benchmark": "startup",
            "seconds_to_first_batch": round(measured["tracking"], 3),
            "seconds_to_first_batch_no_tracking": round(measured["no_tracking"], 3),
            "seconds_to_first_batch_creating_store": round(creating, 3),
            "plain_pytorch_seconds_to_first_batch": round(measured["plain"], 3),
            "help_seconds": round(measured["--help"], 3),
            "cfg_job_seconds": round(measured["--cfg job"], 3),
            "dataset": dataset,
            "model": args.model,
            **machine(),
        }
    )


if __name__ == "__main__":
    main()
