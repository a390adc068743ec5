"""`resume=true`: continue the run in the same folder (hydra.run.dir) from checkpoints/last.pt.

    python -m eva model=ultimus epochs=24 hydra.run.dir=outputs/u1              # killed
    python -m eva model=ultimus epochs=24 hydra.run.dir=outputs/u1 resume=true  # goes on

The command must train the same thing as the run (same overrides; device, threads,
tracking and reports may differ). The run continues in its MLflow run and ends with the
metrics an uninterrupted run would have had. A finished run is left as it is.
"""

import fcntl
import json
import logging
import os
from contextlib import contextmanager
from pathlib import Path

from omegaconf import OmegaConf

from eva.config.schemas import is_runtime_key
from eva.errors import EvaError
from eva.tracking.params import flatten

log = logging.getLogger(__name__)


def last_path(output_dir: Path) -> Path:
    return Path(output_dir) / "checkpoints" / "last.pt"


@contextmanager
def run_lock(output_dir: Path):
    """One eva process per run folder: a resume never races the run it continues.

    An flock on <run dir>/.eva.lock, released by the kernel when the process dies (kill -9).
    """
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    with open(output_dir / ".eva.lock", "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "?"
            raise EvaError(
                f"{output_dir} is in use by another eva process (pid {holder}): wait for it "
                "to end, or stop it first"
            ) from None
        f.truncate(0)
        f.write(f"{os.getpid()}\n")
        f.flush()
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def read_last(cfg, output_dir: Path) -> dict | None:
    """The state to resume from (resume=true), else None for a new run.

    A new run never overwrites another one's last.pt; a resume needs one written by the
    same training setup.
    """
    from eva.engine.checkpoint import load_checkpoint

    path = last_path(output_dir)
    if not cfg.resume:
        if path.exists():
            raise EvaError(
                f"{output_dir} already holds a run (checkpoints/last.pt): add resume=true to "
                "continue it, or give another hydra.run.dir"
            )
        return None
    if not path.is_file():
        raise EvaError(
            f"resume=true: no checkpoints/last.pt in {output_dir}: pass the folder of the run "
            "to continue as hydra.run.dir=..."
        )
    try:
        state = load_checkpoint(path)
    except Exception as e:
        raise EvaError(f"resume=true: {path} cannot be read ({type(e).__name__}: {e})") from None
    if not isinstance(state, dict) or "rng" not in state or "config" not in state:
        raise EvaError(f"resume=true: {path} is not a last.pt written by this version of eva")
    check_same_training(cfg, state, output_dir)
    return state


def differences(current: dict, saved: dict) -> list[str]:
    """'key=value (the run: other)' for every training setting that differs."""
    now, then = flatten(current), flatten(saved)
    out = []
    for key in sorted(now.keys() | then.keys()):
        if is_runtime_key(key):
            continue
        if key == "scheduler.max_lr" and now.get(key) == "find":
            continue  # the run found its number; the resume keeps it
        if now.get(key) != then.get(key):
            out.append(f"{key}={now.get(key, '(none)')} (the run: {then.get(key, '(none)')})")
    return out


def check_same_training(cfg, state: dict, output_dir: Path) -> None:
    current = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
    diffs = differences(current, state["config"])
    if diffs:
        shown = ", ".join(diffs[:3]) + (f" and {len(diffs) - 3} more" if len(diffs) > 3 else "")
        overrides = " ".join(state.get("overrides") or []) or "(none)"
        raise EvaError(
            f"resume=true: this command trains something else than the run in {output_dir}: "
            f"{shown}; repeat the run's overrides: {overrides}"
        )


def adopt_found_lr(cfg, state: dict) -> None:
    """scheduler.max_lr=find on resume: the number the run found, not a new range test."""
    if cfg.scheduler.get("max_lr") == "find":
        cfg.scheduler.max_lr = state["config"]["scheduler"]["max_lr"]


def already_finished(state: dict, output_dir: Path) -> dict:
    """resume=true on a complete run: say so, change nothing, return its results."""
    best = state["best"]
    on = best.get("selected_on", "test")
    log.info(
        "resume=true: the run in %s already finished (%d epochs, best %s_acc %.4f at epoch %d): "
        "nothing to do",
        output_dir,
        state["epoch"],
        on,
        best.get(f"{on}_acc", float("nan")),
        best.get("epoch", 0),
    )
    results = Path(output_dir) / "results.json"
    return json.loads(results.read_text()) if results.is_file() else {}


def continue_tracking(rt, state: dict, run_name: str) -> None:
    """Reopen the run's MLflow run and log the epochs it is missing.

    A kill between saving last.pt and logging an epoch leaves that epoch out of MLflow;
    a store that lost the run (deleted, other tracking.uri) gets a new run with all epochs.
    """
    from eva.engine.state import epoch_metrics, improves
    from eva.modes import runtime

    tracker = rt.tracker
    if not tracker.enabled:
        return
    run_id = state.get("mlflow_run_id")
    if not (run_id and tracker.reopen(run_id)):
        log.warning("MLflow run %s not found in this store: the resume starts a new one", run_id)
        runtime.start_run(rt, run_name)
        tracker.set_tags({"resumed_from_run": str(run_id)})
    logged = tracker.logged_steps("test_acc")
    on = state["best"].get("selected_on", "test")
    best: dict = {}
    for row in state["history"]:
        best = row if improves(row, best, on) else best
        if row["epoch"] not in logged:
            tracker.log_metrics(epoch_metrics(row, best), step=row["epoch"])
    tracker.set_tags({"resumed_at_epoch": str(state["epoch"])})
