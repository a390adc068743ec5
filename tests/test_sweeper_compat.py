"""Sweep files users already have run on hydra/sweeper=eva_optuna, the sweeper renamed.

Each app of sweeper/examples/ (plain Hydra apps: no eva in them) is copied to a folder of
its own and swept there as its users run it. Read back: the study in optuna.log of that
folder, optimization_results.yaml of the sweep folder, and each job's own config (the
values the trial drew must be what the job ran with, and what it returned the trial's
value). docs/sweeper.md quotes what these files changed from their originals.
"""

import importlib.util
import shutil
import subprocess
import sys

import optuna
import pytest
from helpers import REPO
from omegaconf import OmegaConf
from optuna.trial import TrialState

from evasweep.storage import open_storage

EXAMPLES = REPO / "sweeper" / "examples"


def sweep(tmp_path, example: str, *command: str):
    """Copy the example, run `python <command> hydra.sweep.dir=multirun` in the copy."""
    folder = tmp_path / example
    # Not what a run of the example in the clone left there: this run starts a new study.
    leftovers = shutil.ignore_patterns("multirun", "outputs", "*.db", "*.db.lock", "__pycache__")
    shutil.copytree(EXAMPLES / example, folder, ignore=leftovers)
    result = subprocess.run(
        [sys.executable, *command, "hydra.sweep.dir=multirun"],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return folder


def study_in(folder) -> optuna.Study:
    """The one study of the folder's optuna.log: where storage null puts it."""
    storage = open_storage(f"journal:///{folder / 'optuna.log'}")
    (name,) = optuna.get_all_study_names(storage)
    return optuna.load_study(study_name=name, storage=storage)


def complete(study) -> list:
    return study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))


def finished(study) -> int:
    states = (TrialState.COMPLETE, TrialState.PRUNED)
    return len(study.get_trials(deepcopy=False, states=states))


def results(folder) -> dict:
    return OmegaConf.to_container(OmegaConf.load(folder / "multirun/optimization_results.yaml"))


def job_config(folder, trial):
    """The config the trial's job ran with (its folder is named by the trial number)."""
    return OmegaConf.load(folder / "multirun" / str(trial.number) / ".hydra/config.yaml")


def ran_with_its_params(folder, trial):
    """The job's config, checked to hold every value the trial drew."""
    cfg = job_config(folder, trial)
    assert {key: OmegaConf.select(cfg, key) for key in trial.params} == trial.params
    return cfg


def assert_best_matches(folder, study, n_trials: int):
    summary = results(folder)
    assert summary["study_name"] == study.study_name
    assert summary["finished"] == n_trials
    assert summary["best_trial"] == study.best_trial.number
    assert summary["best_params"] == study.best_params
    assert summary["best_value"] == study.best_value


def test_lightning_hydra_template_sweep_file(tmp_path):
    # hydra.mode MULTIRUN in the sweep file: the command has no -m, as in the template.
    folder = sweep(tmp_path, "lightning_style", "train.py", "hparams_search=mnist_optuna")
    study = study_in(folder)
    assert study.study_name.startswith("train-")  # study_name null: <job name>-<hash>
    assert study.direction == optuna.study.StudyDirection.MAXIMIZE
    assert finished(study) == 8
    assert_best_matches(folder, study, 8)

    spec = importlib.util.spec_from_file_location("lightning_train", folder / "train.py")
    app = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(app)
    for trial in complete(study):
        cfg = ran_with_its_params(folder, trial)
        # The task returned the metric named by optimized_metric, from its dict of metrics.
        assert trial.value == pytest.approx(app.fake_fit(cfg)["val/acc_best"])
    assert len({t.params["data.batch_size"] for t in complete(study)}) > 1  # choice drawn
    assert all(t.params["model.net.lin1_size"] % 32 == 0 for t in complete(study))  # range


def test_official_sphere_example(tmp_path):
    folder = sweep(tmp_path, "official_style", "sphere.py", "-m")
    study = study_in(folder)
    assert study.study_name == "sphere"
    assert study.direction == optuna.study.StudyDirection.MINIMIZE
    assert finished(study) == 20
    assert_best_matches(folder, study, 20)
    for trial in complete(study):
        ran_with_its_params(folder, trial)
        assert trial.value == pytest.approx(trial.params["x"] ** 2 + trial.params["y"] ** 2)
        assert trial.params["y"] in (-5, 0, 5)
        assert (trial.params["x"] + 5.5) / 0.5 == int((trial.params["x"] + 5.5) / 0.5)


def test_official_multi_objective_example(tmp_path):
    folder = sweep(tmp_path, "official_style", "multi_objective.py", "-m")
    study = study_in(folder)
    assert study.study_name == "multi-objective"
    assert study.directions == [optuna.study.StudyDirection.MINIMIZE] * 2
    assert finished(study) == 20
    for trial in complete(study):
        ran_with_its_params(folder, trial)
        x, y = trial.params["x"], trial.params["y"]
        assert trial.values == pytest.approx([4 * x**2 + 4 * y**2, (x - 5) ** 2 + (y - 5) ** 2])

    summary = results(folder)
    assert "best_params" not in summary  # a Pareto front has no single best
    front = sorted(study.best_trials, key=lambda t: t.number)
    assert summary["solutions"] == [
        {"number": t.number, "params": t.params, "values": t.values} for t in front
    ]


def test_official_custom_search_space_example(tmp_path):
    folder = sweep(tmp_path, "official_style", "custom_space.py", "-m")
    study = study_in(folder)
    assert study.study_name == "custom-search-space"
    assert finished(study) == 20
    assert_best_matches(folder, study, 20)
    assert "z" in results(folder)["best_params"]
    for trial in complete(study):
        x, y, z = trial.params["x"], trial.params["y"], trial.params["z"]  # z: configure()
        assert abs(z - x) <= 0.5
        cfg = ran_with_its_params(folder, trial)
        assert cfg.z != 100  # the config's own z was replaced by the drawn one
        assert f"z={z}" in OmegaConf.load(
            folder / "multirun" / str(trial.number) / ".hydra/overrides.yaml"
        )
        assert trial.value == pytest.approx(x**2 + y**2 + (z - 1) ** 2)
