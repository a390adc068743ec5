"""Augmented training images per second: albumentations per image vs batched tensor ops.

    python benchmarks/augment.py                       # augment=resnet and session6, CPU
    python benchmarks/augment.py --quick               # fewer images and runs (< 1 minute)
    python benchmarks/augment.py --device cuda --threads 4

A (augment.backend=albumentations): eva's own augmented_loader with num_workers=0, i.e.
build_train_transform called per image (AugmentedImages), batches collated by the
DataLoader, all on one core of this process.
B (augment.backend=torch): DeviceBatches over the same uint8 images held on --device, each
batch augmented there by BatchAugment and normalized.
Both make normalized float batches of --batch-size from the same conf/augment preset and
CIFAR-10's mean/std, over random uint8 32x32x3 images; one measurement is one epoch over
all of them (setup such as copying the images to the device is not timed). On a GPU, A's
batches are also copied there, as training would. torch runs 1 thread by default (and cv2
likewise), so that on a CPU both sides get one core; --threads changes it.
The JSON's "ratio" is B's images/s over A's for the first --augment (resnet by default).
"""

import time

import numpy as np
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
)

SIZE = 32


def compose_config(augment: str, backend: str = "albumentations"):
    """What `python -m eva augment=NAME dataset=cifar10` runs with (no data is loaded)."""
    from eva.config import compose_config as compose

    return compose([f"augment={augment}", "dataset=cifar10", f"augment.backend={backend}"])


def epoch_rate(batches, device) -> float:
    """Images per second of one pass over `batches`, each batch landed on `device`."""
    import torch

    start, n = time.perf_counter(), 0
    for images, labels in batches:
        images = images.to(device, non_blocking=True)
        n += len(labels)
    if device.type == "cuda":
        torch.cuda.synchronize(device)  # the work queued for the last batches counts too
    return n / (time.perf_counter() - start)


def sides(augment: str, images, labels, batch_size: int, device) -> dict:
    """{"albumentations": run, "batched": run}: each run measures one epoch (img/s)."""
    import torch

    from eva.data import build_augment
    from eva.data.batched import DeviceBatches
    from eva.data.loaders import augmented_loader

    cfg = compose_config(augment)
    mean, std = list(cfg.dataset.mean), list(cfg.dataset.std)
    transform = build_augment(cfg)  # seeded from cfg.seed
    if transform is None:
        raise SystemExit(f"--augment {augment}: asks for no augmentation, nothing to compare")
    loader = augmented_loader(
        images, labels, transform, batch_size, torch.Generator().manual_seed(0), 0, False
    )
    batched = DeviceBatches(
        images,
        labels,
        mean,
        std,
        batch_size,
        device,
        build_augment(compose_config(augment, backend="torch")),
        torch.Generator().manual_seed(0),
    )
    return {
        "albumentations": lambda: epoch_rate(loader, device),
        "batched": lambda: epoch_rate(batched, device),
    }


def main(argv: list[str] | None = None) -> dict:
    p = parser(__doc__.splitlines()[0])
    p.set_defaults(threads=1)
    p.add_argument(
        "--augment",
        nargs="+",
        default=["resnet", "session6"],
        help="conf/augment presets to measure; the first one gives the JSON's ratio",
    )
    p.add_argument("--images", type=int, default=None, help="images per epoch (10000; quick 2048)")
    p.add_argument("--repeats", type=int, default=None, help="epochs per side (5; quick 3)")
    p.add_argument("--batch-size", type=int, default=512)
    p.add_argument("--device", default="cpu", help="where B holds and augments the images")
    args = p.parse_args(argv)
    n_images = args.images or (2048 if args.quick else 10_000)
    repeats = args.repeats or (3 if args.quick else 5)
    if n_images < 1 or repeats < 1 or args.batch_size < 1:
        p.error("--images, --repeats and --batch-size must be at least 1")

    import cv2
    import torch

    threads = set_threads(args.threads)
    cv2.setNumThreads(threads)  # albumentations' cv2 calls get as many cores as torch
    device = torch.device(args.device)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (n_images, SIZE, SIZE, 3), dtype=np.uint8)
    labels = rng.integers(0, 10, n_images).astype(np.int64)

    per_augment, rows = {}, []
    for augment in args.augment:
        measured = alternate(sides(augment, images, labels, args.batch_size, device), repeats)
        a, b = median(measured["albumentations"]), median(measured["batched"])
        per_augment[augment] = {
            "albumentations_img_per_s": round(a, 1),
            "batched_img_per_s": round(b, 1),
            "ratio": round(b / a, 2),
        }
        rows.append([augment, "albumentations: per image, DataLoader, 0 workers", f"{a:,.0f}", "1"])
        rows.append([augment, f"batched: DeviceBatches on {device}", f"{b:,.0f}", f"{b / a:.2f}"])

    setup = (
        f"{n_images} random uint8 {SIZE}x{SIZE}x3 images, batch size {args.batch_size}, "
        f"torch threads {threads} (cv2 too: one core each side when 1), medians of "
        f"{repeats} epochs per side, alternated"
    )
    results = table(["augment", "backend", "img/s", "ratio"], rows)
    print(f"{setup}\n\n{results}")
    first = per_augment[args.augment[0]]
    result = {
        **first,
        "augment": args.augment[0],
        "augments": per_augment,
        "images": n_images,
        "batch_size": args.batch_size,
        "repeats": repeats,
        "device": str(device),
        "threads": threads,
        "machine": machine(),
    }
    summary = (
        f"ratio = batched / albumentations img/s for augment={args.augment[0]}: "
        f"{first['ratio']:.2f}"
    )
    print(f"\n{summary}")
    if args.publish:
        markdown = f"{setup}.\n\n{results}\n\n{summary}."
        publish("performance.md", "augment", markdown, command_line(__file__, argv))
    return emit(result)


if __name__ == "__main__":
    main()
