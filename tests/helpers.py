"""Helpers shared by the test modules: the CLI in a subprocess, MLflow runs read back."""

import subprocess
import sys
import uuid
from pathlib import Path

from mlflow import MlflowClient

REPO = Path(__file__).resolve().parents[1]


def experiment_name() -> str:
    return f"test-{uuid.uuid4().hex[:8]}"


def runs_of(uri: str, experiment: str) -> list:
    client = MlflowClient(uri)
    found = client.get_experiment_by_name(experiment)
    assert found is not None, f"no experiment {experiment} in {uri}"
    return client.search_runs([found.experiment_id], order_by=["attributes.start_time ASC"])


def run_cli(args, cwd, env=None, timeout=600):
    return subprocess.run(
        [sys.executable, str(REPO / "train.py"), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


TINY_CLI = [
    "dataset=synthetic",
    "dataset.train_size=96",
    "dataset.test_size=64",
    "model=session6",
    "model.channels=[8,16,16,16]",
    "batch_size=32",
    "epochs=1",
    "threads=1",
    "progress=false",
]
