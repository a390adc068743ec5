"""The costly records of a sweep go to its best trial only (report.trials=best, the default):
the reports and the logged MLflow model, made once the study is complete, from the best
trial's checkpoint, into its own folder and MLflow run; also when the command of a sweep
killed before that runs again. report.trials=all makes them in every trial, none in none.

Real `train.py -m` sweeps in subprocesses, reading back the study, the run folders and
MLflow; eva/modes/finish.py is the code under test.
"""

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import REPO, TINY_CLI, experiment_name, run_cli, runs_of
from mlflow import MlflowClient
from omegaconf import OmegaConf
from sweep_checks import load

from eva.modes.finish import (
    DEFERRED,
    MADE,
    OFF,
    SKIPPED,
    STAGED,
    checkpoint_identity,
    deferred,
    describe,
    finish_run,
    planned,
    stage_reports,
    take_staged,
)
from eva.tracking import Launch

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux only")


def sweep_args(tmp_path, experiment, *extra) -> list[str]:
    return [
        "-m",
        "hparams_search=optuna",
        "hydra/sweeper/pruner=none",
        *TINY_CLI,
        "report.enabled=true",  # what the debug preset turns off, and what is under test
        "tracking.log_model=true",
        "report.samples=4",
        "report.misclassified=4",
        "report.gradcam=2",
        "report.dpi=40",
        f"tracking.experiment={experiment}",
        f"hydra.sweeper.storage={tmp_path / 'optuna.db'}",
        "hydra.sweeper.sampler.seed=3",
        *extra,
    ]


def folders(study) -> dict[int, Path]:
    return {t.number: Path(t.user_attrs["output_dir"]) for t in study.trials}


def artefacts(folder: Path) -> dict:
    return json.loads((folder / "results.json").read_text())["artefacts"]


def check_made(client, folder: Path, run_id: str) -> None:
    """The run folder and the MLflow run hold the reports and the model."""
    assert artefacts(folder) == {"reports": MADE, "model": MADE}
    results = json.loads((folder / "results.json").read_text())
    assert (folder / "plots" / "confusion_matrix.png").is_file()
    assert (folder / "reports" / "classification_report.txt").is_file()
    assert results["mlflow_model_uri"] and results["reports"]["errors"] == {}
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.data.tags["artefacts"] == "reports made, model made"
    assert run.data.tags["model_uri"] == results["mlflow_model_uri"]
    assert any(k.startswith("class.") for k in run.data.metrics)  # per-class numbers
    uploaded = {a.path for a in client.list_artifacts(run_id, "plots")}
    assert "plots/confusion_matrix.png" in uploaded
    logged = json.loads(Path(client.download_artifacts(run_id, "results/results.json")).read_text())
    assert logged["artefacts"] == {"reports": MADE, "model": MADE}  # the updated file


def check_left(client, folder: Path, run_id: str, state: str = DEFERRED) -> None:
    """A trial that is not the best: params, metrics, results, checkpoint; no reports, no
    model."""
    assert artefacts(folder) == {"reports": state, "model": state}
    assert not (folder / "plots").exists() and not (folder / "reports").exists()
    assert (folder / "checkpoints" / "best.pt").is_file()
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert "model_uri" not in run.data.tags
    assert run.data.tags["artefacts"] == f"reports {state}, model {state}"
    assert "test_acc" in run.data.metrics and "scheduler.max_lr" in run.data.params
    assert client.list_artifacts(run_id, "plots") == []


def test_what_a_run_makes_of_its_reports_and_model(compose):
    cfg = compose()
    trial = Launch(trial=object())  # any trial of eva's sweeper
    assert planned(cfg, Launch()) == {"reports": MADE, "model": MADE}  # a single run
    assert planned(cfg, trial) == {"reports": DEFERRED, "model": DEFERRED}  # the default
    for trials, state in (("all", MADE), ("none", SKIPPED), ("best", DEFERRED)):
        cfg.report.trials = trials
        assert planned(cfg, trial) == {"reports": state, "model": state}
    cfg.report.enabled = False
    cfg.tracking.log_model = False
    assert planned(cfg, trial) == {"reports": OFF, "model": OFF}
    cfg.report.enabled, cfg.tracking.log_model, cfg.tracking.enabled = True, True, False
    assert planned(cfg, trial) == {"reports": DEFERRED, "model": OFF}  # no MLflow: no model
    assert describe({"reports": MADE, "model": OFF}) == "reports made, model off"


def test_deferred_reads_the_run_folder(tmp_path):
    assert deferred(tmp_path) == []  # no results.json
    (tmp_path / "results.json").write_text("{torn")
    assert deferred(tmp_path) == []
    (tmp_path / "results.json").write_text(
        json.dumps({"artefacts": {"reports": DEFERRED, "model": MADE}})
    )
    assert deferred(tmp_path) == ["reports"]


def test_only_the_best_trial_gets_reports_and_a_model_and_all_gives_every_trial_both(
    mlflow_store, tmp_path
):
    """3 trials: the best one has both, in its folder and its MLflow run; the others have
    neither. The same study continued with report.trials=all (a runtime key: the same
    study) gives its new trial both at once."""
    experiment = experiment_name()
    first = run_cli(sweep_args(tmp_path, experiment, "hydra.sweeper.n_trials=3"), tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "making its reports and MLflow model" in first.stdout
    study = load(tmp_path)
    assert [t.state.name for t in study.trials] == ["COMPLETE"] * 3
    client = MlflowClient(mlflow_store)
    best = study.best_trial.number
    for number, folder in folders(study).items():
        run_id = study.trials[number].user_attrs["mlflow_run_id"]
        if number == best:
            check_made(client, folder, run_id)
        else:
            check_left(client, folder, run_id)

    again = sweep_args(tmp_path, experiment, "hydra.sweeper.n_trials=4", "report.trials=all")
    second = run_cli(again, tmp_path)
    assert second.returncode == 0, second.stderr[-3000:]
    study = load(tmp_path)
    assert len(study.trials) == 4  # the same study: the 4th trial joined it
    new = study.trials[3]
    check_made(client, Path(new.user_attrs["output_dir"]), new.user_attrs["mlflow_run_id"])
    parents = [r for r in runs_of(mlflow_store, experiment) if "sweep" in r.data.tags]
    assert [p.info.status for p in parents] == ["FINISHED"]
    assert not any((f / STAGED).exists() for f in folders(study).values())

    # Reports drawn ahead (what eva/sweep/stage.py's process runs) are taken over as drawn.
    folder = folders(study)[next(n for n in range(3) if n != best)]
    staged = stage_reports(folder)
    drawn = json.loads((staged / "done.json").read_text())["summary"]
    tracking = OmegaConf.create(
        {"enabled": True, "uri": mlflow_store, "experiment": experiment, "timeout": 10.0}
    )
    tracking.process = False
    results = finish_run(folder, tracking, tmp_path, device="cpu")
    assert results["reports"]["seconds"] == drawn["seconds"]  # not drawn a second time
    assert results["reports"]["files"]["confusion_matrix"] == str(
        folder / "plots" / "confusion_matrix.png"
    )
    assert not staged.exists() and (folder / "plots" / "confusion_matrix.png").is_file()
    assert results["artefacts"] == {"reports": MADE, "model": MADE}


def test_staged_reports_of_another_checkpoint_are_thrown_away(tmp_path):
    best = tmp_path / "checkpoints" / "best.pt"
    best.parent.mkdir()
    best.write_bytes(b"weights")
    staged = tmp_path / STAGED
    (staged / "plots").mkdir(parents=True)
    identity = checkpoint_identity(best)
    (staged / "done.json").write_text(json.dumps({"checkpoint": {**identity, "size": 1}}))
    assert take_staged(tmp_path, {"best_checkpoint": str(best)}) is None
    assert not staged.exists() and not (tmp_path / "plots").exists()


def test_a_sweep_killed_while_making_the_best_trials_reports_makes_them_when_run_again(
    mlflow_store, tmp_path
):
    """kill -9 as the sweep starts on its best trial: the trial's MLflow run is left
    RUNNING (reopened for the uploads), its results say deferred. The same command again
    has no trial left to run, makes the reports and the model, ends the run FINISHED."""
    experiment = experiment_name()
    command = [sys.executable, str(REPO / "train.py")]
    command += sweep_args(tmp_path, experiment, "hydra.sweeper.n_trials=2")
    log = tmp_path / "first.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(command, cwd=tmp_path, stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 120
    while "making its reports" not in log.read_text():
        assert proc.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)

    study = load(tmp_path)
    best = study.best_trial
    folder, run_id = Path(best.user_attrs["output_dir"]), best.user_attrs["mlflow_run_id"]
    assert "model" in deferred(folder)  # the kill came before the model was logged

    again = run_cli(command[2:], tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert len(load(tmp_path).trials) == 2  # nothing trained again
    client = MlflowClient(mlflow_store)
    check_made(client, folder, run_id)
    (other,) = [t for t in study.trials if t.number != best.number]
    check_left(client, Path(other.user_attrs["output_dir"]), other.user_attrs["mlflow_run_id"])
    runs = runs_of(mlflow_store, experiment)
    assert [r.info.status for r in runs if r.info.status != "FINISHED"] == []


def test_report_trials_none_leaves_every_trial_without_them(mlflow_store, tmp_path):
    """And bad values of report.trials are refused at compose time, in one line."""
    experiment = experiment_name()
    args = sweep_args(tmp_path, experiment, "hydra.sweeper.n_trials=1", "report.trials=none")
    r = run_cli(args, tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    (trial,) = load(tmp_path).trials
    check_left(
        MlflowClient(mlflow_store),
        Path(trial.user_attrs["output_dir"]),
        trial.user_attrs["mlflow_run_id"],
        state=SKIPPED,
    )
    bad = run_cli([*TINY_CLI, "report.trials=some"], tmp_path)
    assert bad.returncode == 1
    (line,) = [x for x in bad.stderr.splitlines() if x.startswith("Error")]
    assert "report.trials" in line and "best" in line and "all" in line, bad.stderr


def test_only_a_sweep_that_runs_its_own_trials_draws_reports_ahead(monkeypatch):
    from eva.sweep.integration import stages_reports
    from evasweep.runner import WORKERS_ENV

    def config(trials="best", enabled=True, launcher="BasicLauncher"):
        return OmegaConf.create(
            {
                "report": {"trials": trials, "enabled": enabled},
                "hydra": {"launcher": {"_target_": f"hydra._internal.core_plugins.{launcher}"}},
            }
        )

    monkeypatch.delenv(WORKERS_ENV, raising=False)
    assert stages_reports(config())
    assert not stages_reports(config(trials="all"))  # each trial draws its own
    assert not stages_reports(config(enabled=False))
    assert not stages_reports(config(launcher="JoblibLauncher"))  # trials elsewhere
    monkeypatch.setenv(WORKERS_ENV, "2")  # an eva-sweep worker: its siblings would too
    assert not stages_reports(config())


def test_the_reports_drawn_ahead_run_at_idle_priority(tmp_path):
    """A process that draws reports during a sweep must not take CPU from the trials."""
    import os

    from eva.sweep.stage import Stager

    stager = Stager()
    stager.stage(tmp_path)  # no run there: it fails after its imports, which is enough
    try:
        assert os.sched_getscheduler(stager.process.pid) == os.SCHED_IDLE
    finally:
        stager.stop()
