"""The GPU check (benchmarks/gpu.py), and what eva does on a CUDA GPU.

Everywhere: the check's quick run on the CPU with mlflow, albumentations and cv2 made
unimportable (every part present, the sweep's 2 COMPLETE trials), its pure parts (the
syncs eva's loop should make, the sync counter, the plain loop's augmentation, the wheel
install) and its pytest runner. On a CUDA GPU only, the test_cuda_* tests (benchmarks/gpu.py
runs them there with `-k cuda`): bf16 and fp16 steps, channels_last, torch.compile, the
batch augmentation on the GPU, one trial per GPU.

No fixture of tests/conftest.py is used: on a bare GPU machine the file runs with
--noconftest (the conftest needs MLflow).
"""

import copy
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import warnings
import zipfile
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

REPO = Path(__file__).resolve().parents[1]
BENCHMARKS = REPO / "benchmarks"
if str(BENCHMARKS) not in sys.path:
    sys.path.insert(0, str(BENCHMARKS))  # gpu.py imports `common` and `overhead` from there

import gpu  # noqa: E402  (benchmarks/gpu.py)

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

# sitecustomize.py for the quick run: importing any of gpu.FORBIDDEN raises ImportError.
BLOCKER = f"""
import sys

BLOCKED = {gpu.FORBIDDEN!r}


class Blocker:
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in BLOCKED:
            raise ImportError(f"{{name}} is blocked: the GPU check must not import it")
        return None


sys.meta_path.insert(0, Blocker())
"""
PARTS = {"throughput_eager", "syncs", "sweep", "throughput_compile", "gpu_tests", "imports"}


def blocked_env(folder: Path) -> dict[str, str]:
    (folder / "sitecustomize.py").write_text(BLOCKER)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(folder), env.get("PYTHONPATH")]))
    return env


# --------------------------------------------------------------------------- the quick run


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    """(exit code, last stdout line as JSON, $OUT/gpu.json, stdout) of
    `gpu.py --device cpu --quick` with the forbidden imports blocked."""
    folder = tmp_path_factory.mktemp("gpu-quick")
    env = {**blocked_env(folder), "OUT": str(folder / "out")}
    command = [sys.executable, str(BENCHMARKS / "gpu.py"), "--device", "cpu", "--quick"]
    proc = subprocess.run(
        [*command, "--threads", "1"], cwd=folder, env=env, capture_output=True, text=True,
        timeout=180,
    )  # fmt: skip
    assert proc.stdout, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    written = folder / "out" / "gpu.json"
    return proc.returncode, result, json.loads(written.read_text()), proc.stdout


def test_the_blocker_blocks(tmp_path):
    """Without this the quick run below would prove nothing about the imports."""
    proc = subprocess.run(
        [sys.executable, "-c", "import albumentations"],
        env=blocked_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 1 and "albumentations is blocked" in proc.stderr


def test_quick_run_on_cpu(quick_run):
    rc, result, written, stdout = quick_run
    parts = result["parts"]
    assert rc == 0 and result["failed"] == [], json.dumps(parts, indent=1)[:3000]
    assert set(parts) == PARTS
    assert written == result  # $OUT/gpu.json: what the device machine sends back
    rows = {line.split("|")[1].strip(): line for line in stdout.splitlines() if "|" in line}
    assert "| ok " in rows["sweep"] and "| skipped " in rows["syncs"]  # the table for people
    assert result["device"] == "cpu" and result["machine"]["cuda"] is None
    assert parts["imports"]["loaded"] == [] and parts["imports"]["ok"] is True


def test_quick_run_throughput_figures(quick_run):
    eager = quick_run[1]["parts"]["throughput_eager"]
    sizes = quick_run[1]["sizes"]
    assert eager["images"] == sizes["train"] and eager["batch_size"] == sizes["batch"]
    for key in ("eva_img_per_s", "plain_img_per_s", "eva_train_img_per_s", "plain_train_img_per_s"):
        assert isinstance(eager[key], float) and eager[key] > 0
    assert eager["ratio"] == pytest.approx(eager["eva_img_per_s"] / eager["plain_img_per_s"], 1e-3)
    # img/s is images over the median measured epoch, one per repeat (the warm-up left out)
    epochs = eager["seconds_per_epoch"]
    assert all(len(epochs[side]) == sizes["repeats"] for side in ("eva", "plain"))
    assert eager["eva_img_per_s"] == pytest.approx(sizes["train"] / epochs["eva"][0], 1e-3)


def test_quick_run_sweep_has_two_complete_trials_and_their_runs(quick_run):
    sweep = quick_run[1]["parts"]["sweep"]
    assert sweep["ok"] and sweep["states"] == {"COMPLETE": 2}
    assert sweep["results_json"] == 2 and sweep["devices"] == ["cpu", "cpu"]
    assert sweep["values"] == sweep["objectives"]  # each trial's value is its run's objective
    assert "python -m eva -m hparams_search=optuna" in sweep["command"]
    assert "tracking.enabled=false" in sweep["command"]
    assert "augment.backend=torch" in sweep["command"]
    assert sweep["forbidden_loaded"] == []


def test_quick_run_skips_what_needs_a_gpu_and_says_why(quick_run):
    parts = quick_run[1]["parts"]
    for name in ("syncs", "throughput_compile", "gpu_tests"):
        assert parts[name]["skipped"].startswith("cpu: "), parts[name]
        assert "error" not in parts[name]


# --------------------------------------------------------------------------- the syncs


def test_expected_syncs_are_the_reads_evas_loop_makes(monkeypatch):
    """On the CPU each .item() is what a host-device sync is on a GPU: eva's loop makes
    exactly gpu.expected_syncs() of them over 100 steps, with the bar drawn and without."""
    from overhead import terminal_stderr

    from eva.data.loaders import TensorBatches
    from eva.engine.loop import train_one_epoch

    class Steps:  # the schedule's per-batch hook, nothing else
        def step_batch(self):
            pass

    reads = []
    item = torch.Tensor.item
    monkeypatch.setattr(torch.Tensor, "item", lambda t: reads.append(1) or item(t))
    images = torch.randint(0, 256, (200, 4, 4, 3), dtype=torch.uint8).numpy()
    labels = torch.randint(0, 10, (200,)).numpy()
    batches = TensorBatches(images, labels, [0.5] * 3, [0.25] * 3, 2, True, torch.Generator())
    model = nn.Sequential(nn.Flatten(), nn.Linear(48, 10))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    for bar in (True, False):
        reads.clear()
        with terminal_stderr():  # a terminal: tqdm draws the bar when progress is on
            train_one_epoch(model, batches, optimizer, Steps(), torch.device("cpu"), progress=bar)
        assert len(reads) == gpu.expected_syncs(100, bar)
    assert gpu.expected_syncs(100, True) == 23 and gpu.expected_syncs(100, False) == 5


def warn_sync():
    warnings.warn("called a synchronizing CUDA operation", stacklevel=1)


def test_count_syncs_counts_each_warning_by_line_and_restores_the_mode(monkeypatch):
    modes = []
    monkeypatch.setattr(torch.cuda, "set_sync_debug_mode", modes.append)

    direct = []

    def run():
        for _ in range(3):
            warn_sync()
        warnings.warn("something else", stacklevel=1)  # not a sync
        direct.append(sys._getframe().f_lineno + 1)
        warnings.warn("called a synchronizing CUDA operation", stacklevel=1)

    counted, where = gpu.count_syncs(run)
    line = warn_sync.__code__.co_firstlineno + 1
    assert counted == 4 and modes == ["warn", "default"]
    assert where == {f"tests/test_gpu.py:{line}": 3, f"tests/test_gpu.py:{direct[0]}": 1}
    with pytest.raises(ZeroDivisionError):
        gpu.count_syncs(lambda: 1 / 0)
    assert modes[-1] == "default"  # sync debug mode off again after a failure


def test_measure_syncs_runs_evas_loop_for_its_steps(monkeypatch):
    """The GPU part's code path on the CPU (no sync to count here): the runtime, the epochs
    with and without the bar, the data alone; the expected counts for its steps."""
    monkeypatch.setattr(torch.cuda, "set_sync_debug_mode", lambda mode: None)
    sizes = gpu.SIZES[("cpu", True)]
    result = gpu.measure_syncs(sizes, torch.device("cpu"), threads=1)
    steps = sizes.sync_steps
    assert result["steps"] == steps
    assert result["bar"] == {"counted": 0, "expected": gpu.expected_syncs(steps, True), "where": {}}
    assert result["no_bar"]["expected"] == gpu.expected_syncs(steps, False)
    assert result["ok"] is False  # 0 counted: no CUDA here


# --------------------------------------------------------------------------- the plain loop


def source_of(codes: torch.Tensor, keep: torch.Tensor, dim: int) -> torch.Tensor:
    """Per output row (dim 0) or column (dim 1): the one source index its kept pixels name."""
    lines = [codes[i][keep[i]] if dim == 0 else codes[:, i][keep[:, i]] for i in range(len(codes))]
    assert all(len(line.unique()) == 1 for line in lines)  # each line is one source line
    return torch.stack([line[0] for line in lines]).long()


def test_plain_augment_crops_reflected_flips_and_cuts_one_hole():
    """Each input pixel holds its own row (channel 0) and column (channel 1), so every
    output pixel tells where it came from: a shift within +-4 reflected at the edges, a
    mirror or not, and either no hole or one 8x8 square of the fill (255: no pixel's code)."""
    torch.manual_seed(0)
    size, b = 16, 64
    ar = torch.arange(size, dtype=torch.uint8)
    image = torch.stack(
        [ar.view(-1, 1).expand(size, size), ar.view(1, -1).expand(size, size),
         torch.zeros(size, size, dtype=torch.uint8)]
    )  # fmt: skip
    fill = torch.tensor([255, 255, 255], dtype=torch.uint8)
    out = gpu.plain_augment(image.expand(b, 3, size, size).contiguous(), fill)
    assert out.shape == (b, 3, size, size) and out.dtype == torch.uint8
    shifts = [gpu.reflect_101(torch.arange(size) + d, size) for d in range(-4, 5)]
    holes = flips = 0
    for img in out:
        hole = (img == 255).all(0)
        if hole.any():  # one square: 64 pixels inside an 8 x 8 bounding box
            r, c = hole.nonzero().unbind(1)
            assert hole.sum() == 64 and r.max() - r.min() == 7 and c.max() - c.min() == 7
            holes += 1
        rows, cols = source_of(img[0], ~hole, 0), source_of(img[1], ~hole, 1)
        assert any(torch.equal(rows, s) for s in shifts)
        mirrored = any(torch.equal(cols, s.flip(0)) for s in shifts)
        assert mirrored or any(torch.equal(cols, s) for s in shifts)
        flips += mirrored
    assert 16 < holes < 48 and 16 < flips < 48  # p 0.5 each, of 64: far from 0 and from all


# --------------------------------------------------------------------------- the wheels


def fake_wheel(folder: Path, name: str = "evagpufake", version: str = "1.0") -> Path:
    """A minimal pure-Python wheel: one module with VALUE = 42, and its metadata."""
    path = folder / f"{name}-{version}-py3-none-any.whl"
    info = f"{name}-{version}.dist-info"
    files = {
        f"{name}/__init__.py": "VALUE = 42\n",
        f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
        f"{info}/WHEEL": "Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    files[f"{info}/RECORD"] = "".join(f"{f},,\n" for f in [*files, f"{info}/RECORD"])
    with zipfile.ZipFile(path, "w") as archive:
        for member, text in files.items():
            archive.writestr(member, text)
    return path


def test_wheel_file_finds_one_wheel_by_its_normalised_name(tmp_path):
    (tmp_path / "antlr4_python3_runtime-4.9.3-py3-none-any.whl").write_bytes(b"")
    (tmp_path / "PyYAML-6.0.3-cp312-cp312-manylinux_2_17_x86_64.whl").write_bytes(b"")
    assert gpu.wheel_file(tmp_path, "antlr4-python3-runtime").name.startswith("antlr4_")
    assert gpu.wheel_file(tmp_path, "PyYAML").name.startswith("PyYAML-6.0.3-cp312")
    (tmp_path / "pyyaml-6.0.4-cp311-cp311-manylinux_2_17_x86_64.whl").write_bytes(b"")
    with pytest.raises(FileNotFoundError, match="2 wheels of PyYAML"):
        gpu.wheel_file(tmp_path, "PyYAML")
    with pytest.raises(FileNotFoundError, match="0 wheels of optuna"):
        gpu.wheel_file(tmp_path, "optuna")


@pytest.mark.parametrize("how", ["pip", "unzip"])
def test_install_missing_installs_only_what_is_missing(tmp_path, monkeypatch, how):
    fake_wheel(tmp_path)
    monkeypatch.setattr(gpu, "RUN_NEEDS", ("evagpufake", "torch"))  # torch is installed
    monkeypatch.setattr(gpu, "TEST_NEEDS", ())
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # the site folder goes there
    monkeypatch.setenv("PYTHONPATH", "/elsewhere")
    if how == "unzip":  # a Python without pip: the wheels are unpacked
        find_spec = importlib.util.find_spec
        monkeypatch.setattr(
            importlib.util, "find_spec", lambda n, *a: None if n == "pip" else find_spec(n, *a)
        )
    done = gpu.install_missing(tmp_path)
    assert done["installed"] == ["evagpufake"] and done["how"] == how
    assert sys.path[0] == done["target"] and Path(done["target"]).parent == tmp_path
    assert os.environ["PYTHONPATH"] == os.pathsep.join([done["target"], "/elsewhere"])
    proc = subprocess.run(  # a child process (the sweep, pytest) imports it and sees it installed
        [sys.executable, "-c", "import evagpufake, importlib.metadata as m; "
         "print(evagpufake.VALUE, m.version('evagpufake'))"],
        env=gpu.child_env(), capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.stdout.split() == ["42", "1.0"], proc.stderr
    assert gpu.install_missing(tmp_path)["installed"] == []  # now it is there: nothing to do


def test_every_needed_distribution_is_pinned_here():
    """--wheels downloads this environment's version of each: each must be installed."""
    for name in (*gpu.RUN_NEEDS, *gpu.TEST_NEEDS):
        assert gpu.installed(name), name
    assert set(gpu.SDIST_ONLY) <= set(gpu.RUN_NEEDS)


# --------------------------------------------------------------------------- the GPU tests


@pytest.mark.skipif(torch.cuda.is_available(), reason="on a GPU the test_cuda_* tests run")
def test_gpu_tests_run_without_the_suites_conftest():
    """What gpu.py runs on the GPU machine: here every test_cuda_* test is collected, runs
    without conftest.py's fixtures and skips, and nothing else is selected."""
    result = gpu.run_gpu_tests(timeout=120)
    names = {name for name in globals() if name.startswith("test_cuda_")}
    assert result["rc"] == 0, result.get("output_tail")
    assert len(names) >= 6 and result["tests"] == dict.fromkeys(names, "skipped")


# --------------------------------------------------------------------------- on a CUDA GPU


def small_resnet():
    from eva.models.custom_resnet import CustomResNet

    torch.manual_seed(0)
    return CustomResNet(width=8).cuda()


def fixed_batch(n: int = 64):
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(n, 3, 32, 32, generator=generator).cuda()
    return x, torch.randint(0, 10, (n,), generator=generator).cuda()


def train_steps(model, precision, x, y, steps: int = 10, layout=torch.preserve_format):
    """Losses of `steps` steps on one batch through eva's Precision (autocast, scaler)."""
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)  # memorises the batch in ~10
    losses = []
    for _ in range(steps):
        with precision.autocast():
            logits = model(x.to(memory_format=layout))
            loss = F.cross_entropy(logits, y)
        optimizer.zero_grad(set_to_none=True)
        precision.backward_step(loss, optimizer)
        losses.append(loss.item())
    return losses, logits


@cuda
def test_cuda_bf16_steps_lower_the_loss_with_fp32_weights():
    from eva.engine.precision import build_precision

    model = small_resnet()
    precision = build_precision("bf16", torch.device("cuda"))
    assert precision.scaler is None  # bf16 has fp32's range: nothing to scale
    losses, logits = train_steps(model, precision, *fixed_batch())
    assert logits.dtype == torch.bfloat16 and logits.is_cuda
    assert all(torch.isfinite(torch.tensor(losses))) and losses[-1] < losses[0] / 2
    assert {p.dtype for p in model.parameters()} == {torch.float32}


@cuda
def test_cuda_fp16_steps_go_through_the_grad_scaler():
    from eva.engine.precision import build_precision

    model = small_resnet()
    precision = build_precision("fp16", torch.device("cuda"))
    scaler = precision.scaler
    assert scaler is not None and scaler.is_enabled() and scaler.get_scale() == 2.0**16
    losses, logits = train_steps(model, precision, *fixed_batch())
    assert logits.dtype == torch.float16
    assert all(torch.isfinite(torch.tensor(losses))) and losses[-1] < losses[0] / 2
    # An overflowing gradient: the scaler skips the step and halves its scale.
    before = [p.detach().clone() for p in model.parameters()]
    scale = scaler.get_scale()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    x, y = fixed_batch()
    with precision.autocast():
        loss = F.cross_entropy(model(x), y) * float("inf")
    optimizer.zero_grad(set_to_none=True)
    precision.backward_step(loss, optimizer)
    assert scaler.get_scale() == scale / 2
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))


@cuda
def test_cuda_channels_last_keeps_nhwc_and_computes_the_same(monkeypatch):
    from eva.engine.precision import memory_format

    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)  # exact enough to compare
    nchw = small_resnet().eval()
    nhwc = copy.deepcopy(nchw).to(memory_format=torch.channels_last)
    x, _ = fixed_batch(16)
    seen = {}
    nhwc.prep.register_forward_hook(lambda m, i, out: seen.update(out=out))
    with torch.no_grad():
        expected = nchw(x)
        got = nhwc(x.to(memory_format=memory_format(True)))
    assert nhwc.prep[0].weight.is_contiguous(memory_format=torch.channels_last)
    assert seen["out"].is_contiguous(memory_format=torch.channels_last)
    assert not seen["out"].is_contiguous()  # NHWC really, not a layout both formats share
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)


@cuda
def test_cuda_compile_trains_and_saves_plain_checkpoints(tmp_path, monkeypatch):
    from torch._dynamo.utils import counters

    from eva.config import compose_config
    from eva.engine.checkpoint import load_checkpoint
    from eva.modes import runtime
    from eva.modes.train import train

    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)  # matmuls: off by default
    overrides = [
        "model=custom_resnet", "model.width=8", "dataset=synthetic", "dataset.train_size=256",
        "dataset.test_size=128", "batch_size=64", "epochs=2", "compile=true", "device=cuda",
        "tracking.enabled=false", "report.enabled=false", "progress=false",
    ]  # fmt: skip
    cfg = compose_config(overrides)
    counters.clear()
    results = train(cfg, tmp_path / "run")
    assert counters["stats"]["unique_graphs"] >= 2  # dynamo captured (train, eval) graphs
    assert results["device"].startswith("cuda") and results["epochs_completed"] == 2
    assert all(torch.isfinite(torch.tensor(row["train_loss"])) for row in results["history"])
    state = load_checkpoint(Path(results["best_checkpoint"]))["model"]
    assert not any(key.startswith("_orig_mod.") for key in state)  # loads without compile
    rt = runtime.start(cfg, tmp_path / "direct")
    runtime.build(rt)
    assert isinstance(rt.net, torch._dynamo.eval_frame.OptimizedModule)
    assert rt.net._orig_mod is rt.model
    x, _ = fixed_batch(64)
    rt.model.eval()
    with torch.no_grad():
        torch.testing.assert_close(rt.net(x), rt.model(x), rtol=1e-3, atol=1e-3)


@cuda
def test_cuda_batch_augment_gives_the_cpus_pixels_and_batches():
    from eva.data.batched import BatchAugment, DeviceBatches

    augment = BatchAugment(
        32, [0.5, 0.5, 0.5], hflip_p=0.5, pad=4, cutout_size=8, cutout_p=0.5, affine_p=0.5
    )
    images = torch.randint(0, 256, (128, 3, 32, 32), dtype=torch.uint8)
    on_cpu = augment(images, torch.Generator().manual_seed(7))
    on_gpu = augment(images.cuda(), torch.Generator().manual_seed(7))
    assert on_gpu.is_cuda and on_gpu.dtype == torch.uint8 and on_gpu.shape == images.shape
    assert not torch.equal(on_cpu, images)
    diff = (on_gpu.cpu().int() - on_cpu.int()).abs()
    # The same draws (made on the CPU): equal pixels, but for the odd warped pixel whose
    # float rounding lands the other way (eva/data/batched.py).
    assert diff.max() <= 1 and (diff > 0).float().mean() < 1e-2
    hwc = images.permute(0, 2, 3, 1).numpy()
    labels = torch.arange(128).numpy() % 10

    def first_batch(device):
        generator = torch.Generator().manual_seed(3)
        batches = DeviceBatches(hwc, labels, [0.5] * 3, [0.25] * 3, 64, device, augment, generator)
        return next(iter(batches))

    (x_gpu, y_gpu), (x_cpu, y_cpu) = first_batch(torch.device("cuda")), first_batch(None)
    assert x_gpu.is_cuda and y_gpu.is_cuda and x_gpu.dtype == torch.float32
    assert torch.equal(y_gpu.cpu(), y_cpu)
    torch.testing.assert_close(x_gpu.cpu(), x_cpu, atol=1 / 255 / 0.25 + 1e-6, rtol=0)


@cuda
def test_cuda_one_trial_per_gpu(tmp_path, monkeypatch):
    from eva.config import compose_config
    from eva.engine.device import resolve_device, slot_device
    from eva.modes import runtime
    from eva.sweep.integration import SLOT_ENV, SLOTS_ENV, slot_from_env
    from eva.tracking import Launch

    count = torch.cuda.device_count()
    for slot in range(2 * count):  # slot k on GPU k, wrapping around
        assert slot_device("auto", slot) == f"cuda:{slot % count}"
    assert slot_device("cuda:0", 1) == "cuda:0" and slot_device("auto", None) == "auto"
    # The job in the slot after the last GPU's, as the sweeper tells it: back on GPU 0.
    monkeypatch.setenv(SLOT_ENV, str(count))
    monkeypatch.setenv(SLOTS_ENV, str(count + 1))
    slot, slots = slot_from_env()
    threads = torch.get_num_threads()  # runtime.start gives each of `slots` jobs a share
    try:
        cfg = compose_config(["model=custom_resnet", "model.width=8", "tracking.enabled=false"])
        rt = runtime.start(cfg, tmp_path, Launch(slot=slot, slots=slots))
    finally:
        torch.set_num_threads(threads)
    assert (slot, slots) == (count, count + 1)
    assert rt.device == resolve_device("cuda:0") == torch.device("cuda", 0)
    assert torch.zeros(1, device=rt.device).device.index == 0
