"""benchmarks/sweep.py's pure parts: the two commands, the checks, the summary (no sweeps)."""

import importlib.util
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture(scope="module")
def bench():
    if str(BENCHMARKS) not in sys.path:
        sys.path.insert(0, str(BENCHMARKS))  # sweep.py imports `common` from there
    spec = importlib.util.spec_from_file_location("benchmark_sweep", BENCHMARKS / "sweep.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_sides_differ_only_in_launcher_and_threads(bench):
    shared = bench.sweep_overrides(8, bench.data_overrides("fashion_mnist", Path("/d"), 2000, 1000))
    assert "hydra.sweeper.n_trials=8" in shared and "hparams_search=optuna" in shared
    assert "hydra/sweeper/pruner=none" in shared  # every trial trains its epoch: COMPLETE
    assert "dataset.root=/d" in shared and "dataset.train_subset=2000" in shared
    a = bench.side_command("two_workers", shared, python="py")
    b = bench.side_command("one_worker", shared, python="py")
    assert a[:5] == ["py", "-m", "eva.sweep.workers", "--workers=2", f"--train={bench.TRAIN}"]
    assert a[5:] == [*shared, "threads=1"]
    assert b == ["py", str(bench.TRAIN), "-m", *shared, "threads=2"]
    assert bench.shown(a) == "eva-sweep --workers=2 ... threads=1"
    assert bench.shown(b) == "python train.py -m ... threads=2"
    with pytest.raises(ValueError):
        bench.side_command("three", shared)


def test_synthetic_data_is_sized_not_subset(bench):
    assert bench.data_overrides("synthetic", Path("/d"), 300, 100) == [
        "dataset=synthetic",
        "dataset.train_size=300",
        "dataset.test_size=100",
    ]


def test_child_env_drops_sweep_state_keeps_data(bench, monkeypatch):
    monkeypatch.setenv("EVA_DATA", "/data")
    monkeypatch.setenv("EVA_SWEEP_ROLE", "worker")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://elsewhere")
    env = bench.child_env()
    assert env["EVA_DATA"] == "/data"
    assert "EVA_SWEEP_ROLE" not in env and "MLFLOW_TRACKING_URI" not in env
    assert env["PYTHONPATH"].split(":")[0] == str(bench.REPO)


def test_check_needs_exit_0_and_every_trial_complete(bench):
    log = Path("/tmp/x.log")
    ok = {"states": {"COMPLETE": 8}}
    assert bench.check("one_worker", 0, ok, 8, log) is None
    assert "exit code 2" in bench.check("one_worker", 2, None, 8, log)
    short = bench.check("two_workers", 0, {"states": {"COMPLETE": 7, "FAIL": 1}}, 8, log)
    assert "7 COMPLETE trials, expected 8" in short and "\n" not in short


def test_summary_ratio_is_one_worker_over_two_workers(bench):
    def record(wall, cpu):
        return {"wall": wall, "cpu_seconds": cpu, "complete": 8, "processes": 1,
                "threads_logged": ["1"], "others_cores": 0.123}  # fmt: skip

    runs = {
        "two_workers": [record(50.0, 90.0), record(40.0, 70.0), record(60.0, 100.0)],
        "one_worker": [record(60.0, 66.0), record(70.0, 70.0), record(80.0, 90.0)],
    }
    s = bench.summarize(runs, 8)
    assert s["two_workers_seconds"] == 50.0 and s["one_worker_seconds"] == 70.0  # medians
    assert s["ratio"] == 1.4 and s["trials"] == 8
    assert s["two_workers_per_trial_seconds"] == 6.25
    assert s["two_workers_cpu_cores"] == 1.75 and s["one_worker_cpu_cores"] == 1.1  # per run
    assert s["two_workers_complete"] == [8, 8, 8]
    assert s["one_worker_others_cores"] == [0.12, 0.12, 0.12]


def test_machine_busy_counts_up(bench):
    before = bench.machine_busy()
    if before is None:
        pytest.skip("no /proc/stat")
    sum(range(200_000))  # some CPU
    assert bench.machine_busy() >= before >= 0


def test_data_check_loads_fashion_mnist_where_the_jobs_will(bench, tmp_path):
    """The check the benchmark runs before any sweep, on eva's real loader: an empty folder
    is filled from the Debian package; a folder it cannot fill is named, in one line."""
    from eva.data.datasets import DEBIAN_FASHION_MNIST

    if not DEBIAN_FASHION_MNIST.is_dir():
        pytest.skip("needs the Debian package dataset-fashion-mnist")
    assert bench.fashion_mnist_missing(tmp_path / "data") is None
    assert any((tmp_path / "data").rglob("train-images-idx3-ubyte"))
    blocked = tmp_path / "file"
    blocked.write_text("not a folder")
    why = bench.fashion_mnist_missing(blocked)
    assert why and "\n" not in why
