"""The MLflow parent run of an Optuna study: one per study, not one per command.

The first command of a study creates it and stores its id in the study; a resumed
command and every worker of eva-sweep reopen the same run, so all trials of a study sit
under one parent in the MLflow UI. Its params are the search space (fixed for the study);
its tags and metrics say how the study stands (best trial, counts by state) and are
updated after each batch, with optimization_results.yaml as an artifact. Each job finds
its parent in its environment (EvaIntegration.job_env).
"""

import logging
from pathlib import Path

from eva.tracking.callback import PARENT_ENV
from eva.tracking.run import Launch, Tracker, launch_dir_of
from eva.tracking.store import redact

log = logging.getLogger(__name__)

RUN_ID_ATTR = "mlflow_parent_run_id"


def open_tracker(config, launch_dir: Path):
    """The store of the parent run, opened as the jobs' are: in eva's MLflow writer process
    (tracking.process, the default), whose imports then overlap the sweep's own start-up
    and which the jobs this process runs itself share; in this process otherwise."""
    from eva.tracking.writer import RemoteTracker

    opener = RemoteTracker if config.tracking.process else Tracker
    return opener.open(config.tracking, Launch(launch_dir))


class StudyParent:
    ENV = PARENT_ENV  # a job's parent run: JSON {"run_id": ..., "fixed_keys": [...]}

    def __init__(self, tracker: Tracker):
        self.tracker = tracker
        self.handle: dict | None = None  # what ENV holds for the jobs; None: no tracking

    @property
    def run_id(self) -> str | None:
        return self.tracker.run_id

    @classmethod
    def open(
        cls, config, study, space, storage_url: str, sweep_dir: Path, tracker=None
    ) -> "StudyParent":
        """Reopen the study's parent run, or create it; jobs find it in the environment.
        tracker: open_tracker()'s, opened earlier; None: open one now."""
        if tracker is None:
            tracker = open_tracker(config, launch_dir_of(config.hydra))
        parent = cls(tracker)
        if not tracker.enabled:
            return parent
        tags = {
            "sweep": "parent",
            "sweeper": "eva_optuna",
            "optuna_study": study.study_name,
            "optuna_storage": redact(storage_url),
            "sweep_dir": str(Path(sweep_dir).absolute()),
            "model": config.model.name,
            "dataset": config.dataset.name,
        }
        run_id = study.user_attrs.get(RUN_ID_ATTR)
        if run_id and tracker.reopen(run_id):
            tracker.set_tags(tags)
            # why an earlier command stopped: this one goes on, and may complete the study
            tracker.delete_tag("error")
            log.info("MLflow parent run %s reopened", run_id)
        else:
            name = config.tracking.run_name or config.name
            params = {f"search.{key}": value for key, value in space.describe().items()}
            params.update({f"fixed.{key}": line for key, line in space.fixed.items()})
            tracker.start(f"{name} study {study.study_name}", params=params, tags=tags)
            study.set_user_attr(RUN_ID_ATTR, tracker.run_id)
        parent.handle = {"run_id": tracker.run_id, "fixed_keys": list(space.fixed)}
        return parent

    def record(self, result: dict, results_file: Path | None) -> None:
        """The study's standing: best trial and params as tags, counts as metrics."""
        if not self.run_id:
            return
        tags = {"n_trials": str(result["n_trials"])}
        if "best_trial" in result:
            tags["best_trial"] = str(result["best_trial"])
            if result.get("best_mlflow_run_id"):
                tags["best_child_run_id"] = result["best_mlflow_run_id"]
            tags.update({f"best.{k}": str(v) for k, v in result["best_params"].items()})
        if "solutions" in result:  # multi-objective: the Pareto front, trial by trial
            tags.update(front_tags(result))
        self.tracker.set_tags(tags)
        metrics = {f"trials_{state}": n for state, n in result["counts"].items()}
        if "best_value" in result:
            metrics["best_value"] = result["best_value"]
            for name in result.get("objectives", [])[:1]:  # the runs table's column for it
                metrics[name] = result["best_value"]
        if "best_std" in result:  # repeats: the std over the best trial's seeds
            metrics["best_std"] = result["best_std"]
        self.tracker.log_metrics(metrics, step=result["finished"], phase="final")
        if results_file is not None:
            self.tracker.log_files({"": results_file})

    def end(self, status: str, error: str | None = None) -> None:
        self.handle = None
        if self.run_id:
            if error:
                self.tracker.end_quietly(status, error)
            else:
                self.tracker.end(status)


def front_tags(result: dict) -> dict[str, str]:
    """The Pareto front of a multi-objective study as tags: `pareto_front` (its trials)
    and `pareto.<trial>` (its values by objective name, then its params)."""
    names = result.get("objectives") or [f"value{i}" for i in range(len(result["direction"]))]
    tags = {"pareto_front": ",".join(str(s["number"]) for s in result["solutions"])}
    for s in result["solutions"]:
        values = " ".join(f"{n}={v:.6g}" for n, v in zip(names, s["values"], strict=True))
        params = " ".join(
            f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in s["params"].items()
        )
        tags[f"pareto.{s['number']}"] = f"{values} | {params}"
    return tags
