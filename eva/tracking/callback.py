"""Hydra callback: one parent MLflow run per multirun, made in the launching process.

on_multirun_start (before any job starts) creates the store, the experiment and the parent
run, and hands the parent's id to the jobs through the environment (inherited by joblib's
worker processes too); each job then records a nested child run. on_multirun_end copies the
best child's params and score to the parent (and, for children that differ only in seed,
each group's mean ± std: eva/tracking/seed_groups.py) and ends it FINISHED. A multirun
that dies with an exception (Hydra then skips on_multirun_end) ends the parent FAILED at
exit, or KILLED after Ctrl-C.

Imports stay light: Hydra instantiates this for every command, `--help` included.
"""

import atexit
import json
import logging
import os
import signal
import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

PARENT_ENV = "EVA_MLFLOW_PARENT"  # JSON: {"run_id": ..., "fixed_keys": [...]}

log = logging.getLogger(__name__)


def parent_from_env() -> dict | None:
    """The parent run a sweep job belongs to, as set by the callback in the launcher."""
    raw = os.environ.get(PARENT_ENV)
    return json.loads(raw) if raw else None


def _parse(overrides: list[str]):
    from hydra.core.override_parser.overrides_parser import OverridesParser

    return OverridesParser.create().parse_overrides(overrides)


def job_run_name(base: str, job_num: int, overrides: list[str], fixed_keys: list[str]) -> str:
    """'3: model.dropout=0.1 optimizer.lr=0.02': the job number and what this job varies.

    Overrides whose key the whole sweep fixes on the command line are left out (compared
    by key: Hydra rewrites a job's values, e.g. `progress=false` becomes `progress=False`).
    """
    varied = [_short(o) for o in _parse(overrides) if o.get_key_element() not in fixed_keys]
    return f"{job_num}: {' '.join(varied)}" if varied else f"{base} #{job_num}"


def _short(override) -> str:
    """`key=value`, floats to 4 significant digits (Optuna samples 0.02282887232907288)."""
    value = override.value() if not override.is_sweep_override() else None
    if isinstance(value, float):
        return f"{override.get_key_element()}={value:.4g}"
    return override.input_line


def split_overrides(overrides: list[str]) -> tuple[list, list]:
    """(fixed, swept): the command line's plain overrides and its sweeps (a,b / range())."""
    parsed = _parse(overrides)
    fixed = [o for o in parsed if not o.is_sweep_override()]
    swept = [o for o in parsed if o.is_sweep_override()]
    return fixed, swept


def objective(metrics: dict[str, float]) -> float | None:
    """The score a job is ranked by: validation accuracy if it had a split, else test."""
    return metrics.get("best_val_acc", metrics.get("best_test_acc"))


class MlflowSweepCallback(Callback):
    def __init__(self) -> None:
        self.tracker = None
        self.interrupted = False
        self._previous_sigterm = None

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        # Hydra sets its runtime config in each job only; the sweep folder's ${name} reads
        # an option's name from ${hydra:runtime.choices...} in this process too.
        from hydra.conf import HydraConf
        from hydra.core.hydra_config import HydraConfig
        from omegaconf import OmegaConf

        if OmegaConf.get_type(config.get("hydra")) is HydraConf:  # not a hand-made config
            HydraConfig.instance().set_config(config)
        if not str(config.hydra.launcher.get("_target_", "")).endswith(".BasicLauncher"):
            # Jobs run in other processes (joblib): no loop will end this process's
            # start-up, and it lives as long as the sweep (eva/cli/startup.py).
            from eva.cli.startup import resume_gc

            resume_gc()
        if config.get("resume"):
            print(
                "Error: resume=true continues one run (python -m eva ... resume=true "
                "hydra.run.dir=DIR); a sweep continues when its -m command runs again",
                file=sys.stderr,
            )
            sys.exit(1)
        if not config.tracking.enabled:
            return
        if str(config.hydra.sweeper.get("_target_", "")).endswith(".EvaOptunaSweeper"):
            return  # one parent per study, made by the sweeper itself (eva/sweep/parent.py)
        # Hydra turns a callback's exception into a warning and launches the jobs anyway;
        # without a store or a parent run the sweep must not start, so exit here.
        from eva.errors import EvaError

        try:
            self._start_parent(config)
        except EvaError as e:
            from eva.cli.errors import full_errors

            if full_errors():
                log.exception("cannot start the sweep")
            print(f"Error: {e}", file=sys.stderr)
            sys.exit(1)
        except Exception:
            log.exception("cannot create the sweep's MLflow parent run")
            sys.exit(1)

    def _start_parent(self, config: DictConfig) -> None:
        from eva.tracking.run import Launch, Tracker, launch_dir_of

        launch_dir = launch_dir_of(config.hydra)
        self.tracker = Tracker.open(config.tracking, Launch(launch_dir))
        fixed, swept = split_overrides(list(config.hydra.overrides.task))
        sweep_dir = Path(config.hydra.sweep.dir)
        name = config.tracking.run_name or config.name
        self.tracker.start(
            f"{name} sweep",
            params={},
            tags={
                "sweep": "parent",
                "sweep_dir": str(sweep_dir.absolute()),
                "sweep_overrides": " ".join(o.input_line for o in swept),
                "fixed_overrides": " ".join(o.input_line for o in fixed),
                "sweeper": str(config.hydra.sweeper.get("_target_", "")),
                "model": config.model.name,
                "dataset": config.dataset.name,
            },
        )
        self._watch_for_abnormal_exit()
        os.environ[PARENT_ENV] = json.dumps(
            {"run_id": self.tracker.run_id, "fixed_keys": [o.get_key_element() for o in fixed]}
        )

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        if self.tracker is None or self.tracker.run_id is None:
            return
        try:
            self.summarize()
        finally:
            os.environ.pop(PARENT_ENV, None)
            if self._previous_sigterm is not None:
                signal.signal(signal.SIGTERM, self._previous_sigterm)
            self.tracker.end("FINISHED")
            self.tracker = None

    def summarize(self) -> None:
        """Copy the best finished child's params and score onto the parent run."""
        from mlflow import MlflowClient
        from mlflow.entities import Metric, Param

        from eva.tracking.seed_groups import group_records, seed_groups

        client = MlflowClient(self.tracker.uri)
        parent = self.tracker.run_id
        # Children usually share the parent's experiment, but a swept preset
        # (-m experiment=session6,session9) sends them to the one it names.
        experiments = {self.tracker.experiment_id}
        experiments.update(e.experiment_id for e in client.search_experiments())
        children = client.search_runs(
            sorted(experiments),
            filter_string=f"tags.`mlflow.parentRunId` = '{parent}'",
            max_results=50000,
        )
        statuses = [c.info.status for c in children]
        tags = {"children": str(len(children))}
        tags.update({f"children_{s.lower()}": str(statuses.count(s)) for s in set(statuses)})
        scored = [c for c in children if c.info.status == "FINISHED"]
        scored = [c for c in scored if objective(c.data.metrics) is not None]
        if scored:
            scored.sort(key=lambda c: c.info.start_time)  # on a tie the earlier job wins
            best = max(scored, key=lambda c: objective(c.data.metrics))
            tags["best_child_run_id"] = best.info.run_id
            tags["best_child_run_name"] = best.info.run_name
            params = [Param(k, v) for k, v in best.data.params.items()]
            for i in range(0, len(params), 100):
                client.log_batch(parent, params=params[i : i + 100])
            keep = ("best_test_acc", "best_val_acc", "final_test_acc", "best_epoch")
            metrics = [Metric(k, v, 0, 0) for k, v in best.data.metrics.items() if k in keep]
            client.log_batch(parent, metrics=metrics)
            log.info(
                "sweep best: %s (%s) score %.4f",
                best.info.run_name,
                best.info.run_id,
                objective(best.data.metrics),
            )
        groups = seed_groups(children)  # -m seed=1,2,3 ...: mean ± std per group
        if groups:
            metrics, group_tags = group_records(groups)
            client.log_batch(parent, metrics=[Metric(k, v, 0, 0) for k, v in metrics.items()])
            tags.update(group_tags)
            for line in group_tags.values():
                log.info("seeds: %s", line)
        self.tracker.set_tags(tags)

    def _watch_for_abnormal_exit(self) -> None:
        """Ctrl-C, SIGTERM or an exception between on_multirun_start and _end: still end."""
        from eva.tracking.run import install_sigterm_interrupt

        # Between jobs too, not only inside a job's run.
        self._previous_sigterm = install_sigterm_interrupt()
        previous_hook = sys.excepthook

        def hook(kind, value, tb):
            self.interrupted = issubclass(kind, KeyboardInterrupt)
            previous_hook(kind, value, tb)

        sys.excepthook = hook
        atexit.register(self._end_if_still_open)

    def _end_if_still_open(self) -> None:
        """At exit, a parent still open means the sweep did not reach on_multirun_end."""
        if self.tracker is None or self.tracker.run_id is None:
            return
        os.environ.pop(PARENT_ENV, None)
        try:
            self.summarize()
        except Exception as e:
            log.warning("could not summarise sweep run %s: %s", self.tracker.run_id, e)
        if self.interrupted:
            self.tracker.end_quietly("KILLED", "sweep interrupted (Ctrl-C)")
        else:
            self.tracker.end_quietly("FAILED", "sweep stopped before its end (see its log)")
        self.tracker = None
