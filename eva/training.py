"""train(cfg, output_dir): one run from a composed config to a checkpointed, evaluated model.

Plain function, no Hydra inside: tests and other tools call it with any output folder.
"""

import copy
import json
import logging
import os
import time
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

import eva
from eva.data import build_data
from eva.engine.checkpoint import load_checkpoint, save_checkpoint
from eva.engine.device import resolve_device, slot_device, slot_threads
from eva.engine.loop import evaluate, train_one_epoch
from eva.engine.seed import seed_everything
from eva.models import build_model, count_parameters
from eva.optim import L1Penalty, build_optimizer, build_scheduler
from eva.tracking import Launch, Tracker
from eva.tracking.params import config_params, derived_params, run_tags
from eva.tracking.store import redact
from eva.validate import validate

log = logging.getLogger(__name__)


def model_summary(model: torch.nn.Module, input_shape: tuple[int, ...], device) -> str:
    """torchinfo's table: layers, output shapes, parameter counts."""
    import torchinfo

    stats = torchinfo.summary(
        model,
        input_size=(1, *input_shape),
        device=device,
        col_names=("output_size", "num_params"),
        depth=4,  # deep enough to show the convs inside depthwise-separable blocks
        verbose=0,
    )
    return str(stats)


def write_json(data: dict, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)


def train(cfg: DictConfig, output_dir: str | Path, launch: Launch | None = None) -> dict:
    """Train cfg.model on cfg.dataset; write checkpoints/best.pt and results.json.

    Records everything in an MLflow run (see eva.tracking) unless tracking.enabled=false;
    `launch` says where the run was launched from and, in a sweep, its parent run.
    Returns the results dict; its "objective" is what a sweep maximises (best_test_acc, or
    best_val_acc when dataset.val_size > 0 so that no sweep tunes on the test set).
    """
    validate(cfg)
    launch = launch or Launch()
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    tracker = Tracker.open(cfg.tracking, launch)  # a dead tracking server fails here, in seconds
    threads = slot_threads(cfg.threads, launch.slots)  # parallel sweep jobs share the cores
    if threads:
        torch.set_num_threads(threads)
    device = resolve_device(slot_device(cfg.device, launch.slot))  # one GPU per sweep job
    seed_everything(cfg.seed)
    started = time.perf_counter()

    data = build_data(cfg, pin_memory=device.type == "cuda")
    d = cfg.dataset
    input_shape = (d.in_channels, d.image_size, d.image_size)
    model = build_model(cfg.model, d.in_channels, d.num_classes).to(device)
    params = count_parameters(model)
    summary = model_summary(model, input_shape, device)
    (output_dir / "model_summary.txt").write_text(summary + "\n")
    (output_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    log.info("model %s on %s\n%s", cfg.model.name, device, summary)
    log.info("data %s: %s", d.name, data.sizes)

    config = OmegaConf.to_container(cfg, resolve=True)
    tracker.start(
        launch.run_name or cfg.tracking.run_name or cfg.name,
        params={
            **config_params(config),
            **derived_params(
                parameters=params,
                sizes=data.sizes,
                device=device,
                steps_per_epoch=len(data.train),
            ),
        },
        tags={**run_tags(cfg, output_dir), **launch.tags},
        parent=launch.parent_run_id,
    )
    with tracker.recording():
        if launch.trial:  # the study links each trial to its run and folder
            launch.trial.record({"mlflow_run_id": tracker.run_id, "output_dir": str(output_dir)})
        history, best = fit(cfg, model, data, device, output_dir, config, tracker, launch.trial)
        selected_on = best["selected_on"]
        results = {
            "best_test_acc": best["test_acc"],
            "final_test_acc": history[-1]["test_acc"],
            "best_epoch": best["epoch"],
            "selected_on": selected_on,
            "epochs_completed": len(history),
            "params": params,
            "best_checkpoint": str(best["checkpoint"].absolute()),
            "model": cfg.model.name,
            "dataset": d.name,
            "device": str(device),
            "sizes": data.sizes,
            "seconds": time.perf_counter() - started,
            "mlflow_run_id": tracker.run_id,
            "mlflow_tracking_uri": redact(tracker.uri) if tracker.uri else None,
            "mlflow_model_uri": None,  # set once the model is logged, below
            "history": history,
        }
        if data.val is not None:
            results["best_val_acc"] = best["val_acc"]
        results["objective"] = results[f"best_{selected_on}_acc"]
        if len(history) < cfg.epochs:  # stopped early by the sweep's pruner
            results["pruned_at_epoch"] = len(history)
            tracker.set_tags({"pruned": "true", "pruned_at_epoch": str(len(history))})
        write_json(results, output_dir / "results.json")

        if tracker.enabled:
            record_outputs(cfg, tracker, model, data, results, output_dir)
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
    log.info(
        "done: best %s_acc %.4f at epoch %d (test_acc %.4f); results in %s",
        selected_on,
        results["objective"],
        best["epoch"],
        best["test_acc"],
        output_dir / "results.json",
    )
    return results


def fit(cfg, model, data, device, output_dir: Path, config: dict, tracker: Tracker, trial=None):
    """The epoch loop: train, evaluate, keep the best checkpoint, one MLflow batch per epoch.

    In an Optuna sweep each epoch's score goes to the trial, and the loop stops early when
    the pruner says so. Returns (history, best): one row per epoch, and the best row plus
    where it was saved.
    """
    optimizer = build_optimizer(cfg, model)
    schedule = build_scheduler(cfg, optimizer, steps_per_epoch=len(data.train))
    l1 = L1Penalty(model, cfg.l1_weight)
    selected_on = "val" if data.val is not None else "test"
    checkpoint_path = output_dir / "checkpoints" / "best.pt"

    history: list[dict] = []
    best: dict = {}
    for epoch in range(1, cfg.epochs + 1):
        stats = train_one_epoch(
            model,
            data.train,
            optimizer,
            schedule,
            device,
            l1=l1,
            progress=cfg.progress,
            description=f"epoch {epoch}/{cfg.epochs}",
        )
        schedule.step_epoch()
        test_loss, test_acc = evaluate(model, data.test, device)
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
            row["val_loss"], row["val_acc"] = evaluate(model, data.val, device)
        history.append(row)

        score = row[f"{selected_on}_acc"]
        improved = not best or score > best[f"{selected_on}_acc"]
        if improved:
            best = {**row, "selected_on": selected_on, "checkpoint": checkpoint_path}
            save_checkpoint(
                {
                    "model": model.state_dict(),
                    "model_name": cfg.model.name,
                    "epoch": epoch,
                    "selected_on": selected_on,
                    "metrics": row,
                    "classes": data.classes,
                    "config": config,
                    "eva_version": eva.__version__,
                },
                checkpoint_path,
            )
        metrics = {k: v for k, v in row.items() if k != "epoch"}
        metrics["best_test_acc"] = best["test_acc"]  # of the best epoch so far
        if data.val is not None:
            metrics["best_val_acc"] = best["val_acc"]
        tracker.log_metrics(metrics, step=epoch)

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
        if trial is not None and trial.report(score, epoch):
            log.info("pruned by the sweep after epoch %d of %d", epoch, cfg.epochs)
            break
    return history, best


def record_outputs(cfg, tracker: Tracker, model, data, results: dict, output_dir: Path) -> None:
    """After training: summary metrics, the run's files, and the best model, loadable."""
    tracker.log_metrics(
        {
            "best_epoch": results["best_epoch"],
            "final_test_acc": results["final_test_acc"],
            "run_seconds": results["seconds"],
        },
        step=results["epochs_completed"],
        phase="final",
    )
    checkpoint = Path(results["best_checkpoint"])
    files = {
        "": output_dir / "config.yaml",
        ".hydra": output_dir / ".hydra",  # only under Hydra: its config, overrides, hydra.yaml
        "summary": output_dir / "model_summary.txt",
        "results": output_dir / "results.json",
        "logs": output_dir / "train.log",  # Hydra's log of this job, up to this point
    }
    if cfg.tracking.log_checkpoint:
        files["checkpoints"] = checkpoint
    tracker.log_files(files)
    if cfg.tracking.log_model:
        best = copy.deepcopy(model).cpu()
        best.load_state_dict(load_checkpoint(checkpoint)["model"])
        example = next(iter(data.test))[0][:2].cpu().numpy()  # two normalised test images
        tracker.log_model(best.eval(), example, step=results["best_epoch"])
