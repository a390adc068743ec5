"""The job's side: `evasweep.current_trial()`, report / should_prune, TrialPruned, with the
basic launcher (jobs in the sweep's process) and joblib (jobs in other processes)."""

import json
from statistics import median

import pytest
from apps import job, load, no_study, results, run_app, states, sweep, write_app
from optuna.study import StudyDirection
from optuna.trial import TrialState

STEPS = 5

# Reports x * step at steps 1..5 and stops when the pruner says so; what the job API gave
# it goes into job.json next to its config.
PRUNABLE = f"""
from evasweep import TrialPruned, current_trial

trial = current_trial()
seen["trial"] = None if trial is None else {{"number": trial.number, "params": trial.params}}
with open(os.path.join(out, "job.json"), "w") as f:
    json.dump(seen, f)
if trial is not None:
    trial.set_user_attr("seen_x", cfg.x)
for step in range(1, {STEPS} + 1):
    if trial is not None:
        trial.report(cfg.x * step, step)
        if trial.should_prune():
            raise TrialPruned(f"pruned at step {{step}}")
return cfg.x * {STEPS}
"""

PRUNED_SWEEP = (
    "x=interval(0,1)",
    "hydra/sweeper/sampler=random",
    "hydra.sweeper.sampler.seed=0",
    "hydra/sweeper/pruner=median",
    "hydra.sweeper.pruner.n_startup_trials=2",
    "hydra.sweeper.direction=maximize",
    "hydra.sweeper.n_trials=8",
)


def check_pruned_sweep(app, sequential: bool) -> list:
    """The study of PRUNED_SWEEP: some trials pruned, every step's value recorded, each job
    given its own trial. Returns the study's trials."""
    study = load(app)
    assert study.direction == StudyDirection.MAXIMIZE
    by_state = states(study)
    assert by_state.get("PRUNED", 0) >= 1 and by_state["COMPLETE"] >= 2, by_state
    assert by_state["COMPLETE"] + by_state["PRUNED"] == 8 and "FAIL" not in by_state
    for t in study.trials:
        x = t.params["x"]
        steps = max(t.intermediate_values)  # the last step reported
        assert t.intermediate_values == {s: x * s for s in range(1, steps + 1)}
        assert (steps == STEPS) == (t.state == TrialState.COMPLETE)  # pruned: stopped early
        assert t.value == x * steps  # a pruned trial's: its last report (Optuna's rule)
        seen = job(app, t.number)
        assert seen["trial"] == {"number": t.number, "params": t.params}
        assert seen["cfg"]["x"] == x
        assert t.user_attrs["seen_x"] == x  # set_user_attr reached the study
    complete = [t for t in study.trials if t.state == TrialState.COMPLETE]
    if sequential:  # the median rule: a pruned trial lagged the median of earlier completes
        for t in study.trials:
            if t.state == TrialState.PRUNED:
                step = max(t.intermediate_values)
                before = [c.intermediate_values[step] for c in complete if c.number < t.number]
                assert len(before) >= 2 and t.intermediate_values[step] < median(before)
    assert results(app)["best_value"] == max(t.value for t in complete)
    return study.trials


def test_jobs_report_and_are_pruned_through_the_job_api(tmp_path):
    # a launch folder whose path needs quoting: the storage URL reaches the job intact
    folder = tmp_path / "it's a folder"
    folder.mkdir()
    app = write_app(folder, PRUNABLE, config="x: 0.0\n")
    sweep(app, *PRUNED_SWEEP)
    trials = check_pruned_sweep(app, sequential=True)
    for t in trials:  # basic launcher: each job ran in the sweep's own process
        assert t.user_attrs["job_process"]["pid"] == t.user_attrs["process"]["pid"]


def test_jobs_are_pruned_through_the_job_api_in_joblib_workers(tmp_path):
    pytest.importorskip(
        "hydra_plugins.hydra_joblib_launcher", reason="hydra-joblib-launcher is not installed"
    )
    app = write_app(tmp_path, PRUNABLE, config="x: 0.0\n")
    sweep(app, *PRUNED_SWEEP, "hydra/launcher=joblib", "hydra.sweeper.n_jobs=2")
    trials = check_pruned_sweep(app, sequential=False)
    sweep_pids = {t.user_attrs["process"]["pid"] for t in trials}
    job_pids = {t.user_attrs["job_process"]["pid"] for t in trials}
    assert len(sweep_pids) == 1 and not sweep_pids & job_pids  # jobs ran in other processes


def test_there_is_no_current_trial_outside_a_sweep(tmp_path):
    app = write_app(tmp_path, PRUNABLE, config="x: 0.0\n")
    run_app(app, "x=0.25", "hydra.run.dir=plain")
    seen = json.loads((app / "plain" / "job.json").read_text())
    assert seen["cfg"] == {"x": 0.25} and seen["trial"] is None
    assert no_study(app)
