"""mode=lr_find and scheduler.max_lr=find: the LR range test run inside eva.

The test uses the run's own training data, augmentation, model and configured optimizer
(the course's students ran it in a notebook and pasted the number, often from another
setup). It trains on a separate loader with its own seeded streams, under a forked torch
RNG, and puts the weights back afterwards: a run with max_lr=find trains exactly like a run
given the found number.
"""

import logging
from pathlib import Path

import torch

from eva.config.validate import validate
from eva.files import write_json
from eva.modes import runtime
from eva.optim import L1Penalty, build_optimizer
from eva.optim.lr_range import RangeTest, range_test
from eva.tracking import Launch

log = logging.getLogger(__name__)


def run_range_test(rt: runtime.Runtime) -> RangeTest:
    cfg = rt.cfg
    optimizer = build_optimizer(cfg, rt.model, lr=cfg.lr_find.start_lr)
    l1 = L1Penalty(rt.model, cfg.l1_weight)
    devices = [rt.device] if rt.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):  # dropout draws of training stay the same
        result = range_test(
            rt.model,
            optimizer,
            rt.data.fresh_train(),
            rt.device,
            cfg.lr_find,
            l1=l1,
            progress=cfg.progress,
        )
    steepest = "n/a" if result.steepest_lr is None else f"{result.steepest_lr:.3g}"
    log.info(
        "LR range test (%d steps, %s, %.1fs): suggested max_lr %.3g by the %s rule "
        "(steepest descent %s, min loss / 10 %.3g)%s",
        len(result.lrs),
        "stopped when the loss diverged" if result.diverged else "no divergence",
        result.seconds,
        result.suggested_lr,
        result.rule,
        steepest,
        result.min_loss_lr,
        f"; {result.note}" if result.note else "",
    )
    return result


def save_plot(rt: runtime.Runtime, result: RangeTest) -> Path:
    from eva.report.figures import plot_lr_find

    cfg = rt.cfg
    return plot_lr_find(
        result.lrs,
        result.losses,
        rt.output_dir / "plots" / "lr_find.png",
        suggested_lr=result.suggested_lr,
        min_loss_lr=result.min_loss_lr,
        raw_losses=result.raw_losses,
        suggested_by="steepest descent"
        if result.suggested_lr == result.steepest_lr
        else "min loss / 10",
        title=(
            f"LR range test: {cfg.model.name} on {cfg.dataset.name}, {cfg.optimizer.name}, "
            f"batch {cfg.batch_size}"
        ),
        dpi=cfg.report.dpi,
    )


def find_max_lr(rt: runtime.Runtime) -> RangeTest:
    """scheduler.max_lr=find: run the test and set the one-cycle peak to its suggestion.

    The cycle then starts at max_lr / div_factor and ends at that / final_div_factor.
    """
    result = run_range_test(rt)
    save_plot(rt, result)
    rt.cfg.scheduler.max_lr = result.suggested_lr
    rt.extra_params["derived.max_lr_source"] = f"lr_find ({result.rule})"
    return result


def find_lr(cfg, output_dir, launch: Launch | None = None) -> dict:
    """mode=lr_find: the range test alone; writes results.json and plots/lr_find.png."""
    launch = launch or Launch()
    validate(cfg, launch.overrides)
    rt = runtime.start(cfg, output_dir, launch)
    runtime.build(rt)
    runtime.start_run(rt, run_name=f"lr_find: {cfg.name}")
    tracker = rt.tracker
    with tracker.recording():
        result = run_range_test(rt)
        plot = save_plot(rt, result)
        results = {
            "mode": "lr_find",
            **result.summary(),
            "model": cfg.model.name,
            "dataset": cfg.dataset.name,
            "optimizer": cfg.optimizer.name,
            "batch_size": cfg.batch_size,
            "sizes": rt.data.sizes,
            "device": str(rt.device),
            "plot": str(plot.absolute()),
            "mlflow_run_id": tracker.run_id,
            "curve": {"lr": result.lrs, "loss": result.losses, "raw_loss": result.raw_losses},
        }
        write_json(results, rt.output_dir / "results.json")
        numbers = {"suggested_lr": result.suggested_lr, "min_loss_lr": result.min_loss_lr}
        if result.steepest_lr is not None:
            numbers["steepest_lr"] = result.steepest_lr
        tracker.log_metrics(numbers, step=0, phase="final")
        tracker.set_tags({"suggested_lr": f"{result.suggested_lr:.4g}"})
        tracker.log_files(runtime.run_files(rt.output_dir))
    log.info("suggested max_lr: %.4g  (plot: %s)", result.suggested_lr, plot)
    return results
