"""Which Optuna storage a sweep of many workers should use: sqlite or a journal file.

    python benchmarks/storage.py                   # 8 workers, 160 trivial trials, each side
    python benchmarks/storage.py --repeats 3       # sqlite, journal, sqlite, ... ; medians

Both sides run `evasweep --workers 8` on the same non-eva Hydra app, the sphere of
sweeper/examples (its trials return at once, so what is measured is the storage: asking,
telling, heartbeats, the dead-trial checks of every worker loop), each in a fresh
temporary folder with its own study:
  sqlite:  hydra.sweeper.storage=optuna.db            (Optuna's RDB storage on a sqlite file)
  journal: hydra.sweeper.storage=journal:///optuna.log (JournalStorage, JournalFileBackend)
After each run the study must hold exactly --trials COMPLETE trials (none lost or run
twice), else the script stops with one line. The JSON's "ratio" is sqlite's wall time over
journal's: > 1 when the journal file is faster.
"""

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import REPO, alternate, command_line, emit, median, parser, publish, table

APP = REPO / "sweeper" / "examples" / "official_style"
SIDES = {"sqlite": "optuna.db", "journal": "journal:///optuna.log"}


def side_command(storage: str, workers: int, trials: int, python: str = sys.executable):
    return [
        python,
        "-m",
        "evasweep",
        f"--workers={workers}",
        f"--train={APP / 'sphere.py'}",
        "hydra.sweep.dir=multirun",
        f"hydra.sweeper.storage={storage}",
        f"hydra.sweeper.n_trials={trials}",
        "hydra.sweeper.study_name=null",  # the example names its study: one per folder here
        "hydra/sweeper/sampler=random",  # TPE's cost grows with the trials; this is storage
        "x=interval(-5.5,5.5)",  # continuous: no parameter set is drawn twice
        "y=interval(-5,5)",
    ]


def complete_trials(folder: Path, storage: str) -> int:
    import optuna

    from evasweep.storage import open_storage, storage_url

    opened = open_storage(storage_url(storage, folder))
    (name,) = optuna.get_all_study_names(opened)
    study = optuna.load_study(study_name=name, storage=opened)
    return len(study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)))


def run_side(side: str, workers: int, trials: int) -> float:
    folder = Path(tempfile.mkdtemp(prefix=f"eva-storage-{side}-"))
    log = folder / "sweep.log"
    started = time.perf_counter()
    with open(log, "w") as out:
        rc = subprocess.run(
            side_command(SIDES[side], workers, trials),
            cwd=folder,
            stdout=out,
            stderr=subprocess.STDOUT,
            env={k: v for k, v in os.environ.items() if not k.startswith("EVASWEEP_")},
        ).returncode
    seconds = time.perf_counter() - started
    done = complete_trials(folder, SIDES[side]) if rc == 0 else None
    if done != trials:
        sys.exit(f"{side}: exit {rc}, {done} of {trials} trials COMPLETE; see {log}")
    shutil.rmtree(folder)
    return seconds


def main(argv: list[str] | None = None) -> dict:
    p = parser(__doc__.splitlines()[0], quick=True)
    p.add_argument("--repeats", type=int, default=1, help="runs of each side, alternated")
    p.add_argument("--workers", type=int, default=8)
    p.add_argument("--trials", type=int, default=160)
    args = p.parse_args(argv)
    trials = 40 if args.quick else args.trials
    measured = alternate(
        {side: lambda side=side: run_side(side, args.workers, trials) for side in SIDES},
        args.repeats,
        warmup=0,
    )
    seconds = {side: median(values) for side, values in measured.items()}
    rows = [
        [f"`{SIDES[side]}`", f"{seconds[side]:.1f} s", f"{trials / seconds[side]:.1f}"]
        for side in SIDES
    ]
    markdown = table(
        [f"storage ({args.workers} workers, {trials} trials)", "wall time", "trials/s"], rows
    )
    print(markdown)
    if args.publish:
        publish("scaling.md", "storage", markdown, command_line(__file__, argv))
    return emit(
        {
            "workers": args.workers,
            "trials": trials,
            "seconds": seconds,
            "runs": measured,
            "ratio": seconds["sqlite"] / seconds["journal"],
        }
    )


if __name__ == "__main__":
    main()
