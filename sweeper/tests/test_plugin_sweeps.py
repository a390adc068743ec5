"""Sweeps of tiny Hydra apps with hydra/sweeper=eva_optuna: what reaches the study, the
jobs and optimization_results.yaml."""

import itertools
import shutil

import optuna
from apps import error_line, job, load, no_study, results, states, storage, sweep, write_app
from optuna.study import StudyDirection
from optuna.trial import TrialState


def quadratic_of(params: dict) -> float:
    return (params["x"] - 1) ** 2 + (params["y"] + 2) ** 2


def test_a_seeded_tpe_sweep_runs_n_trials_and_reports_the_best(quadratic, tmp_path):
    command = (
        "x=interval(-5,5)",
        "y=interval(-5,5)",
        "hydra/sweeper/sampler=tpe",
        "hydra.sweeper.sampler.seed=3",
        "hydra.sweeper.n_trials=6",
    )
    sweep(quadratic, *command)
    study = load(quadratic)
    trials = study.get_trials()
    assert states(study) == {"COMPLETE": 6}
    assert study.direction == StudyDirection.MINIMIZE  # null direction: minimize
    assert study.study_name.startswith("app-")  # <hydra.job.name>-<hash>
    for trial in trials:
        seen = job(quadratic, trial.number)
        assert seen["num"] == trial.number  # job folder N is trial N
        assert (seen["cfg"]["x"], seen["cfg"]["y"]) == (trial.params["x"], trial.params["y"])
        assert trial.value == quadratic_of(trial.params)  # what this job returned
    assert len({t.params["x"] for t in trials}) == 6
    assert study.best_value == min(t.value for t in trials)

    summary = results(quadratic)
    assert summary["study_name"] == study.study_name
    assert summary["direction"] == "minimize"
    assert (summary["n_trials"], summary["finished"]) == (6, 6)
    assert summary["best_params"] == study.best_params
    assert summary["best_value"] == study.best_value
    assert summary["best_trial"] == study.best_trial.number

    # the seed makes the sweep reproducible: the same command elsewhere draws the same
    again = tmp_path / "again"
    again.mkdir()
    shutil.copy(quadratic / "app.py", again)
    shutil.copy(quadratic / "config.yaml", again)
    sweep(again, *command)
    assert [t.params for t in load(again).get_trials()] == [t.params for t in trials]


def test_grid_runs_every_point_once_and_caps_n_trials_at_its_size(tmp_path):
    app = write_app(
        tmp_path,
        'return float(cfg.b) + (0.5 if cfg.a == "q" else 0.0)',
        config="a: p\nb: 0\n",
    )
    sweep(
        app,
        "hydra/sweeper/sampler=grid",
        "a=choice(p,q)",
        "b=range(1,3)",
        "hydra.sweeper.n_trials=20",
    )
    study = load(app)
    assert states(study) == {"COMPLETE": 6}
    ran = sorted(
        (job(app, t.number)["cfg"]["a"], job(app, t.number)["cfg"]["b"]) for t in study.trials
    )
    assert ran == sorted(itertools.product(["p", "q"], [1, 2, 3]))  # each point once
    assert sorted((t.params["a"], t.params["b"]) for t in study.trials) == ran
    summary = results(app)
    assert (summary["n_trials"], summary["finished"]) == (6, 6)
    assert summary["best_params"] == {"a": "p", "b": 1}


def dominates(a, b, signs) -> bool:
    """a is at least as good as b in every value and better in one (signs: +1 maximize)."""
    at_least = all(s * x >= s * y for x, y, s in zip(a, b, signs, strict=True))
    return at_least and any(s * x > s * y for x, y, s in zip(a, b, signs, strict=True))


def test_a_multi_objective_sweep_writes_its_pareto_front(quadratic):
    write_app(quadratic, "return (cfg.x**2 + cfg.y**2, cfg.x + cfg.y)")
    sweep(
        quadratic,
        "x=interval(-2,2)",
        "y=interval(-2,2)",
        "hydra.sweeper.direction=[minimize,maximize]",
        "hydra/sweeper/sampler=nsgaii",
        "hydra.sweeper.sampler.seed=0",
        "hydra.sweeper.n_trials=6",
    )
    study = load(quadratic)
    assert study.directions == [StudyDirection.MINIMIZE, StudyDirection.MAXIMIZE]
    assert states(study) == {"COMPLETE": 6}
    for t in study.trials:
        x, y = t.params["x"], t.params["y"]
        assert t.values == [x**2 + y**2, x + y]

    summary = results(quadratic)
    assert summary["direction"] == ["minimize", "maximize"]
    assert "best_value" not in summary
    front = sorted(study.best_trials, key=lambda t: t.number)
    assert summary["solutions"] == [
        {"number": t.number, "params": t.params, "values": t.values} for t in front
    ]
    numbers = {s["number"] for s in summary["solutions"]}
    for t in study.trials:  # the front: the trials no other trial dominates
        dominated = any(dominates(o.values, t.values, (-1, 1)) for o in study.trials)
        assert (t.number in numbers) == (not dominated)


def test_a_pruner_is_refused_for_a_multi_objective_sweep(quadratic):
    proc = sweep(
        quadratic,
        "x=interval(-2,2)",
        "hydra.sweeper.direction=[minimize,maximize]",
        "hydra/sweeper/pruner=median",
        check=False,
    )
    line = error_line(proc)
    assert "hydra.sweeper.pruner" in line and "multi-objective" in line
    assert no_study(quadratic)


def test_custom_search_space_adds_params_the_jobs_receive(quadratic):
    # The app's folder is importable in the sweep: `python app.py` puts the script's
    # folder first on sys.path, so `space.configure` needs no PYTHONPATH.
    (quadratic / "config.yaml").write_text("x: 0.0\ny: 0.0\nbound: 0.5\n")
    (quadratic / "space.py").write_text(
        "def configure(cfg, trial):\n"
        "    trial.suggest_float('y', -cfg.bound, cfg.bound)  # cfg: the sweep's config\n"
    )
    sweep(
        quadratic,
        "x=interval(-5,5)",
        "hydra.sweeper.custom_search_space=space.configure",
        "hydra.sweeper.sampler.seed=0",
        "hydra.sweeper.n_trials=5",
    )
    study = load(quadratic)
    assert states(study) == {"COMPLETE": 5}
    for t in study.trials:
        assert set(t.params) == {"x", "y"}
        assert -0.5 <= t.params["y"] <= 0.5
        assert job(quadratic, t.number)["cfg"]["y"] == t.params["y"]
        assert t.value == quadratic_of(t.params)
    assert len({t.params["y"] for t in study.trials}) == 5  # drawn, not the config's 0.0
    assert results(quadratic)["best_params"].keys() == {"x", "y"}


def test_the_same_command_resumes_the_study_to_its_total(tmp_path):
    app = write_app(tmp_path, "return (cfg.x - 3) ** 2", config="x: 0\ny: 0.0\n")
    command = ("x=range(0,9)", "hydra.sweeper.sampler.seed=0")

    def finished(study):
        return study.get_trials(states=(TrialState.COMPLETE, TrialState.PRUNED))

    sweep(app, *command, "hydra.sweeper.n_trials=3")
    first = load(app)
    before = {t.number: t.params for t in finished(first)}
    assert len(before) == 3

    sweep(app, *command, "hydra.sweeper.n_trials=5")
    study = load(app)  # still the only study of optuna.log
    assert study.study_name == first.study_name
    done = finished(study)
    assert len(done) == 5
    assert len({t.params["x"] for t in done}) == 5  # no parameter set ran twice
    assert {t.number: t.params for t in done if t.number in before} == before
    assert (results(app)["n_trials"], results(app)["finished"]) == (5, 5)

    n_trials = len(study.trials)
    folders = sorted(p.name for p in (app / "multirun").iterdir() if p.is_dir())
    sweep(app, *command, "hydra.sweeper.n_trials=5")  # nothing is missing: nothing runs
    assert len(load(app).trials) == n_trials
    assert sorted(p.name for p in (app / "multirun").iterdir() if p.is_dir()) == folders

    # another command (another fixed override) is another study, not more of this one
    sweep(app, *command, "y=1.0", "hydra.sweeper.n_trials=1")
    names = optuna.get_all_study_names(storage(app))
    assert len(names) == 2 and first.study_name in names
