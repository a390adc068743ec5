"""Comparisons that rest on more than one seed or one number: sweeps with repeats over
seeds, plain multiruns over seeds, multi-objective sweeps (issue 23)."""

import json
import statistics
from pathlib import Path

import optuna
import pytest
import yaml
from helpers import TINY_CLI, experiment_name, run_cli, runs_of
from optuna.trial import TrialState

from eva.tracking.seed_groups import seed_groups


def sweep_args(tmp_path, experiment, *extra):
    return [
        "-m",
        "hparams_search=optuna",
        *TINY_CLI,
        f"tracking.experiment={experiment}",
        f"hydra.sweeper.storage={tmp_path / 'optuna.db'}",
        "hydra.sweeper.sampler.seed=3",
        "hydra.sweep.dir=multirun",
        *extra,
    ]


def load(tmp_path):
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    (summary,) = optuna.get_all_study_summaries(url)
    return optuna.load_study(study_name=summary.study_name, storage=url)


def test_a_sweep_with_repeats_trains_every_seed_and_records_mean_and_std(mlflow_store, tmp_path):
    """3 trials x repeats=2: 6 trainings, seeds 7 and 8; each trial's value is the mean of
    its seeds' best_test_acc, its std and seeds are on the trial, its runs and the parent."""
    experiment = experiment_name()
    args = sweep_args(tmp_path, experiment, "seed=7", "hydra.sweeper.n_trials=3")
    done = run_cli([*args, "hydra.sweeper.repeats=2"], tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    study = load(tmp_path)
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 3
    runs = runs_of(mlflow_store, experiment)
    (parent,) = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = {r.info.run_id: r for r in runs if "mlflow.parentRunId" in r.data.tags}
    assert len(children) == 6 and all(c.info.status == "FINISHED" for c in children.values())
    for trial in study.trials:
        seeds = [children[trial.user_attrs[f"mlflow_run_id.{k}"]] for k in (0, 1)]
        assert [r.data.params["seed"] for r in seeds] == ["7", "8"]
        assert [r.data.tags["repeat"] for r in seeds] == ["1/2", "2/2"]
        accs = [r.data.metrics["best_test_acc"] for r in seeds]
        folders = [Path(trial.user_attrs[f"output_dir.{k}"]) for k in (0, 1)]
        assert [f.name for f in folders] == ["seed7", "seed8"]
        assert folders[0].parent.name == str(trial.number)
        assert trial.value == pytest.approx(sum(accs) / 2)
        assert trial.user_attrs["std"] == pytest.approx(statistics.stdev(accs))
        assert trial.user_attrs["seed_values"] == {"7": accs[0], "8": accs[1]}
        for run in seeds:  # the trial's mean and std reach each of its seeds' runs
            again = runs_of(mlflow_store, experiment)
            run = next(r for r in again if r.info.run_id == run.info.run_id)
            assert run.data.metrics["trial_mean_best_test_acc"] == pytest.approx(trial.value)
            assert run.data.metrics["trial_std_best_test_acc"] == pytest.approx(
                trial.user_attrs["std"]
            )
    best = study.best_trial
    result = yaml.safe_load((tmp_path / "multirun" / "optimization_results.yaml").read_text())
    assert result["best_value"] == pytest.approx(best.value)
    assert result["best_std"] == pytest.approx(best.user_attrs["std"])
    assert result["best_seed_values"] == {
        7: best.user_attrs["seed_values"]["7"],
        8: best.user_attrs["seed_values"]["8"],
    }
    # the best trial's run is its better seed's
    k = max((0, 1), key=lambda k: best.user_attrs[f"evasweep_seed.{k}"]["values"][0])
    assert result["best_mlflow_run_id"] == best.user_attrs[f"mlflow_run_id.{k}"]
    parent = next(
        r for r in runs_of(mlflow_store, experiment) if r.info.run_id == parent.info.run_id
    )
    assert parent.data.metrics["best_std"] == pytest.approx(best.user_attrs["std"])


def test_a_plain_multirun_over_seeds_records_mean_and_std_per_group(mlflow_store, tmp_path):
    experiment = experiment_name()
    args = [
        "-m",
        *TINY_CLI,
        f"tracking.experiment={experiment}",
        "seed=1,2",
        "optimizer.lr=0.001,0.05",
    ]
    done = run_cli(args, tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    runs = runs_of(mlflow_store, experiment)
    (parent,) = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(children) == 4
    for i in (0, 1):
        line = parent.data.tags[f"seed_group.{i}"]
        lr = line.split()[0].removeprefix("optimizer.lr=")  # the group's label, then more
        accs = [
            c.data.metrics["best_test_acc"] for c in children if c.data.params["optimizer.lr"] == lr
        ]
        assert len(accs) == 2, (line, [c.data.params["optimizer.lr"] for c in children])
        mean = parent.data.metrics[f"seed_group.{i}.mean_best_test_acc"]
        assert mean == pytest.approx(sum(accs) / 2)
        std = parent.data.metrics[f"seed_group.{i}.std_best_test_acc"]
        assert std == pytest.approx(statistics.stdev(accs))
        assert "over seeds 1, 2" in line
    labels = {parent.data.tags[f"seed_group.{i}"].split(":")[0] for i in (0, 1)}
    # the params that tell the groups apart (max_lr follows lr in this config)
    assert labels == {
        "optimizer.lr=0.001 scheduler.max_lr=0.001",
        "optimizer.lr=0.05 scheduler.max_lr=0.05",
    }
    # children that differ in more than their seed are not grouped
    assert seed_groups([c for c in children if c.data.params["seed"] == "1"]) == []


def test_a_multi_objective_sweep_writes_the_pareto_front_of_accuracy_and_size(
    mlflow_store, tmp_path
):
    experiment = experiment_name()
    args = [
        "-m",
        "hydra/sweeper=eva_optuna",
        "debug=default",
        "tracking.enabled=true",
        "tracking.log_model=false",
        f"tracking.experiment={experiment}",
        f"hydra.sweeper.storage={tmp_path / 'optuna.db'}",
        "hydra.sweep.dir=multirun",
        "hydra/sweeper/pruner=none",
        "hydra/sweeper/sampler=grid",
        "hydra.sweeper.direction=[maximize,minimize]",
        "hydra.sweeper.objectives=[best_test_acc,params]",
        "model=choice(session6,ultimus)",
    ]
    done = run_cli(args, tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    study = load(tmp_path)
    assert study.metric_names == ["best_test_acc", "params"]
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 2
    for trial in study.trials:
        results = json.loads((Path(trial.user_attrs["output_dir"]) / "results.json").read_text())
        assert trial.values == [results["best_test_acc"], results["params"]]
    result = yaml.safe_load((tmp_path / "multirun" / "optimization_results.yaml").read_text())
    front = sorted(study.best_trials, key=lambda t: t.number)
    assert [s["number"] for s in result["solutions"]] == [t.number for t in front]
    assert result["objectives"] == ["best_test_acc", "params"]
    (parent,) = [
        r for r in runs_of(mlflow_store, experiment) if "mlflow.parentRunId" not in r.data.tags
    ]
    assert parent.data.tags["pareto_front"] == ",".join(str(t.number) for t in front)
    for t in front:
        assert parent.data.tags[f"pareto.{t.number}"].startswith(
            f"best_test_acc={t.values[0]:.6g} params={t.values[1]:.6g} | model="
        )


def test_an_objective_that_is_not_a_number_of_results_is_refused_in_one_line(tmp_path):
    args = [
        "-m",
        "hparams_search=optuna",
        "debug=default",
        "hydra/sweeper/pruner=none",
        "hydra.sweeper.direction=[maximize,minimize]",
        "hydra.sweeper.objectives=[best_test_acc,model]",
    ]
    done = run_cli(args, tmp_path)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 1 and len(lines) == 1, done.stderr
    assert lines[0].startswith("Error: hydra.sweeper.objectives: model is not a number")
    assert "params" in lines[0] and not (tmp_path / "optuna.log").exists()
