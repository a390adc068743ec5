"""MLflow in a process of its own, so that training never waits for it.

Importing MLflow and opening its sqlite store take seconds of pure Python
(benchmarks/startup.py), all before the first batch if the training process did them. A
thread would not help: the GIL makes the import and the training loop take turns, and
both get slower. A writer process does them on
another core while the run starts, then takes every later call from a pipe, in order:
the run's datasets, per-epoch metrics, tags, files, the model, the end. Calls whose answer
the run needs (run_id, reopen, logged_steps, log_model, register_model, end) wait for it;
the others return at once, and an error in one of them is raised by the run's next waiting
call. One writer serves every run of a process, one after another. The system metrics of
a training run are sampled here too, on a thread of the writer. `tracking.process=false`
keeps MLflow inline.

The writer runs in a session of its own and ignores Ctrl-C and SIGTERM: signals meant for
the run reach the run, whose process then ends its MLflow run through the writer. When
that process dies (kill -9), the socket closes and the writer exits after the calls it
already has; the MLflow run stays RUNNING until `resume=true` reopens it, as it would with
an inline tracker.
"""

import atexit
import itertools
import logging
import os
import pickle
import signal
import socket
import subprocess
import sys
import threading
from multiprocessing.connection import Connection
from pathlib import Path

from omegaconf import OmegaConf

from eva.cli.startup import pause_gc, resume_gc
from eva.errors import EvaError
from eva.tracking.run import Launch, Recording, Tracker
from eva.tracking.store import check_reachable, redact, resolve_uri

log = logging.getLogger(__name__)

ANSWERS = ("run_id", "experiment_id", "seconds", "model_uri")  # attributes read back


def serve(conn) -> None:
    """The writer process: one Tracker per run key, calls run in the order they came."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    os.nice(5)  # where the writer and training compete for a core, training goes first
    pause_gc()  # until MLflow is imported and its store open (eva/cli/startup.py)
    logging.basicConfig(level=logging.WARNING, format="[eva MLflow writer] %(message)s")
    trackers: dict[int, Tracker] = {}
    failed: dict[int, BaseException] = {}  # an error of a call nobody waited for
    wants_model = trained = torch_ready = False
    while True:
        if wants_model and trained and not torch_ready and not conn.poll(0.2):
            # Idle after an epoch of a run that will log its model: get ready for it now,
            # not when the model comes (not sooner: it would slow the run's own start-up).
            warm_model_logging()
            torch_ready = True
            continue
        try:
            key, method, args, wait = pickle.loads(conn.recv_bytes())
        except (EOFError, OSError):
            return  # the run's process is gone
        try:
            if key in failed:
                raise failed.pop(key)
            tracker = trackers.get(key)
            if method == "open":
                config, launch_dir, monitor = args
                wants_model = wants_model or config.get("log_model", False)
                try:
                    cfg = OmegaConf.create(config)
                    trackers[key] = Tracker.open(cfg, Launch(launch_dir), monitor=monitor)
                finally:
                    resume_gc()
                answer = None
            elif tracker is None:  # its opening failed (and said so): nothing to do
                answer = {} if method == "seconds" else None
            elif method in ANSWERS:
                answer = getattr(tracker, method)
                answer = dict(answer) if method == "seconds" else answer
            else:
                answer = getattr(tracker, method)(*args)
                trained = trained or method == "log_metrics"
        except BaseException as e:  # sent back: the run decides what it means
            if not wait:
                failed[key] = e
                continue
            answer = e
        if wait:
            try:
                reply = pickle.dumps(answer)
            except Exception as e:  # an answer (an exception) that does not pickle
                reply = pickle.dumps(RuntimeError(f"{type(answer).__name__}: {answer} ({e})"))
            conn.send_bytes(reply)


def warm_model_logging() -> None:
    """What the first log_model of a process pays before its own work, seconds of it:
    importing torch and torch.export (which imports torch._dynamo), the first export's
    set-up of the tracing machinery (later exports skip it), and MLflow's map of the
    installed packages, which it builds to check the model's pip requirements."""
    import mlflow.pytorch  # noqa: F401
    import torch
    import torch.export
    from torch import nn

    # One thread exports: the run's own process (its reports, its next epoch) keeps the
    # other cores.
    torch.set_num_threads(1)
    # A throwaway export of the layers eva's models are made of, with a free batch size as
    # mlflow.pytorch exports them: what the first export pays is paid now, while idle.
    tiny = nn.Sequential(
        nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
        nn.Flatten(), nn.Linear(2, 2),
    ).eval()  # fmt: skip
    batch = {0: torch.export.Dim.AUTO}
    torch.export.export(tiny, (torch.zeros(2, 1, 6, 6),), dynamic_shapes=[batch])
    from mlflow.utils.requirements_utils import warn_dependency_requirement_mismatches

    from eva.tracking.run import model_requirements

    warn_dependency_requirement_mismatches(model_requirements())  # private: MLflow 3.17


class Writer:
    """This process's writer process, started on first use and kept for later runs.

    A plain subprocess (`python -m eva.tracking.writer FD`) on one end of a socket pair,
    in a session of its own: not multiprocessing, whose spawn would follow a launcher's
    start method (loky in joblib sweeps) and re-import the caller's __main__. Messages are
    plain pickles (send_bytes): torch's multiprocessing pickler would share tensors through
    file descriptors, which only multiprocessing's own children can receive.
    """

    _current: "Writer | None" = None

    def __init__(self):
        ours, theirs = socket.socketpair()
        # The child imports this same eva, also when it runs from a checkout that is not
        # installed (`python path/to/train.py` puts the checkout on sys.path, not on PYTHONPATH).
        here = str(Path(__file__).resolve().parents[2])
        path = os.environ.get("PYTHONPATH")
        env = {**os.environ, "PYTHONPATH": here if not path else here + os.pathsep + path}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "eva.tracking.writer", str(theirs.fileno())],
            pass_fds=(theirs.fileno(),),
            env=env,
            start_new_session=True,  # Ctrl-C and group signals reach the run, not the writer
        )
        theirs.close()
        self.conn = Connection(ours.detach())
        self.lock = threading.Lock()
        self.unanswered = 0  # calls sent since the last answer (calls run in order)
        atexit.register(self.close)

    @classmethod
    def get(cls) -> "Writer":
        if cls._current is None or cls._current.process.poll() is not None:
            cls._current = cls()
        return cls._current

    def close(self, timeout: float = 60.0) -> None:
        """No more calls: the writer finishes the ones it has, then exits. When every call
        has been answered there is nothing to wait for (its interpreter's own shutdown
        takes a second of a sweep's end)."""
        with self.lock:
            self.conn.close()
        if not self.unanswered:
            return
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()

    def send(self, key: int, method: str, args: tuple = (), wait: bool = False):
        with self.lock:
            try:
                self.conn.send_bytes(pickle.dumps((key, method, args, wait)))
                self.unanswered += 1
                answer = pickle.loads(self.conn.recv_bytes()) if wait else None
                if wait:
                    self.unanswered = 0
            except (EOFError, OSError) as e:
                raise EvaError(f"eva's MLflow writer process died ({e or 'no answer'})") from e
        if isinstance(answer, BaseException):
            raise answer
        return answer


class RemoteTracker(Recording):
    """A Tracker whose MLflow calls run in the writer process (same methods, same rules)."""

    _keys = itertools.count()

    def __init__(self, uri: str, writer: Writer):
        self.uri = uri
        self.writer = writer
        self.key = next(self._keys)
        self._run_id: str | None = None
        self.model_uri: str | None = None

    @classmethod
    def open(cls, tracking_cfg, launch: Launch, monitor: bool = False) -> "RemoteTracker | Tracker":
        """Tracker.open's contract: a dead server fails here, in seconds; the store and
        the experiment are prepared by the writer while the run goes on. monitor: the
        machine is sampled by the writer process, which costs training nothing."""
        if not tracking_cfg.enabled:
            return Tracker()
        uri = resolve_uri(tracking_cfg.uri, launch.launch_dir)
        check_reachable(uri, tracking_cfg.timeout)
        tracker = cls(uri, Writer.get())
        config = OmegaConf.to_container(tracking_cfg, resolve=True)
        tracker._send("open", ({**config, "uri": uri}, str(launch.launch_dir), monitor))
        return tracker

    def _send(self, method: str, args: tuple = (), wait: bool = False):
        return self.writer.send(self.key, method, args, wait)

    @property
    def enabled(self) -> bool:
        return True

    @property
    def run_id(self) -> str | None:
        if self._run_id is None:
            self._run_id = self._send("run_id", wait=True)
            if self._run_id:
                log.info("MLflow run %s in %s", self._run_id, redact(self.uri))
        return self._run_id

    @property
    def experiment_id(self) -> str | None:
        return self._send("experiment_id", wait=True)

    @property
    def seconds(self) -> dict[str, float]:
        """Seconds inside MLflow calls per phase, spent by the writer, not by training."""
        return self._send("seconds", wait=True)

    def start(self, run_name: str, params: dict[str, str], tags: dict[str, str], parent=None):
        self._send("start", (run_name, params, tags, parent))

    def reopen(self, run_id: str) -> bool:
        reopened = self._send("reopen", (run_id,), wait=True)
        if reopened:
            self._run_id = run_id
        return reopened

    def logged_steps(self, key: str) -> set[int]:
        return self._send("logged_steps", (key,), wait=True)

    def log_datasets(self, datasets: list[dict]) -> None:
        self._send("log_datasets", (datasets,))

    def log_metrics(self, metrics: dict[str, float], step: int, phase: str = "epochs") -> None:
        self._send("log_metrics", ({k: float(v) for k, v in metrics.items()}, step, phase))

    def set_tags(self, tags: dict[str, str]) -> None:
        self._send("set_tags", (tags,))

    def log_to(self, run_id: str, metrics: dict[str, float], tags: dict[str, str]) -> None:
        self._send("log_to", (run_id, {k: float(v) for k, v in metrics.items()}, tags))

    def delete_tag(self, key: str) -> None:
        self._send("delete_tag", (key,))

    def log_files(self, files: dict) -> None:
        self._send("log_files", (files,))

    def log_model(self, model, input_example, step: int) -> str | None:
        """The model (on the CPU) is pickled to the writer, which exports and logs it."""
        self.model_uri = self._send("log_model", (model, input_example, step), wait=True)
        return self.model_uri

    def log_model_soon(self, model, input_example, step: int) -> None:
        """The writer exports and logs the model while the run goes on (reports, say)."""
        self._send("log_model", (model, input_example, step))

    def model_logged(self) -> str | None:
        self.model_uri = self._send("model_uri", wait=True)  # after the log_model sent before
        return self.model_uri

    def register_model(self, name: str, objective: str, value: float, study: str | None = None):
        """Waits for the writer: the caller logs the registry's answer (champion or not)."""
        return self._send("register_model", (name, objective, float(value), study), wait=True)

    def end(self, status: str, error: str | None = None) -> None:
        if self._run_id is None and self.run_id is None:  # no run: nothing to end
            return
        self._send("end", (status, error), wait=True)
        log.info("MLflow run %s ended %s", self._run_id, status)


if __name__ == "__main__":  # started by Writer
    serve(Connection(int(sys.argv[1])))
