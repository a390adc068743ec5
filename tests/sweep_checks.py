"""What the sweep tests check after a sweep (tests/test_sweep_faults.py, test_engines.py):
the study in the folder's optuna.db, polled while a sweep runs, and its MLflow runs."""

import sqlite3
import time

import optuna
from helpers import runs_of


def load(tmp_path) -> optuna.Study:
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    (summary,) = optuna.get_all_study_summaries(url)
    return optuna.load_study(study_name=summary.study_name, storage=url)


def study_exists(tmp_path) -> bool:
    """Read-only: opening the storage before the sweep made its tables would race it."""
    path = tmp_path / "optuna.db"
    if not path.exists():
        return False
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
            return db.execute("select count(*) from studies").fetchone()[0] > 0
    except sqlite3.Error:
        return False


def wait_for(proc, tmp_path, log: str, condition, timeout: float = 90) -> list:
    """The study's trials once condition(trials) holds, polled while the sweep runs."""
    deadline = time.monotonic() + timeout
    study = None
    while time.monotonic() < deadline:
        assert proc.poll() is None, (tmp_path / log).read_text()[-3000:]
        if study is None and study_exists(tmp_path):
            study = load(tmp_path)  # once: an engine per poll costs the sweep CPU time
        if study is not None:
            trials = study.get_trials(deepcopy=False)
            if condition(trials):
                return trials
        time.sleep(0.25)
    proc.kill()
    raise AssertionError(f"timed out; log: {(tmp_path / log).read_text()[-3000:]}")


def running_with_run(trials) -> list:
    """RUNNING trials whose job has created its MLflow run: killing now leaves it RUNNING."""
    return [t for t in trials if t.state.name == "RUNNING" and "mlflow_run_id" in t.user_attrs]


def states(study) -> list[str]:
    return [t.state.name for t in study.trials]


def check_mlflow(uri: str, experiment: str, study, killed: list, why=("died",)) -> None:
    """One parent FINISHED; one child per trial that ran, under it; the killed trials' runs
    KILLED with an error tag that says one of `why`; no run RUNNING."""
    runs = runs_of(uri, experiment)
    assert [r.info.status for r in runs if r.info.status == "RUNNING"] == []
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert "error" not in parents[0].data.tags  # an earlier command's stop is forgotten
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == {parents[0].info.run_id}
    trial_runs = {t.user_attrs.get("mlflow_run_id") for t in study.trials} - {None}
    assert {c.info.run_id for c in children} == trial_runs
    by_id = {c.info.run_id: c for c in children}
    for trial in killed:
        run = by_id[trial.user_attrs["mlflow_run_id"]]
        assert run.info.status == "KILLED", trial.number
        assert any(w in run.data.tags["error"] for w in why), run.data.tags["error"]
    complete = [t for t in study.trials if t.state.name == "COMPLETE"]
    assert all(by_id[t.user_attrs["mlflow_run_id"]].info.status == "FINISHED" for t in complete)


def check_study(study, n_trials: int) -> None:
    """n_trials finished, none RUNNING, no finished parameter set twice."""
    finished = [t for t in study.trials if t.state.name in ("COMPLETE", "PRUNED")]
    assert len(finished) == n_trials, states(study)
    assert "RUNNING" not in states(study)
    assert len({tuple(sorted(t.params.items())) for t in finished}) == n_trials
