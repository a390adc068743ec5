"""The richer MLflow record of a run: its datasets as run inputs, system metrics, and the
model registry (tracking.register). Checked against a real sqlite store, read back with
MlflowClient; the runs are shared by the tests of this module (module-scoped fixtures)."""

import json
import time
import uuid
from pathlib import Path

import optuna
import pytest
import torch
from helpers import TINY_RUN, experiment_name
from mlflow import MlflowClient
from omegaconf import OmegaConf

from eva.config import compose_config
from eva.config.validate import validate
from eva.data import build_data
from eva.engine.checkpoint import load_checkpoint
from eva.errors import EvaError
from eva.models import build_model
from eva.modes.finish import deferred, finish_run
from eva.modes.train import train
from eva.tracking.datasets import describe
from eva.tracking.registry import CHAMPION, register
from eva.tracking.run import Launch, Tracker


def tiny(*extra: str):
    cfg = compose_config([*TINY_RUN, *extra])
    validate(cfg)  # fills in the option names, as a run does
    return cfg


def model_name() -> str:
    return f"test-model-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def registered(mlflow_store, tmp_path_factory):
    """A run with a validation split, system metrics every 0.25 s, its model registered
    (through eva's writer process, the default)."""
    name = model_name()
    cfg = tiny(
        "epochs=2",
        "dataset.val_size=32",
        f"tracking.experiment={experiment_name()}",
        "tracking.system_metrics_interval=0.25",
        f"tracking.register={name}",
    )
    results = train(cfg, tmp_path_factory.mktemp("registered"))
    client = MlflowClient(mlflow_store)
    return {"cfg": cfg, "results": results, "name": name, "client": client}


@pytest.fixture(scope="module")
def trial_run(mlflow_store, tmp_path_factory):
    """A trial of an Optuna study (a real in-memory one) with system metrics off: its
    model is left to the sweep (report.trials=best), then finished by finish_run, which
    registers it with the study's name."""
    name = model_name()
    cfg = tiny(
        "epochs=1",
        f"tracking.experiment={experiment_name()}",
        "tracking.system_metrics=false",
        f"tracking.register={name}",
    )
    study = optuna.create_study(study_name=f"study-{uuid.uuid4().hex[:6]}", direction="maximize")
    folder = tmp_path_factory.mktemp("trial")
    results = train(cfg, folder, Launch(trial=study.ask()))
    left = deferred(folder)
    client = MlflowClient(mlflow_store)
    registered_before = client.search_registered_models(f"name='{name}'")
    finished = finish_run(folder, cfg.tracking, folder, device="cpu", study=study.study_name)
    return {
        "cfg": cfg,
        "results": results,
        "finished": finished,
        "left": left,
        "registered_before": registered_before,
        "name": name,
        "study": study.study_name,
        "client": client,
    }


# --------------------------------------------------------------------------- datasets


def test_a_training_run_logs_each_split_as_a_dataset_input(registered):
    client, results = registered["client"], registered["results"]
    run = client.get_run(results["mlflow_run_id"])
    inputs = {i.tags[0].value: i for i in run.inputs.dataset_inputs}
    assert sorted(inputs) == ["test", "train", "validation"]
    assert all([t.key for t in i.tags] == ["mlflow.data.context"] for i in inputs.values())
    sizes = {"train": "train", "validation": "val", "test": "test"}
    for context, found in inputs.items():
        dataset = found.dataset
        assert dataset.name == "synthetic"
        assert json.loads(dataset.profile)["num_images"] == results["sizes"][sizes[context]]
        assert dataset.source_type == "code"
        assert "eva.data.datasets.synthetic" in dataset.source
        spec = json.loads(json.loads(dataset.schema)["mlflow_tensorspec"]["features"])
        assert spec[0]["tensor-spec"] == {"dtype": "uint8", "shape": [-1, 32, 32, 3]}
    assert len({i.dataset.digest for i in inputs.values()}) == 3


def test_a_split_s_digest_follows_its_images_not_its_folder(registered, trial_run):
    """The same images: the same digest, whichever run; another subset, validation split
    or seed: another digest. The root only names the source."""
    client = registered["client"]

    def digests(run_id: str) -> dict:
        run = client.get_run(run_id)
        return {i.tags[0].value: i.dataset.digest for i in run.inputs.dataset_inputs}

    with_val = digests(registered["results"]["mlflow_run_id"])
    without = digests(trial_run["results"]["mlflow_run_id"])
    assert without["test"] == with_val["test"]  # the same test images
    assert without["train"] != with_val["train"]  # 128 images, not the 96 left by val_size

    def described(*extra: str) -> dict:
        cfg = tiny(*extra)
        build_data(cfg)
        return {d["context"]: d for d in describe(cfg)}

    base = described("dataset.train_subset=64")
    assert described("dataset.train_subset=64")["train"]["digest"] == base["train"]["digest"]
    assert described("dataset.train_subset=63")["train"]["digest"] != base["train"]["digest"]
    assert (
        described("dataset.train_subset=64", "seed=2")["train"]["digest"]
        != (base["train"]["digest"])
    )
    other_data = described("dataset.train_subset=64", "dataset.train_size=129")
    assert other_data["train"]["digest"] != base["train"]["digest"]
    assert base["train"]["source"] == "generated"
    assert [d["context"] for d in describe(tiny("mode=test", "checkpoint=x.pt"))] == ["test"]


def test_fashion_mnist_names_its_root_as_the_source(fmnist_root):
    cfg = compose_config(["dataset=fashion_mnist", f"dataset.root={fmnist_root}"])
    cfg.dataset.test_subset = 100
    validate(cfg)
    build_data(cfg)
    [train_split, test_split] = describe(cfg)
    assert (train_split["name"], train_split["size"], test_split["size"]) == (
        "fashion_mnist",
        60000,
        100,
    )
    assert train_split["source"] == test_split["source"] == str(fmnist_root)


def test_a_resumed_run_does_not_log_its_datasets_again(mlflow_store, tmp_path, monkeypatch):
    import eva.modes.train
    from eva.tracking.writer import RemoteTracker

    sent = []
    real = RemoteTracker.log_datasets
    monkeypatch.setattr(
        RemoteTracker, "log_datasets", lambda self, d: (sent.append(d), real(self, d))
    )
    cfg = tiny("epochs=2", f"tracking.experiment={experiment_name()}", "tracking.log_model=false")
    real_epoch, calls = eva.modes.train.train_one_epoch, []

    def interrupted_in_epoch_2(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_epoch(*args, **kwargs)

    with monkeypatch.context() as m:
        m.setattr(eva.modes.train, "train_one_epoch", interrupted_in_epoch_2)
        with pytest.raises(KeyboardInterrupt):
            train(cfg, tmp_path)
    assert len(sent) == 1
    resumed = cfg.copy()
    resumed.resume = True
    results = train(resumed, tmp_path)
    assert len(sent) == 1  # the reopened run has its inputs already
    run = MlflowClient(mlflow_store).get_run(results["mlflow_run_id"])
    assert run.info.status == "FINISHED" and len(run.inputs.dataset_inputs) == 2


# --------------------------------------------------------------------------- system metrics


def test_a_run_records_system_metrics_while_it_is_open(registered, trial_run):
    client = registered["client"]
    run_id = registered["results"]["mlflow_run_id"]
    for key in ("system/cpu_utilization_percentage", "system/system_memory_usage_megabytes"):
        history = client.get_metric_history(run_id, key)
        assert len(history) >= 2, key
        assert sorted(m.step for m in history) == list(range(len(history)))
    memory = client.get_metric_history(run_id, "system/system_memory_usage_megabytes")
    assert all(m.value > 0 for m in memory)
    # tracking.system_metrics=false: none, neither in training nor when finish_run reopens it
    quiet = client.get_run(trial_run["results"]["mlflow_run_id"])
    assert not [k for k in quiet.data.metrics if k.startswith("system/")]


def test_the_monitor_stops_at_once_keeps_its_last_sample_and_goes_on_after_a_reopen(
    mlflow_store,
):
    """A run far shorter than the interval still gets its sample, ending it does not wait
    for the interval, and a reopened run's samples continue the steps."""
    config = {"enabled": True, "uri": mlflow_store, "experiment": experiment_name()}
    config.update(timeout=10.0, system_metrics=True, system_metrics_interval=30.0)
    tracker = Tracker.open(OmegaConf.create(config), Launch(), monitor=True)
    tracker.start("short", params={}, tags={})
    assert tracker._monitor._process.daemon  # never holds up the process's exit
    time.sleep(0.2)
    started = time.perf_counter()
    tracker.end("FINISHED")
    assert time.perf_counter() - started < 0.9  # the interval is 30 s
    assert tracker.reopen(tracker.run_id)
    tracker.end("KILLED", "stopped")
    client = MlflowClient(mlflow_store)
    history = client.get_metric_history(tracker.run_id, "system/system_memory_usage_megabytes")
    assert sorted(m.step for m in history) == [0, 1]
    assert client.get_run(tracker.run_id).info.status == "KILLED"
    # A tracker not opened for a training run (a sweep's parent) samples nothing.
    parent = Tracker.open(OmegaConf.create(config), Launch())
    parent.start("parent", params={}, tags={})
    parent.end("FINISHED")
    assert not [k for k in client.get_run(parent.run_id).data.metrics if k.startswith("system/")]


# --------------------------------------------------------------------------- model registry


def test_the_registered_champion_loads_and_predicts_like_the_checkpoint(registered):
    import mlflow.pytorch

    client, name, results = registered["client"], registered["name"], registered["results"]
    [version] = client.search_model_versions(f"name='{name}'")
    assert int(version.version) == 1 and version.run_id == results["mlflow_run_id"]
    assert {k: int(v) for k, v in client.get_registered_model(name).aliases.items()} == {
        CHAMPION: 1
    }
    assert version.tags == {
        "objective": "best_val_acc",  # dataset.val_size > 0
        "objective_value": repr(results["best_val_acc"]),
        "direction": "maximize",
        "run_id": results["mlflow_run_id"],
    }
    assert results["registered_model"] == {"name": name, "version": 1, "champion": True}
    champion = mlflow.pytorch.load_model(f"models:/{name}@{CHAMPION}")
    net = build_model(registered["cfg"].model, 3, 10).eval()
    net.load_state_dict(load_checkpoint(Path(results["best_checkpoint"]))["model"])
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(champion(x), net(x), atol=1e-5)


def test_the_champion_moves_only_to_a_better_score_on_the_same_objective(registered):
    """The alias rule on a real store, with versions of the run's logged model."""
    client, results = registered["client"], registered["results"]
    name, uri, run_id = model_name(), results["mlflow_model_uri"], results["mlflow_run_id"]

    def champion() -> int:
        return int(client.get_registered_model(name).aliases[CHAMPION])

    first = register(client, name, uri, run_id, "best_val_acc", 0.5, study="s")
    assert (first.version, first.crowned, first.before) == (1, True, None)
    assert "is the first champion" in first.line()
    worse = register(client, name, uri, run_id, "best_val_acc", 0.4)
    tie = register(client, name, uri, run_id, "best_val_acc", 0.5)
    assert (worse.crowned, tie.crowned, champion()) == (False, False, 1)
    assert "champion stays version 1" in worse.line()
    better = register(client, name, uri, run_id, "best_val_acc", 0.6)
    assert (better.version, better.crowned, champion()) == (4, True, 4)
    assert "is the new champion (was version 1)" in better.line()
    other_objective = register(client, name, uri, run_id, "best_test_acc", 0.99)
    assert (other_objective.crowned, champion()) == (False, 4)  # not comparable
    client.set_registered_model_alias(name, CHAMPION, "2")  # moved by hand
    assert register(client, name, uri, run_id, "best_val_acc", 0.45).crowned
    assert client.get_model_version(name, "1").tags["study"] == "s"


def test_two_registrations_at_once_settle_on_the_better_version(registered):
    """Versions 2 (0.7) and 3 (0.6) both beat champion 1 (0.5), read before either moved
    the alias; 3 set it last. Each registration's settle() puts the alias on the best of
    the champion and the versions from its own up."""
    from eva.tracking.registry import settle

    client, results = registered["client"], registered["results"]
    name, uri, run_id = model_name(), results["mlflow_model_uri"], results["mlflow_run_id"]
    for value in (0.5, 0.7, 0.6):
        register(client, name, uri, run_id, "best_val_acc", value)
    client.set_registered_model_alias(name, CHAMPION, "3")  # the worse one's write, last
    assert settle(client, name, 3) == 3  # version 3 sees nothing better from 3 up ...
    assert settle(client, name, 2) == 2  # ... version 2 sees itself beat 3, and moves it
    assert int(client.get_registered_model(name).aliases[CHAMPION]) == 2
    client.set_registered_model_alias(name, CHAMPION, "1")  # by hand
    assert settle(client, name, 3) == 3  # 3 beats 1; 2 is older than 3: not a candidate


def test_a_sweep_s_deferred_model_is_registered_by_finish_run_with_its_study(trial_run):
    client, name = trial_run["client"], trial_run["name"]
    assert trial_run["left"] == ["model"] and trial_run["registered_before"] == []
    [version] = client.search_model_versions(f"name='{name}'")
    assert version.run_id == trial_run["results"]["mlflow_run_id"]
    assert version.tags["study"] == trial_run["study"]
    assert version.tags["objective"] == "best_test_acc"  # no validation split
    assert float(version.tags["objective_value"]) == trial_run["results"]["objective"]
    assert int(client.get_registered_model(name).aliases[CHAMPION]) == int(version.version)
    assert trial_run["finished"]["mlflow_model_uri"]
    assert trial_run["finished"]["registered_model"]["version"] == int(version.version)
    assert client.get_run(version.run_id).info.status == "FINISHED"


# --------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("tracking.system_metrics_interval=0", "tracking.system_metrics_interval=0.0: must be a"),
        ("tracking.system_metrics_interval=-1.5", "interval=-1.5: must be a positive number"),
        ("tracking.register=team/fmnist", "tracking.register='team/fmnist': .*'/' or ':'"),
        ("tracking.register=' '", "tracking.register=' ': .*blank"),
        ("tracking.register=..x", "tracking.register='..x': .*path"),
    ],
)
def test_bad_tracking_keys_are_refused_in_one_line(compose, override, message):
    with pytest.raises(EvaError, match=message) as refused:
        validate(compose(override))
    assert "\n" not in str(refused.value)


def test_register_without_a_logged_model_is_refused(compose):
    cfg = compose("tracking.register=fmnist", "tracking.log_model=false")
    with pytest.raises(EvaError, match="tracking.register=fmnist: .*tracking.log_model=true"):
        validate(cfg)
    validate(compose("tracking.register=fmnist", "tracking.log_model=false", "mode=lr_find"))
