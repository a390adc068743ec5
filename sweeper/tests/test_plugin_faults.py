"""Sweeps that go wrong: failing trials, a sweep killed with kill -9, bad settings."""

import os
import signal
import subprocess
import sys
import time

import pytest
from apps import (
    TIMEOUT,
    clean_env,
    error_line,
    load,
    no_study,
    results,
    states,
    sweep,
    sweep_args,
    write_app,
)
from optuna.trial import TrialState

# Odd trial numbers (hydra.job.num is the trial's number) fail: which trials fail does
# not depend on what the sampler draws.
FAIL_ODD = """
if seen["num"] % 2 == 1:
    raise ValueError(f"x={cfg.x}: odd trials fail")
return cfg.x ** 2
"""


def test_failed_trials_are_recorded_and_do_not_count_within_max_failure_rate(tmp_path):
    app = write_app(tmp_path, FAIL_ODD)
    sweep(app, "x=interval(-1,1)", "hydra.sweeper.max_failure_rate=0.5", "hydra.sweeper.n_trials=4")
    study = load(app)
    # 0 ok, 1 FAIL (1 of 2 failed: not more than 0.5), 2 ok, 3 FAIL, ... 6 ok: 4 finished
    assert states(study) == {"COMPLETE": 4, "FAIL": 3}
    for t in study.trials:
        assert t.state == (TrialState.FAIL if t.number % 2 else TrialState.COMPLETE)
        if t.state == TrialState.FAIL:
            assert t.user_attrs["error"] == f"ValueError: x={t.params['x']}: odd trials fail"
            assert t.values is None
    summary = results(app)
    assert (summary["finished"], summary["counts"]) == (4, {"complete": 4, "fail": 3})
    assert summary["best_trial"] % 2 == 0


def test_more_failures_than_max_failure_rate_stop_the_sweep(tmp_path):
    app = write_app(tmp_path, FAIL_ODD)
    proc = sweep(
        app,
        "x=interval(-1,1)",
        "hydra.sweeper.max_failure_rate=0.25",
        "hydra.sweeper.n_trials=6",
        check=False,
    )
    line = error_line(proc)  # exit 1
    assert "hydra.sweeper.max_failure_rate=0.25" in line and "odd trials fail" in line
    assert states(load(app)) == {"COMPLETE": 1, "FAIL": 1}  # stopped after 1 of 2 failed


SLEEPY = """
if os.environ.get("SLEEP_IN_TRIAL"):
    open(os.path.join(out, "started"), "w").close()
    time.sleep(60)
return (cfg.x - 1) ** 2
"""


def test_a_trial_of_a_killed_sweep_is_failed_and_the_same_command_completes(tmp_path):
    app = write_app(tmp_path, SLEEPY)
    command = ("x=interval(-5,5)", "hydra.sweeper.n_trials=3")
    with open(tmp_path / "killed.log", "w") as log:
        proc = subprocess.Popen(
            [sys.executable, "app.py", *sweep_args(*command)],
            cwd=app,
            env=clean_env(SLEEP_IN_TRIAL="1"),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + TIMEOUT
        while not (app / "multirun" / "0" / "started").exists():
            assert proc.poll() is None, (tmp_path / "killed.log").read_text()
            assert time.monotonic() < deadline, "trial 0 never started"
            time.sleep(0.1)
        (running,) = load(app).get_trials(states=(TrialState.RUNNING,))
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert load(app).trials[running.number].state == TrialState.RUNNING  # nobody told Optuna

    started = time.monotonic()
    sweep(app, *command)  # without SLEEP_IN_TRIAL
    assert time.monotonic() - started < 30  # a dead pid of this machine: no grace_period wait
    study = load(app)
    killed = study.trials[running.number]
    assert killed.state == TrialState.FAIL
    assert "process died" in killed.user_attrs["error"]
    assert f"pid {proc.pid}" in killed.user_attrs["error"]
    assert states(study) == {"COMPLETE": 3, "FAIL": 1}
    assert results(app)["finished"] == 3


@pytest.mark.parametrize(
    "override, key",
    [
        ("hydra.sweeper.direction=sideways", "hydra.sweeper.direction"),
        ("hydra.sweeper.direction=[minimize,up]", "hydra.sweeper.direction"),
        ("+hydra.sweeper.search_space.x.type=float", "hydra.sweeper.search_space"),
        ("hydra.sweeper.custom_search_space=nowhere.configure", "No module named 'nowhere'"),
        ("hydra.sweeper.custom_search_space=space.nothing", "space.nothing"),
        ("hydra.sweeper.max_failure_rate=1.5", "hydra.sweeper.max_failure_rate"),
    ],
)
def test_bad_settings_fail_in_one_line_before_any_study(quadratic, override, key):
    (quadratic / "space.py").write_text("def configure(cfg, trial):\n    pass\n")
    proc = sweep(quadratic, "x=interval(-5,5)", override, check=False)
    line = error_line(proc)
    assert key in line
    if "custom_search_space" in override:
        assert "hydra.sweeper.custom_search_space" in line
    assert no_study(quadratic)


def test_a_custom_search_space_that_raises_fails_its_trial_and_the_sweep_in_one_line(quadratic):
    (quadratic / "space.py").write_text(
        "def configure(cfg, trial):\n    raise KeyError('no such bound: zmax')\n"
    )
    args = ("x=interval(-5,5)", "hydra.sweeper.custom_search_space=space.configure")
    line = error_line(sweep(quadratic, *args, check=False))
    assert "hydra.sweeper.custom_search_space=space.configure failed on trial 0" in line
    assert "KeyError" in line and "zmax" in line
    study = load(quadratic)
    assert states(study) == {"FAIL": 1}  # not left RUNNING for the next command to wait on
    assert "zmax" in study.trials[0].user_attrs["error"]


SAMPLER_NEEDS = {"cmaes": ["cmaes"], "qmc": ["scipy"], "gp": ["torch", "scipy"]}


@pytest.mark.parametrize("sampler", sorted(SAMPLER_NEEDS))
def test_a_sampler_whose_package_is_missing_is_refused_before_any_study(quadratic, sampler):
    """Optuna imports these packages only at its first model-based draw, mid-sweep."""
    import importlib.util

    missing = [m for m in SAMPLER_NEEDS[sampler] if importlib.util.find_spec(m) is None]
    if not missing:
        pytest.skip(f"{', '.join(SAMPLER_NEEDS[sampler])} installed here: nothing is missing")
    args = ("x=interval(-5,5)", f"hydra/sweeper/sampler={sampler}")
    line = error_line(sweep(quadratic, *args, check=False))
    assert f"needs the Python package(s) {', '.join(missing)}" in line
    assert no_study(quadratic)


def test_the_older_search_space_form_is_read_as_params(quadratic):
    space = "hydra.sweeper.search_space={x:{type:float,low:-2,high:2},y:{type:int,low:0,high:3}}"
    sweep(quadratic, space, "hydra.sweeper.n_trials=4", "hydra.sweeper.sampler.seed=0")
    study = load(quadratic)
    assert states(study) == {"COMPLETE": 4}
    assert results(quadratic)["search_space"] == {
        "x": "interval(-2.0, 2.0)",
        "y": "int(interval(0, 3))",
    }
    for trial in study.trials:
        assert -2 <= trial.params["x"] <= 2 and trial.params["y"] in range(4)
