"""eva on a GPU: its epoch against a plain loop, its host-device syncs, a sweep, peak memory.

    python benchmarks/gpu.py --wheels .gpu-wheels        # here: the wheels a bare GPU lacks
    python3 benchmarks/gpu.py --install .gpu-wheels      # there: install what is missing, run
    python benchmarks/gpu.py --device cpu --quick        # every part, tiny (tests/test_gpu.py)

The model is eva's `experiment=session10` (ResNet-9, model=custom_resnet: Adam, one-cycle,
augment=resnet) at batch 512 in bf16 autocast and channels_last, its images held on the GPU
and augmented there (augment.backend=torch), MLflow off (tracking.enabled=false): a GPU
machine with only torch, torchvision and numpy runs it once the few wheels in
`--wheels` are installed (`--install`). Data: CIFAR-10 when $EVA_DATA (else data/) holds
it, else synthetic CIFAR-shaped images. Parts, in order, each recorded in the JSON even when
it fails (its "error") so that one run on a rare GPU gives every figure it can:

  throughput_eager    eva.modes.train.fit for one epoch (train, evaluate, checkpoints, the
                      progress bar drawn) against a hand-written loop with the same model,
                      settings and augmentation drawn on the GPU; img/s and ratio eva/plain
  syncs               host-device synchronisations in eva's train_one_epoch over 100 steps
                      (torch.cuda.set_sync_debug_mode("warn"), one warning each) against
                      the periodic ones eva/engine/loop.py chooses; where each comes from
  sweep               `python -m eva -m hparams_search=optuna` with 2 trials on the device,
                      the study read back with Optuna from its journal file
  throughput_compile  throughput_eager with compile=true (torch.compile, inductor)
  gpu_tests           tests/test_gpu.py's GPU tests (pytest, without the suite's conftest)
  imports             that mlflow, albumentations and cv2 were never imported

The exit code is 1 when any part failed. The JSON (the last line) also goes to $OUT/gpu.json
when $OUT is set, rewritten after every part: a run stopped by a timeout keeps what it had.
"""

import gc
import importlib.metadata
import importlib.util
import json
import math
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
import xml.etree.ElementTree as ET
import zipfile
from collections import Counter
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path

from common import REPO, alternate, emit, machine, median, parser, set_threads, table

SWEEPER = REPO / "sweeper"  # evasweep and the hydra_plugins namespace (the sweeper plugin)
if str(SWEEPER) not in sys.path:
    sys.path.append(str(SWEEPER))

# What the check imports beyond torch, torchvision, numpy and torch's own requirements
# (found by running it under an import blocker); their versions are this environment's.
RUN_NEEDS = (
    "hydra-core",
    "omegaconf",
    "antlr4-python3-runtime",  # omegaconf's parser
    "PyYAML",
    "optuna",  # with a journal file: its sqlalchemy and alembic are never imported
    "colorlog",  # optuna's logging
    "tqdm",
    "torchinfo",  # the model summary of every run
    "packaging",
)
TEST_NEEDS = ("pytest", "pluggy", "iniconfig", "pygments")  # the gpu_tests part
SDIST_ONLY = ("antlr4-python3-runtime",)  # no wheel on PyPI: built here (pure Python)
PLATFORMS = ("manylinux2014_x86_64", "manylinux_2_17_x86_64", "manylinux_2_28_x86_64")
MAX_WHEELS_MIB = 16  # a GPU machine gets 64 MiB in all, the working tree included
FORBIDDEN = ("mlflow", "albumentations", "cv2")  # never imported with tracking off, backend=torch

BAR_EVERY = 10  # eva/engine/loop.py redraws the bar (2 reads: loss, accuracy) every 10 steps
END_READS = 3  # and reads at an epoch's end: the loss twice (check, mean), the accuracy once
SYNC_WARNING = "synchronizing CUDA operation"  # torch's warning in sync debug mode
DEFAULT_BUDGET = 330  # seconds: a part is not started after this (the target is < 6 min)
SWEEP_SEARCH = "tag(log, interval(1e-3, 1e-2))"  # Adam's range (the preset's suits SGD)


@dataclass(frozen=True)
class Sizes:
    width: int  # ResNet-9's base channels (64: the real net, 6.57M parameters)
    batch: int
    train: int  # training images per epoch: whole batches (no short batch to recompile)
    test: int
    repeats: int  # measured epochs per side (after one unmeasured: warm-up, compilation)
    sync_steps: int  # steps of the epoch the syncs are counted in
    sweep_train: int  # per trial
    sweep_test: int


SIZES = {  # (device type, --quick) -> sizes; one-cycle needs 3 steps or more in a trial
    ("cuda", False): Sizes(64, 512, 100 * 512, 20 * 512, 3, 100, 20 * 512, 4 * 512),
    ("cuda", True): Sizes(64, 512, 10 * 512, 2 * 512, 1, 20, 4 * 512, 512),
    ("cpu", False): Sizes(16, 128, 8 * 128, 2 * 128, 2, 20, 4 * 128, 128),
    ("cpu", True): Sizes(8, 64, 4 * 64, 64, 1, 10, 4 * 64, 64),
}


# --------------------------------------------------------------------------- the wheels


def wheel_name(distribution: str) -> str:
    """How a distribution starts a wheel's file name (PEP 427: runs of -_. as one _)."""
    return re.sub(r"[-_.]+", "_", distribution).lower()


def wheel_file(folder: Path, distribution: str) -> Path:
    """The one wheel of `distribution` in folder (FileNotFoundError: none or several)."""
    prefix = wheel_name(distribution) + "-"
    found = [p for p in sorted(folder.glob("*.whl")) if p.name.lower().startswith(prefix)]
    if len(found) != 1:
        raise FileNotFoundError(f"{folder}: {len(found)} wheels of {distribution}, expected 1")
    return found[0]


def installed(distribution: str) -> bool:
    try:
        importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


def pip(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "pip", "--disable-pip-version-check", *args], check=True)


def build_wheels(folder: Path, python: str) -> dict:
    """Download (or build, SDIST_ONLY) this environment's versions of RUN_NEEDS and
    TEST_NEEDS as wheels for CPython `python` on manylinux x86_64 into folder, replacing
    the wheels it held."""
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("*.whl"):
        old.unlink()
    pins = {name: importlib.metadata.version(name) for name in (*RUN_NEEDS, *TEST_NEEDS)}
    target = ["--python-version", python, "--implementation", "cp"]
    target += ["--abi", "cp" + python.replace(".", "")]
    for platform in PLATFORMS:
        target += ["--platform", platform]
    binary = [f"{name}=={v}" for name, v in pins.items() if name not in SDIST_ONLY]
    pip("download", "--no-deps", "--only-binary=:all:", *target, "--dest", str(folder), *binary)
    for name in SDIST_ONLY:  # pure Python: the wheel built here runs on any CPython 3
        pip("wheel", "--no-deps", "--wheel-dir", str(folder), f"{name}=={pins[name]}")
    files = [wheel_file(folder, name) for name in pins]  # one each, or it raises
    mib = sum(f.stat().st_size for f in files) / 2**20
    if mib > MAX_WHEELS_MIB:
        raise RuntimeError(f"{folder}: {mib:.1f} MiB of wheels, more than {MAX_WHEELS_MIB} MiB")
    return {
        "folder": str(folder),
        "python": python,
        "mib": round(mib, 2),
        "wheels": [f.name for f in files],
    }


def install_missing(folder: Path) -> dict:
    """Install the wheels in folder of the RUN_NEEDS and TEST_NEEDS this Python lacks (no
    index, no dependencies) into a new temporary site folder, put first on sys.path and on
    the PYTHONPATH of the child processes (the sweep, pytest). Without pip the wheels are
    unpacked there, which is what installing a wheel amounts to."""
    missing = [name for name in (*RUN_NEEDS, *TEST_NEEDS) if not installed(name)]
    if not missing:
        return {"installed": [], "target": None}
    wheels = [str(wheel_file(folder, name)) for name in missing]
    target = Path(tempfile.mkdtemp(prefix="eva-gpu-site-"))
    how = "pip" if importlib.util.find_spec("pip") else "unzip"
    if how == "pip":
        pip("install", "--quiet", "--no-index", "--no-deps", "--target", str(target), *wheels)
    else:
        for wheel in wheels:
            with zipfile.ZipFile(wheel) as archive:
                archive.extractall(target)
    sys.path.insert(0, str(target))
    importlib.invalidate_caches()
    os.environ["PYTHONPATH"] = os.pathsep.join(
        filter(None, [str(target), os.environ.get("PYTHONPATH")])
    )
    return {"installed": missing, "target": str(target), "how": how}


def child_env() -> dict[str, str]:
    """This environment for the sweep and pytest, with eva, the sweeper and the installed
    wheels importable, and without the variables a sweep that ran this would have set."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("MLFLOW_") and (not key.startswith("EVA_") or key == "EVA_DATA")
    }
    paths = [env.get("PYTHONPATH"), str(REPO), str(SWEEPER)]
    env["PYTHONPATH"] = os.pathsep.join(filter(None, paths))
    env.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    return env


# --------------------------------------------------------------------------- device helpers


def synchronize(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_peak(device) -> None:
    import torch

    if device.type == "cuda":
        gc.collect()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def peak_mib(device) -> float | None:
    """The most memory tensors took on the GPU since reset_peak (MiB); None on a CPU."""
    import torch

    if device.type != "cuda":
        return None
    return mib(torch.cuda.max_memory_allocated(device))


def mib(nbytes: int | None) -> float | None:
    return None if nbytes is None else round(nbytes / 2**20, 1)


# --------------------------------------------------------------------------- eva's side


def data_root() -> Path:
    return Path(os.environ.get("EVA_DATA") or REPO / "data").expanduser().absolute()


def data_overrides(train: int, test: int, batch: int, real: bool) -> list[str]:
    """CIFAR-10 (whole batches of it) when real, else synthetic images of those sizes."""
    if not real:
        return ["dataset=synthetic", f"dataset.train_size={train}", f"dataset.test_size={test}"]
    return [
        "dataset=cifar10",
        f"dataset.root={data_root()}",
        "dataset.download=false",
        f"dataset.train_subset={min(train, 50_000 // batch * batch)}",
        f"dataset.test_subset={min(test, 10_000 // batch * batch)}",
    ]


def eva_overrides(sizes: Sizes, device, data: list[str], compile_: bool, threads) -> list[str]:
    """The run every part trains: session10's ResNet-9 on the GPU, untracked."""
    return [
        "experiment=session10",  # custom_resnet, Adam, one-cycle, batch 512, augment=resnet
        *data,
        "augment.backend=torch",  # augmented on the device: no albumentations, no workers
        "tracking.enabled=false",
        "report.enabled=false",
        f"device={device}",
        "epochs=1",
        f"batch_size={sizes.batch}",
        f"model.width={sizes.width}",
        "scheduler.max_lr=0.002",  # what session10's LR range test found in the course
        "precision=bf16",
        "channels_last=true",
        f"compile={str(compile_).lower()}",
        *([f"threads={threads}"] if threads else []),
    ]


def eva_runtime(overrides: list[str], folder: Path):
    """(cfg, rt): validated and built as a run is (eva.modes.runtime), in folder."""
    from eva.config import compose_config
    from eva.config.validate import validate
    from eva.modes import runtime

    cfg = compose_config(overrides)
    validate(cfg, overrides)
    rt = runtime.start(cfg, folder)
    runtime.build(rt)
    return cfg, rt


def eva_meta(cfg, rt) -> dict:
    """What fit() writes into the checkpoints, as eva.modes.train gives it."""
    from eva.modes import runtime

    config = runtime.start_run(rt)  # config.yaml; no MLflow run with tracking off
    meta = {"model_name": cfg.model.name, "config": config, "classes": rt.data.classes}
    meta.update(eva_version="gpu-check", mlflow_run_id=None, overrides=[], lr_find=None)
    return meta


# --------------------------------------------------------------------------- the plain side


def reflect_101(index, size: int):
    """Reflected coordinates without the edge pixel (-1 -> 1, size -> size - 2), as torch's
    and cv2's reflect padding, for shifts smaller than the image."""
    import torch

    index = index.abs()
    return torch.where(index >= size, 2 * (size - 1) - index, index)


def plain_augment(images, fill, pad: int = 4, hole: int = 8):
    """augment=resnet written plainly, every draw on the images' device: reflect pad 4 and
    a random crop back to size, a horizontal flip (p 0.5), one hole x hole cutout (p 0.5)
    filled with the mean. uint8 (B, C, H, W) with H == W in, the same out."""
    import torch

    b, c, h, w = images.shape
    dev = images.device
    ar = torch.arange(h, device=dev)
    shift = torch.randint(-pad, pad + 1, (2, b, 1), device=dev)
    rows, cols = reflect_101(ar + shift[0], h), reflect_101(ar + shift[1], w)  # (B, H)
    cols = torch.where(torch.rand(b, 1, device=dev) < 0.5, cols.flip(1), cols)
    out = images.gather(2, rows.view(b, 1, h, 1).expand(b, c, h, w))
    out = out.gather(3, cols.view(b, 1, 1, w).expand(b, c, h, w))
    corner = torch.randint(0, h - hole + 1, (2, b, 1), device=dev)
    in_rows = (ar >= corner[0]) & (ar < corner[0] + hole)  # (B, H)
    in_cols = (ar >= corner[1]) & (ar < corner[1] + hole)
    hit = torch.rand(b, 1, 1, device=dev) < 0.5
    holes = (in_rows.unsqueeze(2) & in_cols.unsqueeze(1) & hit).unsqueeze(1)  # (B, 1, H, W)
    return torch.where(holes, fill.view(1, c, 1, 1), out)


def plain_side(model, cfg, rt, compile_: bool) -> Callable[[], tuple[float, float]]:
    """A loop as one writes it by hand with the run's settings (bf16 autocast, channels_last,
    the images on the device, Adam and one-cycle as configured): no bar, no checks, no
    checkpoints. Returns epoch() -> (epoch seconds, of which training seconds)."""
    import torch
    import torch.nn.functional as F

    device, d, s, o = rt.device, cfg.dataset, cfg.scheduler, cfg.optimizer
    layout = torch.channels_last

    def chw(split):
        return torch.from_numpy(split.images).permute(0, 3, 1, 2).contiguous().to(device)

    def stat(values):
        return torch.tensor(list(values), device=device).view(1, -1, 1, 1)

    mean, std = stat(d.mean), stat(d.std)
    fill = (mean.view(-1) * 255).round().to(torch.uint8)
    images, labels = chw(rt.data.train_set), torch.from_numpy(rt.data.train_set.labels).to(device)
    test_x = ((chw(rt.data.test_set).float() / 255 - mean) / std).contiguous(memory_format=layout)
    test_y = torch.from_numpy(rt.data.test_set.labels).to(device)
    net = torch.compile(model) if compile_ else model
    opt = torch.optim.Adam(
        model.parameters(), lr=o.lr, betas=tuple(o.betas), weight_decay=o.weight_decay
    )
    n, bs = len(labels), cfg.batch_size

    def epoch() -> tuple[float, float]:
        start = time.perf_counter()
        steps = -(-n // bs)
        sched = torch.optim.lr_scheduler.OneCycleLR(
            opt,
            max_lr=float(s.max_lr),
            total_steps=steps,
            # at least a step up and one down, as eva/optim/schedulers.py (tiny --quick runs)
            pct_start=min(max(s.pct_start, 1.5 / steps), (steps - 1.5) / steps),
            div_factor=s.div_factor,
            final_div_factor=s.final_div_factor,
            anneal_strategy=s.anneal,
            base_momentum=s.base_momentum,
            max_momentum=s.max_momentum,
        )
        model.train()
        for idx in torch.randperm(n, device=device).split(bs):
            x = plain_augment(images.index_select(0, idx), fill)
            x = ((x.float() / 255 - mean) / std).contiguous(memory_format=layout)
            with torch.autocast(device.type, dtype=torch.bfloat16):
                loss = F.cross_entropy(net(x), labels.index_select(0, idx))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
        synchronize(device)
        trained = time.perf_counter() - start
        model.eval()
        correct = torch.zeros((), dtype=torch.long, device=device)
        with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16):
            for x, y in zip(test_x.split(bs), test_y.split(bs), strict=True):
                correct += (net(x).argmax(1) == y).sum()
        correct.item()
        return time.perf_counter() - start, trained

    return epoch


# --------------------------------------------------------------------------- the parts


def throughput_part(sizes: Sizes, device, compile_: bool, threads, real_data: bool) -> dict:
    """eva's epoch (fit: train, evaluate, best.pt and last.pt, the bar on a terminal)
    against plain_side's, alternated, one unmeasured pair first (warm-up, compilation).

    img/s: training images over the median epoch (training and evaluation); train_img_per_s:
    over the training loop alone (eva's own figure: its first batch to its last read)."""
    import copy

    import torch
    from overhead import terminal_stderr

    from eva.modes.train import fit

    folder = Path(tempfile.mkdtemp(prefix="eva-gpu-throughput-"))
    try:
        data = data_overrides(sizes.train, sizes.test, sizes.batch, real_data)
        cfg, rt = eva_runtime(eva_overrides(sizes, device, data, compile_, threads), folder)
        meta = eva_meta(cfg, rt)
        plain = plain_side(copy.deepcopy(rt.model), cfg, rt, compile_)  # the same weights
        n = len(rt.data.train_set)
        trained = {"eva": [], "plain": []}  # seconds of each epoch's training loop

        def eva_epoch() -> float:
            start = time.perf_counter()
            with terminal_stderr():  # the bar drawn, as at a terminal (overhead.py)
                row = fit(cfg, rt, meta).history[-1]
            seconds = time.perf_counter() - start
            if not math.isfinite(row["train_loss"]):
                raise RuntimeError(f"eva's epoch: train_loss {row['train_loss']}")
            trained["eva"].append(n / row["images_per_second"])
            return seconds

        def plain_epoch() -> float:
            seconds, training = plain()
            trained["plain"].append(training)
            return seconds

        # One unmeasured pair first (warm-up; compilation), then eva, plain, eva, plain, ...
        measured = alternate({"eva": eva_epoch, "plain": plain_epoch}, sizes.repeats, warmup=1)
        for side, seconds in trained.items():
            measured[f"{side}_train"] = seconds[1:]  # without the warm-up's
        rate = {side: n / median(seconds) for side, seconds in measured.items()}
        return {
            "data": cfg.dataset.name,
            "images": n,
            "batch_size": cfg.batch_size,
            "compile": compile_,
            "eva_img_per_s": round(rate["eva"], 1),
            "plain_img_per_s": round(rate["plain"], 1),
            "ratio": round(rate["eva"] / rate["plain"], 4),
            "eva_train_img_per_s": round(rate["eva_train"], 1),
            "plain_train_img_per_s": round(rate["plain_train"], 1),
            "train_ratio": round(rate["eva_train"] / rate["plain_train"], 4),
            "seconds_per_epoch": {side: [round(s, 4) for s in v] for side, v in measured.items()},
        }
    finally:
        if compile_:
            torch._dynamo.reset()  # the compiled graphs hold the models
        shutil.rmtree(folder, ignore_errors=True)


def where(filename: str, lineno: int) -> str:
    """file:line of a warning, relative to the checkout, or from the package folder on."""
    path = Path(filename)
    try:
        return f"{path.resolve().relative_to(REPO)}:{lineno}"
    except ValueError:
        parts = path.parts
        top = next((i for i, p in enumerate(parts) if p in ("torch", "tqdm")), len(parts) - 1)
        return f"{'/'.join(parts[top:])}:{lineno}"


def count_syncs(run: Callable[[], object]) -> tuple[int, dict[str, int]]:
    """Host-device synchronisations while run() runs, and how many each line caused: in
    sync debug mode torch warns at every one (each .item(), blocking copy, synchronize)."""
    import torch

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            run()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    syncs = [w for w in caught if SYNC_WARNING in str(w.message)]
    return len(syncs), dict(Counter(where(w.filename, w.lineno) for w in syncs).most_common())


def expected_syncs(steps: int, bar: bool) -> int:
    """The syncs eva/engine/loop.py chooses in an epoch of `steps`: with the bar 2 reads
    every BAR_EVERY steps; without it 1 every CHECK_EVERY (the NaN check); then END_READS."""
    from eva.engine.loop import CHECK_EVERY

    periodic = 2 * (steps // BAR_EVERY) if bar else steps // CHECK_EVERY
    return periodic + END_READS


def syncs_part(sizes: Sizes, device, threads) -> dict:
    if device.type != "cuda":
        return {"skipped": f"{device.type}: sync debug mode counts CUDA synchronisations only"}
    return measure_syncs(sizes, device, threads)


def measure_syncs(sizes: Sizes, device, threads) -> dict:
    """Syncs in eva's train_one_epoch (eager) over sync_steps batches of DeviceBatches, with
    the bar drawn and without; and in iterating those batches alone (the data's share)."""
    from overhead import terminal_stderr

    from eva.engine.loop import train_one_epoch
    from eva.optim import L1Penalty, build_optimizer, build_scheduler

    steps = sizes.sync_steps
    folder = Path(tempfile.mkdtemp(prefix="eva-gpu-syncs-"))
    try:
        data = data_overrides(steps * sizes.batch, sizes.batch, sizes.batch, real=False)
        cfg, rt = eva_runtime(eva_overrides(sizes, device, data, False, threads), folder)
        batches = rt.data.train

        def epoch(bar: bool) -> Callable[[], object]:
            optimizer = build_optimizer(cfg, rt.model)
            schedule = build_scheduler(cfg, optimizer, steps_per_epoch=len(batches))
            how = {"precision": rt.precision, "channels_last": cfg.channels_last}
            l1 = L1Penalty(rt.model, cfg.l1_weight)

            def run():
                with terminal_stderr() if bar else nullcontext():
                    train_one_epoch(
                        rt.net, batches, optimizer, schedule, rt.device, l1=l1, progress=bar, **how
                    )

            return run

        if len(batches) != steps:
            raise RuntimeError(f"{len(batches)} training batches, expected {steps}")
        epoch(False)()  # warm-up: cuDNN picks its kernels, the allocator fills its cache
        result: dict = {"steps": steps}
        for name, bar in (("bar", True), ("no_bar", False)):
            counted, lines = count_syncs(epoch(bar))
            expected = expected_syncs(steps, bar)
            result[name] = {"counted": counted, "expected": expected, "where": lines}
        counted, lines = count_syncs(lambda: [None for _ in batches])
        result["data_alone"] = {"counted": counted, "where": lines}
        result["per_100_steps"] = round(100 * result["bar"]["counted"] / steps, 1)
        result["expected_per_100_steps"] = round(100 * result["bar"]["expected"] / steps, 1)
        result["ok"] = all(result[k]["counted"] == result[k]["expected"] for k in ("bar", "no_bar"))
        return result
    finally:
        shutil.rmtree(folder, ignore_errors=True)


# `python -m eva ARGS` as runpy runs it, plus, at exit, what the job process took: its peak
# GPU memory and whether it imported a FORBIDDEN module (the sweep's jobs run in it).
SWEEP_MAIN = """
import atexit, json, os, runpy, sys
def _report():
    torch = sys.modules.get("torch")
    cuda = torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized()
    peak = torch.cuda.max_memory_allocated() if cuda else None
    loaded = sorted(m for m in FORBIDDEN if m in sys.modules)
    with open(os.environ["EVA_GPU_REPORT"], "w") as f:
        json.dump({"peak_bytes": peak, "forbidden_loaded": loaded}, f)
atexit.register(_report)
runpy.run_module("eva", run_name="__main__", alter_sys=True)
"""


def sweep_command(sizes: Sizes, device, folder: Path, threads) -> list[str]:
    device_spec = "cuda:0" if device.type == "cuda" else "cpu"  # both trials on the same GPU
    data = data_overrides(sizes.sweep_train, sizes.sweep_test, sizes.batch, real=False)
    overrides = eva_overrides(sizes, device_spec, data, False, threads)
    code = f"FORBIDDEN = {FORBIDDEN!r}\n{SWEEP_MAIN}"
    return [
        sys.executable,
        "-c",
        code,
        "-m",
        "hparams_search=optuna",
        "hydra/sweeper/pruner=none",  # a pruned trial would not be COMPLETE
        "hydra.sweeper.n_trials=2",
        f"hydra.sweeper.storage={folder / 'optuna.log'}",  # tracking off: no default storage
        f"hydra.sweep.dir={folder / 'multirun'}",
        f"scheduler.max_lr={SWEEP_SEARCH}",  # a sweep override wins over the preset's range
        *[o for o in overrides if not o.startswith("scheduler.max_lr=")],
        "progress=false",
    ]


def read_study(journal: Path) -> list:
    """The trials of the one study in an Optuna journal file, read with Optuna alone."""
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    storage = JournalStorage(JournalFileBackend(str(journal)))
    names = optuna.get_all_study_names(storage)
    if len(names) != 1:
        raise RuntimeError(f"{journal}: {len(names)} studies, expected 1")
    return optuna.load_study(study_name=names[0], storage=storage).get_trials(deepcopy=False)


def sweep_part(sizes: Sizes, device, threads, timeout: float) -> dict:
    """Two trials through the CLI in a temporary folder; the study and each trial's
    results.json read back: 2 COMPLETE trials whose values are their runs' objectives."""
    folder = Path(tempfile.mkdtemp(prefix="eva-gpu-sweep-"))
    log, report = folder / "sweep.log", folder / "report.json"
    command = sweep_command(sizes, device, folder, threads)
    env = {**child_env(), "EVA_GPU_REPORT": str(report)}
    start = time.perf_counter()
    with open(log, "w") as out:
        rc = subprocess.call(
            command, cwd=folder, env=env, stdout=out, stderr=subprocess.STDOUT, timeout=timeout
        )
    wall = time.perf_counter() - start
    shown = shlex.join(["python", "-m", "eva", *command[3:]])
    if rc != 0:
        return {"error": f"exit code {rc}", "command": shown, "log_tail": tail(log)}
    trials = read_study(folder / "optuna.log")
    states = Counter(t.state.name for t in trials)
    runs = []
    for t in trials:
        results = Path(t.user_attrs.get("output_dir", folder / "none")) / "results.json"
        if results.is_file():
            runs.append({"trial": t.number, "value": t.value, **json.loads(results.read_text())})
    job = json.loads(report.read_text())
    devices = [r["device"] for r in runs]
    agree = all(r["value"] == r["objective"] for r in runs)  # the study holds what ran
    result = {
        "states": dict(states),
        "complete": states["COMPLETE"],
        "results_json": len(runs),
        "devices": devices,
        "values": [r["value"] for r in runs],
        "objectives": [r["objective"] for r in runs],
        "forbidden_loaded": job["forbidden_loaded"],
        "peak_memory_mib": mib(job["peak_bytes"]),  # of the process both trials ran in
        "wall_seconds": round(wall, 1),
        "command": shown,
    }
    expected_device = "cuda:0" if device.type == "cuda" else "cpu"
    result["ok"] = (
        states["COMPLETE"] == 2
        and len(runs) == 2
        and agree
        and devices == [expected_device] * 2
        and not job["forbidden_loaded"]
    )
    if result["ok"]:
        shutil.rmtree(folder, ignore_errors=True)
    else:
        result["folder"], result["log_tail"] = str(folder), tail(log)
    return result


def tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError as e:
        return f"({path}: {e})"


def junit_outcomes(report: Path) -> dict[str, str]:
    """test name -> passed | failed | error | skipped, from pytest's --junitxml file."""
    outcomes = {}
    for case in ET.parse(report).iter("testcase"):
        kinds = [child.tag for child in case if child.tag in ("failure", "error", "skipped")]
        outcomes[case.get("name")] = (
            {"failure": "failed"}.get(kinds[0], kinds[0]) if kinds else "passed"
        )
    return outcomes


def gpu_tests_part(device, timeout: float) -> dict:
    if device.type != "cuda":
        return {"skipped": f"{device.type}: they skip without CUDA (the suite runs them)"}
    result = run_gpu_tests(timeout)
    result["ok"] = result["rc"] == 0 and set(result["tests"].values()) == {"passed"}
    return result


def run_gpu_tests(timeout: float) -> dict:
    """tests/test_gpu.py's GPU tests (the test_cuda_* ones: `-k cuda`), without the suite's
    conftest (--noconftest): it needs MLflow, which a bare GPU machine does not have."""
    with tempfile.TemporaryDirectory(prefix="eva-gpu-tests-") as folder:
        report = Path(folder) / "junit.xml"
        command = [sys.executable, "-m", "pytest", "-q", "--noconftest", "-p", "no:cacheprovider"]
        command += [f"--junitxml={report}", "-k", "cuda", "tests/test_gpu.py"]
        proc = subprocess.run(
            command, cwd=REPO, env=child_env(), capture_output=True, text=True, timeout=timeout
        )
        output = (proc.stdout + proc.stderr)[-4000:]
        if not report.is_file():
            return {"error": f"pytest exit code {proc.returncode}", "output_tail": output}
        outcomes = junit_outcomes(report)
    result = {"tests": outcomes, "counts": dict(Counter(outcomes.values())), "rc": proc.returncode}
    if proc.returncode != 0:
        result["output_tail"] = output
    return result


def imports_part() -> dict:
    """None of FORBIDDEN imported by this process, which ran the in-process parts."""
    loaded = sorted(name for name in FORBIDDEN if name in sys.modules)
    return {"checked": list(FORBIDDEN), "loaded": loaded, "ok": not loaded}


# --------------------------------------------------------------------------- the run


def failed(entry: dict) -> bool:
    return "error" in entry or entry.get("ok") is False


# The parts that use the GPU in this process (the sweep reports its job process's peak).
ON_THIS_GPU = ("throughput_eager", "syncs", "throughput_compile")


def run_part(name: str, part: Callable[[], dict], device, deadline: float) -> dict:
    """part()'s entry with its seconds (and peak GPU memory: ON_THIS_GPU); its error if it
    raised; not run at all once the deadline (time.perf_counter()) has passed."""
    if time.perf_counter() > deadline:
        return {"error": "not run: the --budget was spent before it"}
    print(f"gpu.py: {name} ...", file=sys.stderr, flush=True)
    reset_peak(device)
    start = time.perf_counter()
    try:
        entry = part()
    except Exception as e:
        lines = traceback.format_exc().splitlines()
        entry = {"error": f"{type(e).__name__}: {e}", "traceback": "\n".join(lines[-12:])}
    if name in ON_THIS_GPU and "skipped" not in entry:
        entry["peak_memory_mib"] = peak_mib(device)
    entry["seconds"] = round(time.perf_counter() - start, 1)
    return entry


def figures(name: str, entry: dict) -> str:
    """One part's result in a few words, for the table."""
    if "skipped" in entry:
        return f"skipped: {entry['skipped']}"
    if "error" in entry:
        return f"error: {entry['error']}"[:120]
    if name.startswith("throughput"):
        return (
            f"eva {entry['eva_img_per_s']:.0f} / plain {entry['plain_img_per_s']:.0f} img/s "
            f"= {entry['ratio']:.3f} (training loop alone {entry['train_ratio']:.3f})"
        )
    if name == "syncs":
        bar, no_bar = entry["bar"], entry["no_bar"]
        return (
            f"per {entry['steps']} steps: {bar['counted']} with the bar (eva's {bar['expected']}), "
            f"{no_bar['counted']} without ({no_bar['expected']}); data alone "
            f"{entry['data_alone']['counted']}"
        )
    if name == "sweep":
        runs = f"{entry['results_json']} results.json on {entry['devices']}"
        return f"{entry['complete']}/2 COMPLETE, {runs}"
    if name == "gpu_tests":
        return ", ".join(f"{n} {kind}" for kind, n in sorted(entry["counts"].items()))
    if name == "imports":
        return f"loaded: {entry['loaded']}" if entry["loaded"] else f"none of {entry['checked']}"
    return ""


def write_out(result: dict) -> None:
    """$OUT/gpu.json (the device machine sends $OUT back), when $OUT is set."""
    out = os.environ.get("OUT")
    if out:
        Path(out).mkdir(parents=True, exist_ok=True)
        Path(out, "gpu.json").write_text(json.dumps(result, indent=1, sort_keys=True) + "\n")


def check(args, device, sizes: Sizes, install: dict | None) -> dict:
    """Every part in turn; the result as it stands is written out after each."""
    real = (data_root() / "cifar-10-batches-py").is_dir()
    threads = args.threads
    budget_end = time.perf_counter() + args.budget

    def left() -> float:
        """Seconds a child process may run: what the budget has left, and a minute."""
        return max(30.0, budget_end - time.perf_counter() + 60)

    parts = {
        "throughput_eager": lambda: throughput_part(sizes, device, False, threads, real),
        "syncs": lambda: syncs_part(sizes, device, threads),
        "sweep": lambda: sweep_part(sizes, device, threads, timeout=left()),
        "throughput_compile": lambda: (
            throughput_part(sizes, device, True, threads, real)
            if device.type == "cuda"
            else {"skipped": f"{device.type}: inductor's compilation takes minutes here"}
        ),
        "gpu_tests": lambda: gpu_tests_part(device, timeout=left()),
        "imports": imports_part,
    }
    result = {
        "benchmark": "gpu",
        "device": str(device),
        "quick": args.quick,
        "sizes": asdict(sizes),
        "install": install,
        "parts": {},
        "machine": machine(),
    }
    for name, part in parts.items():
        result["parts"][name] = run_part(name, part, device, budget_end)
        result["failed"] = [n for n, e in result["parts"].items() if failed(e)]
        write_out(result)
    return result


def main(argv: list[str] | None = None) -> int:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    p.add_argument(
        "--budget", type=float, default=DEFAULT_BUDGET, help="seconds (see DEFAULT_BUDGET)"
    )
    p.add_argument("--wheels", metavar="DIR", help="download the wheels into DIR, then stop")
    p.add_argument("--python-version", default="3.12", help="of the wheels (--wheels)")
    p.add_argument("--install", metavar="DIR", help="first install the missing wheels from DIR")
    args = p.parse_args(argv)
    if args.wheels:
        built = build_wheels(Path(args.wheels), args.python_version)
        rows = [
            [name, f"{(Path(args.wheels) / name).stat().st_size / 1024:.0f}"]
            for name in built["wheels"]
        ]
        print(table(["wheel", "KiB"], rows))
        command = f"python3 benchmarks/gpu.py --install {args.wheels} --device cuda"
        print(f"{built['mib']} MiB in {args.wheels}; on the GPU machine, in the checkout:")
        print(f"  {command}")
        emit({**built, "command": command})
        return 0
    install = install_missing(Path(args.install)) if args.install else None
    import torch

    set_threads(args.threads)
    if args.device == "cuda" and not torch.cuda.is_available():
        result = {"benchmark": "gpu", "error": "--device cuda: torch sees no CUDA device"}
        emit({**result, "failed": ["device"], "machine": machine()})
        return 1
    device = torch.device("cuda:0" if args.device == "cuda" else "cpu")
    sizes = SIZES[(device.type, args.quick)]
    result = check(args, device, sizes, install)
    rows = [
        [name, "FAILED" if failed(e) else "skipped" if "skipped" in e else "ok",
         figures(name, e), e.get("peak_memory_mib") or "-", e["seconds"]]
        for name, e in result["parts"].items()
    ]  # fmt: skip
    print(table(["part", "result", "figures", "peak MiB", "s"], rows))
    emit(result)
    return 1 if result["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
