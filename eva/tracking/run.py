"""One MLflow run per training job: recorded in a few batched calls, always ended honestly.

The training loop talks to a Tracker only: `start` creates the run, `log_datasets` records
its data splits as the run's inputs, `log_metrics` sends one batch of metrics per epoch (a
call costs ~10-20 ms; an epoch takes seconds to minutes), `log_files` and `log_model`
upload at the end, `register_model` adds the logged model to the model registry, and
`recording()` ends the run FINISHED, FAILED (with the error as a tag) or KILLED (Ctrl-C,
SIGTERM). A tracker opened for a training run (`monitor=True`) also samples the machine
into the run's system/* metrics while the run is open. A disabled Tracker
(tracking.enabled=false) accepts every call and does nothing.
"""

import logging
import os
import signal
import threading
import time
from collections import defaultdict
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from eva.tracking.store import prepare_experiment, redact, resolve_uri

log = logging.getLogger(__name__)

MAX_TAG = 5000  # characters kept of an error message (MLflow allows 8000)
# Seconds the run's end waits for the system-metrics thread to stop: it wakes at once and a
# sample takes milliseconds; one stuck on a store that does not answer is left behind (a
# daemon thread: it never holds up the process's exit).
MONITOR_STOP_WAIT = 1.0


# How the model is saved: torch.export's graph ("pt2"), not a pickle of eva's classes.
MODEL_FORMAT = {"serialization_format": "pt2"}


def model_requirements() -> list[str]:
    """Given, not inferred: MLflow infers them by re-importing the model in a subprocess,
    seconds per run."""
    import torch

    return [f"torch=={torch.__version__.split('+')[0]}", "numpy"]


def launch_dir_of(hydra_cfg) -> Path:
    """The folder the command was launched from (Hydra's runtime.cwd; the process's own
    working directory when Hydra did not record one): relative paths start there."""
    return Path(hydra_cfg.runtime.get("cwd") or os.getcwd())


@dataclass
class Launch:
    """What the launcher knows that the config does not (eva.cli.job fills it from Hydra)."""

    launch_dir: Path = field(default_factory=Path.cwd)
    run_name: str | None = None  # a sweep job's "<num>: <its overrides>"
    parent_run_id: str | None = None  # the sweep's parent run
    tags: dict[str, str] = field(default_factory=dict)
    trial: Any = None  # evasweep.job.JobTrial of an Optuna sweep job: reports, may prune
    slot: int | None = None  # which of `slots` parallel jobs this is (device, CPU share)
    slots: int = 1
    overrides: list[str] = field(default_factory=list)  # the command line's task overrides
    started_at: float | None = None  # perf_counter() when the job started (its start-up time)


class Recording:
    """How a run ends, whatever happens inside it: FINISHED, FAILED (with the error as a
    tag) or KILLED (Ctrl-C, SIGTERM). Shared by Tracker and eva.tracking.writer's
    RemoteTracker, which only differ in where `end` runs."""

    run_id: str | None

    def end(self, status: str, error: str | None = None) -> None:
        raise NotImplementedError

    def end_quietly(self, status: str, error: str) -> None:
        """End the run while another exception is on its way out; never mask that one."""
        try:
            self.end(status, error)
        except Exception as e:  # the store itself may be what failed
            log.warning("could not mark MLflow run %s %s: %s", self.run_id, status, e)

    @contextmanager
    def recording(self):
        """End the run FINISHED, FAILED or KILLED, whatever happens inside."""
        with sigterm_raises_interrupt():
            try:
                yield self
            except KeyboardInterrupt:
                self.end_quietly("KILLED", "interrupted (Ctrl-C or SIGTERM)")
                raise
            except BaseException as e:
                self.end_quietly("FAILED", f"{type(e).__name__}: {e}")
                raise
        self.end("FINISHED")


class Tracker(Recording):
    def __init__(self, uri: str | None = None, experiment_id: str | None = None):
        self.uri = uri
        self.experiment_id = experiment_id
        self.run_id: str | None = None
        self.model_uri: str | None = None
        # Wall time spent inside MLflow calls, per phase: open (store + experiment), start
        # (run + params), epochs (the per-epoch batches), final (files + model), end.
        self.seconds: dict[str, float] = defaultdict(float)
        # Seconds between samples of the machine while a run is open (None: not sampled),
        # and MLflow's monitor of the open run.
        self.system_interval: float | None = None
        self._monitor = None

    @property
    def enabled(self) -> bool:
        return self.experiment_id is not None

    @classmethod
    def open(cls, tracking_cfg, launch: Launch, monitor: bool = False) -> "Tracker":
        """Resolve the store and make sure it and the experiment exist; no run yet.

        Fails in seconds (EvaError) when a tracking server does not answer, before any
        data is loaded or any run is created. monitor: the tracker of a training run, which
        samples the machine while its run is open (tracking.system_metrics); a sweep's
        parent run is no training run.
        """
        if not tracking_cfg.enabled:
            return cls()
        uri = resolve_uri(tracking_cfg.uri, launch.launch_dir)
        started = time.perf_counter()
        experiment_id = prepare_experiment(uri, tracking_cfg.experiment, tracking_cfg.timeout)
        tracker = cls(uri, experiment_id)
        if monitor and tracking_cfg.get("system_metrics", False):
            tracker.system_interval = float(tracking_cfg.system_metrics_interval)
            import psutil

            # psutil's CPU figure covers the time since its previous call: without this
            # one, the run's first sample would say 0%.
            psutil.cpu_percent()
        tracker.seconds["open"] += time.perf_counter() - started
        return tracker

    @contextmanager
    def _timed(self, phase: str):
        started = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[phase] += time.perf_counter() - started

    @cached_property
    def _client(self):
        from mlflow import MlflowClient

        return MlflowClient(self.uri)

    def start(self, run_name: str, params: dict[str, str], tags: dict[str, str], parent=None):
        if not self.enabled:
            return
        from mlflow.entities import Param

        with self._timed("start"):
            client = self._client
            if parent:
                tags = {**tags, "mlflow.parentRunId": parent}
            run = client.create_run(self.experiment_id, run_name=run_name, tags=tags)
            self.run_id = run.info.run_id
            items = [Param(k, v) for k, v in params.items()]
            for i in range(0, len(items), 100):  # MLflow takes at most 100 params per batch
                client.log_batch(self.run_id, params=items[i : i + 100])
            self._watch(resume=False)
        log.info("MLflow run %s (%s) in %s", self.run_id, run_name, redact(self.uri))

    def reopen(self, run_id: str) -> bool:
        """Continue an existing run of this experiment (status back to RUNNING).

        False when the store has no such live run (deleted, or another store).
        """
        if not self.enabled:
            return False
        from mlflow.exceptions import MlflowException

        with self._timed("start"):
            try:
                run = self._client.get_run(run_id)
            except MlflowException:
                return False
            if run.info.experiment_id != self.experiment_id:
                return False
            if run.info.lifecycle_stage != "active":
                return False
            self._client.update_run(run_id, status="RUNNING")
            self.run_id = run_id
            self._watch(resume=True)
        return True

    def _watch(self, resume: bool) -> None:
        """Sample the machine into the open run every system_interval seconds: MLflow's own
        monitor (CPU, memory, disk, network, and NVIDIA GPUs through nvidia-ml-py), on a
        thread of this process, eva's writer process by default, so training never waits
        for it. resume: the run had samples before; their steps go on."""
        if not self.system_interval:
            return
        self._unwatch()  # one run at a time
        from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

        # It says at INFO that it started, stopped and found no GPU, on every run.
        logging.getLogger("mlflow.system_metrics").setLevel(logging.WARNING)
        monitor = SystemMetricsMonitor(
            self.run_id,
            sampling_interval=self.system_interval,
            resume_logging=resume,
            tracking_uri=self.uri,
        )
        monitor.start()
        self._monitor = monitor

    def _unwatch(self) -> None:
        """Stop sampling, and take one last sample at the run's end (averaged with one the
        thread took since its last record): a run shorter than one interval still gets
        a point.

        Not the monitor's own finish(), which joins its thread with no limit: a sample
        stuck on a store that does not answer would hold up the run's end for minutes.
        (Private names: exact to the pinned MLflow 3.17.)
        """
        monitor, self._monitor = self._monitor, None
        if monitor is None:
            return
        thread = monitor._process
        monitor._shutdown_event.set()  # wakes the thread from its wait between samples
        if thread is not None:
            thread.join(MONITOR_STOP_WAIT)
            if thread.is_alive():
                log.warning("system metrics of run %s: the monitor did not stop", self.run_id)
                return
        monitor.collect_metrics()
        monitor.publish_metrics(monitor.aggregate_metrics())
        monitor.mlflow_logger.flush()

    def log_datasets(self, datasets: list[dict]) -> None:
        """The run's data splits (eva.tracking.datasets.describe) as its MLflow inputs, one
        call: the runs table's Dataset column and the run page show them."""
        if not self.run_id or not datasets:
            return
        from mlflow.entities import DatasetInput, InputTag
        from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

        inputs = [
            DatasetInput(dataset_entity(d), tags=[InputTag(MLFLOW_DATASET_CONTEXT, d["context"])])
            for d in datasets
        ]
        with self._timed("start"):
            self._client.log_inputs(self.run_id, datasets=inputs)

    def logged_steps(self, key: str) -> set[int]:
        """Steps at which the run already has metric `key` (a resumed run fills the gaps)."""
        if not self.run_id:
            return set()
        with self._timed("start"):
            return {m.step for m in self._client.get_metric_history(self.run_id, key)}

    def log_metrics(self, metrics: dict[str, float], step: int, phase: str = "epochs") -> None:
        """All of one epoch's numbers in a single call."""
        if not self.run_id:
            return
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        batch = [Metric(k, float(v), now, step) for k, v in metrics.items()]
        with self._timed(phase):
            self._client.log_batch(self.run_id, metrics=batch)

    def set_tags(self, tags: dict[str, str]) -> None:
        if not self.run_id:
            return
        from mlflow.entities import RunTag

        with self._timed("final"):
            self._client.log_batch(self.run_id, tags=[RunTag(k, v) for k, v in tags.items()])

    def log_to(self, run_id: str, metrics: dict[str, float], tags: dict[str, str]) -> None:
        """Metrics (step 0) and tags on another run of the store, ended or not: a sweep
        adds what only it knows to its trials' runs (the mean over a trial's seeds)."""
        if not self.enabled:
            return
        from mlflow.entities import Metric, RunTag

        now = int(time.time() * 1000)
        with self._timed("final"):
            self._client.log_batch(
                run_id,
                metrics=[Metric(k, float(v), now, 0) for k, v in metrics.items()],
                tags=[RunTag(k, v) for k, v in tags.items()],
            )

    def delete_tag(self, key: str) -> None:
        """Remove tag `key` from the run, if it has one."""
        if not self.run_id:
            return
        from mlflow.exceptions import MlflowException

        with self._timed("final"):
            try:
                self._client.delete_tag(self.run_id, key)
            except MlflowException:  # there was none
                pass

    def log_files(self, files: dict[str, Path]) -> None:
        """{artifact folder ("" for the top): file or folder}; missing paths are skipped."""
        if not self.run_id:
            return
        with self._timed("final"):
            client = self._client
            for folder, path in files.items():
                path = Path(path)
                if path.is_dir():
                    client.log_artifacts(self.run_id, str(path), folder or None)
                elif path.is_file():
                    client.log_artifact(self.run_id, str(path), folder or None)

    def log_model(self, model, input_example, step: int) -> str | None:
        """mlflow.pytorch.log_model in MLflow's "pt2" format (torch.export).

        The exported graph loads without eva's code and without unpickling anything. The
        input example needs a batch of 2 or more: a batch of 1 would fix the batch size of
        the exported graph to 1.
        """
        if not self.run_id:
            return None
        import mlflow
        import mlflow.pytorch

        with self._timed("final"), _fluent_target(self.uri, self.experiment_id):
            info = mlflow.pytorch.log_model(
                model,
                name="model",
                input_example=input_example,
                run_id=self.run_id,
                step=step,
                **MODEL_FORMAT,
                pip_requirements=model_requirements(),
                # MLflow would load the saved graph back and run the example through it,
                # half of log_model's time, to warn if serving it fails: the export just
                # ran that example, and tests/test_tracking.py reloads every model.
                validate_serving_input=False,
            )
        self.model_uri = info.model_uri
        self.set_tags({"model_uri": info.model_uri})
        return info.model_uri

    def log_model_soon(self, model, input_example, step: int) -> None:
        """log_model, where it may go on while the caller works (eva's writer process);
        model_logged() then gives its URI. Here in this process: at once."""
        self.log_model(model, input_example, step)

    def model_logged(self) -> str | None:
        """The URI of the model log_model_soon() sent, once it is logged."""
        return self.model_uri

    def register_model(self, name: str, objective: str, value: float, study: str | None = None):
        """The model log_model logged, as a new version of registered model `name`, the
        alias champion moved to it if it scores best (eva.tracking.registry.register).
        Returns the Registration, or None when this run logged no model."""
        if not self.run_id or not self.model_uri:
            return None
        from eva.tracking.registry import register

        with self._timed("final"):
            return register(
                self._client, name, self.model_uri, self.run_id, objective, value, study
            )

    def end(self, status: str, error: str | None = None) -> None:
        if not self.run_id:
            return
        with self._timed("end"):
            try:
                self._unwatch()  # before the run ends: its last sample goes in while RUNNING
            except Exception as e:  # the run must end whatever its monitor does
                log.warning("system metrics of run %s: %s", self.run_id, e)
            client = self._client
            if error:
                client.set_tag(self.run_id, "error", error[:MAX_TAG])
            client.set_terminated(self.run_id, status=status)
        log.info("MLflow run %s ended %s", self.run_id, status)


def dataset_entity(described: dict):
    """MLflow's Dataset for one split eva.tracking.datasets.describe described: a local
    source (its root) or code (a generated dataset), a profile with the number of images,
    and the schema of its images and labels in MLflow's tensor-spec format."""
    import json

    import numpy as np
    from mlflow.data.schema import TensorDatasetSchema
    from mlflow.entities import Dataset
    from mlflow.types.schema import Schema, TensorSpec

    if described["source"] == "generated":
        source_type, source = "code", {"tags": {"generated_by": described["builder"]}}
    else:
        source_type, source = "local", {"uri": described["source"]}
    schema = TensorDatasetSchema(
        features=Schema([TensorSpec(np.dtype("uint8"), (-1, *described["image_shape"]))]),
        targets=Schema([TensorSpec(np.dtype("int64"), (-1,))]),
    )
    profile = {
        "num_images": described["size"],
        "image_shape": described["image_shape"],
        "num_classes": described["num_classes"],
    }
    return Dataset(
        name=described["name"],
        digest=described["digest"],
        source_type=source_type,
        source=json.dumps(source),
        schema=json.dumps(schema.to_dict()),
        profile=json.dumps(profile),
    )


@contextmanager
def _fluent_target(uri: str, experiment_id: str):
    """Point MLflow's process-wide tracking URI and experiment at this run, for one call.

    mlflow.pytorch.log_model reads both (its LoggedModel is created in that experiment).
    Setting them also sets MLFLOW_TRACKING_URI / MLFLOW_EXPERIMENT_ID in os.environ, which
    would silently send the next run of this process (a test, a notebook) to this store:
    everything is put back afterwards. (Private names: exact to the pinned MLflow 3.17.)
    """
    import mlflow
    import mlflow.tracking._tracking_service.utils as tracking_utils
    import mlflow.tracking.fluent as fluent

    names = ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_ID")
    saved_env = {name: os.environ.get(name) for name in names}
    saved = (tracking_utils._tracking_uri, fluent._active_experiment_id)
    try:
        mlflow.set_tracking_uri(uri)
        mlflow.set_experiment(experiment_id=experiment_id)
        yield
    finally:
        tracking_utils._tracking_uri, fluent._active_experiment_id = saved
        for name, value in saved_env.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


class Terminated(KeyboardInterrupt):
    """SIGTERM (a scheduler's or `kill`'s stop request), handled like Ctrl-C."""


def _raise_terminated(signum, frame):
    raise Terminated(f"signal {signum}")


def install_sigterm_interrupt():
    """Make SIGTERM raise Terminated; returns the previous handler (None off the main thread,
    where signal handlers cannot be set)."""
    if threading.current_thread() is not threading.main_thread():
        return None
    return signal.signal(signal.SIGTERM, _raise_terminated)


@contextmanager
def sigterm_raises_interrupt():
    previous = install_sigterm_interrupt()
    if previous is None:
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
