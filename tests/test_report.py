"""eva.report building blocks: metrics by scikit-learn, every figure as a real PNG, GradCAM maps."""

import math
import warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image
from sklearn import metrics as sk
from torch import nn

from eva.config import CONF_DIR
from eva.data import ImageSet
from eva.data.loaders import TensorBatches
from eva.engine.loop import Predictions, evaluate
from eva.errors import EvaError
from eva.models import build_model, gradcam_layer
from eva.report import figures, gradcam, images, make_reports
from eva.report.metrics import (
    classification_report,
    confusion_matrix,
    metric_key,
    per_class_metrics,
)

FASHION = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat"]
FASHION += ["Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
MODELS = sorted(path.stem for path in (CONF_DIR / "model").glob("*.yaml"))  # model=<name>


def read_png(path: Path, min_size=(500, 150), max_size=(2600, 2600)) -> np.ndarray:
    """Assert path is a sensible PNG; return its pixels as (H, W, 3) uint8."""
    data = Path(path).read_bytes()
    assert data[:8] == PNG_SIGNATURE
    assert 3_000 < len(data) < 3_000_000, len(data)
    with Image.open(path) as img:
        w, h = img.size
        assert min_size[0] <= w <= max_size[0] and min_size[1] <= h <= max_size[1], img.size
        pixels = np.asarray(img.convert("RGB"))
    assert pixels.std() > 0, "a blank image"
    return pixels


def colored_share(pixels: np.ndarray) -> float:
    """Share of pixels that are not grey (channels differ by more than a rounding step)."""
    p = pixels.astype(int)
    return float((p.max(axis=-1) - p.min(axis=-1) > 8).mean())


@pytest.fixture
def figs(monkeypatch) -> list:
    """Every Figure the report modules save, kept for inspecting what was drawn."""
    kept, original = [], figures.save_figure

    def keep(fig, path, dpi):
        kept.append(fig)
        return original(fig, path, dpi)

    for module in (figures, images, gradcam):
        monkeypatch.setattr(module, "save_figure", keep)
    return kept


# --- metrics -------------------------------------------------------------------------------

# 4 classes: "dog" is never predicted, "empty" has no samples and is never predicted.
LABELS = np.array([0, 0, 0, 1, 1, 2, 2])
PREDS = np.array([0, 0, 1, 1, 0, 1, 1])
NAMES = ["cat", "T-shirt/top", "dog", "empty"]


def test_confusion_matrix_rows_are_true_classes_and_every_class_has_one():
    cm = confusion_matrix(LABELS, PREDS, 4)  # "empty" never occurs: still a row and a column
    assert cm.dtype == np.int64
    expected = [[2, 1, 0, 0], [1, 1, 0, 0], [0, 2, 0, 0], [0, 0, 0, 0]]
    np.testing.assert_array_equal(cm, expected)


def test_per_class_metrics_and_report_are_sklearns_with_a_class_never_predicted():
    with warnings.catch_warnings(), np.errstate(all="raise"):
        warnings.simplefilter("error")  # a class never predicted must not even warn
        m = per_class_metrics(LABELS, PREDS, NAMES)
        report = classification_report(LABELS, PREDS, NAMES)
    p, r, f, s = sk.precision_recall_fscore_support(LABELS, PREDS, labels=range(4), zero_division=0)
    assert list(m) == NAMES
    for i, name in enumerate(NAMES):
        assert m[name] == {"precision": p[i], "recall": r[i], "f1": f[i], "support": s[i]}
        assert isinstance(m[name]["support"], int) and isinstance(m[name]["f1"], float)
    assert m["dog"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 2}  # never predicted
    assert m["empty"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}  # never there
    expected = sk.classification_report(
        LABELS, PREDS, labels=range(4), target_names=NAMES, digits=4, zero_division=0
    )
    assert report == expected
    assert "accuracy" in report and "0.4286" in report  # 3 of 7 right


@pytest.mark.parametrize(
    ("labels", "preds", "message"),
    [
        ([0, 3], [0, 1], r"labels outside \[0, 3\): 0..3"),
        ([0, 1], [-1, 1], r"preds outside \[0, 3\): -1..1"),
        ([0, 1, 2], [0, 1], r"labels \(3,\) and preds \(2,\) differ in shape"),
    ],
)
def test_metrics_check_their_inputs(labels, preds, message):
    labels, preds = np.array(labels), np.array(preds)
    with pytest.raises(ValueError, match=message):
        confusion_matrix(labels, preds, 3)
    with pytest.raises(ValueError, match=message):
        per_class_metrics(labels, preds, ["a", "b", "c"])
    with pytest.raises(ValueError, match=message):
        classification_report(labels, preds, ["a", "b", "c"])


@pytest.mark.parametrize(
    ("name", "key"),
    [
        ("T-shirt/top", "t_shirt_top"),
        ("Ankle boot", "ankle_boot"),
        ("airplane", "airplane"),
        ("  Class 7 (rare)!", "class_7_rare"),
    ],
)
def test_metric_key(name, key):
    assert metric_key(name) == key


def test_predictions_by_hand_and_wrong_ordering():
    # The "model" returns its input as logits, so every softmax is known; the dropout in front
    # would scramble them unless evaluate switches the model to eval mode.
    logits = torch.tensor(
        [[2, 0, 0], [0, 3, 0], [0, 0, 1], [1, 0, 0], [0, 5, 0], [0, 3, 0]], dtype=torch.float32
    )
    labels = torch.tensor([0, 0, 2, 1, 2, 2])
    model = nn.Sequential(nn.Dropout(0.5), nn.Flatten()).train()
    x = logits[:, :, None, None]
    batches = [(x[:2], labels[:2]), (x[2:4], labels[2:4]), (x[4:], labels[4:])]
    p = evaluate(model, batches, "cpu", keep_predictions=True)
    assert isinstance(p, Predictions) and not model.training
    np.testing.assert_array_equal(p.labels, labels.numpy())
    np.testing.assert_array_equal(p.preds, [0, 1, 2, 0, 1, 1])
    assert p.labels.dtype == p.preds.dtype == np.int64 and p.confidence.dtype == np.float32
    assert p.acc == pytest.approx(2 / 6)

    def softmax_at(row, k):
        return math.exp(row[k]) / sum(math.exp(v) for v in row)

    rows = logits.tolist()
    expected_loss = (
        -sum(math.log(softmax_at(r, y)) for r, y in zip(rows, labels.tolist(), strict=True)) / 6
    )
    assert p.loss == pytest.approx(expected_loss, rel=1e-5)
    assert p.confidence[1] == pytest.approx(softmax_at(rows[1], 1), rel=1e-5)
    # most confident mistake first (5 logit), then the two equal ones in sample order, then 3
    np.testing.assert_array_equal(p.wrong, [4, 1, 5, 3])


def tiny_test_split(n: int = 12, batch_size: int = 5):
    """A 4-class test split of n random 8x8 RGB images, as make_reports reads it."""
    rng = np.random.default_rng(4)
    pixels = rng.integers(0, 256, (n, 8, 8, 3), dtype=np.uint8)
    labels = np.arange(n, dtype=np.int64) % 4
    test_set = ImageSet(pixels, labels, NAMES)
    batches = TensorBatches(pixels, labels, [0.5] * 3, [0.25] * 3, batch_size)
    return SimpleNamespace(test=batches, test_set=test_set, classes=NAMES)


def test_make_reports_with_the_evaluation_pass_predictions_runs_no_second_pass(tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 4))
    calls = []
    model.register_forward_hook(lambda *_: calls.append(1))
    data = tiny_test_split()  # 12 images in batches of 5: 3 forward calls a pass
    report = SimpleNamespace(enabled=True, samples=0, misclassified=4, gradcam=0, dpi=40)
    cfg = SimpleNamespace(
        report=report,
        model=OmegaConf.create({"name": "linear", "gradcam_layer": "1"}),
        dataset=SimpleNamespace(name="tiny"),
    )
    cpu = torch.device("cpu")
    evaluation = evaluate(model, data.test, cpu, keep_predictions=True)  # mode=test's pass
    assert len(calls) == 3
    given = make_reports(cfg, model, data, cpu, tmp_path / "given", predictions=evaluation)
    assert len(calls) == 3  # the model did not run again
    assert given.errors == {} and "predictions" not in given.seconds
    own = make_reports(cfg, model, data, cpu, tmp_path / "own")  # no predictions: one pass
    assert len(calls) == 6 and own.errors == {}
    assert own.per_class == given.per_class
    assert own.metrics == given.metrics
    text = (tmp_path / "given" / "reports" / "classification_report.txt").read_text()
    assert text == (tmp_path / "own" / "reports" / "classification_report.txt").read_text()
    assert f"n=12, acc {evaluation.acc:.4f}" in text

    with pytest.raises(TypeError, match="keep_predictions=True"):  # loss and accuracy only
        make_reports(cfg, model, data, cpu, tmp_path, predictions=evaluate(model, data.test, cpu))
    short = tiny_test_split(n=7)
    with pytest.raises(ValueError, match="7 predictions for the 12 images of the test split"):
        make_reports(
            cfg,
            model,
            data,
            cpu,
            tmp_path,
            predictions=evaluate(model, short.test, cpu, keep_predictions=True),
        )


# --- figures -------------------------------------------------------------------------------


def history(epochs: int, val: bool) -> list[dict]:
    rows = []
    for e in range(1, epochs + 1):
        row = {"epoch": e, "train_loss": 2 / e, "test_loss": 2.1 / e}
        row |= {"train_acc": 1 - 0.5 / e, "test_acc": 1 - 0.55 / e}
        if val:
            row |= {"val_loss": 2.2 / e, "val_acc": 1 - 0.6 / e}
        rows.append(row)
    return rows


def test_plot_curves(tmp_path, figs):
    out = figures.plot_curves(history(24, val=True), tmp_path / "a" / "curves.png", "run 1")
    assert out == tmp_path / "a" / "curves.png"
    read_png(out)
    loss, acc = figs[-1].axes
    assert (loss.get_title(), acc.get_title()) == ("Loss", "Accuracy")
    assert [t.get_text() for t in loss.get_legend().get_texts()] == ["train", "test", "val"]
    assert all(len(line.get_xdata()) == 24 for line in loss.get_lines())
    assert figs[-1].get_suptitle() == "run 1"

    read_png(figures.plot_curves(history(1, val=False), tmp_path / "one.png", "one epoch"))
    loss, acc = figs[-1].axes
    assert [t.get_text() for t in acc.get_legend().get_texts()] == ["train", "test"]
    assert all(line.get_marker() not in (None, "None", "") for line in loss.get_lines())
    ticks = [t for t in loss.get_xticks() if loss.get_xlim()[0] <= t <= loss.get_xlim()[1]]
    assert ticks == [1.0], ticks  # an integer epoch axis even for a single point


def is_vline(line) -> bool:
    x = line.get_xdata()
    return len(x) == 2 and x[0] == x[1]


def one_cycle(epochs: int, steps: int) -> list[float]:
    total, up = epochs * steps, int(0.2 * epochs * steps)
    return [4e-2 * s / up if s < up else 4e-2 * (total - s) / (total - up) for s in range(total)]


def test_plot_lr_schedule(tmp_path, figs):
    lrs = one_cycle(24, 98)
    read_png(figures.plot_lr_schedule(lrs, 98, tmp_path / "lr.png", "one-cycle"))
    ax = figs[-1].axes[0]
    boundaries = [line for line in ax.get_lines() if is_vline(line)]
    assert len(boundaries) == 23
    assert "epoch boundaries" in [t.get_text() for t in ax.get_legend().get_texts()]
    peak = int(np.argmax(lrs))
    notes = [t.get_text() for t in ax.texts]
    assert any(f"{lrs[peak]:.2e}" in n and str(peak) in n for n in notes), notes
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("optimizer step", "learning rate")
    assert "e-02" in ax.yaxis.get_major_formatter()(0.04, 0)

    # 61 epochs: no boundary lines; a 3-step schedule still draws
    read_png(figures.plot_lr_schedule(one_cycle(61, 5), 5, tmp_path / "long.png", "long"))
    assert "epoch boundaries" not in [t.get_text() for t in figs[-1].axes[0].get_legend().texts]
    read_png(figures.plot_lr_schedule([1e-3, 2e-3, 1e-3], 98, tmp_path / "short.png", "short"))


def test_plot_lr_find_clips_the_diverging_tail(tmp_path, figs):
    lrs = np.logspace(-5, 0, 80)
    losses = 2.3 - 1.0 / (1 + np.exp(-(np.log10(lrs) + 2.5) * 3))
    losses[-10:] = np.linspace(2, 40, 10)  # diverges
    losses[-1] = np.inf
    out = figures.plot_lr_find(
        lrs,
        losses,
        tmp_path / "lr_find.png",
        suggested_lr=3e-3,
        min_loss_lr=1e-2,
        title="LR range test",
        raw_losses=losses + 0.05,
    )
    read_png(out)
    ax = figs[-1].axes[0]
    assert ax.get_xscale() == "log"
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "steepest descent: 3.0e-03 (suggested)" in labels
    assert "min loss / 10: 1.0e-02" in labels
    bottom, top = ax.get_ylim()
    assert top < 1.3 * 2.3 + 0.2 and bottom < losses.min()  # the tail does not set the scale

    # 3 points, and both suggestions at the same LR
    read_png(
        figures.plot_lr_find(
            [1e-3, 1e-2, 1e-1],
            [2.3, 2.0, 2.6],
            tmp_path / "3.png",
            suggested_lr=1e-2,
            min_loss_lr=1e-2,
            title="tiny",
        )
    )


def test_plot_confusion_matrix(tmp_path, figs):
    cm = confusion_matrix(LABELS, PREDS, 4)  # "cat" row has a mistake, "empty" has no samples
    read_png(figures.plot_confusion_matrix(cm, NAMES, tmp_path / "cm4.png", "cm"), (400, 300))
    fig = figs[-1]
    ax = fig.axes[0]
    assert len(fig.axes) == 2  # the matrix and its colorbar
    cells = {(round(t.get_position()[1]), round(t.get_position()[0])): t for t in ax.texts}
    assert {k: int(t.get_text()) for k, t in cells.items()} == {
        (i, j): int(cm[i, j]) for i in range(4) for j in range(4)
    }
    # contrast: "dog" predicted as "T-shirt/top" every time (dark cell), zeros on white
    assert cells[(2, 1)].get_color() == "white" and cells[(0, 3)].get_color() == "black"
    assert [t.get_text() for t in ax.get_xticklabels()] == NAMES
    assert [t.get_text() for t in ax.get_yticklabels()] == NAMES
    assert ax.get_xticklabels()[0].get_rotation() == 45
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("predicted", "true")

    rng = np.random.default_rng(0)
    labels = rng.integers(0, 10, 10_000)
    preds = np.where(rng.random(10_000) < 0.9, labels, rng.integers(0, 10, 10_000))
    big = confusion_matrix(labels, preds, 10)
    read_png(figures.plot_confusion_matrix(big, FASHION, tmp_path / "cm10.png", "10 classes"))
    perfect = np.diag([5, 7, 9])  # no mistakes at all
    read_png(
        figures.plot_confusion_matrix(perfect, ["a", "b", "c"], tmp_path / "cm3.png", "3"),
        (400, 300),
    )


def test_plot_per_class_accuracy(tmp_path, figs):
    acc = [0.9 + 0.009 * i for i in range(10)]
    read_png(figures.plot_per_class_accuracy(acc, FASHION, 0.93, tmp_path / "pc.png", "per class"))
    ax = figs[-1].axes[0]
    widths = [bar.get_width() for bar in ax.patches]
    assert widths == pytest.approx(acc)
    assert [t.get_text() for t in ax.texts] == [f"{a:.3f}" for a in acc]
    assert [t.get_text() for t in ax.get_yticklabels()] == FASHION
    assert ax.get_xlim()[0] == 0 and ax.get_xlim()[1] > 1.0
    overall = [line for line in ax.get_lines() if line.get_linestyle() == "--"]
    assert len(overall) == 1 and overall[0].get_xdata()[0] == 0.93
    assert "0.930" in figs[-1].legends[0].get_texts()[0].get_text()


# --- images --------------------------------------------------------------------------------


def test_to_rgb_float_and_denormalize_round_trip():
    rng = np.random.default_rng(1)
    for mean, std in (((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)), ((0.2860,), (0.3530,))):
        c = len(mean)
        pixels = rng.integers(0, 256, (5, 6, 7, c), dtype=np.uint8)
        x = torch.from_numpy(pixels).permute(0, 3, 1, 2).float() / 255
        x = (x - torch.tensor(mean).view(1, c, 1, 1)) / torch.tensor(std).view(1, c, 1, 1)
        back = images.denormalize(x, mean, std)
        assert back.dtype == np.uint8 and back.shape == pixels.shape
        np.testing.assert_array_equal(back, pixels)
        rgb = images.to_rgb_float(pixels)
        assert rgb.dtype == np.float32 and rgb.shape == (5, 6, 7, 3)
        assert 0.0 <= rgb.min() and rgb.max() <= 1.0
        np.testing.assert_allclose(rgb[..., 2], pixels[..., -1] / 255, atol=1e-6)
    clipped = images.denormalize(torch.full((1, 1, 2, 2), 99.0), (0.5,), (0.5,))
    assert (clipped == 255).all()


def test_plot_image_grid_grey_rgb_and_empty(tmp_path):
    rng = np.random.default_rng(2)
    titles = [
        f"true: {FASHION[i % 10]}\npred: {FASHION[(i + 1) % 10]} (0.9{i % 10})" for i in range(24)
    ]
    grey = rng.integers(0, 256, (24, 28, 28, 1), dtype=np.uint8)
    big = read_png(images.plot_image_grid(grey, titles, tmp_path / "g.png", "misclassified"))
    assert colored_share(big) == 0.0  # grey images through a grey colormap, not viridis
    small = read_png(images.plot_image_grid(grey[:8], titles[:8], tmp_path / "g8.png", "8"))
    assert big.shape[0] > 2 * small.shape[0]  # 3 rows against 1: the height follows the rows
    rgb = rng.integers(0, 256, (5, 32, 32, 3), dtype=np.uint8)
    colored = read_png(images.plot_image_grid(rgb, titles[:5], tmp_path / "c.png", "rgb"))
    assert colored_share(colored) > 0.1
    empty = np.zeros((0, 28, 28, 1), dtype=np.uint8)
    read_png(images.plot_image_grid(empty, [], tmp_path / "none.png", "misclassified"), (300, 100))


# --- GradCAM -------------------------------------------------------------------------------

# Smaller versions of eva's own models, for speed; any other model runs as its YAML has it.
SMALL = {
    "session6": ["model.channels=[8,16,16,16]"],
    "custom_resnet": ["model.width=8"],
    "resnet18": ["model.width=8"],
}


@pytest.mark.parametrize("shape", [(3, 32, 32), (1, 28, 28)], ids=["cifar", "fashion"])
@pytest.mark.parametrize("name", sorted(MODELS))
def test_gradcam_maps_on_every_model(compose, name, shape):
    cfg = compose(f"model={name}", *SMALL.get(name, []))
    torch.manual_seed(0)
    model = build_model(cfg.model, shape[0], 10).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    layer = gradcam_layer(model, cfg.model.get("gradcam_layer"))
    cams = gradcam.gradcam_maps(model, layer, torch.randn(4, *shape), [0, 3, 5, 9])
    assert cams.shape == (4, shape[1], shape[2]) and cams.dtype == np.float32
    assert np.isfinite(cams).all() and cams.min() >= 0.0 and cams.max() <= 1.0
    assert cams.max() > 0.5  # not silently all zeros
    assert model.training and all(m.training for m in model.modules())
    after = model.state_dict()  # BatchNorm statistics too: the pass ran in eval mode
    assert all(torch.equal(before[k], after[k]) for k in before)
    layer = gradcam.resolve_layer(model, cfg.model.gradcam_layer)
    assert not layer._forward_hooks and not layer._backward_hooks


class QuadrantNet(nn.Module):
    """Channel 0 = bright pixels, channel 1 = dark pixels (a fixed 1x1 conv, then ReLU).

    logit 1 = mean of channel 0 over the top-left quadrant only; logit 0 = mean of channel 1.
    """

    def __init__(self, size: int = 16):
        super().__init__()
        conv = nn.Conv2d(1, 2, 1, bias=False)
        with torch.no_grad():
            conv.weight.copy_(torch.tensor([1.0, -1.0]).view(2, 1, 1, 1))
        self.features = nn.Sequential(conv, nn.ReLU())
        mask = torch.zeros(size, size)
        mask[: size // 2, : size // 2] = 1
        self.register_buffer("mask", mask)

    def forward(self, x):
        a = self.features(x)
        return torch.stack([a[:, 1].mean((1, 2)), (a[:, 0] * self.mask).mean((1, 2))], dim=1)


def test_gradcam_points_at_the_region_behind_the_class():
    patch = np.zeros((16, 16), dtype=np.float32)
    patch[:8, :5] = 1.0  # bright, inside the top-left quadrant; not square, to catch a transpose
    x = torch.from_numpy(2 * patch - 1)[None, None]  # +1 on the patch, -1 on the dark rest
    model = QuadrantNet()
    model.features[0].weight.grad = marker = torch.full_like(model.features[0].weight, 7.0)
    model.features[0].weight.requires_grad_(False)  # a frozen layer stays frozen
    x2 = torch.cat([x, x])
    cams = gradcam.gradcam_maps(model, "features", x2, [1, 0])
    top_left = cams[:, :8, :8].mean(axis=(1, 2))
    rest = (cams.sum(axis=(1, 2)) - cams[:, :8, :8].sum(axis=(1, 2))) / (256 - 64)
    assert top_left[0] > 0.5 and rest[0] < 0.05  # class 1: the bright top-left patch
    assert top_left[1] < 0.5 and rest[1] > 0.95  # class 0: the dark rest of the image
    # at full resolution the maps are exactly the evidence: the patch, and everything else
    np.testing.assert_allclose(cams[0], patch, atol=1e-3)
    np.testing.assert_allclose(cams[1], 1 - patch, atol=1e-3)
    assert model.features[0].weight.grad is marker
    assert not model.features[0].weight.requires_grad

    # under no_grad and inference_mode (an evaluation loop) the maps are the same, not zeros
    with torch.no_grad():
        np.testing.assert_allclose(gradcam.gradcam_maps(model, "features", x2, [1, 0]), cams)
    with torch.inference_mode():
        x_inf = x2.clone()
        np.testing.assert_allclose(gradcam.gradcam_maps(model, "features", x_inf, [1, 0]), cams)


def test_bad_gradcam_layer_is_a_one_line_eva_error(compose):
    model = build_model(compose("model=session6", *SMALL["session6"]).model, 1, 10)
    with pytest.raises(EvaError) as e:
        gradcam.gradcam_maps(model, "xyz", torch.randn(2, 1, 28, 28), [0, 1])
    msg = str(e.value)
    assert "\n" not in msg and "model.gradcam_layer='xyz'" in msg
    assert "Session6Net" in msg and "c1, c2, c3, c4, pool, fc" in msg
    with pytest.raises(EvaError, match="model.gradcam_layer=''"):
        gradcam.resolve_layer(model, "")
    # a layer that exists but has no spatial map (the classifier's logits)
    with pytest.raises(EvaError, match=r"model.gradcam_layer='fc': its output has shape \(2, 10\)"):
        gradcam.gradcam_maps(model, "fc", torch.randn(2, 1, 28, 28), [0, 1])
    assert not model.fc._forward_hooks and model.training


def test_plot_gradcam(tmp_path, figs):
    rng = np.random.default_rng(3)
    imgs = rng.integers(0, 256, (6, 28, 28, 1), dtype=np.uint8)
    cams = np.zeros((6, 28, 28), dtype=np.float32)
    cams[:, :14, :14] = 1.0
    titles = [f"true: Shirt\npred: {FASHION[i]} (0.9{i})" for i in range(6)]
    pixels = read_png(gradcam.plot_gradcam(imgs, cams, titles, tmp_path / "cam.png", "GradCAM"))
    assert colored_share(pixels) > 0.05  # the heat maps
    fig = figs[-1]
    assert "red" in fig.get_suptitle()
    assert [sf.get_suptitle() for sf in fig.subfigs[:6]] == titles
    assert len(fig.subfigs[0].axes) == 2  # image and overlay side by side
    empty = np.zeros((0, 28, 28, 1), dtype=np.uint8)
    read_png(
        gradcam.plot_gradcam(empty, cams[:0], [], tmp_path / "none.png", "GradCAM"), (300, 100)
    )
    assert figs[-1].axes[0].texts[0].get_text() == "none"
