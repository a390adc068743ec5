"""mode=lr_find, scheduler.max_lr=find and mode=test: through the CLI and train() itself."""

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from helpers import TINY_CLI, experiment_name, png_size, run_cli, runs_of
from mlflow import MlflowClient
from omegaconf import OmegaConf

from eva.data import ImageSet
from eva.data.loaders import TensorBatches
from eva.engine.checkpoint import save_checkpoint
from eva.errors import EvaError
from eva.models import build_model
from eva.modes.test import evaluate_checkpoint
from eva.modes.train import train
from eva.report import make_reports

FAST_FIND = ["lr_find.num_iter=20", "lr_find.end_lr=1.0"]
TRAIN_PLOTS = {"loss_accuracy_curves", "lr_schedule", "augmented_samples"}
EVAL_PLOTS = {"confusion_matrix", "per_class_accuracy", "misclassified", "gradcam_misclassified"}


def artifact_paths(client: MlflowClient, run_id: str, folder: str) -> set[str]:
    return {Path(a.path).name for a in client.list_artifacts(run_id, folder)}


def test_lr_find_mode_suggests_plots_and_records(tmp_path, mlflow_store):
    experiment = experiment_name()
    args = [*TINY_CLI, *FAST_FIND, "mode=lr_find", f"tracking.experiment={experiment}"]
    r = run_cli([*args, "hydra.run.dir=find"], cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    results = json.loads((tmp_path / "find" / "results.json").read_text())
    assert results["mode"] == "lr_find" and results["iterations"] == 20
    assert 1e-7 <= results["suggested_lr"] <= 1.0
    assert results["suggested_lr"] in (results["steepest_lr"], results["min_loss_lr"])
    assert len(results["curve"]["lr"]) == len(results["curve"]["loss"]) == 20
    assert f"suggested max_lr: {results['suggested_lr']:.4g}" in r.stdout + r.stderr
    width, height = png_size(tmp_path / "find" / "plots" / "lr_find.png")
    assert width > height > 300
    assert not (tmp_path / "find" / "checkpoints").exists()  # nothing trained, nothing saved

    (run,) = runs_of(mlflow_store, experiment)
    assert run.info.status == "FINISHED" and run.info.run_name.startswith("lr_find: ")
    assert run.data.metrics["suggested_lr"] == results["suggested_lr"]
    assert run.data.tags["mode"] == "lr_find"
    assert "lr_find.png" in artifact_paths(MlflowClient(mlflow_store), run.info.run_id, "plots")


def tiny(compose, *extra):
    other_model = any(e.startswith("model=") for e in extra)
    model = [] if other_model else ["model=session6", "model.channels=[8,16,16,16]"]
    other_data = any(e.startswith("dataset=") for e in extra)
    data = (
        []
        if other_data
        else ["dataset=synthetic", "dataset.train_size=128", "dataset.test_size=64"]
    )
    return compose(
        *data,
        *model,
        "batch_size=32",
        "progress=false",
        "report.enabled=false",
        *extra,
    )


def test_max_lr_find_trains_exactly_like_the_number_it_found(compose, tmp_path, mlflow_store):
    experiment = experiment_name()
    found = train(
        tiny(compose, "epochs=2", "scheduler.max_lr=find", *FAST_FIND,
             f"tracking.experiment={experiment}"),
        tmp_path / "found",
    )  # fmt: skip
    value = found["lr_find"]["suggested_lr"]
    assert found["max_lr"] == value and 1e-7 <= value <= 1.0
    assert found["history"][0]["lr"] < value  # one-cycle: from max_lr / div_factor upwards
    png_size(tmp_path / "found" / "plots" / "lr_find.png")
    (run,) = runs_of(mlflow_store, experiment)
    assert float(run.data.params["scheduler.max_lr"]) == value  # the number used, not "find"
    assert run.data.params["derived.max_lr_source"] == "lr_find (steepest)"
    assert OmegaConf.load(tmp_path / "found" / "config.yaml").scheduler.max_lr == value

    given = train(
        tiny(compose, "epochs=2", f"scheduler.max_lr={value!r}", "tracking.enabled=false"),
        tmp_path / "given",
    )
    # The range test ran on its own loader and RNG and put the weights back: training
    # afterwards is bit-for-bit the run that was given the number.
    for a, b in zip(found["history"], given["history"], strict=True):
        assert (a["train_loss"], a["test_acc"], a["lr"]) == (
            b["train_loss"],
            b["test_acc"],
            b["lr"],
        )


def test_mode_test_reproduces_the_training_accuracy_and_both_make_reports(tmp_path, mlflow_store):
    experiment = experiment_name()
    common = [*TINY_CLI, "report.enabled=true", f"tracking.experiment={experiment}"]
    r = run_cli([*common, "epochs=2", "hydra.run.dir=trained"], cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    trained = json.loads((tmp_path / "trained" / "results.json").read_text())
    checkpoint = "trained/checkpoints/best.pt"  # relative: from the launch dir
    r = run_cli([*common, "mode=test", f"checkpoint={checkpoint}", "hydra.run.dir=tested"],
                cwd=tmp_path)  # fmt: skip
    assert r.returncode == 0, r.stderr
    tested = json.loads((tmp_path / "tested" / "results.json").read_text())

    assert tested["test_acc"] == trained["best_test_acc"]  # exactly: same split, same weights
    assert tested["checkpoint_epoch"] == trained["best_epoch"] and tested["same_split"]
    assert tested["test_loss"] == pytest.approx(
        trained["history"][trained["best_epoch"] - 1]["test_loss"], rel=1e-6
    )
    assert set(trained["reports"]["files"]) >= TRAIN_PLOTS | EVAL_PLOTS
    assert set(tested["reports"]["files"]) >= EVAL_PLOTS
    assert not set(tested["reports"]["files"]) & TRAIN_PLOTS  # no history in test mode
    assert trained["reports"]["errors"] == tested["reports"]["errors"] == {}
    for folder in ("trained", "tested"):
        for name in (tmp_path / folder / "plots").iterdir():
            png_size(name)
    text = (tmp_path / "tested" / "reports" / "classification_report.txt").read_text()
    assert "macro avg" in text and all(f"class{i}" in text for i in range(10))
    assert tested["reports"]["total_seconds"] > 0

    client = MlflowClient(mlflow_store)
    train_run, test_run = runs_of(mlflow_store, experiment)
    assert train_run.info.status == test_run.info.status == "FINISHED"
    plots = artifact_paths(client, train_run.info.run_id, "plots")
    for word in ("loss", "confusion", "misclassified", "gradcam", "lr_schedule", "augmented"):
        assert any(word in name for name in plots), (word, plots)
    assert "classification_report.txt" in artifact_paths(client, train_run.info.run_id, "reports")
    assert train_run.data.tags["best_checkpoint"] == trained["best_checkpoint"]
    recalls = {k: v for k, v in train_run.data.metrics.items() if k.endswith(".recall")}
    assert len(recalls) == 10 and all(0 <= v <= 1 for v in recalls.values())
    assert test_run.data.tags["source_run_id"] == train_run.info.run_id
    assert test_run.data.metrics["test_acc"] == tested["test_acc"]
    assert artifact_paths(client, test_run.info.run_id, "plots") >= {f"{p}.png" for p in EVAL_PLOTS}


@pytest.fixture
def checkpoint(compose, tmp_path):
    """A checkpoint in the format training writes, of a tiny session6 on synthetic data."""
    cfg = tiny(compose)
    model = build_model(cfg.model, 3, 10)
    path = tmp_path / "best.pt"
    state = {
        "model": model.state_dict(),
        "model_name": "session6",
        "epoch": 1,
        "metrics": {"test_acc": 0.5},
        "config": OmegaConf.to_container(cfg, resolve=True, enum_to_str=True),
    }
    save_checkpoint(state, path)
    return path


class NotWeights:  # pickled with its class: weights_only loading must refuse it
    pass


@pytest.mark.parametrize(
    ("overrides", "make", "message"),
    [
        ((), lambda p: p.parent / "nope.pt", "checkpoint={}: no such file"),
        ((), lambda p: p.write_bytes(b"not a zip") and p, "checkpoint={}: not a checkpoint eva"),
        ((), lambda p: torch.save({"x": 1}, p) or p, "checkpoint={}: not an eva checkpoint"),
        ((), lambda p: torch.save(NotWeights(), p) or p, "checkpoint={}: not a checkpoint eva"),
        (("model=ultimus",), None, "checkpoint={}: holds a session6 model, the config builds"),
        (("model.channels=[8,8,8,8]",), None, "checkpoint={}: was trained with other model"),
        (("dataset=fashion_mnist",), None, "checkpoint={}: was trained on synthetic"),
    ],
)
def test_mode_test_refuses_what_it_cannot_evaluate(
    compose, checkpoint, tmp_path, mlflow_store, overrides, make, message
):
    path = make(tmp_path / "other.pt") if make else checkpoint
    experiment = experiment_name()
    cfg = tiny(
        compose, "mode=test", f"checkpoint={path}", f"tracking.experiment={experiment}", *overrides
    )
    with pytest.raises(EvaError) as e:
        evaluate_checkpoint(cfg, tmp_path / "out")
    assert str(e.value).startswith(message.format(path)) and "\n" not in str(e.value)
    assert runs_of(mlflow_store, experiment, missing_ok=True) == []  # refused before any run


def test_mode_test_on_the_command_line_fails_in_one_line(tmp_path):
    r = run_cli([*TINY_CLI, "mode=test", "checkpoint=missing.pt"], cwd=tmp_path)
    assert r.returncode == 1
    assert r.stderr.strip().splitlines()[-1].startswith("Error: checkpoint=missing.pt: no such")
    assert "Traceback" not in r.stderr


def test_reports_of_a_model_without_mistakes(compose, tmp_path):
    """Every prediction right, and most classes absent: nothing divides by zero or crashes."""
    cfg = tiny(compose, "report.enabled=true")
    images = np.random.default_rng(0).integers(0, 255, (20, 32, 32, 3), dtype=np.uint8)
    labels = np.zeros(20, dtype=np.int64)  # all class0 ...
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 32 * 32, 10))
    with torch.no_grad():
        model[1].weight.zero_()
        model[1].bias.copy_(torch.arange(10, 0, -1).float())  # ... and class0 always wins
    test_set = ImageSet(images, labels, [f"class{i}" for i in range(10)])
    data = SimpleNamespace(
        test=TensorBatches(images, labels, [0.5] * 3, [0.25] * 3, 8),
        test_set=test_set,
        classes=test_set.classes,
    )
    reports = make_reports(cfg, model, data, torch.device("cpu"), tmp_path)
    assert reports.errors == {}
    assert set(reports.files) == EVAL_PLOTS | {"classification_report"}
    assert reports.per_class["class0"]["recall"] == 1.0
    assert reports.per_class["class3"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}
    assert reports.metrics["class.class0.f1"] == 1.0
    png_size(reports.files["misclassified"])  # a figure saying there is none
