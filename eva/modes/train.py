"""train(cfg, output_dir): one run from a composed config to a checkpointed, evaluated model.

Plain function, no Hydra inside: tests and other tools call it with any output folder.
"""

import copy
import logging
import time
from pathlib import Path

from omegaconf import DictConfig

import eva
from eva.config.validate import finds_max_lr, validate
from eva.engine import state
from eva.engine.checkpoint import load_checkpoint, save_checkpoint
from eva.engine.loop import evaluate, train_one_epoch
from eva.errors import EvaError
from eva.files import write_json
from eva.modes import finish as finishing
from eva.modes import resume as resuming
from eva.modes import runtime
from eva.optim import L1Penalty, build_optimizer, build_scheduler
from eva.tracking import Launch, Tracker
from eva.tracking.store import redact

log = logging.getLogger(__name__)


def train(cfg: DictConfig, output_dir: str | Path, launch: Launch | None = None) -> dict:
    """Train cfg.model on cfg.dataset; write checkpoints (best.pt, last.pt), results.json and
    reports. With resume=true, continue the run in output_dir from its last.pt instead.

    Records everything in an MLflow run (see eva.tracking) unless tracking.enabled=false;
    `launch` says where the run was launched from and, in a sweep, its parent run.
    Returns the results dict; its "objective" is what a sweep maximises (best_test_acc, or
    best_val_acc when dataset.val_size > 0 so that no sweep tunes on the test set).
    """
    launch = launch or Launch()
    validate(cfg, launch.overrides)  # bad values fail before anything looks at the run folder
    output_dir = Path(output_dir)
    with resuming.run_lock(output_dir):
        saved = resuming.read_last(cfg, output_dir)  # None: a new run
        if saved is not None and saved["finished"]:
            return resuming.already_finished(saved, output_dir)
        if saved is not None or finds_max_lr(cfg):
            cfg = copy.deepcopy(cfg)  # max_lr becomes a number: not in the caller's cfg
        if saved is not None:
            resuming.adopt_found_lr(cfg, saved)
        return _train(cfg, output_dir, launch, saved)


def _train(cfg, output_dir: Path, launch: Launch | None, saved: dict | None) -> dict:
    rt = runtime.start(cfg, output_dir, launch)
    runtime.build(rt)
    lr_find = saved.get("lr_find") if saved else None
    if finds_max_lr(cfg):
        from eva.modes.lr_range_test import find_max_lr

        lr_find = find_max_lr(rt).summary()  # before the MLflow run: its params show it
    tracker, data, d = rt.tracker, rt.data, cfg.dataset
    s = cfg.scheduler
    if s.get("cycle_momentum"):  # what trains: the schedule's momentum, not the optimizer's
        rt.extra_params["derived.momentum"] = (
            f"cycled by scheduler={s.name}: {s.max_momentum} -> {s.base_momentum} at the peak"
        )
    if saved is None:
        config = runtime.start_run(rt)
    else:
        config = saved["config"]
        resuming.continue_tracking(rt, saved, run_name=cfg.tracking.run_name or cfg.name)
    with tracker.recording():
        if rt.launch.trial:  # the study links each trial to its run and folder
            rt.launch.trial.set_user_attr("mlflow_run_id", tracker.run_id)
            rt.launch.trial.set_user_attr("output_dir", str(output_dir))
        meta = {
            "model_name": cfg.model.name,
            "config": config,
            "classes": data.classes,
            "eva_version": eva.__version__,
            "overrides": saved["overrides"] if saved else list(rt.launch.overrides),
            "lr_find": lr_find,
        }
        progress = fit(cfg, rt, meta, saved)
        history, best, lrs = progress.history, progress.best, progress.lrs
        selected_on = best["selected_on"]
        results = {
            "best_test_acc": best["test_acc"],
            "final_test_acc": history[-1]["test_acc"],
            "best_epoch": best["epoch"],
            "selected_on": selected_on,
            "epochs_completed": len(history),
            "params": rt.params,
            "best_checkpoint": str(best["checkpoint"].absolute()),
            "model": cfg.model.name,
            "dataset": d.name,
            "device": str(rt.device),
            "sizes": data.sizes,
            "seconds": time.perf_counter() - rt.started,
            "mlflow_run_id": tracker.run_id,
            "mlflow_tracking_uri": redact(tracker.uri) if tracker.uri else None,
            "mlflow_model_uri": None,  # set once the model is logged, below
            "history": history,
        }
        if saved is not None:
            results["resumed_at_epoch"] = saved["epoch"]
        if progress.startup_seconds is not None:
            results["startup_seconds"] = progress.startup_seconds
        if "max_lr" in cfg.scheduler:
            results["max_lr"] = float(cfg.scheduler.max_lr)  # the peak used, found or given
        if lr_find is not None:
            results["lr_find"] = lr_find
        if data.val is not None:
            results["best_val_acc"] = best["val_acc"]
        results["objective"] = results[f"best_{selected_on}_acc"]
        # A sweep's trial may leave its reports and model to the sweep (eva/modes/finish.py)
        results["artefacts"] = artefacts = finishing.planned(cfg, rt.launch)
        if len(history) < cfg.epochs:  # stopped early by the sweep's pruner
            results["pruned_at_epoch"] = len(history)
            tracker.set_tags({"pruned": "true", "pruned_at_epoch": str(len(history))})
        write_json(results, output_dir / "results.json")

        # From here on the model holds the best epoch's weights: reports and MLflow model.
        rt.model.load_state_dict(load_checkpoint(best["checkpoint"])["model"])
        if artefacts["reports"] == finishing.MADE:
            from eva.report import make_reports

            reports = make_reports(cfg, rt.model, data, rt.device, output_dir, history, lrs)
            results["reports"] = reports.summary()
            tracker.log_metrics(reports.metrics, step=best["epoch"], phase="final")
            write_json(results, output_dir / "results.json")
        if tracker.enabled:
            tracker.set_tags({"artefacts": finishing.describe(artefacts)})
            study = getattr(rt.launch.trial, "study_name", None)  # a sweep's trial
            record_outputs(cfg, tracker, rt.model, data, results, output_dir, study=study)
            results["mlflow_model_uri"] = tracker.model_uri
            results["tracking_seconds"] = dict(tracker.seconds)
            write_json(results, output_dir / "results.json")
            epochs_time = sum(row["epoch_seconds"] for row in history)
            log.info(
                "MLflow: %.3fs of per-epoch logging (%.2f%% of %.1fs training), "
                "%.1fs for files and model",
                tracker.seconds["epochs"],
                100 * tracker.seconds["epochs"] / epochs_time,
                epochs_time,
                tracker.seconds["final"],
            )
        state.mark_finished(resuming.last_path(output_dir))  # resume=true: nothing left to do
    log.info(
        "done: best %s_acc %.4f at epoch %d (test_acc %.4f); checkpoint %s; results in %s",
        selected_on,
        results["objective"],
        best["epoch"],
        best["test_acc"],
        best["checkpoint"],
        output_dir / "results.json",
    )
    return results


def startup_seconds(first_batch_clock: float, job_started: float | None) -> float | None:
    """Seconds from the job's start to its first training batch (None: unknown)."""
    if job_started is None:
        return None
    seconds = first_batch_clock - job_started
    log.info("first training batch %.2fs after the job started", seconds)
    return seconds


def fit(cfg, rt: runtime.Runtime, meta: dict, saved: dict | None = None) -> state.Progress:
    """The epoch loop: train, evaluate, keep the best and the last checkpoint, one MLflow
    batch per epoch. `saved` (a last.pt) continues a run after its last complete epoch.

    In an Optuna sweep each epoch's score goes to the trial, and the loop stops early when
    the pruner says so. Returns the Progress: one row per epoch, the best row plus where it
    was saved, and the LR of every optimizer step.
    """
    model, data, device, tracker, trial = rt.model, rt.data, rt.device, rt.tracker, rt.launch.trial
    net, precision = rt.net, rt.precision  # net: the model, compiled when cfg.compile
    how = {"precision": precision, "channels_last": cfg.channels_last}
    optimizer = build_optimizer(cfg, model)
    schedule = build_scheduler(cfg, optimizer, steps_per_epoch=len(data.train))
    l1 = L1Penalty(model, cfg.l1_weight)
    selected_on = "val" if data.val is not None else "test"
    best_path = rt.output_dir / "checkpoints" / "best.pt"
    last_path = resuming.last_path(rt.output_dir)
    objects = {
        "model": model,
        "optimizer": optimizer,
        "schedule": schedule,
        "scaler": precision.scaler,  # fp16's loss scale; None otherwise
        "order": data.train.order,  # the data order and augmentation stream
    }
    progress = state.Progress()
    if saved is not None:
        progress = state.restore(saved, **objects)
        progress.best["checkpoint"] = best_path
        if not state.best_checkpoint_fits(best_path, progress.best):
            if progress.best.get("epoch") != progress.epoch:
                raise EvaError(
                    f"resume=true: {best_path} does not hold the best epoch "
                    f"{progress.best.get('epoch')} that last.pt names, and only the last "
                    f"epoch ({progress.epoch}) can be rebuilt: restore the file"
                )
            # killed between last.pt and best.pt: the best epoch is the one last.pt holds
            row = {k: v for k, v in progress.best.items() if k not in ("checkpoint", "selected_on")}
            save_best(best_path, model, cfg, meta, row, selected_on, saved.get("mlflow_run_id"))
            log.info("best.pt rewritten from last.pt (epoch %d)", progress.epoch)
        log.info("resumed after epoch %d of %d from %s", progress.epoch, cfg.epochs, last_path)

    for epoch in range(progress.epoch + 1, cfg.epochs + 1):
        stats = train_one_epoch(
            net,
            data.train,
            optimizer,
            schedule,
            device,
            l1=l1,
            progress=cfg.progress,
            description=f"epoch {epoch}/{cfg.epochs}",
            **how,
        )
        if progress.startup_seconds is None:
            progress.startup_seconds = startup_seconds(stats.first_batch_clock, rt.job_started)
        schedule.step_epoch()
        progress.lrs += stats.lrs
        test_loss, test_acc = evaluate(net, data.test, device, **how)
        row = {
            "epoch": epoch,
            "train_loss": stats.loss,
            "train_acc": stats.acc,
            "test_loss": test_loss,
            "test_acc": test_acc,
            "lr": stats.lr,
            "epoch_seconds": stats.seconds,
            "images_per_second": stats.images_per_second,
        }
        if data.val is not None:
            row["val_loss"], row["val_acc"] = evaluate(net, data.val, device, **how)
        progress.history.append(row)
        progress.epoch = epoch

        best = progress.best
        score = row[f"{selected_on}_acc"]
        improved = state.improves(row, best, selected_on)
        if improved:
            progress.best = best = {**row, "selected_on": selected_on, "checkpoint": best_path}
        # last.pt first, then best.pt: a kill between the two leaves last.pt naming an epoch
        # best.pt does not hold yet, which the resume repairs from last.pt's own weights.
        # Both are saved before the epoch is logged: a kill in between costs a log line,
        # which the resume sends again, never an epoch of training.
        # run_id: the first read may wait for the writer process to have created the run.
        state.save_last(
            last_path, progress, **objects, meta={**meta, "mlflow_run_id": tracker.run_id}
        )
        if improved:
            save_best(best_path, model, cfg, meta, row, selected_on, tracker.run_id)
        tracker.log_metrics(state.epoch_metrics(row, best), step=epoch)

        val = f" val_acc {row['val_acc']:.4f}" if data.val is not None else ""
        log.info(
            "epoch %d/%d  train_loss %.4f train_acc %.4f  test_loss %.4f test_acc %.4f%s  "
            "lr %.2e  %.1fs %.0f img/s%s",
            epoch,
            cfg.epochs,
            stats.loss,
            stats.acc,
            test_loss,
            test_acc,
            val,
            stats.lr,
            stats.seconds,
            stats.images_per_second,
            "  (best, saved)" if improved else "",
        )
        if trial is not None:
            trial.report(score, epoch)
            if trial.should_prune():
                log.info("trial %d pruned after epoch %d of %d", trial.number, epoch, cfg.epochs)
                break
    return progress


def save_best(path: Path, model, cfg, meta: dict, row: dict, selected_on: str, run_id) -> None:
    save_checkpoint(
        {
            "model": model.state_dict(),
            "model_name": cfg.model.name,
            "epoch": row["epoch"],
            "selected_on": selected_on,
            "metrics": row,
            "classes": meta["classes"],
            "config": meta["config"],
            "eva_version": eva.__version__,
            "mlflow_run_id": run_id,  # mode=test links back to this run
        },
        path,
    )


def record_outputs(
    cfg, tracker: Tracker, model, data, results: dict, output_dir: Path, study: str | None = None
) -> None:
    """After training: summary metrics, the run's files and plots, the best model, loadable,
    and registered as a version of tracking.register when that is set (`study`: the
    Optuna study of a trial that logs its own model, report.trials=all)."""
    final = {
        "best_epoch": results["best_epoch"],
        "final_test_acc": results["final_test_acc"],
        "run_seconds": results["seconds"],
    }
    if "startup_seconds" in results:
        final["startup_seconds"] = results["startup_seconds"]
    tracker.log_metrics(final, step=results["epochs_completed"], phase="final")
    checkpoint = Path(results["best_checkpoint"])
    tracker.set_tags({"best_checkpoint": str(checkpoint)})
    files = runtime.run_files(output_dir)
    if cfg.tracking.log_checkpoint:
        files["checkpoints"] = checkpoint
    tracker.log_files(files)
    if results["artefacts"]["model"] == finishing.MADE:
        finishing.log_best_model(tracker, model, data, step=results["best_epoch"])
        finishing.register_best(tracker, cfg.tracking, results, study)
