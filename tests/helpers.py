"""Helpers shared by the test modules: the CLI in a subprocess, MLflow runs read back."""

import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

from mlflow import MlflowClient

REPO = Path(__file__).resolve().parents[1]
CONF = REPO / "eva" / "conf"
GROUPS = ("model", "dataset", "augment", "optimizer", "scheduler")


def options_of(group: str) -> list[str]:
    """The options of a config group, as they are on disk: tests pick new ones up."""
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def experiment_name() -> str:
    return f"test-{uuid.uuid4().hex[:8]}"


def runs_of(uri: str, experiment: str, missing_ok: bool = False) -> list:
    """The experiment's runs, oldest first. missing_ok: a run refused before its MLflow
    writer made the experiment leaves none (the writer opens the store in the background)."""
    client = MlflowClient(uri)
    found = client.get_experiment_by_name(experiment)
    if found is None and missing_ok:
        return []
    assert found is not None, f"no experiment {experiment} in {uri}"
    return client.search_runs([found.experiment_id], order_by=["attributes.start_time ASC"])


def copy_store(empty_store: Path, path: Path) -> str:
    """A fresh MLflow store at `path`, copied from conftest's empty_store; returns its URI."""
    path.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(empty_store, path)
    return f"sqlite:///{path}"


def run_cli(args, cwd, env=None, timeout=600, entry=None):
    """The command line in a subprocess: `python train.py ARGS` in the clone, or `entry`
    (PYTHON_M_EVA: the installed entry point, `python -m eva ARGS`)."""
    return subprocess.run(
        [*(entry or [sys.executable, str(REPO / "train.py")]), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


PYTHON_M_EVA = [sys.executable, "-m", "eva"]


TINY_CLI = [
    "debug=default",  # eva's quick check: one epoch on 96 synthetic images (eva/conf/debug)
    "model=session6",
    "model.channels=[8,16,16,16]",
    "tracking.enabled=true",  # the debug preset records nothing; these tests read MLflow
    "tracking.log_model=false",  # tests/test_tracking.py covers the logged model
]

# A run of seconds, composed in the test's process: 128 synthetic images, a narrow session6.
TINY_RUN = [
    "dataset=synthetic",
    "dataset.train_size=128",
    "dataset.test_size=64",
    "model=session6",
    "model.channels=[8,16,16,16]",
    "batch_size=32",
    "progress=false",
    "report.enabled=false",
]

# minutes of training: to be interrupted (the whole synthetic split, not debug's subset)
LONG = ["dataset.train_size=2048", "dataset.train_subset=null", "epochs=50"]


def sigterm_after_first_epoch(args, cwd, uri: str, experiment: str, entry=None) -> tuple[int, str]:
    """Start train.py (or `entry`, e.g. python -m eva), wait until an epoch is on record in
    MLflow, send SIGTERM."""
    entry = entry or [sys.executable, str(REPO / "train.py")]  # or PYTHON_M_EVA
    proc = subprocess.Popen(
        [*entry, *args, f"tracking.experiment={experiment}"],
        cwd=cwd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    client = MlflowClient(uri)
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline:
            found = client.get_experiment_by_name(experiment)
            runs = client.search_runs([found.experiment_id]) if found else []
            if any("test_acc" in run.data.metrics for run in runs):
                break
            assert proc.poll() is None, proc.stderr.read()
            time.sleep(0.5)
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=60)
    finally:
        proc.kill()
    return proc.returncode, stderr


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_size(path: Path) -> tuple[int, int]:
    """(width, height) of a valid PNG file; fails the test for anything else."""
    from PIL import Image

    assert path.is_file(), f"{path} missing"
    assert path.read_bytes()[:8] == PNG_SIGNATURE, f"{path} is not a PNG"
    assert 10_000 < path.stat().st_size < 3_000_000, f"{path}: {path.stat().st_size} bytes"
    with Image.open(path) as image:
        image.verify()  # decodes the chunks: a truncated file fails here
        return image.size
