"""README's results table: train every model on Fashion-MNIST, read the runs back from MLflow.

    python benchmarks/results.py                      # run all rows (~42 min on 2 CPU cores), print
    python benchmarks/results.py --rows session6      # only some rows
    python benchmarks/results.py --seeds 1 2 3        # each row once per seed: mean ± std
    python benchmarks/results.py --read-only          # print the table from the runs on record
    python benchmarks/results.py --read-only --publish    # ... and write it into docs/results.md

Each row is one `python train.py ...` command, run as a user would type it, plus where to
record: its own MLflow experiment (`--experiment`, default fashion-mnist-results) in
`--uri` (default sqlite:///mlflow.db in the working directory), run name = row name.
Every number printed comes back from MLflow (the newest FINISHED run of each row name and
seed; a row run with several seeds shows the mean ± sample std over them), so the table in
the docs is what the runs recorded, never typed in by hand. `--publish` writes
it into the block `results` of docs/results.md, dated by the days the runs started, with
each command as a user of the package types it (`python -m eva ...`).
"""

import datetime
import math
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from common import REPO, command_line, emit, machine, parser, publish, table


@dataclass(frozen=True)
class Row:
    name: str  # MLflow run name and output folder
    model: str  # what the table calls it
    args: tuple[str, ...]  # what follows `python train.py`
    tiny: tuple[str, ...] = ()  # --quick: the net shrunk as well


FM = ("dataset=fashion_mnist",)
# The ResNets' budget on this CPU: one epoch on 20,000 of the 60,000 training images, batch
# 128 (at ~90 and ~60 img/s, a full epoch of ResNet-9 / ResNet-18 takes 11 / 17 minutes).
# The peak is the course's range-test result for session 10, 2e-3: here the range test's
# steepest descent came at 3.2e-5 (the net learns fast even at tiny LRs, so the loss falls
# steepest early), and one epoch peaking there reached 76.5%.
RESNET_BUDGET = (
    "epochs=1",
    "dataset.train_subset=20000",
    "batch_size=128",
    "scheduler.max_lr=0.002",
)
ROWS = (
    Row(
        "session6",
        "session6",
        ("experiment=session6", *FM, "epochs=5"),
        tiny=("model.channels=[8,8,8,8]",),
    ),
    Row(  # the same net, no augmentation, Adam one-cycle: the README's first run, longer
        "quickstart",
        "session6 (quickstart)",
        ("experiment=quickstart", "epochs=5"),
        tiny=("model.channels=[8,8,8,8]",),
    ),
    Row(
        "ultimus-spec",
        "ultimus (spec)",
        ("experiment=session9", *FM, "epochs=10", "batch_size=128"),
    ),
    Row(
        "ultimus-stable",
        "ultimus (stable)",
        ("experiment=session9", *FM, "model.variant=stable", "epochs=10", "batch_size=128"),
    ),
    Row(
        "custom_resnet",
        "custom_resnet (ResNet-9)",
        ("experiment=session10", *FM, *RESNET_BUDGET),
        tiny=("model.width=4",),
    ),
    Row(
        "resnet18",
        "resnet18",
        ("experiment=session10", "model=resnet18", *FM, *RESNET_BUDGET),
        tiny=("model.width=4",),
    ),
)
# --quick: the same commands on a sliver of data, to check the script end to end in seconds.
QUICK = (
    "epochs=1",
    "dataset.train_subset=96",
    "dataset.test_subset=64",
    "batch_size=32",
    "lr_find.num_iter=5",
    "report.enabled=false",
    "tracking.log_model=false",
    "progress=false",
)


def run_row(row: Row, args, extra: tuple[str, ...]) -> int:
    stamp = time.strftime("%Y-%m-%d_%H-%M-%S")
    if "seed=" in " ".join(extra):
        stamp += "_" + next(a for a in extra if a.startswith("seed=")).removeprefix("seed=")
    where = (
        f"tracking.uri={args.uri}",
        f"tracking.experiment={args.experiment}",
        f"tracking.run_name={row.name}",
        f"hydra.run.dir={args.outputs}/{row.name}/{stamp}",
    )
    command = [sys.executable, str(REPO / "train.py"), *extra, *where]
    print(f"\n$ python train.py {' '.join(extra)}", flush=True)
    return subprocess.run(command).returncode


def started_on(start_time_ms: int) -> str:
    """The day (YYYY-MM-DD, local time) an MLflow run started."""
    return datetime.datetime.fromtimestamp(start_time_ms / 1000).date().isoformat()


def measured_on(results: list[dict]) -> str | None:
    """The day the rows' runs started, or the first and last day when they span several."""
    days = sorted({r["started"] for r in results})
    if not days:
        return None
    return days[0] if len(days) == 1 else f"{days[0]} to {days[-1]}"


def read_back(uri: str, experiment: str, rows: list[Row], seeds=None) -> list[dict]:
    """Each row as table cells, from the newest FINISHED run of its name per seed (those
    of `seeds` only, when given): mean and sample std over the seeds; rows without a run
    are left out."""
    from mlflow import MlflowClient

    client = MlflowClient(uri)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        sys.exit(f"Error: no experiment {experiment!r} in {uri}: run the rows first")
    runs = client.search_runs(
        [found.experiment_id],
        filter_string="attributes.status = 'FINISHED'",
        order_by=["attributes.start_time DESC"],
    )
    newest: dict[str, dict[int, object]] = {}  # row name -> seed -> its newest run
    for run in runs:
        seed = int(run.data.params.get("seed", "0"))
        if seeds is None or seed in seeds:
            newest.setdefault(run.info.run_name, {}).setdefault(seed, run)
    out = []
    for row in rows:
        by_seed = newest.get(row.name)
        if not by_seed:
            print(f"(no finished run named {row.name!r} in {experiment!r})", flush=True)
            continue
        run = max(by_seed.values(), key=lambda r: r.info.start_time)  # its config and date
        m, p = run.data.metrics, run.data.params
        accs = [by_seed[s].data.metrics["best_test_acc"] for s in sorted(by_seed)]
        out.append(
            {
                "row": row.name,
                "model": row.model,
                "epochs": int(p["epochs"]),
                "train_images": int(p["derived.train_size"]),
                "best_test_acc": math.fsum(accs) / len(accs),  # the mean over the seeds
                "best_test_acc_std": statistics.stdev(accs) if len(accs) > 1 else None,
                "seeds": sorted(by_seed),
                "best_test_accs": accs,
                "best_epoch": int(m["best_epoch"]),
                "parameters": int(p["derived.parameters"]),
                "seconds": math.fsum(r.data.metrics["run_seconds"] for r in by_seed.values())
                / len(by_seed),
                # one-cycle's peak (found by the range test where the preset says find), else
                # the optimizer's starting LR
                "peak_lr": float(p.get("scheduler.max_lr", p["optimizer.lr"])),
                "command": "python train.py " + " ".join(row.args),
                "arguments": " ".join(row.args),
                "started": started_on(run.info.start_time),
                "run_id": run.info.run_id,  # the newest of its seeds
                "run_ids": [by_seed[s].info.run_id for s in sorted(by_seed)],
            }
        )
    return out


HEADERS = [
    "model",
    "epochs",
    "train images",
    "peak LR",
    "test acc",
    "params",
    "wall time",
    "command",
]


def markdown(results: list[dict]) -> str:
    """The table. Each command is shown as a user types it: `python -m eva` is the same
    command as the `python train.py` this script runs in the checkout."""
    rows = [
        [
            r["model"],
            r["epochs"],
            f"{r['train_images']:,}",
            f"{r['peak_lr']:.3g}",
            accuracy_cell(r),
            f"{r['parameters']:,}",
            f"{r['seconds'] / 60:.1f} min",
            f"`python -m eva {r['arguments']}`",
        ]
        for r in results
    ]
    return table(HEADERS, rows)


def accuracy_cell(r: dict) -> str:
    """90.29%, or the mean ± std over several seeds: 90.29% ± 0.21 (3 seeds)."""
    cell = f"**{100 * r['best_test_acc']:.2f}%**"
    if r.get("best_test_acc_std") is not None:
        cell += f" ± {100 * r['best_test_acc_std']:.2f} ({len(r['seeds'])} seeds)"
    return cell


def seeds_sentence(results: list[dict]) -> str:
    counts = sorted({len(r["seeds"]) for r in results})
    if counts == [1]:
        return "one seed per row"
    return "mean ± sample std over " + " or ".join(str(n) for n in counts) + " seeds per row"


def publish_table(results: list[dict], experiment: str, argv: list[str] | None) -> None:
    if not results:
        sys.exit("Error: --publish: no finished run to publish")
    about = (
        f"Each row is the newest FINISHED run of its name in MLflow experiment `{experiment}`, "
        f"read back from MLflow, {seeds_sentence(results)}. Test accuracy is the best epoch's, "
        "on the test split; wall time is the whole run."
    )
    text = f"{about}\n\n{markdown(results)}"
    publish("results.md", "results", text, command_line(__file__, argv), measured_on(results))


def main(argv: list[str] | None = None) -> None:
    p = parser("Train every model on Fashion-MNIST; print the docs' results table.")
    p.add_argument("--rows", nargs="+", choices=[r.name for r in ROWS], help="default: all")
    p.add_argument("--read-only", action="store_true", help="only read the recorded runs back")
    p.add_argument("--uri", default=f"sqlite:///{Path.cwd() / 'mlflow.db'}")
    p.add_argument("--experiment", default="fashion-mnist-results")
    p.add_argument("--outputs", default="outputs/results", help="hydra.run.dir of each row")
    p.add_argument(
        "--seeds",
        nargs="+",
        type=int,
        help="run (and read back) each row once per seed; the table gives mean ± std. "
        "Default: the config's seed, and every seed on record when reading",
    )
    args = p.parse_args(argv)
    rows = [r for r in ROWS if args.rows is None or r.name in args.rows]
    threads = () if args.threads is None else (f"threads={args.threads}",)
    if not args.read_only:
        for row in rows:
            for seed in args.seeds or [None]:
                extra = row.args + (QUICK + row.tiny if args.quick else ()) + threads
                extra += () if seed is None else (f"seed={seed}",)
                if run_row(row, args, extra) != 0:
                    sys.exit(f"Error: row {row.name} failed (command above)")
    results = read_back(args.uri, args.experiment, rows, args.seeds)
    print("\n" + markdown(results), flush=True)
    if args.publish:
        publish_table(results, args.experiment, argv)
    emit({"rows": results, "machine": machine(), "quick": bool(args.quick)})


if __name__ == "__main__":
    main()
