"""The speed options' logic on a CPU: precision, channels_last, compile, DataLoader workers,
start-up timing, eva's own --help, and the benchmark scripts (run tiny, never timed here)."""

import runpy
import subprocess
import sys
import time

import pytest
import torch
from helpers import REPO, TINY_CLI

from eva.engine.checkpoint import load_checkpoint
from eva.engine.device import auto_workers
from eva.engine.precision import build_precision, compiled
from eva.errors import EvaError
from eva.models import build_model
from eva.modes.train import train

NO_TRACKING = ["tracking.enabled=false"]


def tiny(compose, *extra):
    return compose(*TINY_CLI, *NO_TRACKING, *extra)


def losses(results: dict) -> list[float]:
    return [row["train_loss"] for row in results["history"]]


def test_autocast_runs_the_forward_pass_in_the_asked_dtype():
    conv = torch.nn.Conv2d(3, 4, 3)
    x = torch.randn(2, 3, 8, 8)
    for name, dtype in [("fp32", torch.float32), ("bf16", torch.bfloat16), ("fp16", torch.float16)]:
        precision = build_precision(name, torch.device("cpu"))
        with precision.autocast():
            assert conv(x).dtype == dtype
        assert (precision.scaler is not None) == (name == "fp16")  # only fp16 scales the loss
    with pytest.raises(EvaError, match="precision='fp8': expected one of fp32, bf16, fp16"):
        build_precision("fp8", torch.device("cpu"))


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_trains_and_fp16_keeps_its_loss_scale_in_last_pt(
    compose, tmp_path, precision
):
    fp32 = train(tiny(compose, "epochs=2"), tmp_path / "fp32")
    mixed = train(tiny(compose, "epochs=2", f"precision={precision}"), tmp_path / precision)
    assert all(0 < loss < 10 for loss in losses(mixed))
    assert losses(mixed) != losses(fp32)  # autocast really changed the arithmetic
    assert losses(mixed) == pytest.approx(losses(fp32), rel=0.05)  # ... and only a little
    scaler = load_checkpoint(tmp_path / precision / "checkpoints" / "last.pt")["scaler"]
    if precision == "fp16":
        assert scaler["scale"] > 0 and "_growth_tracker" in scaler  # resume=true restores it
    else:
        assert scaler is None


def test_channels_last_gives_the_same_run(compose, tmp_path):
    plain = train(tiny(compose), tmp_path / "plain")
    nhwc = train(tiny(compose, "channels_last=true"), tmp_path / "nhwc")
    assert losses(nhwc) == pytest.approx(losses(plain), rel=1e-4)
    weights = load_checkpoint(nhwc["best_checkpoint"])["model"]
    model = build_model(tiny(compose).model, 3, 10)
    model.load_state_dict(weights)  # the checkpoint loads into a plain model


def test_compile_wraps_the_model_and_checkpoints_stay_plain(compose, tmp_path, monkeypatch):
    calls = []
    real_compile = torch.compile

    def eager_compile(model, **kwargs):  # inductor would compile C++ for a minute here
        calls.append(kwargs)
        return real_compile(model, backend="eager")

    monkeypatch.setattr(torch, "compile", eager_compile)
    results = train(tiny(compose, "compile=true"), tmp_path / "compiled")
    assert len(calls) == 1
    weights = load_checkpoint(results["best_checkpoint"])["model"]
    assert not any(key.startswith("_orig_mod.") for key in weights)
    last = load_checkpoint(tmp_path / "compiled" / "checkpoints" / "last.pt")["model"]
    assert weights.keys() == last.keys()


def test_compiled_module_shares_the_parameters_of_the_model():
    model = torch.nn.Linear(4, 2)
    net = compiled(model, True, backend="eager")
    assert net is not model and net(torch.ones(1, 4)).shape == (1, 2)
    assert list(net.parameters())[0] is model.weight  # the optimizer trains both
    assert compiled(model, False) is model


def test_dataloader_workers_auto_feed_a_gpu_and_leave_a_cpu_to_the_net(monkeypatch):
    monkeypatch.setattr("eva.engine.device.cpu_count", lambda: 16)
    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    assert auto_workers(None, cpu) == 0
    assert auto_workers(None, cuda) == 8  # at most 8
    assert auto_workers(None, cuda, slots=4) == 3  # a sweep slot's share, one core for the loop
    assert auto_workers(3, cpu) == 3  # dataset.num_workers=N wins
    monkeypatch.setattr("eva.engine.device.cpu_count", lambda: 1)
    assert auto_workers(None, cuda) == 1


@pytest.fixture
def collector():
    """The test process's collector as it was, whatever start-up did to it."""
    import gc

    gc.unfreeze()  # earlier in-process commands (tests/test_errors.py) froze this process
    yield gc
    gc.unfreeze()
    gc.enable()


def test_start_up_pauses_the_collector_until_the_first_loop(collector):
    from eva.cli import startup
    from eva.engine.loop import evaluate

    startup.pause_gc()
    assert not collector.isenabled()
    made = [[i] for i in range(1000)]  # what start-up builds: modules, configs, the net
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 10))
    batches = [(torch.zeros(4, 3, 2, 2), torch.zeros(4, dtype=torch.long))]
    evaluate(net, batches, torch.device("cpu"))
    assert collector.isenabled()  # the first loop resumed it ...
    assert collector.get_freeze_count() >= len(made)  # ... with start-up's objects frozen
    startup.resume_gc()  # every loop calls it: a no-op from then on
    assert collector.isenabled()


def test_a_collector_turned_off_by_the_caller_stays_off(collector):
    from eva.cli import startup

    collector.disable()
    startup.pause_gc()
    startup.resume_gc()
    assert not collector.isenabled() and collector.get_freeze_count() == 0


@pytest.mark.parametrize("launcher, resumed", [("JoblibLauncher", True), ("BasicLauncher", False)])
def test_a_sweep_whose_jobs_run_elsewhere_resumes_the_collector(collector, launcher, resumed):
    """With joblib the sweep's own process runs no loop: its start-up ends with the sweep's.
    With the basic launcher its first job's loop resumes the collector."""
    from omegaconf import OmegaConf

    from eva.cli import startup
    from eva.tracking.callback import MlflowSweepCallback

    config = OmegaConf.create(
        {
            "hydra": {"launcher": {"_target_": f"some.where.{launcher}"}},
            "resume": False,
            "tracking": {"enabled": False},
        }
    )
    startup.pause_gc()
    MlflowSweepCallback().on_multirun_start(config)
    assert collector.isenabled() == resumed
    startup.resume_gc()


def test_the_command_line_resumes_the_collector_however_it_ends(collector):
    from eva.cli.errors import run
    from eva.errors import EvaError as Bad

    seen = []

    def main():
        seen.append(collector.isenabled())
        raise Bad("epochs=0: must be at least 1")

    with pytest.raises(SystemExit):
        run(main)  # one line on stderr, exit 1, and no loop ever ran
    assert seen == [False]  # paused while the command started
    assert collector.isenabled()


def test_help_is_evas_own_lists_real_groups_and_shows_the_overrides(tmp_path):
    start = time.perf_counter()
    r = subprocess.run(
        [sys.executable, str(REPO / "train.py"), "--help", "model=ultimus", "epochs=2"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr
    assert time.perf_counter() - start < 30  # a sanity bound, not a speed target
    out = r.stdout
    assert "model           custom_resnet, resnet18, session6, ultimus" in out
    assert "experiment      quickstart, session6, session9, session10, session11" in out
    assert "schema" not in out  # Hydra's help lists the internal schema/* groups
    assert "Config with model=ultimus epochs=2" in out
    assert "_target_: eva.models.ultimus.UltimusNet" in out and "epochs: 2" in out
    assert not list(tmp_path.iterdir())  # no outputs/ folder: nothing ran


def test_help_with_a_bad_override_is_one_line(tmp_path):
    r = subprocess.run(
        [sys.executable, str(REPO / "train.py"), "--help", "model=nosuch"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert r.returncode == 1
    assert r.stderr.strip().splitlines() == [
        "Error: model=nosuch: no such option (available: custom_resnet, resnet18, session6, "
        "ultimus; your own: hydra.searchpath=[file://$PWD/conf] with conf/model/*.yaml)"
    ]


def run_benchmark(name: str, args: list[str], capsys) -> tuple[str, dict]:
    import json

    sys.path.insert(0, str(REPO / "benchmarks"))
    saved = sys.argv
    sys.argv = [name, *args]
    try:
        runpy.run_path(str(REPO / "benchmarks" / name), run_name="__main__")
    finally:
        sys.argv = saved
        sys.path.remove(str(REPO / "benchmarks"))
    out = capsys.readouterr().out
    return out, json.loads(out.strip().splitlines()[-1])  # the last line is the JSON


def test_overhead_benchmark_runs_tiny_and_ends_with_its_json(capsys, mlflow_store):
    out, result = run_benchmark(
        "overhead.py",
        ["--images", "96", "--test-images", "32", "--batch-size", "32", "--repeats", "1"]
        + ["--threads", "1", "--tracking-uri", mlflow_store],
        capsys,
    )
    assert "| eva " in out and "| plain " in out
    assert result["benchmark"] == "overhead" and result["ratio"] > 0
    assert len(result["eva_seconds"]) == len(result["plain_seconds"]) == 1


def test_startup_benchmark_runs_tiny_and_ends_with_its_json(capsys):
    out, result = run_benchmark(
        "startup.py", ["--dataset", "synthetic", "--repeats", "1", "--threads", "1"], capsys
    )
    assert result["benchmark"] == "startup" and result["dataset"] == "synthetic"
    seconds = result["seconds_to_first_batch"]
    plain = result["plain_pytorch_seconds_to_first_batch"]
    assert 0 < plain and 0 < seconds < 120  # from results.json's startup_seconds
    assert result["ratio_to_plain"] == pytest.approx(seconds / plain, abs=2e-3)
    for row in ("first launch here", "MLflow on", "tracking.enabled=false", "plain PyTorch"):
        assert f"| {row}" in out
    assert result["help_seconds"] > 0 and result["cfg_job_seconds"] > 0
