"""The costly records of a trained run, made after it: its reports and its logged MLflow
model, from its checkpoints, into its own folder and its own MLflow run.

An Optuna sweep's trials leave both to the sweep (report.trials=best, the default): each
trial records its params, per-epoch metrics, results and best checkpoint, and once the
study is complete its best trial (each trial of a Pareto front) gets its reports and model
here (eva/sweep/integration.py), also when the command of a killed sweep runs again.
results.json's "artefacts" says, for "reports" and "model", what the run made of them:
made, deferred (left for the end of the sweep), skipped (report.trials=none) or off.
"""

import copy
import json
import logging
import shutil
import sys
from pathlib import Path

import torch
from omegaconf import OmegaConf

from eva.engine.checkpoint import load_checkpoint
from eva.engine.device import auto_workers, resolve_device
from eva.files import write_json
from eva.modes import resume as resuming
from eva.tracking import Launch

log = logging.getLogger(__name__)

MADE, DEFERRED, SKIPPED, OFF = "made", "deferred", "skipped", "off"


def planned(cfg, launch: Launch) -> dict[str, str]:
    """What a run does with its reports and its model: made now (single runs, and every
    trial with report.trials=all), deferred to the end of its sweep, skipped, or off."""
    later = MADE
    if launch.trial is not None:  # a trial of eva's Optuna sweeper
        later = {"best": DEFERRED, "none": SKIPPED}.get(str(cfg.report.trials), MADE)
    return {
        "reports": later if cfg.report.enabled else OFF,
        "model": later if cfg.tracking.enabled and cfg.tracking.log_model else OFF,
    }


def describe(artefacts: dict[str, str]) -> str:
    """The MLflow tag `artefacts`: "reports made, model deferred"."""
    return ", ".join(f"{what} {state}" for what, state in artefacts.items())


def deferred(output_dir: Path) -> list[str]:
    """What the run in output_dir left for later: [], "reports", "model" (none: nothing,
    or no readable results.json)."""
    try:
        results = json.loads((Path(output_dir) / "results.json").read_text())
    except (OSError, ValueError):
        return []
    return [what for what, state in results.get("artefacts", {}).items() if state == DEFERRED]


def finish_run(
    output_dir: Path,
    tracking_cfg,
    launch_dir: Path,
    device: str = "auto",
    threads: int | None = None,
    study: str | None = None,
) -> dict | None:
    """Make what the trained run in output_dir deferred (deferred()), from its best.pt,
    on `device`: the reports into its plots/ and reports/, the model into its MLflow run
    (found in `tracking_cfg`'s store by the run id results.json names), registered as a
    version of tracking_cfg.register when that is set (its tag `study` names `study`, the
    Optuna study the run is a trial of). Updates results.json and the run's `artefacts`
    tag; the run ends FINISHED again. Returns the new results, or None when nothing was
    left to make. Raises EvaError when another process holds the run folder.
    """
    output_dir = Path(output_dir)
    with resuming.run_lock(output_dir):
        todo = deferred(output_dir)
        if not todo:
            return None
        results_path = output_dir / "results.json"
        results = json.loads(results_path.read_text())
        cfg = OmegaConf.load(output_dir / "config.yaml")  # the run's config, resolved
        before = torch.get_num_threads()
        if threads:
            torch.set_num_threads(threads)
        try:
            run_device = resolve_device(device)
            model, data, last = _load(cfg, results, output_dir, run_device)
            tracker = _reopen(tracking_cfg, launch_dir, results.get("mlflow_run_id"))
            try:
                _make(cfg, todo, model, data, run_device, output_dir, last, results, tracker)
                if "model" in todo and tracker is not None:
                    register_best(tracker, tracking_cfg, results, study)
            finally:
                if tracker is not None:
                    tracker.end("FINISHED")  # as training left it, whatever happened here
        finally:
            torch.set_num_threads(before)
    write_json(results, results_path)
    log.info("%s: %s", output_dir, describe(results["artefacts"]))
    return results


def _load(cfg, results: dict, output_dir: Path, device: torch.device):
    """(the model with its best weights, the run's data, its last.pt) on `device`."""
    from eva.data import build_data
    from eva.models import build_model

    d = cfg.dataset
    model = build_model(cfg.model, d.in_channels, d.num_classes)
    model.load_state_dict(load_checkpoint(Path(results["best_checkpoint"]))["model"])
    model = model.to(device).eval()
    last = load_checkpoint(resuming.last_path(output_dir))
    data = build_data(cfg, device, auto_workers(d.num_workers, device))
    return model, data, last


# ----------------------------------------------------------------------------- staging
# While a sweep's later trials train, the reports of its best trial so far are drawn ahead
# in a process of its own (eva/sweep/stage.py) into <run dir>/.staged; if that trial is
# still the best once the study is complete, finish_run moves them into place instead of
# drawing them then. A sweep's other trials never keep one: finish() removes them.

STAGED = ".staged"


def checkpoint_identity(path: Path) -> dict:
    """What says best.pt is the file the staged reports were drawn from."""
    stat = Path(path).stat()
    return {"path": str(Path(path).absolute()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def stage_reports(output_dir: Path, device: str = "cpu", threads: int = 1) -> Path:
    """Draw the reports of the trained run in output_dir into output_dir/.staged; its
    done.json (written last) holds their summary and metrics and the best.pt they show."""
    from eva.report import make_reports

    output_dir = Path(output_dir)
    staged = output_dir / STAGED
    shutil.rmtree(staged, ignore_errors=True)
    results = json.loads((output_dir / "results.json").read_text())
    cfg = OmegaConf.load(output_dir / "config.yaml")
    torch.set_num_threads(threads)
    run_device = resolve_device(device)
    model, data, last = _load(cfg, results, output_dir, run_device)
    reports = make_reports(cfg, model, data, run_device, staged, last["history"], last["lrs"])
    done = {
        "summary": reports.summary(),
        "metrics": reports.metrics,
        "checkpoint": checkpoint_identity(Path(results["best_checkpoint"])),
    }
    write_json(done, staged / "done.json")
    return staged


def take_staged(output_dir: Path, results: dict) -> tuple[dict, dict] | None:
    """The staged reports moved into output_dir/plots and reports: (summary, metrics), or
    None when there are none complete for the run's best.pt (any left are removed)."""
    staged = output_dir / STAGED
    try:
        done = json.loads((staged / "done.json").read_text())
        fits = done["checkpoint"] == checkpoint_identity(Path(results["best_checkpoint"]))
    except (OSError, ValueError, KeyError):
        fits = False
    if not fits:
        shutil.rmtree(staged, ignore_errors=True)
        return None
    for folder in ("plots", "reports"):
        shutil.rmtree(output_dir / folder, ignore_errors=True)
        if (staged / folder).is_dir():
            (staged / folder).rename(output_dir / folder)
    shutil.rmtree(staged, ignore_errors=True)
    summary = done["summary"]
    summary["files"] = {
        name: path.replace(str(staged), str(output_dir)) for name, path in summary["files"].items()
    }
    log.info("%s: reports drawn while the sweep ran, moved into place", output_dir)
    return summary, done["metrics"]


def _reopen(tracking_cfg, launch_dir: Path, run_id: str | None):
    """The run's MLflow run, RUNNING again for the uploads; None when there is none."""
    if not run_id or not tracking_cfg.enabled:
        return None
    from eva.tracking import Tracker
    from eva.tracking.writer import RemoteTracker

    opener = RemoteTracker if tracking_cfg.process else Tracker
    tracker = opener.open(tracking_cfg, Launch(launch_dir))
    if not tracker.reopen(run_id):
        log.warning("MLflow run %s is not in %s: files only", run_id, tracking_cfg.uri)
        return None
    return tracker


def log_best_model(tracker, model, data, step: int, soon: bool = False) -> str | None:
    """The model (already holding the best epoch's weights) as a loadable MLflow model.
    soon: sent to be logged while the caller goes on (Tracker.log_model_soon)."""
    best = copy.deepcopy(model).cpu().eval()
    example = next(iter(data.test))[0][:2].cpu().numpy()  # two normalised test images
    if soon:
        return tracker.log_model_soon(best, example, step=step)
    return tracker.log_model(best, example, step=step)


def register_best(tracker, tracking_cfg, results: dict, study: str | None = None):
    """The model the tracker logged, as the next version of tracking.register (when set),
    tagged with the run's objective (eva.tracking.registry); says in the run's log whether
    it became the champion, and in results["registered_model"]. Returns the
    Registration, or None."""
    name = tracking_cfg.get("register")
    if not name:
        return None
    objective = f"best_{results['selected_on']}_acc"  # what results["objective"] holds
    registration = tracker.register_model(name, objective, results["objective"], study)
    if registration is not None:
        log.info("%s", registration.line())
        results["registered_model"] = {
            "name": registration.name,
            "version": registration.version,
            "champion": registration.crowned,
        }
    return registration


def _make(cfg, todo, model, data, device, output_dir, last, results, tracker) -> None:
    artefacts, step = results["artefacts"], results["best_epoch"]
    results_path = output_dir / "results.json"
    model_now = "model" in todo and tracker is not None
    if model_now:  # exported and logged by the writer process while the reports are drawn
        log_best_model(tracker, model, data, step, soon=True)
    if "reports" in todo:
        staged = take_staged(output_dir, results)
        if staged is None:
            from eva.report import make_reports

            history, lrs = last["history"], last["lrs"]
            reports = make_reports(cfg, model, data, device, output_dir, history, lrs)
            staged = reports.summary(), reports.metrics
        results["reports"], metrics = staged
        artefacts["reports"] = MADE
        write_json(results, results_path)
        if tracker is not None:
            tracker.log_metrics(metrics, step=step, phase="final")
            tracker.log_files({"plots": output_dir / "plots", "reports": output_dir / "reports"})
    if model_now:
        results["mlflow_model_uri"] = tracker.model_logged()
        artefacts["model"] = MADE
    write_json(results, results_path)
    if tracker is not None:
        tracker.set_tags({"artefacts": describe(artefacts)})
        tracker.log_files({"results": results_path})


if __name__ == "__main__":  # eva/sweep/stage.py: python -m eva.modes.finish RUN_DIR
    stage_reports(Path(sys.argv[1]))
