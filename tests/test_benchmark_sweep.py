"""benchmarks/sweep.py's pure parts: the two commands, the checks, the summary (no sweeps)."""

import importlib.util
import sys
import time
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


# ----------------------------------------------------------------------------- bare vs eva


def test_the_bare_loop_trains_what_eva_trains_by_default(bench, compose):
    """The numbers the bare loop writes plainly are eva's defaults (a changed YAML fails
    here, not silently in the comparison)."""
    cfg = compose("hparams_search=optuna", "dataset=fashion_mnist", "model=session6")
    assert cfg.seed == bench.SEED and cfg.batch_size == bench.BATCH and cfg.epochs > 0
    o, s = cfg.optimizer, cfg.scheduler
    assert o.lr == bench.LR and o.decay_norm_and_bias  # every parameter decayed
    assert {k: o[k] for k in bench.SGD} == bench.SGD
    expected = {k: s[k] for k in ("pct_start", "div_factor", "final_div_factor")}
    expected.update(anneal_strategy=s.anneal, base_momentum=s.base_momentum)
    expected.update(max_momentum=s.max_momentum)
    assert expected == bench.ONECYCLE and s.cycle_momentum and s.peak_epoch is None
    assert list(cfg.dataset.mean) == [bench.MEAN] and list(cfg.dataset.std) == [bench.STD]
    assert list(cfg.model.channels) == [24, 48, 64, 96] and cfg.l1_weight == 0.0


def test_the_bare_loop_asks_for_the_search_of_the_optuna_preset(bench):
    import optuna
    from omegaconf import OmegaConf

    from eva.config import CONF_DIR
    from evasweep.space import parse_space

    preset = OmegaConf.load(CONF_DIR / "hparams_search" / "optuna.yaml")
    params = OmegaConf.to_container(preset.hydra.sweeper.params)
    eva_space = parse_space(params, []).distributions
    trial = optuna.create_study().ask()
    asked = bench.suggest(trial)
    assert list(asked) == list(eva_space)  # same keys, in the same order
    assert trial.distributions == eva_space


def test_same_params_and_the_checks_of_a_bare_comparison(bench):
    a = [{"x": 0.1, "c": 1e-5}, {"x": 0.2, "c": 0.0}]
    assert bench.same_params(a, [{"x": 0.1 + 1e-12, "c": 1e-5}, {"x": 0.2, "c": 0.0}])
    assert not bench.same_params(a, a[:1])
    assert not bench.same_params(a, [{"x": 0.1, "c": 1e-5}, {"x": 0.21, "c": 0.0}])
    log = Path("/tmp/x.log")
    good = {"params": a, "states": {"COMPLETE": 2}, "best": 1, "reports": [1], "models": [1]}
    assert bench.check_bare("eva", 0, good, 2, log) is None
    assert bench.check_bare("bare", 0, {"params": a}, 2, log) is None
    assert "exit code 3" in bench.check_bare("bare", 3, None, 2, log)
    assert "1 trials, expected 2" in bench.check_bare("bare", 0, {"params": a[:1]}, 2, log)
    extra = bench.check_bare("eva", 0, {**good, "reports": [0, 1]}, 2, log)
    assert "reports for trials [0, 1]" in extra and "best trial 1 only" in extra
    nomodel = bench.check_bare("eva", 0, {**good, "models": []}, 2, log)
    assert "models for []" in nomodel


def test_the_bare_summary_is_the_median_of_the_pairs(bench):
    def run(wall, train):
        return {"wall": wall, "params": [{"x": 1.0}], "train_seconds": train}

    runs = {
        "bare": [run(100.0, 90.0), run(90.0, 80.0), run(110.0, 100.0)],
        "eva": [run(103.0, 91.0), run(99.0, 88.0), run(104.5, 96.0)],
    }
    s = bench.summarize_bare(runs, 8)
    assert s["pair_ratios"] == [1.03, 1.1, 0.95]
    assert s["ratio"] == 1.03  # the median pair, not the ratio of medians
    # outside the loops: eva 12, 11, 8.5 s against the bare loop's 10 s each
    assert s["extra_seconds"] == 1.0
    assert s["ratio_outside"] == 1.011  # median of 1.02, 1.011, 0.986
    assert s["loop_ratio"] == round(91.0 / 90.0, 3)  # median of 1.011, 1.1, 0.96
    assert s["eva_train_seconds"] == [91.0, 88.0, 96.0]
    assert s["bare_trials_per_hour"] == round(8 / 100.0 * 3600)
    assert s["eva_trials_per_hour"] == round(8 / 103.0 * 3600)
    assert s["same_params"] is True


def test_the_bare_loop_runs_a_tiny_study(bench, fmnist_root):
    if bench.fashion_mnist_missing(fmnist_root):  # unpacks the Debian copy, as main() does
        pytest.skip("needs the Debian package dataset-fashion-mnist")
    start = time.perf_counter()
    out = bench.bare_loop(2, fmnist_root, train_subset=256, test_subset=64, threads=1)
    elapsed = time.perf_counter() - start
    assert len(out["values"]) == len(out["params"]) == 2
    assert 0 < out["train_seconds"] < elapsed  # its loops: a part of the call, not all of it
    assert all(0.0 <= v <= 1.0 for v in out["values"])
    assert {k for p in out["params"] for k in p} == {
        "scheduler.max_lr",
        "model.dropout",
        "l1_weight",
    }
    assert out["params"][0] != out["params"][1]
