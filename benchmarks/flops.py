"""Achieved GFLOP/s of a training step against this machine's sgemm GFLOP/s, in one run.

    python benchmarks/flops.py                   # ResNet-9 and session6, channels_last off/on
    python benchmarks/flops.py --quick           # smaller batches, fewer runs (< 1 minute)
    python benchmarks/flops.py --threads 1       # one core

sgemm: torch.mm of two random fp32 N x N matrices (--matrix, 2048), 2*N^3 FLOPs a product:
what this machine's BLAS reaches on the friendliest work there is, at the same torch threads
as the training steps. It is this run's ceiling, measured, not a datasheet's peak.
The training variants: ResNet-9 (model=custom_resnet, as in experiment=session10) and
session6 (model=session6), built by eva's build_model for 3x32x32 images and 10 classes, each
with channels_last off (A: NCHW) and on (B: NHWC, the model converted as a run does). One
step is eva.engine.loop.train_one_epoch's: the batch moved to the layout, forward,
cross-entropy, backward and an SGD step (optimizer=sgd: momentum, weight decay), on one
random batch of --batch-size normalized images; one measurement times --steps such steps.
FLOPs per step are counted once per variant by torch.utils.flop_counter.FlopCounterMode over
the forward and backward of that batch: convolutions and matrix products, 2 FLOPs a
multiply-add, with a depthwise conv's weight gradient counted per group (torch 2.14 counts
it `groups` times: conv_backward_flops). Batch norm, ReLU, pooling and the SGD update are
not counted: they add time, and no FLOPs, to the achieved figure, as they do to a run.
sgemm and the four variants are alternated (common.alternate) after a warm-up; medians.
achieved GFLOP/s = FLOPs per step / seconds per step; "of sgemm" = achieved / sgemm GFLOP/s,
taken in each round against that round's sgemm, the median over the rounds. The JSON's
"fraction_of_sgemm" holds that figure for every variant.
"""

import time

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
from sweep import machine_busy

SIZE, CHANNELS, CLASSES = 32, 3, 10  # CIFAR-10's images and classes
MODELS = {"resnet9": "custom_resnet", "session6": "session6"}  # label -> conf/model option
SGEMM = "sgemm"  # the side of the matrix products
NOISY_CORES = 0.2  # cores other processes may keep busy before the figures are called rough


def matmul_flops(n: int) -> int:
    """FLOPs of one N x N by N x N product: N^2 outputs, N multiply-adds each."""
    return 2 * n**3


def gflops(flops: float, seconds: float) -> float:
    """GFLOP/s of `flops` done in `seconds`."""
    return flops / seconds / 1e9


def others_during(measure, *args):
    """(measure(*args), cores other processes kept busy meanwhile): the machine's CPU seconds
    (/proc/stat) beyond this process's, per wall second; None without /proc/stat. Child
    processes (DataLoader workers) count as others."""
    busy, cpu, start = machine_busy(), time.process_time(), time.perf_counter()
    result = measure(*args)
    wall, after = time.perf_counter() - start, machine_busy()
    if busy is None or after is None:
        return result, None
    return result, max(0.0, (after - busy - (time.process_time() - cpu)) / wall)


def noise_note(others: float | None, among: str = "") -> str:
    """What the figures are worth, given the cores other processes took meanwhile (`among`:
    which of them this run started)."""
    if others is None:
        return "other processes' load unknown (no /proc/stat)"
    among = f" ({among} among them)" if among else ""
    said = f"other processes{among} kept {others:.2f} cores busy during the measurements"
    return said + (": the figures are rough" if others > NOISY_CORES else "")


def variant_name(model: str, channels_last: bool) -> str:
    return f"{model}_channels_last" if channels_last else model


def conv_backward_flops(
    grad_out_shape, x_shape, w_shape, _bias, _stride, _padding, _dilation, transposed,
    _output_padding, _groups, output_mask, out_shape=None, **kwargs,
) -> int:  # fmt: skip
    """FLOPs of aten.convolution_backward, for FlopCounterMode's custom_mapping (shapes in).

    Each gradient, of the input and of the weight, takes one multiply-add for every one of
    the forward conv's, so each counts as the forward does. torch's own formula (2.14,
    torch.utils.flop_counter.conv_backward_flop) counts a grouped conv's weight gradient as
    if every input channel met every output channel: a depthwise conv's `groups` times too
    many (pytorch/pytorch pull request 183405 divides it by the groups).
    """
    from torch.utils.flop_counter import conv_flop_count

    forward = conv_flop_count(x_shape, w_shape, grad_out_shape, transposed)  # w: per group
    return forward * (bool(output_mask[0]) + bool(output_mask[1]))


def step_flops(model, images, labels) -> int:
    """FLOPs of one training step's forward and backward, as FlopCounterMode counts them,
    with conv_backward_flops for the convs' backward (the gradients made are dropped)."""
    import torch
    import torch.nn.functional as F
    from torch.utils.flop_counter import FlopCounterMode

    fixed = {torch.ops.aten.convolution_backward: conv_backward_flops}
    with FlopCounterMode(display=False, custom_mapping=fixed) as counter:
        F.cross_entropy(model(images), labels).backward()
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops()


def sgemm_side(n: int, products: int):
    """A run measuring seconds per torch.mm of two fp32 N x N matrices (`products` timed
    together)."""
    import torch

    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(n, n, generator=g), torch.randn(n, n, generator=g)
    out = torch.empty(n, n)

    def run() -> float:
        start = time.perf_counter()
        for _ in range(products):
            torch.mm(a, b, out=out)
        return (time.perf_counter() - start) / products

    return run


def compose(option: str):
    """The config of `python -m eva model=OPTION optimizer=sgd dataset=cifar10`."""
    from eva.config import compose_config

    return compose_config([f"model={option}", "optimizer=sgd", "dataset=cifar10"])


def training_side(option: str, channels_last: bool, batch_size: int, steps: int):
    """(FLOPs per step, a run measuring seconds per training step) for one variant."""
    import torch

    from eva.engine.loop import train_one_epoch
    from eva.engine.precision import memory_format
    from eva.models import build_model
    from eva.optim import build_optimizer
    from eva.optim.schedulers import Schedule

    cfg = compose(option)
    torch.manual_seed(cfg.seed)
    model = build_model(cfg.model, CHANNELS, CLASSES)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)  # as eva.modes.runtime.build
    g = torch.Generator().manual_seed(0)
    images = torch.randn(batch_size, CHANNELS, SIZE, SIZE, generator=g)  # NCHW, as loaded
    labels = torch.randint(0, CLASSES, (batch_size,), generator=g)
    flops = step_flops(model, images.to(memory_format=memory_format(channels_last)), labels)
    optimizer = build_optimizer(cfg, model)
    constant = Schedule(None, per_batch=False)  # the LR stays optimizer.lr
    batches = [(images, labels)] * steps

    def run() -> float:
        stats = train_one_epoch(
            model,
            batches,
            optimizer,
            constant,
            torch.device("cpu"),
            progress=False,
            channels_last=channels_last,
        )
        return stats.seconds / steps

    return flops, run


def summarize(
    flops: dict[str, int], seconds: dict[str, list[float]], batch_size: int, n: int
) -> dict:
    """Medians and rates: {SGEMM: {...}, variant: {...}} from each side's seconds (per
    product for SGEMM, per step for a variant) and each variant's FLOPs per step.

    A variant's fraction of sgemm is taken round by round, against the sgemm measured in
    the same round (a slow moment of the machine weighs on both), and is the median of
    those: close to, not always equal to, the ratio of the two medians.
    """
    sgemm_s = median(seconds[SGEMM])
    ceiling = gflops(matmul_flops(n), sgemm_s)
    out = {SGEMM: {"seconds": sgemm_s, "gflops": ceiling, "fraction_of_sgemm": 1.0}}
    for name, per_step in flops.items():
        s = median(seconds[name])
        achieved = gflops(per_step, s)
        # FLOPs per step / FLOPs per product = how many products' worth a step does
        rounds = zip(seconds[name], seconds[SGEMM], strict=True)
        fraction = median([per_step / matmul_flops(n) * mm / step for step, mm in rounds])
        out[name] = {
            "flops_per_step": per_step,
            "flops_per_image": per_step / batch_size,
            "seconds_per_step": s,
            "img_per_s": batch_size / s,
            "gflops": achieved,
            "fraction_of_sgemm": fraction,
        }
    return out


def rows(summary: dict, n: int) -> list[list[str]]:
    """The table's rows: sgemm first, then every variant."""
    s = summary[SGEMM]
    ms = f"{s['seconds'] * 1e3:.1f}"  # per product
    out = [[f"sgemm {n}x{n} fp32", "", "", ms, "", f"{s['gflops']:.0f}", "1.00"]]
    for name, v in summary.items():
        if name == SGEMM:
            continue
        model, _, layout = name.partition("_")
        out.append(
            [
                model,
                "on" if layout else "off",
                f"{v['flops_per_image'] / 1e9:.3f}",
                f"{v['seconds_per_step'] * 1e3:.1f}",
                f"{v['img_per_s']:,.0f}",
                f"{v['gflops']:.0f}",
                f"{v['fraction_of_sgemm']:.2f}",
            ]
        )
    return out


HEADERS = ["work", "channels_last", "GFLOP/image", "ms/step", "img/s", "GFLOP/s", "of sgemm"]


def main(argv: list[str] | None = None) -> dict:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    p.add_argument("--batch-size", type=int, default=None, help="images a step (128; quick 64)")
    p.add_argument("--steps", type=int, default=None, help="steps a measurement (3; quick 1)")
    p.add_argument("--repeats", type=int, default=None, help="measurements a side (7; quick 3)")
    p.add_argument("--matrix", type=int, default=2048, help="N of sgemm's N x N matrices")
    p.add_argument("--products", type=int, default=3, help="sgemm products a measurement")
    args = p.parse_args(argv)
    batch_size = args.batch_size or (64 if args.quick else 128)
    steps = args.steps or (1 if args.quick else 3)
    repeats = args.repeats or (3 if args.quick else 7)
    if min(batch_size, steps, repeats, args.matrix, args.products) < 1:
        p.error("--batch-size, --steps, --repeats, --matrix and --products must be at least 1")
    threads = set_threads(args.threads)

    flops, sides = {}, {SGEMM: sgemm_side(args.matrix, args.products)}
    for label in args.models:
        for channels_last in (False, True):
            name = variant_name(label, channels_last)
            flops[name], sides[name] = training_side(
                MODELS[label], channels_last, batch_size, steps
            )
    seconds, others = others_during(alternate, sides, repeats)
    summary = summarize(flops, seconds, batch_size, args.matrix)

    setup = (
        f"Training steps (forward, backward, SGD) of batch {batch_size} on random 3x32x32 "
        f"images, 10 classes, fp32, {threads} torch thread(s); sgemm: torch.mm of fp32 "
        f"{args.matrix}x{args.matrix} matrices at the same threads; {repeats} measurements "
        f"a side ({counted(steps, 'step')}, {counted(args.products, 'product')} each), "
        "alternated, medians"
    )
    results = table(HEADERS, rows(summary, args.matrix))
    every = " ".join(f"{gflops(matmul_flops(args.matrix), x):.0f}" for x in seconds[SGEMM])
    spread = f"sgemm GFLOP/s, round by round: {every}; {noise_note(others)}"
    print(f"{setup}\n\n{results}\n\n{spread}")
    fractions = {name: round(v["fraction_of_sgemm"], 3) for name, v in summary.items()}
    del fractions[SGEMM]
    if args.publish:
        note = (
            "GFLOP/image: forward + backward of one training image, counted by "
            "FlopCounterMode (convolutions and matrix products). of sgemm: the step's "
            "GFLOP/s over the sgemm GFLOP/s of the same round, the median over the rounds."
        )
        markdown = f"{setup}.\n\n{results}\n\n{spread}. {note}"
        publish("performance.md", "flops", markdown, command_line(__file__, argv))
    return emit(
        {
            "benchmark": "flops",
            "sgemm_gflops": round(summary[SGEMM]["gflops"], 1),
            "others_cores": None if others is None else round(others, 2),
            "fraction_of_sgemm": fractions,
            "variants": {
                name: {k: round(x, 6) if isinstance(x, float) else x for k, x in v.items()}
                for name, v in summary.items()
                if name != SGEMM
            },
            "seconds": {name: [round(x, 6) for x in xs] for name, xs in seconds.items()},
            "matrix": args.matrix,
            "batch_size": batch_size,
            "steps": steps,
            "repeats": repeats,
            "threads": threads,
            "machine": machine(),
        }
    )


if __name__ == "__main__":
    main()
