"""The report pictures of the docs (docs/img/), made by one short real run of eva.

    python tools/pictures.py                 # train, then copy the run's plots to docs/img/
    python tools/pictures.py --dpi 80        # smaller files

The pictures are what a user's own run writes to <run dir>/plots/, never drawn by hand:
the session-6 net on part of Fashion-MNIST for six epochs, with the course's session-6
augmentation and the one-cycle peak found by the LR range test first, so that every plot
of a training run is there (lr_find.png included). Nothing is recorded in MLflow and
nothing is left behind but the pictures. Data: Fashion-MNIST under $EVA_DATA, else unpacked
into the run's temporary folder from the Debian package dataset-fashion-mnist.
"""

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
IMG = REPO / "docs" / "img"
PICTURES = (
    "loss_accuracy_curves.png",
    "lr_schedule.png",
    "lr_find.png",
    "augmented_samples.png",
    "misclassified.png",
    "gradcam_misclassified.png",
    "confusion_matrix.png",
    "per_class_accuracy.png",
)
RUN = (
    "model=session6",
    "dataset=fashion_mnist",
    "augment=session6",
    "epochs=6",
    "dataset.train_subset=10000",
    "dataset.test_subset=2000",
    "scheduler.max_lr=find",
    "tracking.enabled=false",
    "progress=false",
)
# Pictures above this size make the docs slow to load: lower --dpi.
LARGEST_BYTES = 200_000


def data_root(tmp: Path) -> Path:
    return Path(os.environ.get("EVA_DATA") or tmp / "data").expanduser().absolute()


def train(run_dir: Path, dpi: int) -> None:
    """One run of `python -m eva`, its outputs in run_dir; exits with its last line on failure."""
    command = [
        sys.executable,
        "-m",
        "eva",
        *RUN,
        f"report.dpi={dpi}",
        f"dataset.root={data_root(run_dir.parent)}",
        f"hydra.run.dir={run_dir}",
    ]
    print("$ python -m eva " + " ".join(RUN) + f" report.dpi={dpi}", flush=True)
    done = subprocess.run(command, cwd=run_dir.parent, capture_output=True, text=True)
    if done.returncode != 0:
        last = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["(no output)"]
        sys.exit(f"pictures: the run failed: {last[0]}")


def copy_pictures(plots: Path) -> list[Path]:
    """Copy the run's plots into docs/img/; stop, naming them, if any is missing."""
    missing = [name for name in PICTURES if not (plots / name).is_file()]
    if missing:
        sys.exit(f"pictures: the run wrote no {', '.join(missing)} in {plots}")
    IMG.mkdir(parents=True, exist_ok=True)
    return [Path(shutil.copyfile(plots / name, IMG / name)) for name in PICTURES]


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dpi", type=int, default=90, help="report.dpi of the run (default 90)")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="eva-pictures-") as tmp:
        run_dir = Path(tmp) / "run"
        train(run_dir, args.dpi)
        copied = copy_pictures(run_dir / "plots")
    for path in copied:
        size = path.stat().st_size
        warning = "  (large: try a lower --dpi)" if size > LARGEST_BYTES else ""
        print(f"{path.relative_to(REPO)}  {size / 1000:.0f} kB{warning}")


if __name__ == "__main__":
    main()
