"""Optuna sweeps (hydra/sweeper=eva_optuna): params syntax, studies that resume to a total,
failures, pruning, parallel jobs, eva-sweep workers on PostgreSQL."""

import math
import os
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
import yaml
from helpers import (
    LONG,
    REPO,
    TINY_CLI,
    experiment_name,
    run_cli,
    runs_of,
    sigterm_after_first_epoch,
)
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState
from postgres import find_pg_bin, throwaway_cluster

from eva.engine import device as devices
from eva.sweep.integration import EvaIntegration
from evasweep.space import parse_space, trial_overrides
from evasweep.study import default_study_name, identity, resolve_storage

# ----------------------------------------------------------------------------- params syntax


def test_params_syntax_means_what_hydra_optuna_sweeper_means():
    space = parse_space(
        {
            "scheduler.max_lr": "tag(log, interval(0.005, 0.5))",
            "model.dropout": "interval(0, 0.5)",
            "epochs": "int(interval(1, 10))",
            "batch_size": "range(32, 128, 32)",
            "model.blocks": "interval(1, 8)",  # Hydra's interval() is always float
            "optimizer": "choice(sgd, adam)",
            "l1_weight": "choice(0.0, 1e-5)",
            "seed": "7",
        },
        ["model.dropout=interval(0.1, 0.2)", "threads=2"],  # the command line wins
    )
    d = space.distributions
    assert d["scheduler.max_lr"] == FloatDistribution(0.005, 0.5, log=True)
    assert d["model.dropout"] == FloatDistribution(0.1, 0.2)
    assert d["epochs"] == IntDistribution(1, 10)
    assert d["batch_size"] == IntDistribution(32, 128, step=32)  # 128 included
    assert d["model.blocks"] == FloatDistribution(1.0, 8.0)
    assert d["optimizer"] == CategoricalDistribution(["sgd", "adam"])
    assert d["l1_weight"] == CategoricalDistribution([0.0, 1e-5])
    assert space.fixed == {"seed": "seed=7", "threads": "threads=2"}


def test_params_syntax_round_trips():
    lines = {
        "a": "tag(log, interval(1e-05, 0.3))",
        "b": "interval(0.0, 1.0)",
        "c": "int(interval(2, 9))",
        "d": "tag(log, int(interval(1, 1024)))",
        "e": "range(0, 10, 5)",
        "f": "range(0.0, 1.0, 0.25)",
        "g": "choice(sgd, adam, 0.5, 3, true)",
    }
    space = parse_space(lines, [])
    described = space.describe()
    assert described == lines
    assert parse_space(described, []).distributions == space.distributions
    # a trial's values become overrides that Hydra reads back as the same values
    values = {"l1_weight": 1e-05, "optimizer": "adam", "x": None, "flag": True, "n": 3}
    assert trial_overrides(values) == [
        "l1_weight=1e-05",
        "optimizer=adam",
        "x=null",
        "flag=true",
        "n=3",
    ]


# ----------------------------------------------------------------------------- study identity


def test_default_storage_sits_next_to_the_mlflow_store(compose, tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI")

    def storage(given, *overrides):
        default = EvaIntegration().default_storage(compose(*overrides), tmp_path)
        return resolve_storage(given, default, tmp_path)

    assert storage(None) == f"journal:///{tmp_path}/optuna.log"
    other = f"tracking.uri=sqlite:///{tmp_path}/runs/team.db"
    assert storage(None, other) == f"journal:///{tmp_path}/runs/optuna.log"
    assert storage(None, "tracking.uri=http://mlflow:5000") == f"journal:///{tmp_path}/optuna.log"
    assert storage(None, "tracking.enabled=false") == f"journal:///{tmp_path}/optuna.log"
    assert storage("s.db", other) == f"sqlite:///{tmp_path}/s.db"
    pg = "postgresql+psycopg2://u:p@db:5432/optuna"
    assert storage(pg) == pg


def test_study_name_follows_what_trials_train_not_how_they_run():
    params = {"model.dropout": "interval(0.0, 0.3)"}

    def name(*args):
        space = parse_space(params, list(args))
        ident = identity(space, ["maximize"], EvaIntegration().in_identity)
        return default_study_name("m-d", ident)

    same = name("epochs=1", "model=session6")
    assert same.startswith("m-d-")
    assert name("model=session6", "epochs=1", "progress=false", "device=cpu") == same
    assert name("epochs=1", "model=session6", "tracking.experiment=x", "threads=1") == same
    assert name("epochs=2", "model=session6") != same  # other training: another study


def test_parallel_jobs_get_their_own_gpu_and_share_the_cpu_cores(monkeypatch):
    monkeypatch.setattr(devices, "cpu_count", lambda: 16)
    assert devices.slot_threads(None, 1) is None  # alone: torch's default
    assert devices.slot_threads(None, 4) == 4
    assert devices.slot_threads(None, 32) == 1
    assert devices.slot_threads(3, 4) == 3  # threads=N wins
    monkeypatch.setattr(devices.torch.cuda, "is_available", lambda: False)
    assert devices.slot_device("auto", 2) == "auto"  # no GPU: auto resolves to the CPU
    monkeypatch.setattr(devices.torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(devices.torch.cuda, "device_count", lambda: 2)
    assert [devices.slot_device("auto", k) for k in range(4)] == [
        "cuda:0",
        "cuda:1",
        "cuda:0",
        "cuda:1",
    ]
    assert devices.slot_device("cuda:1", 0) == "cuda:1"  # an explicit device stays
    assert devices.slot_device("auto", None) == "auto"  # not in a parallel sweep


# ----------------------------------------------------------------------------- CLI sweeps


def sweep_cli(tmp_path, experiment, *extra, storage=None):
    return [
        "-m",
        "hparams_search=optuna",
        *TINY_CLI,
        "tracking.log_model=false",
        f"tracking.experiment={experiment}",
        f"hydra.sweeper.storage={storage or tmp_path / 'optuna.db'}",
        "hydra.sweeper.sampler.seed=3",
        *extra,
    ]


def load(tmp_path, storage=None):
    url = storage or f"sqlite:///{tmp_path / 'optuna.db'}"
    (summary,) = optuna.get_all_study_summaries(url)
    return optuna.load_study(study_name=summary.study_name, storage=url)


def states(study) -> list[str]:
    return [t.state.name for t in study.trials]


def test_a_sweep_resumes_to_its_total_with_new_params_and_one_parent_run(mlflow_store, tmp_path):
    """4 trials; the same command with n_trials=6 and 2 parallel jobs adds exactly 2."""
    experiment = experiment_name()
    first = run_cli(sweep_cli(tmp_path, experiment, "hydra.sweeper.n_trials=4"), tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    study = load(tmp_path)
    assert states(study) == ["COMPLETE"] * 4
    assert len({tuple(sorted(t.params.items())) for t in study.trials}) == 4
    assert study.metric_names == ["best_test_acc"]  # optuna-dashboard's name for the value

    again = sweep_cli(
        tmp_path,
        experiment,
        "hydra.sweeper.n_trials=6",
        "hydra/launcher=joblib",
        "hydra.launcher.n_jobs=2",
        "hydra.sweeper.n_jobs=2",
    )
    second = run_cli(again, tmp_path)
    assert second.returncode == 0, second.stderr[-3000:]
    study = load(tmp_path)
    assert states(study) == ["COMPLETE"] * 6
    assert len({tuple(sorted(t.params.items())) for t in study.trials}) == 6  # no repeats

    runs = runs_of(mlflow_store, experiment)
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(parents) == 1 and len(children) == 6  # the resumed command reused the parent
    parent = parents[0]
    assert parent.info.status == "FINISHED"
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == {parent.info.run_id}
    assert all(c.info.status == "FINISHED" for c in children)
    names = sorted(c.info.run_name.split(":")[0] for c in children)
    assert names == [str(n) for n in range(6)]  # numbered by trial: no clash across commands
    for trial in study.trials:  # each trial knows its run; the run trained the trial's values
        child = next(c for c in children if c.info.run_id == trial.user_attrs["mlflow_run_id"])
        for key, value in trial.params.items():
            assert float(child.data.params[key]) == pytest.approx(value)
        assert child.data.metrics["best_test_acc"] == pytest.approx(trial.value)

    # two commands, two sweep dirs: the newest summary covers the whole study
    paths = sorted((tmp_path / "multirun").rglob("optimization_results.yaml"))
    result = yaml.safe_load(paths[-1].read_text())
    best = study.best_trial
    assert result["best_value"] == pytest.approx(best.value)
    assert result["best_params"] == best.params
    assert result["counts"] == {"complete": 6}
    assert result["best_mlflow_run_id"] == best.user_attrs["mlflow_run_id"]
    assert parent.data.metrics["best_value"] == pytest.approx(best.value)
    assert parent.data.metrics["best_test_acc"] == pytest.approx(best.value)  # its column
    assert parent.data.tags["best_child_run_id"] == best.user_attrs["mlflow_run_id"]
    assert parent.data.params["search.model.dropout"] == "interval(0.0, 0.3)"


@pytest.mark.parametrize(
    ("swept", "bad", "error"),
    [
        # a learning rate whose loss becomes NaN in the first epoch (a value validation
        # refuses fails the sweep before any trial: tests/test_sweep_input.py)
        (
            ["scheduler=constant", "optimizer.lr=choice(0.05, 1e12)"],
            1e12,
            "NonFiniteLoss: epoch 1/1: the training loss is",
        ),
    ],
    ids=["nan-loss"],
)
def test_failing_trials_are_fail_and_the_sweep_goes_on_within_max_failure_rate(
    tmp_path, swept, bad, error
):
    """Grid over 4 points, 2 of which fail: a failed trial is FAIL with its error, is
    replaced by another, and the sweep ends with its 2 finished trials."""
    key = swept[-1].split("=")[0]
    r = run_cli(
        sweep_cli(
            tmp_path,
            experiment_name(),
            "hydra/sweeper/sampler=grid",
            "hydra.sweeper.params=null",
            *swept,
            "seed=choice(1, 2)",
            "hydra.sweeper.n_trials=2",
            "hydra.sweeper.n_jobs=4",
            "hydra.sweeper.max_failure_rate=0.75",
        ),
        tmp_path,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    study = load(tmp_path)
    assert states(study).count("COMPLETE") == 2
    assert states(study).count("FAIL") >= 1  # with this seed the grid meets the bad value
    for trial in study.trials:
        failed = trial.state == TrialState.FAIL
        assert failed == (trial.params[key] == bad)
        if failed:
            assert error in trial.user_attrs["error"]


def test_too_many_failures_stop_the_sweep_with_one_line(mlflow_store, tmp_path):
    experiment = experiment_name()
    r = run_cli(
        sweep_cli(
            tmp_path,
            experiment,
            "hydra.sweeper.params=null",
            "scheduler=constant",
            "optimizer.lr=choice(1e12, 1e13)",  # NaN losses: every trial fails
            "hydra.sweeper.n_trials=3",
            "hydra.sweeper.max_failure_rate=0.0",
        ),
        tmp_path,
    )
    assert r.returncode == 1
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith(
        "Error: 1 of 1 trials failed, more than hydra.sweeper.max_failure_rate=0.0"
    )
    assert "the training loss is" in last
    assert states(load(tmp_path)) == ["FAIL"]
    (parent, _child) = runs_of(mlflow_store, experiment)
    assert parent.info.status == "FAILED"


def test_a_pruned_trial_stops_early_is_pruned_in_optuna_and_tagged_in_mlflow(
    mlflow_store, tmp_path
):
    # ThresholdPruner(lower=1.01) prunes every trial at its first report: accuracy < 1.01.
    experiment = experiment_name()
    r = run_cli(
        sweep_cli(
            tmp_path,
            experiment,
            "epochs=3",
            "hydra.sweeper.n_trials=2",
            "hydra/sweeper/pruner=none",
            "hydra.sweeper.pruner._target_=optuna.pruners.ThresholdPruner",
            "+hydra.sweeper.pruner.lower=1.01",
        ),
        tmp_path,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    study = load(tmp_path)
    assert states(study) == ["PRUNED", "PRUNED"]
    assert all(list(t.intermediate_values) == [1] for t in study.trials)  # stopped at epoch 1
    children = [c for c in runs_of(mlflow_store, experiment) if "mlflow.parentRunId" in c.data.tags]
    assert len(children) == 2
    for child in children:
        assert child.info.status == "FINISHED"
        assert child.data.tags["pruned"] == "true"
        assert child.data.tags["pruned_at_epoch"] == "1"
        out = Path(child.data.tags["output_dir"])
        assert (out / "checkpoints" / "best.pt").is_file()  # what it learnt is kept


def test_other_samplers_and_pruners_run(tmp_path):
    """CMA-ES (categorical l1_weight falls back to its independent sampler) with Hyperband."""
    r = run_cli(
        sweep_cli(
            tmp_path,
            experiment_name(),
            "hydra/sweeper/sampler=cmaes",
            "hydra/sweeper/pruner=hyperband",
            "epochs=2",
            "hydra.sweeper.n_trials=3",
        ),
        tmp_path,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    study = load(tmp_path)
    finished = [t for t in study.trials if t.state.name in ("COMPLETE", "PRUNED")]
    assert len(finished) == 3
    assert all(
        set(t.params) == {"scheduler.max_lr", "model.dropout", "l1_weight"} for t in finished
    )


def test_sigterm_stops_the_sweep_and_the_same_command_continues_it(tmp_path, mlflow_store):
    """SIGTERM mid-trial: exit 130, the trial FAIL, parent and child KILLED; then rerun."""
    experiment = experiment_name()
    args = sweep_cli(tmp_path, experiment, "hydra.sweeper.n_trials=1")
    args = [a for a in args if not a.startswith("tracking.experiment=")]
    code, stderr = sigterm_after_first_epoch([*args, *LONG], tmp_path, mlflow_store, experiment)
    assert code == 130, stderr[-3000:]
    assert stderr.strip().splitlines()[-1].startswith("Interrupted: running trials marked FAIL")
    study = load(tmp_path)
    assert states(study) == ["FAIL"]
    assert "interrupted" in study.trials[0].user_attrs["error"]
    status = sorted(r.info.status for r in runs_of(mlflow_store, experiment))
    assert status == ["KILLED", "KILLED"]  # the study's parent and the trial's run

    # The same command again (a pruner, which is no part of the study's identity, keeps
    # the 50-epoch trial short): the study continues and its one trial is finished.
    prune_at_once = [
        "hydra/sweeper/pruner=none",
        "hydra.sweeper.pruner._target_=optuna.pruners.ThresholdPruner",
        "+hydra.sweeper.pruner.lower=1.01",
    ]
    again = run_cli(
        sweep_cli(tmp_path, experiment, "hydra.sweeper.n_trials=1", *LONG, *prune_at_once),
        tmp_path,
    )
    assert again.returncode == 0, again.stderr[-3000:]
    assert states(load(tmp_path)) == ["FAIL", "PRUNED"]
    runs = runs_of(mlflow_store, experiment)
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"  # reopened, then ended


def test_a_finite_search_space_never_repeats_a_parameter_set(tmp_path):
    """Two possible values, three trials wanted: two run, then a clear stop."""
    r = run_cli(
        sweep_cli(
            tmp_path,
            experiment_name(),
            "hydra/sweeper/sampler=random",
            "hydra.sweeper.params=null",
            "model.dropout=choice(0.0, 0.1)",
            "hydra.sweeper.n_trials=3",
        ),
        tmp_path,
    )
    assert r.returncode == 1
    assert "the search space looks exhausted" in r.stderr.strip().splitlines()[-1]
    study = load(tmp_path)
    complete = [t for t in study.trials if t.state == TrialState.COMPLETE]
    assert sorted(t.params["model.dropout"] for t in complete) == [0.0, 0.1]
    redraws = [t for t in study.trials if t.state == TrialState.FAIL]
    assert redraws and all(t.user_attrs.get("duplicate") for t in redraws)


def test_a_named_study_refuses_a_command_that_trains_something_else(tmp_path):
    base = ["hydra.sweeper.study_name=mine", "hydra.sweeper.n_trials=1"]
    assert run_cli(sweep_cli(tmp_path, experiment_name(), *base), tmp_path).returncode == 0
    r = run_cli(sweep_cli(tmp_path, experiment_name(), *base, "epochs=2"), tmp_path)
    assert r.returncode == 1
    (line,) = r.stderr.strip().splitlines()[-1:]
    assert line.startswith("Error: hydra.sweeper.study_name=mine: the study was created with")
    assert "fixed_overrides" in line
    assert len(load(tmp_path).trials) == 1  # nothing ran


def test_bad_sweep_settings_fail_in_one_line(tmp_path):
    for extra, message in [
        (["model.dropout=interval(0.3, 0.1)"], "interval needs low < high"),
        (["hydra.sweeper.direction=up"], "hydra.sweeper.direction=up: expected maximize"),
        (["model.dropuot=choice(0.1, 0.2)"], "a sweep value is refused before any trial"),
    ]:
        r = run_cli(sweep_cli(tmp_path, experiment_name(), *extra), tmp_path)
        assert r.returncode == 1, (extra, r.stderr[-2000:])
        last = r.stderr.strip().splitlines()[-1]
        assert last.startswith("Error: ") and message in last, (extra, r.stderr[-2000:])
        assert "Traceback" not in r.stderr


# ----------------------------------------------------------------------------- eva-sweep


@pytest.mark.skipif(find_pg_bin() is None, reason="PostgreSQL (initdb, pg_ctl) is not installed")
def test_two_workers_on_postgresql_finish_exactly_n_trials(mlflow_store, tmp_path):
    experiment = experiment_name()
    with throwaway_cluster() as url:
        args = sweep_cli(tmp_path, experiment, "hydra.sweeper.n_trials=5", storage=url)
        r = subprocess.run(
            [sys.executable, "-m", "eva.sweep.workers", "--workers", "2", *args[1:]],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=600,
            env={**os.environ, "PYTHONPATH": str(REPO)},
        )
        assert r.returncode == 0, (r.stdout[-3000:], r.stderr[-3000:])
        study = load(tmp_path, storage=url)
        trials = study.trials  # read while the server runs
        best_value = study.best_value
    assert [t.state.name for t in trials] == ["COMPLETE"] * 5
    assert len({tuple(sorted(t.params.items())) for t in trials}) == 5
    # both workers trained trials, each in its own slot of the CPU
    assert "[w0]" in r.stdout and "[w1]" in r.stdout
    workers_seen = {line.split()[0] for line in r.stdout.splitlines() if "trial " in line}
    assert {"[w0]", "[w1]"} <= workers_seen
    runs = runs_of(mlflow_store, experiment)
    parents = [x for x in runs if "mlflow.parentRunId" not in x.data.tags]
    assert len(parents) == 1 and len(runs) == 6
    assert parents[0].info.status == "FINISHED"
    assert parents[0].data.metrics["trials_complete"] == 5
    assert math.isclose(parents[0].data.metrics["best_value"], best_value)
