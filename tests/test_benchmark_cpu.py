"""benchmarks/flops.py and benchmarks/data_path.py: their pure parts (FLOP counts, rates,
medians, shares, the verdict, the table) and one tiny run each. No speed is asserted."""

import importlib.util
import json
import sys

import pytest
import torch
from helpers import REPO
from torch import nn

BENCHMARKS = REPO / "benchmarks"
PAGE = REPO / "docs" / "performance.md"
for folder in (REPO / "tools", BENCHMARKS):  # the scripts import `common` (and `augment`)
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))

import blocks  # noqa: E402
import common  # noqa: E402


def load(name: str):
    spec = importlib.util.spec_from_file_location(f"benchmark_{name}", BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def flops():
    return load("flops")


@pytest.fixture(scope="module")
def data_path():
    return load("data_path")


def last_json(out: str) -> dict:
    return json.loads(out.strip().splitlines()[-1])


@pytest.fixture
def docs(tmp_path, monkeypatch):
    """A copy of docs/performance.md that --publish writes into (the real page is left)."""
    (tmp_path / PAGE.name).write_text(PAGE.read_text())
    monkeypatch.setattr(common, "DOCS", tmp_path)
    return tmp_path / PAGE.name


@pytest.mark.parametrize("block", ["flops", "data-path"])
def test_the_performance_page_has_the_blocks_they_publish_into(block):
    assert blocks.read_block(PAGE, block).strip()


# --------------------------------------------------------------------------- flops.py


def test_a_training_step_counts_the_hand_computed_flops(flops):
    batch, cin, cout, size, classes = 2, 3, 4, 8, 10
    model = nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1), nn.ReLU(), nn.Flatten(),
        nn.Linear(cout * size * size, classes),
    )  # fmt: skip
    images, labels = torch.randn(batch, cin, size, size), torch.tensor([1, 7])
    conv = 2 * batch * cout * size * size * cin * 3 * 3  # one multiply-add per weight and pixel
    linear = 2 * batch * cout * size * size * classes
    # backward: the conv's weight gradient only (the images need none), the linear layer's
    # weight and input gradients; ReLU, biases and the loss count nothing
    assert flops.step_flops(model, images, labels) == 2 * conv + 3 * linear == 86_016
    assert all(p.grad is None for p in model.parameters())  # counting leaves no gradients


def test_a_depthwise_conv_counts_its_weight_gradient_per_group(flops):
    """torch 2.14's own formula counts it `groups` (8) times: flops.conv_backward_flops."""
    model = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1, groups=8, bias=False), nn.Flatten())
    x = torch.randn(1, 8, 4, 4)
    forward = 2 * 8 * 4 * 4 * 3 * 3  # each output sees one channel: 9 multiply-adds
    assert flops.step_flops(model, x, torch.tensor([0])) == 2 * forward  # + weight gradient
    x.requires_grad_(True)
    assert flops.step_flops(model, x, torch.tensor([0])) == 3 * forward  # + input gradient


def test_a_grouped_transposed_conv_counts_as_its_forward(flops):
    model = nn.Sequential(nn.ConvTranspose2d(8, 4, 2, stride=2, groups=2, bias=False), nn.Flatten())
    x = torch.randn(2, 8, 4, 4)
    forward = 2 * 2 * 4 * 4 * (8 * 2 * 2 * 2)  # every input pixel meets its group's weights
    assert flops.step_flops(model, x, torch.tensor([0, 1])) == 2 * forward


def test_sgemm_flops_and_rates(flops):
    assert flops.matmul_flops(2) == 16  # 4 outputs, 2 multiply-adds each
    assert flops.matmul_flops(1024) == 2 * 1024**3
    assert flops.gflops(3e9, 1.5) == pytest.approx(2.0)
    assert flops.variant_name("resnet9", True) == "resnet9_channels_last"
    assert flops.variant_name("resnet9", False) == "resnet9"


def test_summary_takes_medians_and_pairs_each_step_with_its_rounds_sgemm(flops):
    n = 1000  # 2e9 FLOPs a product
    seconds = {
        flops.SGEMM: [0.02, 0.04, 0.01],  # 100, 50, 200 GFLOP/s: the second round was slow
        "tiny": [0.2, 0.4, 0.3],  # 6 GFLOP a step: 30, 15, 20 GFLOP/s
    }
    s = flops.summarize({"tiny": 6e9}, seconds, batch_size=30, n=n)
    assert s[flops.SGEMM]["gflops"] == pytest.approx(100.0)  # the median product, 0.02 s
    tiny = s["tiny"]
    assert tiny["seconds_per_step"] == 0.3 and tiny["flops_per_image"] == 2e8
    assert tiny["img_per_s"] == pytest.approx(100.0)  # 30 images in 0.3 s
    assert tiny["gflops"] == pytest.approx(20.0)  # 6 GFLOP in 0.3 s
    # rounds: 30/100, 15/50, 20/200; the medians' ratio would say 20/100
    assert tiny["fraction_of_sgemm"] == pytest.approx(0.3)


def test_the_noise_note_flags_a_busy_machine(flops):
    assert flops.noise_note(0.05) == "other processes kept 0.05 cores busy during the measurements"
    assert flops.noise_note(0.9).endswith(
        "0.90 cores busy during the measurements: the figures are rough"
    )
    assert flops.noise_note(0.3, "its workers").startswith(
        "other processes (its workers among them)"
    )
    assert "unknown" in flops.noise_note(None)
    result, others = flops.others_during(lambda n: sum(range(n)), 100_000)
    assert result == sum(range(100_000))
    assert others is None or others >= 0.0  # cores, never negative


def test_flops_table_has_its_columns_and_a_row_per_variant(flops):
    seconds = {flops.SGEMM: [0.02], "resnet9": [0.5], "resnet9_channels_last": [0.25]}
    s = flops.summarize({"resnet9": 1e10, "resnet9_channels_last": 1e10}, seconds, 10, 1000)
    lines = flops.table(flops.HEADERS, flops.rows(s, 1000)).splitlines()
    assert [c.strip() for c in lines[0].strip("|").split("|")] == [
        "work", "channels_last", "GFLOP/image", "ms/step", "img/s", "GFLOP/s", "of sgemm",
    ]  # fmt: skip
    cells = [[c.strip() for c in line.strip("|").split("|")] for line in lines[2:]]
    assert cells[0][0] == "sgemm 1000x1000 fp32" and cells[0][-2:] == ["100", "1.00"]
    assert cells[1] == ["resnet9", "off", "1.000", "500.0", "20", "20", "0.20"]
    assert cells[2][:2] == ["resnet9", "on"] and cells[2][-1] == "0.40"


def test_flops_runs_tiny_publishes_and_ends_with_its_json(flops, capsys, docs):
    args = ["--models", "session6", "--batch-size", "4", "--steps", "1", "--repeats", "1"]
    flops.main([*args, "--matrix", "64", "--products", "1", "--threads", "1", "--publish"])
    out = capsys.readouterr().out
    result = last_json(out)
    assert result["benchmark"] == "flops" and result["threads"] == 1
    assert set(result["fraction_of_sgemm"]) == {"session6", "session6_channels_last"}
    variants = result["variants"]
    # the layout changes the speed, never the work
    assert (
        variants["session6"]["flops_per_step"]
        == variants["session6_channels_last"]["flops_per_step"]
    )
    assert variants["session6"]["flops_per_step"] == 4 * variants["session6"]["flops_per_image"]
    assert "| sgemm 64x64 fp32 " in out and "| session6 " in out
    block = blocks.read_block(docs, "flops")
    assert (
        block.startswith("Measured ") and "`python benchmarks/flops.py --models session6" in block
    )
    assert "| work " in block and "| of sgemm |" in block and "sgemm GFLOP/s, round by" in block


# --------------------------------------------------------------------------- data_path.py


def test_the_loader_share_of_a_serial_epoch(data_path):
    assert data_path.loader_share(9.0) == pytest.approx(0.10)  # 1/9 s of loading per 1 s
    assert data_path.loader_share(1.0) == 0.5
    assert data_path.measured_share(0.85) == pytest.approx(0.15)
    assert data_path.measured_share(1.02) == pytest.approx(-0.02)  # noise, shown as it is


def test_the_verdict_says_the_ratio_and_where_the_line_is(data_path):
    fine = data_path.verdict(99.0)
    assert fine.startswith("augmentation is not the bottleneck")
    assert "99.0x as fast as the model, 1.0% of a serial epoch" in fine
    slow = data_path.verdict(4.0)
    assert slow.startswith("augmentation IS a meaningful share of the epoch (over 10%)")
    assert "4.0x" in slow and "20.0%" in slow
    assert not data_path.is_bottleneck(0.10) and data_path.is_bottleneck(0.101)
    assert data_path.is_bottleneck(0.05, limit=0.01)


def test_with_workers_the_measured_epoch_judges_not_the_ratio(data_path):
    """Workers share the cores with the loop: a fast loader can still slow the epoch."""
    said = data_path.verdict(40.0, epoch_share=0.3)
    assert said.startswith("augmentation IS a meaningful share")
    assert "takes 30.0% of the measured epoch (the loader alone is 40.0x as fast" in said
    rates = {"loader": [4000.0], "model": [100.0], "epoch": [70.0], "torch_loader": [5e4]}
    assert data_path.summarize(rates)["bottleneck"] is False  # 0 workers: the ratio, 40
    with_workers = data_path.summarize(rates, workers=1)
    assert with_workers["bottleneck"] is True
    assert "with workers the data path takes 30.0% of the measured epoch" in with_workers["verdict"]


def test_data_path_summary_pairs_each_side_with_the_model_of_its_round(data_path):
    rates = {
        "loader": [1000.0, 400.0, 900.0],
        "model": [100.0, 50.0, 100.0],  # the second round ran on a slow machine
        "epoch": [90.0, 45.0, 80.0],
        "torch_loader": [5000.0, 2000.0, 4000.0],
    }
    s = data_path.summarize(rates)
    assert s["loader_img_per_s"] == 900.0 and s["model_img_per_s"] == 100.0  # medians
    assert s["ratio"] == 9.0  # rounds: 10, 8, 9
    assert s["x_model"]["epoch"] == pytest.approx(0.9)  # rounds: 0.9, 0.9, 0.8
    assert s["share"] == pytest.approx(0.1) and s["epoch_share"] == pytest.approx(0.1)
    assert s["torch_ratio"] == 40.0 and "torch_epoch_share" not in s
    assert s["bottleneck"] is False and s["verdict"] == data_path.verdict(9.0)


def test_data_path_table_rows(data_path):
    rates = {"loader": 600.0, "model": 100.0, "epoch": 80.0, "torch_loader": 5000.0}
    rates = {side: [rate] for side, rate in {**rates, "torch_epoch": 95.0}.items()}  # one round
    facts = {"model": "session6", "augment": "session6", "batch_size": 64}
    facts.update(num_workers=0, auto=True)
    rows = data_path.rows("session6", facts, data_path.summarize(rates))
    lines = data_path.table(data_path.HEADERS, rows).splitlines()
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    assert header == ["experiment", "batches", "img/s", "x model", "loader's share of the epoch"]
    cells = [[c.strip() for c in line.strip("|").split("|")] for line in lines[2:]]
    assert cells[0][0] == "session6: session6, augment=session6, batch 64"
    assert [row[1:] for row in cells] == [
        ["loader: albumentations, 0 workers (auto)", "600", "6.00", "14.3%"],
        ["model: train_one_epoch on pre-made batches", "100", "1.00", ""],
        ["epoch: train_one_epoch over the loader", "80", "0.80", "20.0%"],
        ["loader: augment.backend=torch", "5,000", "50.00", "2.0%"],
        ["epoch: augment.backend=torch", "95", "0.95", "5.0%"],
    ]


def test_rounded_reaches_into_nested_values(data_path):
    assert data_path.rounded({"a": [1.234567, {"b": 2.0000001}], "c": "x", "d": 3}) == {
        "a": [1.2346, {"b": 2.0}], "c": "x", "d": 3,
    }  # fmt: skip


def test_data_path_builds_the_loader_a_cpu_run_builds(data_path):
    cfg = data_path.compose("session10", "albumentations", epochs=12, num_workers=None)
    assert cfg.model.name == "custom_resnet" and cfg.augment.name == "resnet"
    assert cfg.batch_size == 512 and cfg.epochs == 12
    assert cfg.dataset.num_workers is None  # auto: 0 workers on a CPU
    assert cfg.scheduler.max_lr == cfg.optimizer.lr  # no LR range test in a benchmark
    two = data_path.compose("session6", "torch", epochs=3, num_workers=2)
    assert two.augment.backend == "torch" and two.dataset.num_workers == 2


def test_data_path_runs_tiny_publishes_and_ends_with_its_json(data_path, capsys, docs):
    args = ["--experiments", "session6", "--images", "64", "--repeats", "1", "--quick"]
    data_path.main([*args, "--publish"])
    out = capsys.readouterr().out
    result = last_json(out)
    assert result["benchmark"] == "data_path" and result["experiment"] == "session6"
    s6 = result["experiments"]["session6"]
    assert s6["num_workers"] == 0 and s6["auto"] is True and s6["batch_size"] == 64
    assert s6["l1_weight"] == 1e-5  # the experiment's, as its runs train
    assert set(s6["rates"]) == {"loader", "model", "epoch", "torch_loader"}  # quick: no torch epoch
    assert result["ratio"] == round(s6["ratio"], 2) > 0
    assert "session6: augmentation " in out and "| session6: session6, augment=session6" in out
    block = blocks.read_block(docs, "data-path")
    assert "| experiment " in block and "| loader's share of the epoch |" in block
    assert "\n- session6: augmentation " in block  # the verdict, as a list item
