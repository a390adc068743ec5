"""MLflow tracking, checked against real stores: runs are read back through MlflowClient."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import (
    LONG,
    REPO,
    TINY_CLI,
    TINY_RUN,
    experiment_name,
    options_of,
    run_cli,
    runs_of,
    sigterm_after_first_epoch,
)
from mlflow import MlflowClient
from omegaconf import OmegaConf

from eva.engine.checkpoint import load_checkpoint
from eva.errors import EvaError
from eva.models import build_model
from eva.modes.train import train
from eva.tracking.params import config_params


def tiny(compose, *extra):
    return compose(*TINY_RUN, "epochs=1", *extra)


def load_logged_model(tracking_uri: str, model_uri: str, monkeypatch):
    """As a user would, with MLFLOW_TRACKING_URI pointing at the store."""
    import mlflow.pytorch

    with monkeypatch.context() as m:
        m.setenv("MLFLOW_TRACKING_URI", tracking_uri)
        return mlflow.pytorch.load_model(model_uri)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_fashion_mnist_run_lands_in_mlflow_with_params_metrics_artifacts_and_model(
    compose, fmnist_root, mlflow_store, tmp_path, monkeypatch
):
    experiment = experiment_name()
    cfg = compose(
        "dataset=fashion_mnist",
        f"dataset.root={fmnist_root}",
        "dataset.train_subset=2000",
        "dataset.test_subset=500",
        "optimizer=adam",
        "model.dropout=0.05",
        "l1_weight=1e-6",
        "epochs=2",
        "batch_size=64",
        "progress=false",
        f"tracking.experiment={experiment}",
    )
    results = train(cfg, tmp_path)
    (run,) = runs_of(mlflow_store, experiment)
    client = MlflowClient(mlflow_store)
    assert run.info.run_id == results["mlflow_run_id"]
    assert json.loads((tmp_path / "results.json").read_text())["mlflow_run_id"] == run.info.run_id
    assert run.info.status == "FINISHED" and run.info.run_name == "session6-fashion_mnist"

    params = run.data.params  # dotted, spelled like the overrides
    assert float(params["scheduler.max_lr"]) == cfg.optimizer.lr == 3e-3
    assert params["model.dropout"] == "0.05" and params["l1_weight"] == "1e-06"
    assert params["optimizer.lr"] == "0.003" and params["optimizer.name"] == "adam"
    assert (params["epochs"], params["batch_size"], params["seed"]) == ("2", "64", "1")
    assert params["model.channels"] == "[24, 48, 64, 96]"
    assert params["derived.parameters"] == str(results["params"])
    assert params["derived.train_size"] == "2000" and params["derived.test_size"] == "500"
    assert params["derived.device"] == "cpu"

    tags = run.data.tags
    assert (tags["model"], tags["dataset"], tags["optimizer"]) == (
        "session6",
        "fashion_mnist",
        "adam",
    )
    assert tags["output_dir"] == str(tmp_path) and tags["eva_version"]
    assert tags["host"] == socket.gethostname()
    head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True)
    if head.returncode == 0:  # a clone: the commit that ran
        assert (
            tags["git_commit"] == tags["mlflow.source.git.commit"] == head.stdout.decode().strip()
        )

    history = client.get_metric_history(run.info.run_id, "test_acc")
    assert [m.step for m in history] == [1, 2]  # one point per epoch
    assert [m.value for m in history] == [row["test_acc"] for row in results["history"]]
    for key in ("train_loss", "train_acc", "test_loss", "lr", "epoch_seconds", "images_per_second"):
        assert len(client.get_metric_history(run.info.run_id, key)) == 2, key
    assert run.data.metrics["best_test_acc"] == results["best_test_acc"] > 0.5

    top = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"config.yaml", "summary", "results", "checkpoints"} <= top
    config_file = client.download_artifacts(run.info.run_id, "config.yaml", str(tmp_path / "dl"))
    assert OmegaConf.load(config_file).scheduler.max_lr == 3e-3  # resolved, not ${...}
    ckpt = client.download_artifacts(run.info.run_id, "checkpoints/best.pt", str(tmp_path / "dl"))
    assert load_checkpoint(Path(ckpt))["epoch"] == results["best_epoch"]

    # The logged model loads on its own (no eva classes: MLflow's pt2 format) and predicts
    # exactly what the best checkpoint predicts, for any batch size.
    assert run.data.tags["model_uri"] == results["mlflow_model_uri"]
    logged = load_logged_model(mlflow_store, results["mlflow_model_uri"], monkeypatch)
    net = build_model(cfg.model, 1, 10).eval()
    net.load_state_dict(load_checkpoint(Path(results["best_checkpoint"]))["model"])
    x = torch.randn(5, 1, 28, 28)
    with torch.no_grad():
        assert torch.allclose(logged(x), net(x), atol=1e-5)
    assert set(results["tracking_seconds"]) >= {"start", "epochs", "final"}
    # Logging the model points MLflow's process-wide URI at the run's store for one call
    # only: the environment is as it was, so the next run goes where it should.
    assert os.environ["MLFLOW_TRACKING_URI"] == mlflow_store
    assert "MLFLOW_EXPERIMENT_ID" not in os.environ


@pytest.mark.parametrize("name", options_of("model"))
def test_every_model_is_saved_in_the_logged_format_and_reloads_for_any_batch(
    compose, tmp_path, name
):
    """eva logs models as torch.export graphs: each architecture must export, and the
    example batch of 2 must leave the batch size free."""
    import mlflow.pytorch

    from eva.tracking.run import MODEL_FORMAT, model_requirements

    net = build_model(compose(f"model={name}").model, 3, 10).eval()
    example = torch.randn(2, 3, 32, 32).numpy()
    path = tmp_path / "model"
    mlflow.pytorch.save_model(
        net, path, input_example=example, pip_requirements=model_requirements(), **MODEL_FORMAT
    )
    loaded = mlflow.pytorch.load_model(str(path))
    x = torch.randn(5, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(loaded(x), net(x), atol=1e-5)


def test_experiments_are_tagged_as_model_training_so_the_ui_opens_on_runs(mlflow_store):
    """MLflow 3's UI opens an untagged experiment on its GenAI page: eva's say they train
    models, those of an earlier eva get the tag, and a kind set by hand stays."""
    from eva.tracking.store import KIND_TAG, TRAINING, prepare_experiment

    client = MlflowClient(mlflow_store)
    made = prepare_experiment(mlflow_store, experiment_name())
    earlier = client.create_experiment(experiment_name())  # untagged, as eva made them
    chosen = client.create_experiment(experiment_name(), tags={KIND_TAG: "genai_development"})
    for experiment_id in (earlier, chosen):
        prepare_experiment(mlflow_store, client.get_experiment(experiment_id).name)
    kinds = [client.get_experiment(i).tags.get(KIND_TAG) for i in (made, earlier, chosen)]
    assert kinds == [TRAINING, TRAINING, "genai_development"]


def test_every_param_is_an_override_that_reproduces_the_config(compose):
    cfg = compose("model=ultimus", "optimizer=adamw", "augment=resnet", "dataset.train_subset=64")
    resolved = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
    overrides = [f"{key}={value}" for key, value in config_params(resolved).items()]
    again = compose("model=ultimus", "optimizer=adamw", "augment=resnet", *overrides)
    assert OmegaConf.to_container(again, resolve=True) == resolved


def test_password_in_the_tracking_uri_is_never_logged(compose):
    cfg = compose("tracking.uri=postgresql://me:secret@db:5432/mlflow")
    params = config_params(OmegaConf.to_container(cfg, resolve=True, enum_to_str=True))
    assert params["tracking.uri"] == "postgresql://me:***@db:5432/mlflow"


@pytest.mark.parametrize(
    ("failure", "status", "error"),
    [
        (RuntimeError("disk on fire"), "FAILED", "RuntimeError: disk on fire"),
        (KeyboardInterrupt(), "KILLED", "interrupted"),
    ],
)
def test_a_run_that_dies_is_never_left_running(
    compose, mlflow_store, tmp_path, monkeypatch, failure, status, error
):
    import eva.modes.train

    def evaluate_that_fails(*args, **kwargs):
        raise failure

    monkeypatch.setattr(eva.modes.train, "evaluate", evaluate_that_fails)
    experiment = experiment_name()
    with pytest.raises(type(failure)):
        train(tiny(compose, f"tracking.experiment={experiment}"), tmp_path)
    (run,) = runs_of(mlflow_store, experiment)
    assert run.info.status == status
    assert run.data.tags["error"].startswith(error)


def test_tracking_disabled_touches_no_store(compose, tmp_path):
    db = tmp_path / "never.db"
    cfg = tiny(compose, "tracking.enabled=false", f"tracking.uri=sqlite:///{db}")
    results = train(cfg, tmp_path / "run")
    assert results["mlflow_run_id"] is None and not db.exists()


def test_relative_sqlite_uri_is_anchored_at_the_launch_dir(monkeypatch, tmp_path):
    from eva.tracking.store import resolve_uri

    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    assert resolve_uri(None, tmp_path) == f"sqlite:///{tmp_path}/mlflow.db"
    assert resolve_uri("sqlite:///runs/x.db", tmp_path) == f"sqlite:///{tmp_path}/runs/x.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://tracker:5000")
    assert resolve_uri(None, tmp_path) == "http://tracker:5000"
    assert resolve_uri("sqlite:////abs/m.db", tmp_path) == "sqlite:////abs/m.db"
    assert resolve_uri("team.db", tmp_path) == f"sqlite:///{tmp_path}/team.db"


def test_unreachable_tracking_server_fails_before_training(compose, tmp_path):
    uri = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    started = time.perf_counter()
    with pytest.raises(EvaError, match=f"tracking.uri={uri}: no MLflow server answers"):
        train(tiny(compose, f"tracking.uri={uri}", "tracking.timeout=2"), tmp_path)
    assert time.perf_counter() - started < 30
    assert not (tmp_path / "model_summary.txt").exists()  # nothing built, nothing written


def test_multirun_makes_one_parent_and_a_child_per_job_in_the_launch_dir_store(tmp_path):
    """Two jobs in parallel worker processes (joblib): the default store is created once,
    by the launcher, in the launch dir; the parent gets the best child's params and score."""
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    r = run_cli(
        [
            "-m",
            *TINY_CLI,
            "optimizer.lr=0.001,0.05",
            "hydra/launcher=joblib",
            "hydra.launcher.n_jobs=2",
        ],
        cwd=tmp_path,
        env=env,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"  # the default: <launch dir>/mlflow.db
    runs = runs_of(store, "eva")
    parents = [x for x in runs if "mlflow.parentRunId" not in x.data.tags]
    children = [x for x in runs if "mlflow.parentRunId" in x.data.tags]
    assert len(parents) == 1 and len(children) == 2
    parent = parents[0]
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == {parent.info.run_id}
    assert sorted(c.info.run_name for c in children) == [
        "0: optimizer.lr=0.001",
        "1: optimizer.lr=0.05",
    ]
    assert all(x.info.status == "FINISHED" for x in runs)

    best = max(children, key=lambda c: (c.data.metrics["best_test_acc"], -c.info.start_time))
    assert parent.data.tags["best_child_run_id"] == best.info.run_id
    assert parent.data.metrics["best_test_acc"] == best.data.metrics["best_test_acc"]
    assert parent.data.params["optimizer.lr"] == best.data.params["optimizer.lr"]
    assert parent.data.tags["sweep_overrides"] == "optimizer.lr=0.001,0.05"
    assert parent.data.tags["children_finished"] == "2"
    sweep_dirs = {c.data.tags["sweep_dir"] for c in children}
    assert sweep_dirs == {parent.data.tags["sweep_dir"]}
    client = MlflowClient(store)
    for child in children:
        results = Path(child.data.tags["output_dir"]) / "results.json"
        assert json.loads(results.read_text())["mlflow_run_id"] == child.info.run_id
        files = {a.path for a in client.list_artifacts(child.info.run_id)}
        assert {".hydra", "logs", "config.yaml"} <= files
        hydra_files = {a.path for a in client.list_artifacts(child.info.run_id, ".hydra")}
        assert ".hydra/overrides.yaml" in hydra_files


def test_multirun_against_a_dead_server_starts_no_job(tmp_path):
    uri = f"http://127.0.0.1:{free_port()}"
    r = run_cli(
        ["-m", *TINY_CLI, "seed=1,2", f"tracking.uri={uri}", "tracking.timeout=2"], tmp_path
    )
    assert r.returncode == 1
    assert f"Error: tracking.uri={uri}: no MLflow server answers" in r.stderr
    assert "Traceback" not in r.stderr and "Launching" not in r.stdout + r.stderr
    assert not list(tmp_path.rglob("results.json"))


def test_multirun_whose_job_fails_ends_that_child_and_the_parent_failed(tmp_path, mlflow_store):
    """Job 1 is refused before its run starts (peak epoch beyond a 1-epoch run): it leaves
    no child run; Hydra's basic sweeper then stops the multirun without calling
    on_multirun_end, and the parent ends FAILED."""
    experiment = experiment_name()
    r = run_cli(
        ["-m", *TINY_CLI, "scheduler.peak_epoch=0.5,5", f"tracking.experiment={experiment}"],
        cwd=tmp_path,
    )
    assert r.returncode == 1
    assert "scheduler.peak_epoch=5" in r.stderr
    runs = runs_of(mlflow_store, experiment)
    status = {x.info.run_name: x.info.status for x in runs}
    assert status == {
        "session6-synthetic sweep": "FAILED",
        "0: scheduler.peak_epoch=0.5": "FINISHED",
    }


def test_sigterm_ends_the_run_killed(tmp_path, mlflow_store):
    experiment = experiment_name()
    code, stderr = sigterm_after_first_epoch(
        [*TINY_CLI, *LONG, "hydra.run.dir=run"], tmp_path, mlflow_store, experiment
    )
    assert code == 130, stderr
    assert "MLflow run marked KILLED" in stderr
    (run,) = runs_of(mlflow_store, experiment)
    assert run.info.status == "KILLED"


def test_sigterm_during_a_multirun_ends_parent_and_child_killed(tmp_path, mlflow_store):
    experiment = experiment_name()
    sigterm_after_first_epoch(
        ["-m", *TINY_CLI, *LONG, "seed=1,2"], tmp_path, mlflow_store, experiment
    )
    status = {x.info.run_name: x.info.status for x in runs_of(mlflow_store, experiment)}
    assert status == {"session6-synthetic sweep": "KILLED", "0: seed=1": "KILLED"}


def test_real_mlflow_server_over_http(compose, tmp_path, monkeypatch):
    port = free_port()
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mlflow",
            "server",
            "--backend-store-uri",
            f"sqlite:///{tmp_path / 'server.db'}",
            "--artifacts-destination",
            str(tmp_path / "artifacts"),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
        ],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # its own process group: the server and its workers
    )
    uri = f"http://127.0.0.1:{port}"
    try:
        import urllib.request

        deadline = time.monotonic() + 120
        while True:
            try:
                urllib.request.urlopen(f"{uri}/health", timeout=2)
                break
            except OSError:
                assert server.poll() is None, "mlflow server exited"
                assert time.monotonic() < deadline, "mlflow server did not start in 120 s"
                time.sleep(0.5)
        results = train(tiny(compose, f"tracking.uri={uri}", "epochs=2"), tmp_path / "run")
        client = MlflowClient(uri)
        run = client.get_run(results["mlflow_run_id"])
        assert run.info.status == "FINISHED"
        assert [m.step for m in client.get_metric_history(run.info.run_id, "test_acc")] == [1, 2]
        assert "checkpoints" in {a.path for a in client.list_artifacts(run.info.run_id)}
        assert any((tmp_path / "artifacts").rglob("best.pt"))  # uploaded through the server

        logged = load_logged_model(uri, results["mlflow_model_uri"], monkeypatch)
        assert logged(torch.from_numpy(np.zeros((3, 3, 32, 32), np.float32))).shape == (3, 10)

        # 127.1 is 127.0.0.1, but a host name outside the server's --allowed-hosts: it
        # answers /health and refuses the API, so the check must name the flag.
        from eva.tracking.store import check_reachable

        refused = f"http://127.1:{port}"
        with pytest.raises(EvaError, match=r"refuses the host name 127\.1 .*--allowed-hosts"):
            check_reachable(refused, timeout=5)
    finally:
        os.killpg(server.pid, signal.SIGTERM)  # stop it by PID (the group it leads)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)


def test_a_schedule_that_cannot_run_is_refused_before_any_run(compose, tmp_path):
    name = experiment_name()
    cfg = tiny(compose, f"tracking.experiment={name}", "scheduler.peak_epoch=5", "epochs=2")
    with pytest.raises(EvaError, match="scheduler.peak_epoch"):
        train(cfg, tmp_path / "run")
    assert runs_of(os.environ["MLFLOW_TRACKING_URI"], name, missing_ok=True) == []
    assert not (tmp_path / "run").exists()  # refused before the run folder was made


def test_a_run_failing_before_its_first_batch_still_lands_failed(compose, tmp_path, monkeypatch):
    import eva.modes.train as training

    def broken(*args, **kwargs):  # a fault where the first epoch starts
        raise RuntimeError("loader died")

    monkeypatch.setattr(training, "train_one_epoch", broken)
    name = experiment_name()
    with pytest.raises(RuntimeError, match="loader died"):
        train(tiny(compose, f"tracking.experiment={name}"), tmp_path / "run")
    [run] = runs_of(os.environ["MLFLOW_TRACKING_URI"], name)
    assert run.info.status == "FAILED" and "loader died" in run.data.tags["error"]


def test_tracking_inline_without_the_writer_process(compose, tmp_path):
    name = experiment_name()
    cfg = tiny(compose, f"tracking.experiment={name}", "tracking.process=false")
    results = train(cfg, tmp_path / "run")
    [run] = runs_of(os.environ["MLFLOW_TRACKING_URI"], name)
    assert run.info.run_id == results["mlflow_run_id"] and run.info.status == "FINISHED"
    assert run.data.metrics["test_acc"] == results["final_test_acc"]


def test_an_mlflow_error_in_the_writer_is_raised_by_the_run(compose, tmp_path):
    (tmp_path / "file").write_text("")  # a file where the store's folder should be
    cfg = tiny(compose, f"tracking.uri=sqlite:///{tmp_path}/file/x.db")
    with pytest.raises(EvaError, match="cannot create"):
        train(cfg, tmp_path / "run")  # raised after epoch 1, when the run needs its run id
    assert not (tmp_path / "run" / "results.json").exists()
