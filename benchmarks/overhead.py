"""eva's training epoch against a plain hand-written PyTorch loop: what does eva cost?

Both sides train the same model (same init), on the same images, batch size, optimizer,
OneCycle schedule and torch threads, then evaluate on the same test images; each epoch
is timed end to end. eva's side is `eva.modes.train.fit` for one epoch as a run does it:
progress bar drawn (on a pseudo-terminal, as a user sees it), loss/accuracy accumulated on
the device, NaN checks, best.pt and last.pt written (fsync), one MLflow batch logged to a
sqlite store. The plain side indexes pre-normalized tensors: the fastest loop there is.

    python benchmarks/overhead.py --quick      # < 1 minute; the figure is "ratio"
    python benchmarks/overhead.py              # more images and repeats
    python benchmarks/overhead.py --quick --system-metrics   # what sampling the machine costs

With --system-metrics both sides are eva: the same epoch with tracking.system_metrics on
and off (each its own run, alternated): "ab_seconds_per_epoch" is the median over pairs of
(on - off) epoch seconds. A shared machine's noise is far larger than that difference, so
it also measures the CPU time of one sample (what MLflow's monitor does every interval:
read the machine, check that the run is open, log the batch) on a thread of its own:
"cost_seconds_per_epoch" = samples per epoch x CPU seconds per sample, the most an epoch
can lose to it when training keeps every core busy. --interval sets the sampling interval
(tracking.system_metrics_interval), --inline runs MLflow in the training process
(tracking.process=false), where the monitor's thread shares the training's interpreter.

ratio = eva img/s / plain img/s, the median over A/B pairs (1.0: eva costs nothing; 0.97:
3% slower). The epoch sizes here are small, so eva's fixed cost per epoch (two checkpoint
writes with fsync, one MLflow batch) weighs more than in a real 50,000-image epoch.
"""

import os
import sys
import tempfile
import threading
from contextlib import contextmanager
from pathlib import Path

from common import (
    alternate,
    command_line,
    emit,
    machine,
    median,
    parser,
    publish,
    set_threads,
    table,
    timed,
)


@contextmanager
def terminal_stderr():
    """sys.stderr as a pseudo-terminal (drained by a thread), so tqdm draws its bar as
    it does for a user at a terminal; redirected benchmarks would otherwise hide it."""
    master, slave = os.openpty()
    stream = os.fdopen(slave, "w", buffering=1)

    def drain():
        try:
            while os.read(master, 65536):
                pass
        except OSError:
            pass

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    saved, sys.stderr = sys.stderr, stream
    try:
        yield
    finally:
        sys.stderr = saved
        stream.close()
        os.close(master)


def compose(overrides: list[str]):
    from eva.config import compose_config

    return compose_config(overrides)


def plain_side(model, data, cfg, device):
    """A loop as one would write it by hand: no bar, no checks, no logging."""
    import torch
    import torch.nn.functional as F

    train_x = torch.cat([x for x, _ in data.train]).to(device)  # normalized once, up front
    train_y = torch.cat([y for _, y in data.train]).to(device)
    test = [(x.to(device), y.to(device)) for x, y in data.test]
    opt = torch.optim.SGD(
        model.parameters(),
        lr=cfg.optimizer.lr,
        momentum=cfg.optimizer.momentum,
        nesterov=cfg.optimizer.nesterov,
        weight_decay=cfg.optimizer.weight_decay,
    )
    n, bs = len(train_y), cfg.batch_size
    steps = -(-n // bs)
    g = torch.Generator().manual_seed(0)

    def epoch() -> None:
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, cfg.optimizer.lr, total_steps=steps)
        model.train()
        perm = torch.randperm(n, generator=g)
        for i in range(0, n, bs):
            idx = perm[i : i + bs]
            loss = F.cross_entropy(model(train_x[idx]), train_y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
        model.eval()
        correct = torch.zeros((), dtype=torch.long, device=device)
        with torch.no_grad():
            for x, y in test:
                correct += (model(x).argmax(1) == y).sum()
        correct.item()

    return epoch


def main(argv: list[str] | None = None) -> dict:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--model", default="session6", help="an option of conf/model")
    p.add_argument("--images", type=int, help="training images per epoch")
    p.add_argument("--test-images", type=int, default=512)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--repeats", type=int, help="measured epochs per side")
    p.add_argument("--no-tracking", action="store_true", help="eva without MLflow")
    p.add_argument("--tracking-uri", help="MLflow store (default: a new sqlite file)")
    p.add_argument(
        "--system-metrics", action="store_true", help="eva with system metrics on vs off"
    )
    p.add_argument("--interval", type=float, default=5.0, help="with --system-metrics: seconds")
    p.add_argument("--inline", action="store_true", help="with --system-metrics: no writer")
    args = p.parse_args(argv)
    images = args.images or (2048 if args.quick else 8192)
    repeats = args.repeats or (5 if args.quick else 9)
    threads = set_threads(args.threads)
    if args.system_metrics:
        return system_metrics_cost(args, images, repeats, threads, argv)

    import copy

    from eva.modes import runtime
    from eva.modes.train import fit

    out = Path(tempfile.mkdtemp(prefix="eva-overhead-"))
    cfg = compose(
        [
            f"model={args.model}",
            "dataset=synthetic",
            f"dataset.train_size={images}",
            f"dataset.test_size={args.test_images}",
            f"batch_size={args.batch_size}",
            "epochs=1",
            "scheduler.max_lr=0.05",
            f"tracking.enabled={not args.no_tracking}",
            f"tracking.uri={args.tracking_uri or f'sqlite:///{out}/mlflow.db'}",
            "report.enabled=false",
            f"threads={threads}",
        ]
    )
    rt = runtime.start(cfg, out)
    runtime.build(rt)
    plain_model = copy.deepcopy(rt.model)  # the same initial weights
    plain = plain_side(plain_model, rt.data, cfg, rt.device)
    runtime.start_run(rt)
    meta = {"model_name": cfg.model.name, "config": {}, "classes": rt.data.classes}
    meta.update(eva_version="bench", mlflow_run_id=rt.tracker.run_id, overrides=[], lr_find=None)

    def eva_epoch() -> None:
        with terminal_stderr():
            fit(cfg, rt, meta)

    with rt.tracker.recording():
        seconds = alternate(
            {"eva": lambda: timed(eva_epoch), "plain": lambda: timed(plain)}, repeats
        )
    rate = {side: images / median(s) for side, s in seconds.items()}
    # Each eva epoch against the plain epoch run right after it: a slow minute of the
    # machine hits both sides of a pair, so the median of the pairs' ratios is steadier.
    pairs = [p / e for e, p in zip(seconds["eva"], seconds["plain"], strict=True)]
    ratio = median(pairs)
    setup = (
        f"{args.model}, {images} synthetic 32x32 images + {args.test_images} test, batch "
        f"{args.batch_size}, {threads} thread(s), {rt.device}; {repeats} epochs per side, "
        "alternated, medians"
    )
    rows = [
        [side, f"{median(s):.2f}", " ".join(f"{x:.2f}" for x in s), f"{rate[side]:.0f}"]
        for side, s in seconds.items()
    ]
    results = table(["loop", "epoch s (median)", "every epoch s", "img/s"], rows)
    summary = (
        f"ratio eva/plain img/s = {ratio:.3f} (median of the {repeats} pairs: "
        f"{' '.join(f'{r:.3f}' for r in pairs)}; of the medians: {rate['eva'] / rate['plain']:.3f})"
    )
    print(setup, results, summary, sep="\n")
    if args.publish:
        markdown = f"{setup}.\n\n{results}\n\n{summary}."
        publish("performance.md", "overhead", markdown, command_line(__file__, argv))
    return emit(
        {
            "benchmark": "overhead",
            "ratio": round(ratio, 4),
            "pair_ratios": [round(r, 4) for r in pairs],
            "eva_img_per_s": round(rate["eva"], 1),
            "plain_img_per_s": round(rate["plain"], 1),
            "eva_seconds": seconds["eva"],
            "plain_seconds": seconds["plain"],
            "model": args.model,
            "images": images,
            "batch_size": args.batch_size,
            "tracking": not args.no_tracking,
            **machine(),
        }
    )


def eva_side(args, images: int, threads: int, out: Path, extra: list[str]):
    """A runtime with its MLflow run started, and one eva epoch of it (fit, as a run does)."""
    from eva.modes import runtime
    from eva.modes.train import fit

    out.mkdir(parents=True)
    cfg = compose(
        [
            f"model={args.model}",
            "dataset=synthetic",
            f"dataset.train_size={images}",
            f"dataset.test_size={args.test_images}",
            f"batch_size={args.batch_size}",
            "epochs=1",
            "scheduler.max_lr=0.05",
            f"tracking.uri={args.tracking_uri or f'sqlite:///{out.parent}/mlflow.db'}",
            "report.enabled=false",
            f"threads={threads}",
            *extra,
        ]
    )
    rt = runtime.start(cfg, out)
    runtime.build(rt)
    runtime.start_run(rt)
    meta = {"model_name": cfg.model.name, "config": {}, "classes": rt.data.classes}
    meta.update(eva_version="bench", mlflow_run_id=rt.tracker.run_id, overrides=[], lr_find=None)

    def epoch() -> None:
        with terminal_stderr():
            fit(cfg, rt, meta)

    return rt, epoch


def sample_cpu_seconds(tracker, samples: int = 20) -> float:
    """CPU seconds of one sample of MLflow's monitor, as its thread takes them (into a run
    of its own, so that the benchmark's runs keep their own samples)."""
    import time

    from mlflow import MlflowClient
    from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

    uri = tracker.uri
    client = MlflowClient(uri)
    run_id = client.create_run(tracker.experiment_id, run_name="system metrics sample").info.run_id
    monitor = SystemMetricsMonitor(run_id, sampling_interval=1, tracking_uri=uri)
    monitor.collect_metrics()  # the first one imports and opens what the others reuse
    started = time.thread_time()
    for _ in range(samples):
        monitor.collect_metrics()
        client.get_run(run_id)  # the monitor checks that the run is still open
        monitor.publish_metrics(monitor.aggregate_metrics())
        monitor.mlflow_logger.flush()
    spent = (time.thread_time() - started) / samples
    client.set_terminated(run_id)
    return spent


def system_metrics_cost(args, images: int, repeats: int, threads: int, argv) -> dict:
    """eva's epoch with tracking.system_metrics on against off, alternated: seconds per
    epoch that sampling the machine costs the training (the monitor runs in the writer
    process, or with --inline on a thread of the training process)."""
    from contextlib import ExitStack

    out = Path(tempfile.mkdtemp(prefix="eva-system-metrics-"))
    common = [f"tracking.process={not args.inline}"]
    on = [
        *common,
        "tracking.system_metrics=true",
        f"tracking.system_metrics_interval={args.interval}",
    ]
    sides = {
        "off": eva_side(
            args, images, threads, out / "off", [*common, "tracking.system_metrics=false"]
        ),
        "on": eva_side(args, images, threads, out / "on", on),
    }
    with ExitStack() as stack:
        for rt, _ in sides.values():
            stack.enter_context(rt.tracker.recording())
        seconds = alternate({side: lambda e=e: timed(e) for side, (_, e) in sides.items()}, repeats)
    pairs = [b - a for a, b in zip(seconds["off"], seconds["on"], strict=True)]
    ab = median(pairs)
    per_sample = sample_cpu_seconds(sides["on"][0].tracker)
    epoch_off = median(seconds["off"])
    cost = epoch_off / args.interval * per_sample
    where = "the training process (--inline)" if args.inline else "the writer process"
    setup = (
        f"{args.model}, {images} synthetic 32x32 images + {args.test_images} test, batch "
        f"{args.batch_size}, {threads} thread(s); system metrics every {args.interval:g} s "
        f"in {where}; {repeats} epochs per side, alternated, medians"
    )
    rows = [
        [side, f"{median(s):.3f}", " ".join(f"{x:.3f}" for x in s)] for side, s in seconds.items()
    ]
    results = table(["system metrics", "epoch s (median)", "every epoch s"], rows)
    summary = (
        f"one sample = {1000 * per_sample:.1f} ms of CPU; at {epoch_off / args.interval:.2f} "
        f"samples per epoch, cost = {cost:.4f} s per epoch ({100 * cost / epoch_off:.2f}%) at "
        f"most. A/B: median of the {repeats} pairs' on - off = {ab:+.3f} s "
        f"({' '.join(f'{d:+.3f}' for d in pairs)})"
    )
    print(setup, results, summary, sep="\n")
    if args.publish:
        markdown = f"{setup}.\n\n{results}\n\n{summary}."
        publish("tracking.md", "system-metrics", markdown, command_line(__file__, argv))
    return emit(
        {
            "benchmark": "overhead-system-metrics",
            "cost_seconds_per_epoch": round(cost, 5),
            "sample_cpu_seconds": round(per_sample, 5),
            "ab_seconds_per_epoch": round(ab, 4),
            "pair_differences": [round(d, 4) for d in pairs],
            "off_seconds": seconds["off"],
            "on_seconds": seconds["on"],
            "interval": args.interval,
            "inline": args.inline,
            "model": args.model,
            "images": images,
            "batch_size": args.batch_size,
            **machine(),
        }
    )


if __name__ == "__main__":
    main()
