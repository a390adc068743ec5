"""The course sessions as presets (conf/experiment/session*.yaml): recipes, schedule, runs."""

import os

import pytest
import torch
from helpers import run_cli, runs_of
from omegaconf import OmegaConf

from eva.modes.train import train
from eva.optim import build_scheduler

SESSIONS = ("session6", "session9", "session10", "session11")


def test_session_presets_hold_the_recipes_of_the_assignments(compose):
    s6 = compose("experiment=session6")
    assert (s6.model.name, s6.augment.name, s6.dataset.name) == ("session6", "session6", "cifar10")
    assert s6.augment.cutout_size == 16 and s6.augment.hflip_p > 0 and s6.augment.affine_p > 0
    assert (s6.optimizer.name, s6.optimizer.lr, s6.batch_size, s6.epochs) == ("sgd", 0.07, 64, 64)
    assert s6.l1_weight > 0 and s6.scheduler.name == "step" and s6.scheduler.gamma < 1

    s9 = compose("experiment=session9")
    assert (s9.model.name, s9.model.variant, s9.model.blocks) == ("ultimus", "spec", 4)
    assert (s9.optimizer.name, s9.batch_size, s9.epochs) == ("adam", 512, 24)
    assert s9.scheduler.max_lr == "find" and s9.optimizer.weight_decay == 0

    s10 = compose("experiment=session10")
    assert (s10.model.name, s10.augment.name, s10.optimizer.name) == (
        "custom_resnet",
        "resnet",
        "adam",
    )
    assert (s10.augment.pad, s10.augment.cutout_size, s10.augment.hflip_p) == (4, 8, 0.5)
    assert (s10.optimizer.weight_decay, s10.batch_size, s10.epochs) == (1e-4, 512, 24)
    s11 = compose("experiment=session11")
    assert (s11.model.name, s11.augment.name, s11.optimizer.name) == (
        "custom_resnet",
        "resnet",
        "sgd",
    )
    for cfg in (s9, s10, s11):  # one-cycle, peak at epoch 5 of 24, no annihilation
        s = cfg.scheduler
        assert (s.name, s.max_lr, s.final_div_factor) == ("onecycle", "find", 1.0)
        assert s.pct_start * 24 == pytest.approx(5)
        assert cfg.lr_find.rule == "steepest"

    for session, cfg in zip(SESSIONS, (s6, s9, s10, s11), strict=True):
        assert cfg.tracking.experiment == "sessions"
        assert cfg.name == f"{session}-cifar10"  # the MLflow run name says which session
        again = compose(f"experiment={session}", "dataset=fashion_mnist", "epochs=3")
        assert (again.dataset.name, again.dataset.in_channels, again.epochs) == (
            "fashion_mnist",
            1,
            3,
        )
        assert again.name == f"{session}-fashion_mnist"


@pytest.mark.parametrize("epochs", [24, 2])
def test_session_one_cycle_peaks_at_epoch_5_of_24_and_ends_where_it_started(compose, epochs):
    cfg = compose("experiment=session10", "scheduler.max_lr=0.002", f"epochs={epochs}")
    steps_per_epoch = 12
    optimizer = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=0.002)
    schedule = build_scheduler(cfg, optimizer, steps_per_epoch)
    lrs = []
    for _ in range(epochs * steps_per_epoch):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule.step_batch()
    peak = max(range(len(lrs)), key=lrs.__getitem__)
    assert lrs[peak] == pytest.approx(0.002)
    # torch's OneCycleLR reaches max_lr on the last step of the warm-up: with 24 epochs the
    # last step of epoch 5; with fewer epochs, 5/24 of the steps
    assert peak + 1 == round(5 / 24 * epochs * steps_per_epoch)
    if epochs == 24:
        assert peak + 1 == 5 * steps_per_epoch
    assert lrs[0] == pytest.approx(0.002 / cfg.scheduler.div_factor)
    assert lrs[-1] == pytest.approx(lrs[0], rel=0.05)  # no annihilation: back to the start LR


TINY_MODELS = {  # same recipes, nets shrunk so that four runs take seconds
    "session6": ["model.channels=[8,8,8,8]"],
    "session9": [],
    "session10": ["model.width=4"],
    "session11": ["model.width=4"],
}


def test_every_session_runs_on_fashion_mnist_into_the_sessions_experiment(
    compose, fmnist_root, mlflow_store, tmp_path
):
    for session in SESSIONS:
        cfg = compose(
            f"experiment={session}",
            "dataset=fashion_mnist",
            f"dataset.root={fmnist_root}",
            "dataset.train_subset=160",
            "dataset.test_subset=64",
            "batch_size=32",
            "epochs=1",
            "lr_find.num_iter=8",
            "progress=false",
            "report.enabled=false",
            "tracking.log_model=false",
            *TINY_MODELS[session],
        )
        results = train(cfg, tmp_path / session)
        assert results["epochs_completed"] == 1 and results["model"] == cfg.model.name
        if OmegaConf.select(cfg, "scheduler.max_lr") == "find":
            assert results["max_lr"] == results["lr_find"]["suggested_lr"] > 0

    mine = [
        r for r in runs_of(mlflow_store, "sessions") if str(tmp_path) in r.data.tags["output_dir"]
    ]
    runs = {run.info.run_name: run for run in mine}
    assert set(runs) == {f"{s}-fashion_mnist" for s in SESSIONS}
    for session, run in runs.items():
        assert run.info.status == "FINISHED"
        assert run.data.tags["dataset"] == "fashion_mnist"
        assert (
            float(run.data.params["scheduler.max_lr" if "6" not in session else "optimizer.lr"]) > 0
        )
    assert runs["session9-fashion_mnist"].data.params["model.variant"] == "spec"
    assert runs["session11-fashion_mnist"].data.params["optimizer.name"] == "sgd"


def test_sweeping_the_presets_sums_their_runs_up_on_the_sweeps_parent(tmp_path, fresh_store):
    """-m experiment=session6,session9: the jobs log to `sessions` (the presets say so), the
    parent to the launch config's experiment; the parent still finds and ranks them."""
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    tiny = ["dataset=synthetic", "dataset.train_size=96", "dataset.test_size=64"]
    tiny += ["batch_size=32", "epochs=1", "threads=1", "lr_find.num_iter=5"]
    tiny += ["progress=false", "report.enabled=false", "tracking.log_model=false"]
    r = run_cli(["-m", "experiment=session6,session9", *tiny], cwd=tmp_path, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    store = fresh_store  # tmp_path/mlflow.db: the launch dir's store, found by default
    children = runs_of(store, "sessions")
    assert [c.info.run_name for c in children] == [
        "0: experiment=session6",
        "1: experiment=session9",
    ]
    (parent,) = runs_of(store, "eva")
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == {parent.info.run_id}
    assert parent.data.tags["children_finished"] == "2"
    best = max(children, key=lambda c: (c.data.metrics["best_test_acc"], -c.info.start_time))
    assert parent.data.tags["best_child_run_id"] == best.info.run_id


def test_results_script_runs_a_row_and_prints_what_mlflow_recorded(
    fmnist_root, tmp_path, fresh_store
):
    """benchmarks/results.py --quick: the results table's row, run and read back from MLflow."""
    import json
    import subprocess
    import sys

    from helpers import REPO
    from mlflow import MlflowClient

    store = fresh_store
    script = [sys.executable, str(REPO / "benchmarks" / "results.py"), "--uri", store]
    env = {**os.environ, "EVA_DATA": str(fmnist_root)}

    def run(*args: str) -> tuple[str, dict]:
        done = subprocess.run(
            [*script, *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
        )
        assert done.returncode == 0, done.stderr[-3000:]
        return done.stdout, json.loads(done.stdout.strip().splitlines()[-1])

    out, result = run("--quick", "--rows", "ultimus-stable", "--threads", "1", "--seeds", "1", "2")
    (row,) = result["rows"]
    runs = [MlflowClient(store).get_run(run_id) for run_id in row["run_ids"]]
    assert [r.data.params["seed"] for r in runs] == ["1", "2"]  # a run per seed
    run_ = runs[1]
    assert row["run_id"] == run_.info.run_id  # the newest
    assert run_.info.run_name == "ultimus-stable" and run_.info.status == "FINISHED"
    accs = [r.data.metrics["best_test_acc"] for r in runs]
    assert accs[0] != accs[1]  # the seeds differ
    assert row["best_test_acc"] == pytest.approx(sum(accs) / 2)  # mean and sample std
    assert row["best_test_acc_std"] == pytest.approx(abs(accs[0] - accs[1]) / 2**0.5)
    assert row["parameters"] == int(run_.data.params["derived.parameters"]) > 20_000
    assert row["train_images"] == 96 and row["epochs"] == 1  # --quick shrank the run
    assert run_.data.params["model.variant"] == "stable"
    mean, std = 100 * row["best_test_acc"], 100 * row["best_test_acc_std"]
    acc = f"| **{mean:.2f}%** ± {std:.2f} (2 seeds) "
    cells = [acc, f"| {row['parameters']:,} "]
    assert all(cell in out for cell in cells)
    assert "`python -m eva experiment=session9 dataset=fashion_mnist model.variant=stable" in out

    again, reread = run("--read-only", "--rows", "ultimus-stable", "quickstart")
    assert reread["rows"] == result["rows"] and all(cell in again for cell in cells)
    assert "no finished run named 'quickstart'" in again  # never ran: left out, said so
