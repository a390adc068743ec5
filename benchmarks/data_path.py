"""The data path on a CPU: is augmentation the bottleneck of a training epoch?

    python benchmarks/data_path.py                    # session10 (ResNet-9) and session6
    python benchmarks/data_path.py --quick            # fewer images and runs (< 1 minute)
    python benchmarks/data_path.py --num-workers 1    # dataset.num_workers=1, not auto

benchmarks/augment.py measures the augmentation alone, albumentations against the batched
torch backend, one core each. This script puts eva's training loader next to the model it
feeds, as a CPU run has them: for each conf/experiment preset (its model, augment, batch
size, optimizer, schedule and L1 weight; session10: ResNet-9 with augment=resnet, session6
with augment=session6), on random uint8 CIFAR-shaped images, torch's default threads (or
--threads), cv2's own:

loader: one pass over the training loader a run builds (eva.data.train_batches) with
    augment.backend=albumentations and dataset.num_workers null, i.e. auto_workers: 0 on a
    CPU, so every image is augmented in the training process, between steps;
model: eva.engine.loop.train_one_epoch over as many pre-made batches (the loader's, made
    before timing): the model's own speed, with no data path at all;
epoch: train_one_epoch over the loader, the two together: a run's training pass (without
    its evaluation and checkpoints);
torch loader, torch epoch: the same with augment.backend=torch (eva/data/batched.py,
    DeviceBatches); the torch epoch only without --quick.

The sides are alternated (common.alternate) after a warm-up; medians of images/s. "x model"
is a side's img/s over the model's in the same round, the median over the rounds.
ratio = the loader's "x model": its img/s over the model's. With 0 workers the loop waits
for each batch, and the loader takes 1 / (1 + ratio) of an epoch (its "share"); the
epoch's measured share is 1 - epoch img/s / model img/s. Augmentation is not the
bottleneck when the share is at most 10% (a ratio of 9 or more). With workers
(--num-workers N) the loader runs beside the loop, on the same cores, and the measured
share judges instead. The JSON's "ratio" and "share" are the first experiment's.
"""

from augment import epoch_rate
from common import (
    alternate,
    command_line,
    counted,
    emit,
    machine,
    median,
    parser,
    publish,
    set_threads,
    table,
)
from flops import CHANNELS, CLASSES, SIZE, noise_note, others_during

SHARE_LIMIT = 0.10  # the loader's share of an epoch above which augmentation is a bottleneck
TRAINING_SIDES = ("model", "epoch", "torch_epoch")  # the sides that step the optimizer


def loader_share(ratio: float) -> float:
    """Fraction of a serial epoch (0 workers: the loop waits for every batch) spent in a
    loader `ratio` times as fast as the model: per image 1/ratio of loading for 1 of
    training."""
    return 1 / (1 + ratio)


def measured_share(epoch_over_model: float) -> float:
    """Fraction of an epoch beyond the model's own time, from epoch img/s / model img/s
    (noise can make it negative)."""
    return 1 - epoch_over_model


def is_bottleneck(share: float, limit: float = SHARE_LIMIT) -> bool:
    return share > limit


def verdict(ratio: float, epoch_share: float | None = None, limit: float = SHARE_LIMIT) -> str:
    """The sentence the output ends with, for a loader `ratio` times as fast as the model.

    Without workers (epoch_share None) the loader's share follows from the ratio. With
    DataLoader workers the loader runs beside the loop, on the same cores, and the ratio
    predicts nothing: the epoch's measured share (epoch_share) judges instead.
    """
    if epoch_share is None:
        share = loader_share(ratio)
        said = f"the loader is {ratio:.1f}x as fast as the model, {share:.1%} of a serial epoch"
    else:
        share = epoch_share
        said = (
            f"with workers the data path takes {share:.1%} of the measured epoch (the loader "
            f"alone is {ratio:.1f}x as fast as the model)"
        )
    if is_bottleneck(share, limit):
        return f"augmentation IS a meaningful share of the epoch (over {limit:.0%}): {said}"
    return f"augmentation is not the bottleneck: {said}"


def compose(experiment: str, backend: str, epochs: int, num_workers: int | None):
    """The config of `python -m eva experiment=NAME augment.backend=BACKEND`, with enough
    epochs for every measured pass of the schedule, and max_lr=find replaced by
    optimizer.lr (no LR range test here)."""
    from eva.config import compose_config
    from eva.config.validate import finds_max_lr

    overrides = [f"experiment={experiment}", f"augment.backend={backend}", f"epochs={epochs}"]
    if num_workers is not None:
        overrides.append(f"dataset.num_workers={num_workers}")
    cfg = compose_config(overrides)
    if finds_max_lr(cfg):
        cfg.scheduler.max_lr = float(cfg.optimizer.lr)
    return cfg


def random_train_set(n: int):
    """n random uint8 32x32x3 images and labels, as eva.data.ImageSet."""
    import numpy as np

    from eva.data import ImageSet

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (n, SIZE, SIZE, CHANNELS), dtype=np.uint8)
    labels = rng.integers(0, CLASSES, n).astype(np.int64)
    return ImageSet(images, labels, [str(c) for c in range(CLASSES)])


def sides(experiment: str, n_images: int, epochs: int, num_workers, torch_epoch: bool):
    """({side: run measuring img/s}, facts) for one experiment preset."""
    import torch

    from eva.data import train_batches
    from eva.engine.device import auto_workers
    from eva.engine.loop import train_one_epoch
    from eva.models import build_model
    from eva.optim import L1Penalty, build_optimizer, build_scheduler

    cpu = torch.device("cpu")
    cfg = compose(experiment, "albumentations", epochs, num_workers)
    workers = auto_workers(cfg.dataset.num_workers, cpu)  # what eva.modes.runtime.build picks
    train_set = random_train_set(n_images)
    loader = train_batches(cfg, train_set, cpu, workers)
    batched = train_batches(compose(experiment, "torch", epochs, None), train_set, cpu)
    premade = list(loader)  # the model side's batches: one epoch of the loader, made now

    torch.manual_seed(cfg.seed)
    model = build_model(cfg.model, CHANNELS, CLASSES)
    optimizer = build_optimizer(cfg, model)
    schedule = build_scheduler(cfg, optimizer, steps_per_epoch=len(loader))
    l1 = L1Penalty(model, cfg.l1_weight)

    def train(batches) -> float:
        stats = train_one_epoch(model, batches, optimizer, schedule, cpu, l1=l1, progress=False)
        schedule.step_epoch()
        return stats.images_per_second

    runs = {
        "loader": lambda: epoch_rate(loader, cpu),
        "model": lambda: train(premade),
        "epoch": lambda: train(loader),
        "torch_loader": lambda: epoch_rate(batched, cpu),
    }
    if torch_epoch:
        runs["torch_epoch"] = lambda: train(batched)
    facts = {"model": cfg.model.name, "augment": cfg.augment.name, "batch_size": cfg.batch_size}
    auto = cfg.dataset.num_workers is None
    return runs, {**facts, "num_workers": workers, "auto": auto, "l1_weight": cfg.l1_weight}


def summarize(rates: dict[str, list[float]], workers: int = 0, limit: float = SHARE_LIMIT) -> dict:
    """Medians of each side's img/s; each side's img/s over the model's, as the median of
    the rounds' ratios (a slow moment of the machine weighs on both sides of a round); the
    loader's share of an epoch from them, and the verdict (see verdict() for `workers`)."""
    model = rates["model"]
    x_model = {
        side: median([r / m for r, m in zip(values, model, strict=True)])
        for side, values in rates.items()
    }
    out = {f"{side}_img_per_s": median(values) for side, values in rates.items()}
    ratio = x_model["loader"]
    epoch_share = measured_share(x_model["epoch"])
    judged = epoch_share if workers else loader_share(ratio)
    out.update(
        x_model=x_model,
        ratio=ratio,
        share=loader_share(ratio),
        epoch_share=epoch_share,
        torch_ratio=x_model["torch_loader"],
        torch_share=loader_share(x_model["torch_loader"]),
        bottleneck=is_bottleneck(judged, limit),
        verdict=verdict(ratio, epoch_share if workers else None, limit),
    )
    if "torch_epoch" in x_model:
        out["torch_epoch_share"] = measured_share(x_model["torch_epoch"])
    return out


def rows(experiment: str, facts: dict, s: dict) -> list[list[str]]:
    """Table rows of one experiment: img/s, x the model's, the loader's share of an epoch
    (from the ratio on loader rows, measured on epoch rows)."""
    workers = counted(facts["num_workers"], "worker") + (" (auto)" if facts["auto"] else "")
    label = (
        f"{experiment}: {facts['model']}, augment={facts['augment']}, batch {facts['batch_size']}"
    )
    paths = [
        ("loader", f"loader: albumentations, {workers}", "share"),
        ("model", "model: train_one_epoch on pre-made batches", None),
        ("epoch", "epoch: train_one_epoch over the loader", "epoch_share"),
        ("torch_loader", "loader: augment.backend=torch", "torch_share"),
        ("torch_epoch", "epoch: augment.backend=torch", "torch_epoch_share"),
    ]
    out = []
    for side, what, share in paths:
        if side not in s["x_model"]:
            continue
        shown = f"{s[share]:.1%}" if share else ""
        rate, times = s[f"{side}_img_per_s"], s["x_model"][side]
        out.append([label, what, f"{rate:,.0f}", f"{times:.2f}", shown])
    return out


def rounded(value, digits: int = 5):
    """value with every float in it (nested dicts and lists too) rounded to `digits`
    significant digits, for the JSON."""
    if isinstance(value, float):
        return float(f"{value:.{digits}g}")
    if isinstance(value, dict):
        return {k: rounded(v, digits) for k, v in value.items()}
    if isinstance(value, list):
        return [rounded(v, digits) for v in value]
    return value


HEADERS = ["experiment", "batches", "img/s", "x model", "loader's share of the epoch"]


def main(argv: list[str] | None = None) -> dict:
    p = parser(__doc__.splitlines()[0])
    p.add_argument(
        "--experiments",
        nargs="+",
        default=["session10", "session6"],
        help="conf/experiment presets; the first one gives the JSON's ratio and share",
    )
    p.add_argument("--images", type=int, default=None, help="images an epoch (2048; quick 512)")
    p.add_argument("--repeats", type=int, default=None, help="epochs a side (3; quick 2)")
    p.add_argument(
        "--num-workers", type=int, default=None, help="dataset.num_workers (default: null, auto)"
    )
    args = p.parse_args(argv)
    n_images = args.images or (512 if args.quick else 2048)
    repeats = args.repeats or (2 if args.quick else 3)
    if n_images < 1 or repeats < 1:
        p.error("--images and --repeats must be at least 1")
    threads = set_threads(args.threads)
    # every training side's passes, warm-up included, fit in the schedule
    epochs = (repeats + 1) * len(TRAINING_SIDES)

    per_experiment, all_rows = {}, []
    for experiment in args.experiments:
        runs, facts = sides(experiment, n_images, epochs, args.num_workers, not args.quick)
        rates, others = others_during(alternate, runs, repeats)
        s = summarize(rates, facts["num_workers"])
        per_experiment[experiment] = {**facts, **s, "rates": rates, "others_cores": others}
        all_rows += rows(experiment, facts, s)

    setup = (
        f"{n_images} random uint8 32x32x3 images an epoch; each experiment's model, batch "
        f"size, optimizer, schedule and L1 weight; {threads} torch thread(s), CPU; medians of "
        f"{repeats} passes a side, alternated"
    )
    results = table(HEADERS, all_rows)
    verdicts = [
        f"{e}: {s['verdict']}; "
        f"{noise_note(s['others_cores'], 'its DataLoader workers' if s['num_workers'] else '')}."
        for e, s in per_experiment.items()
    ]
    print(f"{setup}\n\n{results}\n")
    print("\n".join(verdicts))
    if args.publish:
        markdown = f"{setup}.\n\n{results}\n\n" + "\n".join(f"- {v}" for v in verdicts)
        publish("performance.md", "data-path", markdown, command_line(__file__, argv))
    first = per_experiment[args.experiments[0]]
    return emit(
        {
            "benchmark": "data_path",
            "ratio": round(first["ratio"], 2),
            "share": round(first["share"], 4),
            "experiment": args.experiments[0],
            "experiments": rounded(per_experiment),
            "images": n_images,
            "repeats": repeats,
            "threads": threads,
            "machine": machine(),
        }
    )


if __name__ == "__main__":
    main()
