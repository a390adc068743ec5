"""Shared fixtures: composed configs, a Fashion-MNIST root, a fake CIFAR-10 copy, throwaway
SLURM and Ray clusters."""

import hashlib
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import copy_store
from ray_cluster import ray_unavailable, start_ray
from slurm import slurm_unavailable, start_slurm

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
torch.set_num_threads(1)  # the machines here have 2 shared cores: one thread is as fast

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def compose():
    """compose(*overrides) -> the config `python -m eva <overrides>` would run with."""
    from eva.config import compose_config

    def _compose(*overrides: str):
        return compose_config(list(overrides))

    return _compose


@pytest.fixture(scope="session")
def empty_store(tmp_path_factory) -> Path:
    """An MLflow sqlite file with MLflow's tables and nothing else, made once.

    Creating a store runs MLflow's schema migrations (~5 s); a test that needs a store of
    its own copies this file instead (copy_store). eva's experiments are created in the
    copy, so their artifact folders sit next to the copy, as in a store made from scratch.
    """
    from mlflow import MlflowClient

    path = tmp_path_factory.mktemp("empty-store") / "mlflow.db"
    MlflowClient(f"sqlite:///{path}").search_experiments()  # creates the tables
    return path


@pytest.fixture
def fresh_store(empty_store, tmp_path) -> str:
    """An MLflow store of the test's own at tmp_path/mlflow.db: where `python train.py`
    launched in tmp_path looks for one by default."""
    return copy_store(empty_store, tmp_path / "mlflow.db")


@pytest.fixture(scope="session", autouse=True)
def mlflow_store(empty_store, tmp_path_factory) -> str:
    """One sqlite MLflow store for the whole session.

    Every run in the tests (subprocesses included, through the environment) logs here, not
    into the repo's mlflow.db. Tests that read runs back use their own experiment names.
    """
    from eva.tracking.store import prepare_experiment

    uri = copy_store(empty_store, tmp_path_factory.mktemp("mlflow") / "mlflow.db")
    os.environ["MLFLOW_TRACKING_URI"] = uri
    prepare_experiment(uri, "eva")
    return uri


@pytest.fixture(scope="session")
def slurm_cluster():
    """A single-node SLURM cluster on 127.0.0.1 for the whole session (tests/slurm.py), started
    by the first test that asks for it. Meanwhile os.environ holds its SLURM_CONF (and PATH with
    its sacct), so sbatch, squeue and submitit in the tests and their subprocesses use it.
    Skips where it cannot run: SLURM/MUNGE not installed, or not root."""
    reason = slurm_unavailable()
    if reason is not None:
        pytest.skip(reason)
    cluster = start_slurm()
    try:
        with pytest.MonkeyPatch.context() as patch:
            for key, value in cluster.env.items():
                patch.setenv(key, value)
            yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def ray_cluster():
    """A local Ray head node for the whole session (tests/ray_cluster.py): connect with
    ray.init(address=ray_cluster.address). Skips only where Ray is not installed."""
    reason = ray_unavailable()
    if reason is not None:
        pytest.skip(reason)
    cluster = start_ray()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def fmnist_root(tmp_path_factory) -> Path:
    """A data root for Fashion-MNIST; eva unpacks the Debian package's files into it."""
    return tmp_path_factory.mktemp("fmnist")


def write_fake_cifar10(root: Path, per_batch: int = 20, seed: int = 0) -> dict:
    """A small CIFAR-10 copy in the real cifar-10-batches-py layout and pickle format.

    Each batch file is a dict with 'batch_label', 'labels', 'data' (uint8, N x 3072,
    channel-major rows of 32x32) and 'filenames'; batches.meta holds 'label_names'.
    Returns the arrays written and the md5 of every file.
    """
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    names = ["airplane", "automobile", "bird", "cat", "deer"]
    names += ["dog", "frog", "horse", "ship", "truck"]
    written = {"train": [], "test": []}

    def dump(name: str, obj) -> None:
        with open(folder / name, "wb") as f:
            pickle.dump(obj, f, protocol=2)

    files = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for name in files:
        data = rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8)
        labels = [int(v) for v in rng.integers(0, 10, per_batch)]
        dump(
            name,
            {
                "batch_label": name,
                "labels": labels,
                "data": data,
                "filenames": [f"{name}_{i}.png" for i in range(per_batch)],
            },
        )
        written["test" if name == "test_batch" else "train"].append((data, labels))
    dump("batches.meta", {"label_names": names, "num_cases_per_batch": per_batch, "num_vis": 3072})
    md5 = {p.name: hashlib.md5(p.read_bytes()).hexdigest() for p in folder.iterdir()}
    return {"written": written, "md5": md5, "classes": names}


@pytest.fixture
def fake_cifar10(tmp_path, monkeypatch):
    """Root of a fake CIFAR-10 copy that torchvision's CIFAR10 accepts.

    torchvision checks every file against the md5 of the real release; the test points those
    checksums at the fake files so the whole real loading path runs unchanged.
    """
    from torchvision.datasets import CIFAR10

    info = write_fake_cifar10(tmp_path)
    md5 = info["md5"]
    monkeypatch.setattr(CIFAR10, "train_list", [[f, md5[f]] for f, _ in CIFAR10.train_list])
    monkeypatch.setattr(CIFAR10, "test_list", [[f, md5[f]] for f, _ in CIFAR10.test_list])
    monkeypatch.setattr(CIFAR10, "meta", {**CIFAR10.meta, "md5": md5["batches.meta"]})
    return tmp_path, info
