"""hydra.sweeper.repeats (seeds per trial, the trial's value their mean) and
hydra.sweeper.objectives (named values), on tiny Hydra apps."""

import json
import statistics

import optuna
from apps import error_line, load, no_study, results, states, storage, sweep, write_app
from optuna.trial import TrialState

# value = x + (seed - 10): seeds 10, 11, 12 of a trial give x, x+1, x+2 (mean x+1, std 1)
SEEDED = """\
from evasweep import current_trial
trial = current_trial()
seen["trial"] = {"repeat": trial.repeat, "repeats": trial.repeats, "seed": trial.seed}
with open(os.path.join(out, "job.json"), "w") as f:
    json.dump(seen, f)
if cfg.x == 7 and cfg.seed == 11:
    raise RuntimeError("seed eleven breaks x=7")
return cfg.x + cfg.seed - 10
"""


def job_of(folder, number: int, seed: int) -> dict:
    return json.loads((folder / "multirun" / str(number) / f"seed{seed}" / "job.json").read_text())


def test_each_trial_trains_its_seeds_and_is_their_mean(tmp_path):
    app = write_app(tmp_path, SEEDED, config="x: 0\nseed: 10\n")
    sweep(app, "x=choice(1,4)", "hydra/sweeper/sampler=grid", "hydra.sweeper.repeats=3")
    study = load(app)
    assert states(study) == {"COMPLETE": 2}
    assert study.user_attrs["evasweep_identity"]["repeats"] == 3  # in the study's identity
    for trial in study.trials:
        x = trial.params["x"]
        for k, seed in enumerate((10, 11, 12)):  # a job per seed, in its own folder
            seen = job_of(app, trial.number, seed)
            assert seen["cfg"] == {"x": x, "seed": seed}
            assert seen["trial"] == {"repeat": k, "repeats": 3, "seed": seed}
            assert trial.user_attrs[f"evasweep_seed.{k}"] == {"seed": seed, "values": [x + k]}
        assert trial.value == x + 1
        assert trial.user_attrs["std"] == 1.0
        assert trial.user_attrs["seed_values"] == {"10": x, "11": x + 1, "12": x + 2}
    summary = results(app)
    assert summary["best_value"] == 2 and summary["best_params"] == {"x": 1}  # minimize
    assert summary["best_std"] == 1.0
    assert summary["best_seed_values"] == {10: 1, 11: 2, 12: 3}

    # another number of repeats is another study (a mean over 2 seeds is not comparable)
    sweep(app, "x=choice(1,4)", "hydra.sweeper.repeats=2", "hydra.sweeper.n_trials=1")
    assert len(optuna.get_all_study_names(storage(app))) == 2


def test_a_failed_seed_fails_its_trial(tmp_path):
    app = write_app(tmp_path, SEEDED, config="x: 0\nseed: 10\n")
    # the sweep stops at its first failed trial (max_failure_rate 0.25)
    proc = sweep(app, "x=choice(7)", "hydra.sweeper.repeats=2", check=False)
    assert proc.returncode == 1 and "seed 11 failed" in proc.stderr
    (trial,) = load(app).trials
    assert trial.state == TrialState.FAIL
    assert trial.user_attrs["error"].startswith("seed 11 failed: RuntimeError: seed eleven")
    assert "std" not in trial.user_attrs


# Each step reports x + (seed - 10); a ThresholdPruner below 0.6 judges the mean over seeds.
PRUNED = """\
from evasweep import TrialPruned, current_trial
trial = current_trial()
for step in (1, 2, 3):
    trial.report(cfg.x + cfg.seed - 10, step)
    if trial.should_prune():
        raise TrialPruned()
return cfg.x + cfg.seed - 10
"""


def test_pruning_decides_on_the_mean_over_seeds(tmp_path):
    app = write_app(tmp_path, PRUNED, config="x: 0\nseed: 10\n")
    sweep(
        app,
        "x=choice(0,5)",
        "hydra/sweeper/sampler=grid",
        "hydra.sweeper.repeats=2",
        "hydra.sweeper.direction=maximize",
        "hydra/sweeper/pruner=threshold",
        "hydra.sweeper.pruner.lower=0.6",
    )
    trials = {t.params["x"]: t for t in load(app).trials}
    low, high = trials[0], trials[5]
    # seed 10 of x=0 reported 0 at every step (below 0.6) and was not pruned: the mean is
    # known only once seed 11 reaches a step (the basic launcher runs seeds one by one)
    assert low.user_attrs["evasweep_curve.0"] == [[1, 0], [2, 0], [3, 0]]
    assert low.state == TrialState.PRUNED
    assert low.intermediate_values == {1: 0.5}  # (0 + 1) / 2, pruned at seed 11's step 1
    assert high.state == TrialState.COMPLETE
    assert high.intermediate_values == {1: 5.5, 2: 5.5, 3: 5.5}
    assert high.value == 5.5


def test_repeats_refuse_a_searched_or_missing_seed(tmp_path):
    (tmp_path / "noseed").mkdir()
    app = write_app(tmp_path, SEEDED, config="x: 0\nseed: 10\n")
    line = error_line(
        sweep(app, "x=choice(1)", "seed=choice(1,2)", "hydra.sweeper.repeats=2", check=False)
    )
    assert "hydra.sweeper.repeats=2" in line and "seed cannot also be searched" in line
    line = error_line(sweep(app, "x=choice(1)", "hydra.sweeper.repeats=0", check=False))
    assert "hydra.sweeper.repeats=0" in line and ">= 1" in line
    other = write_app(tmp_path / "noseed", "return cfg.x", config="x: 0\n")
    line = error_line(sweep(other, "x=choice(1)", "hydra.sweeper.repeats=2", check=False))
    assert "seed=None is not a whole number" in line and "hydra.sweeper.seed_key" in line
    assert no_study(app) and no_study(other)


NAMED = """\
from evasweep import current_trial
names = current_trial().objectives
values = {"loss": cfg.x**2, "size": cfg.x + 3}
return [values[n] for n in names]
"""


def test_objectives_name_the_values_and_reach_the_jobs(tmp_path):
    app = write_app(tmp_path, NAMED, config="x: 0\n")
    sweep(
        app,
        "x=choice(-1,0,2)",
        "hydra/sweeper/sampler=grid",
        "hydra.sweeper.direction=[minimize,maximize]",
        "hydra.sweeper.objectives=[size,loss]",
    )
    study = load(app)
    assert study.metric_names == ["size", "loss"]  # optuna-dashboard shows them
    assert {t.params["x"]: tuple(t.values) for t in study.trials} == {
        -1: (2, 1),
        0: (3, 0),
        2: (5, 4),
    }
    assert study.user_attrs["evasweep_identity"]["objectives"] == ["size", "loss"]
    assert {s["number"] for s in results(app)["solutions"]} == {t.number for t in study.best_trials}

    line = error_line(
        sweep(app, "x=choice(1)", "hydra.sweeper.objectives=[size,loss]", check=False)
    )
    assert "hydra.sweeper.objectives=['size', 'loss']" in line and "one per direction" in line


def test_std_is_the_sample_std_over_seeds():
    from evasweep.repeats import mean_and_std, seeds

    assert seeds(5, 3) == [5, 6, 7]
    means, stds = mean_and_std([[1.0, 10.0], [2.0, 10.0], [4.0, 13.0]])
    assert means == [7 / 3, 11.0]
    assert stds == [statistics.stdev([1, 2, 4]), statistics.stdev([10, 10, 13])]
    assert mean_and_std([[0.5]]) == ([0.5], [0.0])
