"""examples/own_model: a user's own package (model, dataset, augmentation) trained by eva.

The example is copied to a folder outside the repository and `python -m eva` runs there,
as a researcher would run it in their own repository: the package `tinylab` is importable
only because it sits in the launch folder, and its YAMLs join through hydra.searchpath.
"""

import json
import shutil

import optuna
import pytest
from helpers import (
    PYTHON_M_EVA,
    REPO,
    copy_store,
    experiment_name,
    png_size,
    run_cli,
    runs_of,
    sigterm_after_first_epoch,
)
from optuna.trial import TrialState

from evasweep.storage import open_storage

EXAMPLE = REPO / "examples" / "own_model"
SEARCHPATH = "hydra.searchpath=[file://conf]"  # relative: the launch folder's conf/
FAST = ["threads=1", "progress=false", "tracking.log_model=false"]
# 4000 training images, 1000 test images, 125 steps of batch 32: ~1 s per epoch.
FMNIST = ["dataset=fashion_mnist", "dataset.train_subset=4000", "dataset.test_subset=1000"]


def eva(*args, cwd, timeout=300):
    return run_cli(args, cwd, timeout=timeout, entry=PYTHON_M_EVA)


def error_line(r) -> str:
    """The one `Error:` line of a refused command (and nothing else on stderr)."""
    assert r.returncode == 1, r.stderr[-3000:]
    assert "Traceback" not in r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), r.stderr[-3000:]
    return lines[0]


def nothing_ran(run_dir) -> bool:
    """No data loaded, no epoch, no folder: a refused command leaves none behind."""
    return not run_dir.exists()


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """The example, copied outside the repository: the folder a user runs eva from."""
    folder = tmp_path_factory.mktemp("own") / "own_model"
    shutil.copytree(EXAMPLE, folder, ignore=shutil.ignore_patterns("__pycache__"))
    return folder


@pytest.fixture(scope="module")
def store(lab, empty_store) -> str:
    """The lab's own MLflow store (an Optuna study lands next to it: lab/store/optuna.log)."""
    return copy_store(empty_store, lab / "store" / "mlflow.db")


@pytest.fixture(scope="module")
def trained(lab, store, fmnist_root):
    """One epoch of TinyNet on the Fashion-MNIST subset, reports on: trained once."""
    experiment = experiment_name()
    args = [
        "model=tinynet",
        SEARCHPATH,
        *FMNIST,
        f"dataset.root={fmnist_root}",
        "batch_size=32",
        "epochs=1",
        "threads=1",
        "progress=false",  # and the model logged to MLflow, as for eva's own models
        f"tracking.uri={store}",
        f"tracking.experiment={experiment}",
        "hydra.run.dir=trained",
    ]
    r = eva(*args, cwd=lab)
    assert r.returncode == 0, r.stderr[-3000:]
    results = json.loads((lab / "trained" / "results.json").read_text())
    return {"args": args, "results": results, "experiment": experiment}


def test_tinynet_learns_fashion_mnist_in_one_epoch(lab, store, trained, monkeypatch):
    results = trained["results"]
    assert results["model"] == "tinynet" and results["sizes"]["train"] == 4000
    assert results["best_test_acc"] > 0.6  # measured 0.738; chance is 0.1
    (run,) = runs_of(store, trained["experiment"])
    assert run.info.status == "FINISHED"
    params = run.data.params
    assert params["model._target_"] == "tinylab.nets.TinyNet"
    assert params["model.name"] == "tinynet"  # the option's name: its YAML sets none
    assert (params["model.width"], params["model.depth"]) == ("16", "2")
    assert run.data.metrics["best_test_acc"] == pytest.approx(results["best_test_acc"])

    plots = lab / "trained" / "plots"
    png_size(plots / "gradcam_misclassified.png")
    assert results["reports"]["errors"] == {}
    # model.gradcam_layer is null: GradCAM explains the last Conv2d, TinyNet's features.1.0
    monkeypatch.syspath_prepend(str(lab))
    from tinylab.nets import TinyNet

    from eva.models import gradcam_layer

    assert gradcam_layer(TinyNet(1, 10), None) == "features.1.0"


def test_the_logged_model_loads_without_the_package_and_predicts_any_batch(trained, store):
    import mlflow.pytorch
    import torch
    from mlflow import MlflowClient

    from eva.tracking.run import _fluent_target

    uri = trained["results"]["mlflow_model_uri"]
    assert uri and uri.startswith("models:/")
    experiment = MlflowClient(store).get_experiment_by_name(trained["experiment"])
    with _fluent_target(store, experiment.experiment_id):  # put back afterwards, whole
        loaded = mlflow.pytorch.load_model(uri)  # a torch.export graph: no tinylab import
    with torch.no_grad():
        assert tuple(loaded(torch.zeros(5, 1, 28, 28)).shape) == (5, 10)


def test_the_lr_range_test_runs_on_the_own_model(lab, fmnist_root):
    r = eva(
        "mode=lr_find", "model=tinynet", SEARCHPATH, *FMNIST, f"dataset.root={fmnist_root}",
        "batch_size=32", "lr_find.num_iter=30", *FAST, "tracking.enabled=false",
        "hydra.run.dir=lr_find", cwd=lab,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    found = json.loads((lab / "lr_find" / "results.json").read_text())
    assert found["model"] == "tinynet" and len(found["curve"]["lr"]) >= 5
    assert found["suggested_lr"] > 0
    png_size(lab / "lr_find" / "plots" / "lr_find.png")


def test_an_optuna_sweep_of_the_models_own_argument(lab, store, fmnist_root):
    experiment = experiment_name()
    r = eva(
        "-m",
        "hparams_search=optuna",
        "model=tinynet",
        SEARCHPATH,
        "hydra.sweeper.params=null",  # not eva's default space (max_lr, dropout, l1_weight)
        "model.width=choice(8,16)",
        "hydra.sweeper.n_trials=2",
        "dataset=fashion_mnist",
        f"dataset.root={fmnist_root}",
        "dataset.train_subset=500",
        "dataset.test_subset=200",
        "batch_size=32",
        "epochs=1",
        "report.enabled=false",
        *FAST,
        f"tracking.uri={store}",
        f"tracking.experiment={experiment}",
        cwd=lab,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    url = open_storage(f"journal:///{lab / 'store' / 'optuna.log'}")  # next to the MLflow store
    (study,) = [
        optuna.load_study(study_name=name, storage=url) for name in optuna.get_all_study_names(url)
    ]
    complete = [t for t in study.trials if t.state == TrialState.COMPLETE]
    assert len(complete) == 2
    assert sorted(t.params["model.width"] for t in complete) == [8, 16]
    # every other trial is a redrawn duplicate, never run
    assert all(t.user_attrs.get("duplicate") for t in study.trials if t not in complete)

    runs = runs_of(store, experiment)
    children = [c for c in runs if "mlflow.parentRunId" in c.data.tags]
    assert len(children) == 2 and all(c.info.status == "FINISHED" for c in children)
    assert sorted(c.data.params["model.width"] for c in children) == ["16", "8"]


def test_mode_test_reproduces_the_training_runs_accuracy(lab, store, trained):
    experiment = experiment_name()
    args = [a for a in trained["args"] if not a.startswith(("tracking.experiment", "hydra.run"))]
    r = eva(
        *args,
        "mode=test",
        "checkpoint=trained/checkpoints/best.pt",  # relative: from the launch folder
        "report.enabled=false",
        f"tracking.experiment={experiment}",
        "hydra.run.dir=tested",
        cwd=lab,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    tested = json.loads((lab / "tested" / "results.json").read_text())
    assert tested["same_split"] and tested["checkpoint_epoch"] == 1
    assert tested["test_acc"] == trained["results"]["best_test_acc"]  # exactly
    (run,) = runs_of(store, experiment)
    assert run.info.status == "FINISHED" and run.data.params["model.width"] == "16"


def test_own_dataset_and_augmentation_train_and_stay_albumentations_only(lab, store):
    experiment = experiment_name()
    common = ["model=tinynet", "dataset=stripes", "augment=jitter", SEARCHPATH, *FAST]
    r = eva(
        *common,
        "batch_size=32",
        "epochs=1",
        "report.enabled=false",
        f"tracking.uri={store}",
        f"tracking.experiment={experiment}",
        "hydra.run.dir=stripes",
        cwd=lab,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    results = json.loads((lab / "stripes" / "results.json").read_text())
    assert results["dataset"] == "stripes"
    assert results["sizes"] == {"train": 2000, "val": 0, "test": 500}
    assert results["best_test_acc"] > 0.5  # measured 0.95; chance is 1/6
    (run,) = runs_of(store, experiment)
    assert run.data.params["augment._target_"] == "tinylab.augment.jitter"
    assert run.data.params["dataset.noise"] == "1.5"

    r = eva(*common, "augment.backend=torch", "hydra.run.dir=refused", cwd=lab)
    line = error_line(r)
    assert line.startswith("Error: augment.backend=torch: augment=jitter runs on albumentations")
    assert nothing_ran(lab / "refused")

    r = eva(*common, "augment.p=2", "hydra.run.dir=checked", cwd=lab)  # jitter.check
    assert error_line(r) == "Error: augment.p=2: a probability, must be in [0, 1]"
    assert nothing_ran(lab / "checked")


def test_bad_input_fails_in_one_line_before_any_work(lab, store):
    (lab / "conf" / "model" / "broken.yaml").write_text("_target_: tinylab.netz.TinyNet\n")
    experiment = experiment_name()
    tracking = [f"tracking.uri={store}", f"tracking.experiment={experiment}"]

    r = eva("model=tinynet", SEARCHPATH, "model.widht=3", *tracking, "hydra.run.dir=a", cwd=lab)
    line = error_line(r)
    assert line.startswith("Error: model.widht=3: ") and "TinyNet" in line
    assert "width, depth, dropout" in line  # its arguments, to spot the typo

    r = eva("model=broken", SEARCHPATH, *tracking, "hydra.run.dir=b", cwd=lab)
    line = error_line(r)
    assert line.startswith("Error: model._target_=tinylab.netz.TinyNet: cannot import module ")
    assert "tinylab.netz" in line.split("cannot import module", 1)[1]

    assert nothing_ran(lab / "a") and nothing_ran(lab / "b")
    assert runs_of(store, experiment, missing_ok=True) == []  # no MLflow run either


def test_a_killed_run_of_the_own_model_resumes_to_the_end(lab, store, fmnist_root):
    args = [
        "model=tinynet", SEARCHPATH, *FMNIST, f"dataset.root={fmnist_root}", "batch_size=32",
        "epochs=4", *FAST, "report.enabled=false", f"tracking.uri={store}", "hydra.run.dir=killed",
    ]  # fmt: skip
    experiment = experiment_name()
    code, stderr = sigterm_after_first_epoch(args, lab, store, experiment, entry=PYTHON_M_EVA)
    assert code == 130, stderr[-3000:]
    r = eva(*args, f"tracking.experiment={experiment}", "resume=true", cwd=lab)
    assert r.returncode == 0, r.stderr[-3000:]
    results = json.loads((lab / "killed" / "results.json").read_text())
    assert results["epochs_completed"] == 4 and 1 <= results["resumed_at_epoch"] < 4
    (run,) = runs_of(store, experiment)  # the same MLflow run, continued
    assert run.info.status == "FINISHED" and run.data.params["model.width"] == "16"


def test_help_lists_the_own_options_beside_evas(lab):
    r = eva("--help", SEARCHPATH, cwd=lab)
    assert r.returncode == 0, r.stderr
    listed = {
        line.split()[0]: line.split()[1:] for line in r.stdout.splitlines() if line[:2] == "  "
    }
    assert "tinynet" in " ".join(listed["model"]) and "session6," in listed["model"]
    assert "stripes" in " ".join(listed["dataset"]) and "jitter" in " ".join(listed["augment"])
    assert "tinynet" not in eva("--help", cwd=lab).stdout  # only through the search path
