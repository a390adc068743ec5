"""benchmarks/storage.py and benchmarks/cluster.py: the two sides of each differ only in
what is measured (no sweeps here; the benchmarks run by hand)."""

import importlib.util
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def load(name: str):
    if str(BENCHMARKS) not in sys.path:
        sys.path.insert(0, str(BENCHMARKS))  # they import `common` from there
    spec = importlib.util.spec_from_file_location(f"benchmark_{name}", BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_storage_sides_differ_only_in_the_storage():
    bench = load("storage")
    sqlite = bench.side_command(bench.SIDES["sqlite"], 8, 160, "py")
    journal = bench.side_command(bench.SIDES["journal"], 8, 160, "py")
    differ = [(a, b) for a, b in zip(sqlite, journal, strict=True) if a != b]
    assert differ == [
        ("hydra.sweeper.storage=optuna.db", "hydra.sweeper.storage=journal:///optuna.log")
    ]
    assert sqlite[:4] == ["py", "-m", "evasweep", "--workers=8"]
    assert "hydra.sweeper.n_trials=160" in sqlite


def test_cluster_sides_run_the_same_study_two_ways():
    bench = load("cluster")
    study = bench.study_overrides(8, 512)
    assert "epochs=choice(1, 2, 3)" in study and "hydra.sweeper.n_trials=8" in study
    batch = bench.side_command("batch", study, python="py")
    workers = bench.side_command("async", study, python="py")
    assert batch == [
        "py",
        str(bench.TRAIN),
        "-m",
        *study,
        "hydra/launcher=slurm_cpu",
        "hydra.sweeper.n_jobs=2",
    ]
    assert workers[:5] == ["py", "-m", "eva.sweep.workers", "--workers=2", "--launcher=slurm_cpu"]
    assert workers[6:] == study
    with pytest.raises(ValueError):
        bench.side_command("sideways", study)
