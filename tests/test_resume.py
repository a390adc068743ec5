"""Nothing lost: last.pt every epoch, resume=true continues bit for bit, NaN stops a run."""

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import REPO, TINY_CLI, experiment_name, run_cli, runs_of
from mlflow import MlflowClient

from eva.engine import state
from eva.engine.checkpoint import load_checkpoint
from eva.errors import EvaError
from eva.modes.train import train
from eva.optim import build_optimizer, build_scheduler

METRICS = ("train_loss", "train_acc", "test_loss", "test_acc", "lr")  # not the timings

# Long enough epochs (~1 s) to be killed in the middle of one; dropout and augmentation so
# that the torch stream and the data order both matter for an exact resume.
KILLABLE = [
    *TINY_CLI,
    "dataset.train_size=1024",
    "dataset.train_subset=null",  # the whole split, not debug's subset
    "model.dropout=0.1",
    "augment=session6",
    "epochs=3",
]


def same_history(a: list[dict], b: list[dict]) -> None:
    assert [r["epoch"] for r in a] == [r["epoch"] for r in b]
    for ra, rb in zip(a, b, strict=True):
        assert {k: ra[k] for k in METRICS} == {k: rb[k] for k in METRICS}, ra["epoch"]


def same_weights(path_a, path_b) -> None:
    a, b = load_checkpoint(path_a)["model"], load_checkpoint(path_b)["model"]
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)


def cmdline(pid: str) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:  # gone
        return ""


def test_sigkill_after_the_first_checkpoint_then_resume_equals_an_uninterrupted_run(
    compose, mlflow_store, tmp_path
):
    experiment = experiment_name()
    args = [*KILLABLE, f"tracking.experiment={experiment}"]
    train(compose(*args), tmp_path / "whole")  # uninterrupted, here: one thread as well

    run_dir = tmp_path / "killed"
    last = run_dir / "checkpoints" / "last.pt"
    proc = subprocess.Popen(
        [sys.executable, str(REPO / "train.py"), *args, f"hydra.run.dir={run_dir}"],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 120
        while not last.exists():
            assert proc.poll() is None and time.monotonic() < deadline, "no last.pt written"
            time.sleep(0.02)
        children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
        writer = [pid for pid in children if "eva.tracking.writer" in cmdline(pid)]
        assert len(writer) == 1  # MLflow runs in its writer process (eva/tracking/writer.py)
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(timeout=30) == -signal.SIGKILL
        deadline = time.monotonic() + 30  # the writer sees its pipe close and exits
        while Path(f"/proc/{writer[0]}").exists() and "writer" in cmdline(writer[0]):
            assert time.monotonic() < deadline, "the MLflow writer outlived its run"
            time.sleep(0.1)
    finally:
        proc.kill()
    saved = load_checkpoint(last)
    assert 1 <= saved["epoch"] < 3 and not saved["finished"]  # killed mid-run
    assert not (run_dir / "results.json").exists()
    client = MlflowClient(mlflow_store)
    run_id = saved["mlflow_run_id"]
    assert client.get_run(run_id).info.status == "RUNNING"  # kill -9: nobody could end it

    resumed = run_cli([*args, f"hydra.run.dir={run_dir}", "resume=true"], tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    a = json.loads((tmp_path / "whole" / "results.json").read_text())
    b = json.loads((run_dir / "results.json").read_text())
    same_history(a["history"], b["history"])
    assert b["resumed_at_epoch"] == saved["epoch"]
    assert (a["best_test_acc"], a["best_epoch"]) == (b["best_test_acc"], b["best_epoch"])
    same_weights(tmp_path / "whole/checkpoints/best.pt", run_dir / "checkpoints/best.pt")
    same_weights(tmp_path / "whole/checkpoints/last.pt", last)

    # The same MLflow run went on and ended FINISHED, with every epoch logged once.
    assert b["mlflow_run_id"] == run_id
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.data.tags["resumed_at_epoch"] == str(saved["epoch"])
    steps = [m.step for m in client.get_metric_history(run_id, "test_acc")]
    assert sorted(steps) == [1, 2, 3]
    whole_run = client.get_run(a["mlflow_run_id"])
    assert run.data.metrics["test_acc"] == whole_run.data.metrics["test_acc"]
    assert not [r for r in runs_of(mlflow_store, experiment) if r.info.status == "RUNNING"]

    # Resuming a finished run says so and changes nothing.
    files = [p for p in run_dir.rglob("*") if p.is_file()]
    before = {p.relative_to(run_dir).as_posix(): p.stat().st_mtime_ns for p in files}
    again = run_cli([*args, f"hydra.run.dir={run_dir}", "resume=true"], tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "already finished (3 epochs" in again.stdout + again.stderr
    after = {p.relative_to(run_dir).as_posix(): p.stat().st_mtime_ns for p in files}
    changed = {p for p in before if after[p] != before[p]}
    hydras = {".hydra/config.yaml", ".hydra/overrides.yaml", ".hydra/hydra.yaml"}
    assert changed <= {".eva.lock", "train.log", *hydras}, changed  # Hydra's own, the log
    assert len(runs_of(mlflow_store, experiment)) == 2  # no new MLflow run either


def tiny(compose, *extra):
    return compose(
        "dataset=synthetic",
        "dataset.train_size=192",
        "dataset.test_size=64",
        "dataset.val_size=64",  # the best epoch is picked on val: its state resumes too
        "model=session6",
        "model.channels=[8,16,16,16]",
        "model.dropout=0.1",
        "batch_size=32",
        "epochs=3",
        "progress=false",
        "report.enabled=false",
        "tracking.log_model=false",
        *extra,
    )


def resuming(cfg):
    """The same config with resume=true, as on the command line."""
    cfg = cfg.copy()
    cfg.resume = True
    return cfg


def interrupt_on(monkeypatch, name: str, call: int):
    """Make eva.modes.train.<name> raise KeyboardInterrupt (Ctrl-C) on its call-th call."""
    import eva.modes.train

    real = getattr(eva.modes.train, name)
    calls = {"n": 0}

    def wrapper(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == call:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(eva.modes.train, name, wrapper)
    return calls


def test_ctrl_c_then_resume_continues_the_killed_mlflow_run(compose, tmp_path, monkeypatch):
    experiment = experiment_name()
    cfg = tiny(compose, f"tracking.experiment={experiment}")
    whole = train(cfg, tmp_path / "whole")

    run_dir = tmp_path / "run"
    with monkeypatch.context() as m:
        interrupt_on(m, "train_one_epoch", call=3)  # Ctrl-C in epoch 3
        with pytest.raises(KeyboardInterrupt):
            train(cfg, run_dir)
    saved = load_checkpoint(run_dir / "checkpoints" / "last.pt")
    assert saved["epoch"] == 2
    client = MlflowClient(os.environ["MLFLOW_TRACKING_URI"])
    assert client.get_run(saved["mlflow_run_id"]).info.status == "KILLED"

    resumed = train(resuming(cfg), run_dir)
    same_history(whole["history"], resumed["history"])
    assert resumed["best_val_acc"] == whole["best_val_acc"]
    assert resumed["mlflow_run_id"] == saved["mlflow_run_id"]
    run = client.get_run(saved["mlflow_run_id"])
    assert run.info.status == "FINISHED"
    assert sorted(m.step for m in client.get_metric_history(run.info.run_id, "val_acc")) == [
        1,
        2,
        3,
    ]
    same_weights(tmp_path / "whole/checkpoints/best.pt", run_dir / "checkpoints/best.pt")


def test_killed_after_the_last_epoch_the_resume_only_finishes(compose, tmp_path, monkeypatch):
    cfg = tiny(compose, "tracking.enabled=false")
    with monkeypatch.context() as m:
        import eva.modes.train

        def killed_writing_results(data, path):  # after the last epoch, before results.json
            raise KeyboardInterrupt

        m.setattr(eva.modes.train, "write_json", killed_writing_results)
        with pytest.raises(KeyboardInterrupt):
            train(cfg, tmp_path)
    saved = load_checkpoint(tmp_path / "checkpoints" / "last.pt")
    assert saved["epoch"] == 3 and not saved["finished"]

    trained = interrupt_on(monkeypatch, "train_one_epoch", call=1)  # training again: fails
    results = train(resuming(cfg), tmp_path)
    assert trained["n"] == 0
    assert results["epochs_completed"] == 3 and results["resumed_at_epoch"] == 3
    assert (tmp_path / "results.json").is_file()
    assert load_checkpoint(tmp_path / "checkpoints" / "last.pt")["finished"] is True


def test_resume_refuses_what_it_cannot_continue(compose, tmp_path):
    cfg = tiny(compose, "tracking.enabled=false", "epochs=1")
    with pytest.raises(EvaError, match=r"resume=true: no checkpoints/last.pt in .*hydra.run.dir"):
        train(resuming(cfg), tmp_path)
    assert not (tmp_path / "checkpoints").exists()

    train(cfg, tmp_path)
    with pytest.raises(EvaError, match="already holds a run .*add resume=true") as e:
        train(cfg, tmp_path)  # a new run never overwrites another one
    assert "\n" not in str(e.value)

    other = tiny(compose, "tracking.enabled=false", "epochs=2", "model.dropout=0.2")
    with pytest.raises(EvaError) as e:
        train(resuming(other), tmp_path)
    message = str(e.value)
    assert message.startswith("resume=true: this command trains something else than the run")
    assert "epochs=2 (the run: 1)" in message and "model.dropout=0.2 (the run: 0.1)" in message
    assert "\n" not in message

    # how it runs may change: threads, device, progress, tracking, reports
    same = tiny(compose, "tracking.enabled=false", "epochs=1", "threads=1", "device=cpu")
    assert train(resuming(same), tmp_path)["epochs_completed"] == 1

    (tmp_path / "checkpoints" / "last.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(EvaError, match="last.pt cannot be read"):
        train(resuming(cfg), tmp_path)


def test_one_process_per_run_folder(compose, tmp_path):
    from eva.modes.resume import run_lock

    cfg = tiny(compose, "tracking.enabled=false", "epochs=1")
    with run_lock(tmp_path):  # as if a run were still training in this folder
        with pytest.raises(EvaError, match=f"in use by another eva process \\(pid {os.getpid()}"):
            train(resuming(cfg), tmp_path)
    assert train(cfg, tmp_path)["epochs_completed"] == 1  # released: the folder is usable


def test_resume_of_max_lr_find_keeps_the_found_number(compose, tmp_path, monkeypatch):
    import eva.modes.lr_range_test

    cfg = tiny(compose, "tracking.enabled=false", "scheduler.max_lr=find", "lr_find.num_iter=20")
    with monkeypatch.context() as m:
        interrupt_on(m, "train_one_epoch", call=2)
        with pytest.raises(KeyboardInterrupt):
            train(cfg, tmp_path)
    found = load_checkpoint(tmp_path / "checkpoints" / "last.pt")["config"]["scheduler"]["max_lr"]
    assert isinstance(found, float)

    def no_second_range_test(rt):
        raise AssertionError("the range test ran again")

    monkeypatch.setattr(eva.modes.lr_range_test, "find_max_lr", no_second_range_test)
    results = train(resuming(cfg), tmp_path)
    assert results["max_lr"] == found
    assert results["lr_find"]["suggested_lr"] == found


def test_a_resume_whose_mlflow_run_is_gone_logs_every_epoch_in_a_new_run(
    compose, tmp_path, monkeypatch
):
    experiment = experiment_name()
    cfg = tiny(compose, f"tracking.experiment={experiment}")
    with monkeypatch.context() as m:
        interrupt_on(m, "train_one_epoch", call=3)
        with pytest.raises(KeyboardInterrupt):
            train(cfg, tmp_path)
    old = load_checkpoint(tmp_path / "checkpoints" / "last.pt")["mlflow_run_id"]
    client = MlflowClient(os.environ["MLFLOW_TRACKING_URI"])
    client.delete_run(old)

    results = train(resuming(cfg), tmp_path)
    new = client.get_run(results["mlflow_run_id"])
    assert new.info.run_id != old and new.info.status == "FINISHED"
    assert new.data.tags["resumed_from_run"] == old
    steps = sorted(m.step for m in client.get_metric_history(new.info.run_id, "test_acc"))
    assert steps == [1, 2, 3]
    assert new.data.params["model.dropout"] == "0.1"


def test_last_pt_restores_every_state_and_random_stream(tmp_path):
    from omegaconf import OmegaConf

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3))
    cfg = OmegaConf.create(
        {
            "epochs": 4,
            "optimizer": {
                "_target_": "torch.optim.SGD",
                "name": "sgd",
                "lr": 0.1,
                "weight_decay": 0.0,
                "momentum": 0.9,
            },
            "scheduler": {
                "_target_": "eva.optim.schedulers.onecycle",
                "name": "onecycle",
                "max_lr": 0.1,
                "peak_epoch": None,
                "pct_start": 0.25,
                "div_factor": 10.0,
                "final_div_factor": 1.0,
                "anneal": "linear",
                "cycle_momentum": True,
                "base_momentum": 0.85,
                "max_momentum": 0.95,
            },
        }
    )
    cfg.optimizer.nesterov = True
    optimizer = build_optimizer(cfg, model)
    schedule = build_scheduler(cfg, optimizer, steps_per_epoch=5)
    scaler = torch.amp.GradScaler("cpu", init_scale=512.0)
    order = torch.Generator().manual_seed(7)
    for _ in range(3):  # real state: momentum buffers, BN statistics, schedule, loss scale
        loss = model(torch.randn(8, 4)).square().mean()
        optimizer.zero_grad()
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        schedule.step_batch()
    scaler.update(new_scale=64.0)  # a scale no fresh GradScaler has
    progress = state.Progress(epoch=1, history=[{"epoch": 1}], best={"epoch": 1}, lrs=[0.1])
    path = tmp_path / "last.pt"
    objects = dict(model=model, optimizer=optimizer, schedule=schedule, scaler=scaler, order=order)
    state.save_last(path, progress, **objects, meta={"config": {}})

    def draws():
        return (
            torch.rand(3).tolist(),
            np.random.rand(3).tolist(),
            [random.random() for _ in range(3)],
            torch.randperm(10, generator=order).tolist(),
        )

    expected = draws()
    expected_lr = optimizer.param_groups[0]["lr"]

    torch.manual_seed(123)  # a new process: everything else
    model2 = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3))
    optimizer2 = build_optimizer(cfg, model2)
    schedule2 = build_scheduler(cfg, optimizer2, steps_per_epoch=5)
    scaler2 = torch.amp.GradScaler("cpu")
    order2 = torch.Generator().manual_seed(99)
    np.random.seed(5)
    random.seed(5)
    restored = state.restore(
        load_checkpoint(path),
        model=model2,
        optimizer=optimizer2,
        schedule=schedule2,
        scaler=scaler2,
        order=order2,
    )
    assert restored.epoch == 1 and restored.history == [{"epoch": 1}] and restored.lrs == [0.1]
    order = order2
    assert draws() == expected
    for a, b in zip(model.state_dict().values(), model2.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    assert optimizer2.param_groups[0]["lr"] == expected_lr
    buf = optimizer.state[next(model.parameters())]["momentum_buffer"]
    assert torch.equal(optimizer2.state[next(model2.parameters())]["momentum_buffer"], buf)
    assert schedule2.scheduler.last_epoch == schedule.scheduler.last_epoch == 3
    assert scaler2.get_scale() == 64.0 and scaler2.state_dict() == scaler.state_dict()


def test_a_nan_loss_stops_the_run_with_one_line_and_a_failed_mlflow_run(compose, tmp_path):
    # (in a sweep: tests/test_sweep.py, test_failing_trials_are_fail_and_the_sweep_goes_on...)
    # SGD at lr 1e12 overflows the weights within a few steps: the loss becomes nan/inf.
    experiment = experiment_name()
    cfg = tiny(
        compose,
        "scheduler=constant",
        "optimizer.lr=1e12",
        "epochs=2",
        f"tracking.experiment={experiment}",
    )
    with pytest.raises(EvaError) as e:
        train(cfg, tmp_path)
    message = str(e.value)
    assert message.startswith("epoch 1/2: the training loss is ")
    assert "nan" in message or "inf" in message
    assert "lower the learning rate" in message and "\n" not in message
    assert not (tmp_path / "checkpoints" / "last.pt").exists()  # no epoch of garbage kept
    (run,) = runs_of(os.environ["MLFLOW_TRACKING_URI"], experiment)
    assert run.info.status == "FAILED"
    assert "training loss is" in run.data.tags["error"]


def test_deterministic_mode_is_set_per_run_and_changes_no_cpu_number(compose, tmp_path):
    cfg = tiny(compose, "tracking.enabled=false", "epochs=1")
    exact = tiny(compose, "tracking.enabled=false", "epochs=1", "deterministic=true")
    strict = train(exact, tmp_path / "strict")
    assert torch.are_deterministic_algorithms_enabled()
    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"  # what cuBLAS needs for it
    plain = train(cfg, tmp_path / "plain")
    assert not torch.are_deterministic_algorithms_enabled()  # process-wide: each run sets it
    same_history(strict["history"], plain["history"])
