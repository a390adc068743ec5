"""The LR range test (eva/optim/lr_find.py): suggestion, smoothing, restore, reference check."""

import copy
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from eva.errors import EvaError
from eva.optim.lr_range import exponential_lrs, range_test, running_average, suggest, zero_lag

CPU = torch.device("cpu")


def settings(**changes):
    base = dict(
        start_lr=1e-5, end_lr=100.0, num_iter=100, smoothing=0.1, diverge_threshold=5.0,
        rule="steepest",
    )  # fmt: skip
    return SimpleNamespace(**{**base, **changes})


def blobs(seed: int = 0, n: int = 512, dim: int = 20, classes: int = 4, spread: float = 0.6):
    """Overlapping Gaussian classes: learnable, noisy, not separable (like real data)."""
    g = torch.Generator().manual_seed(seed)
    centers = torch.randn(classes, dim, generator=g) * spread
    labels = torch.randint(0, classes, (n,), generator=g)
    return centers[labels] + torch.randn(n, dim, generator=g), labels


class Batches:
    """Shuffled mini-batches from a seeded generator (like eva's TensorBatches)."""

    def __init__(self, x, y, batch_size: int = 32, seed: int = 0):
        self.x, self.y, self.batch_size = x, y, batch_size
        self.generator = torch.Generator().manual_seed(seed)

    def __len__(self):
        return len(self.y) // self.batch_size

    def __iter__(self):
        order = torch.randperm(len(self.y), generator=self.generator)
        for i in range(len(self)):
            idx = order[i * self.batch_size : (i + 1) * self.batch_size]
            yield self.x[idx], self.y[idx]


def mlp(seed: int = 0, batchnorm: bool = False):
    torch.manual_seed(seed)
    layers = [torch.nn.Linear(20, 32)]
    layers += [torch.nn.BatchNorm1d(32)] if batchnorm else []
    layers += [torch.nn.ReLU(), torch.nn.Linear(32, 4)]
    return torch.nn.Sequential(*layers)


def loss_after_training(model, x, y, lr: float, steps: int = 100) -> float:
    """Loss on all the data after `steps` SGD steps at a constant LR (the brute force)."""
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    batches = iter([])
    source = Batches(x, y, seed=1)
    for _ in range(steps):
        try:
            xb, yb = next(batches)
        except StopIteration:
            batches = iter(source)
            xb, yb = next(batches)
        loss = F.cross_entropy(model(xb), yb)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        value = F.cross_entropy(model(x), y).item()
    return value if np.isfinite(value) else np.inf


@pytest.mark.parametrize("seed", [0, 1])
def test_suggestion_is_in_the_decade_that_trains_best(seed):
    x, y = blobs(seed)
    model = mlp(seed)
    init = copy.deepcopy(model.state_dict())
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    result = range_test(model, optimizer, Batches(x, y, seed=seed), CPU, settings())

    # Brute force: train from the same start at each LR of a grid, keep the best.
    grid = np.logspace(-4, 1.5, 23)  # 4 points per decade
    losses = []
    for lr in grid:
        model.load_state_dict(init)
        losses.append(loss_after_training(model, x, y, lr))
    best = grid[int(np.argmin(losses))]
    assert best / 10 <= result.suggested_lr <= best * 10, (result.suggested_lr, best)
    assert result.diverged and len(result.lrs) < 100  # end_lr=100 blows up: stopped early
    assert result.min_loss_lr == pytest.approx(result.lrs[int(np.argmin(result.losses))] / 10)


def test_model_and_optimizer_are_restored_exactly():
    x, y = blobs()
    model = mlp(batchnorm=True)  # buffers (running stats) must come back too
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    loss_after_training(model, x, y, lr=0.01, steps=3)  # momentum buffers exist
    before_model = copy.deepcopy(model.state_dict())
    before_optimizer = copy.deepcopy(optimizer.state_dict())

    range_test(model, optimizer, Batches(x, y), CPU, settings(num_iter=30))
    after = model.state_dict()
    assert all(torch.equal(before_model[k], after[k]) for k in before_model)
    state = optimizer.state_dict()
    assert state["param_groups"] == before_optimizer["param_groups"]  # the LR is back
    for key, value in before_optimizer["state"].items():
        assert torch.equal(value["momentum_buffer"], state["state"][key]["momentum_buffer"])


def test_restored_even_when_the_test_fails():
    x, y = blobs()
    model = mlp()
    before = copy.deepcopy(model.state_dict())

    def broken():
        yield from Batches(x, y)
        raise RuntimeError("loader died")

    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(RuntimeError, match="loader died"):
        range_test(model, optimizer, broken(), CPU, settings(num_iter=50, end_lr=1e-3))
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_same_losses_as_torch_lr_finder(capsys):
    """The reference implementation, on the same problem, data order and start weights."""
    from torch_lr_finder import LRFinder, TrainDataLoaderIter

    x, y = blobs()
    ours_model, theirs_model = mlp(), mlp()
    ours = range_test(
        ours_model,
        torch.optim.SGD(ours_model.parameters(), lr=1e-5, momentum=0.9),
        Batches(x, y),
        CPU,
        settings(num_iter=40, end_lr=1.0, smoothing=0.0, diverge_threshold=1e9),
    )
    finder = LRFinder(
        theirs_model,
        torch.optim.SGD(theirs_model.parameters(), lr=1e-5, momentum=0.9),
        torch.nn.CrossEntropyLoss(),
        device="cpu",
    )
    finder.range_test(
        TrainDataLoaderIter(Batches(x, y)),
        start_lr=1e-5,
        end_lr=1.0,
        num_iter=40,
        smooth_f=0.0,
        diverge_th=1e9,
    )
    capsys.readouterr()  # it prints; eva does not
    assert ours.lrs == pytest.approx(finder.history["lr"], rel=1e-12)
    assert ours.raw_losses == pytest.approx(finder.history["loss"], rel=1e-5)


def test_smoothing_without_lag():
    """A step down at point 50: the one-way average puts the step later, zero_lag does not."""
    values = np.r_[np.full(50, 2.0), np.full(50, 1.0)]
    one_way = running_average(values, 0.1)
    both = zero_lag(values, 0.1)
    crossing = lambda curve: int(np.argmax(curve < 1.5))  # noqa: E731
    assert crossing(one_way) >= 55  # lags by several points
    assert abs(crossing(both) - 50) <= 1
    assert zero_lag(values, 0.0).tolist() == values.tolist()


def test_a_diverging_tail_does_not_hide_the_minimum():
    falls = np.linspace(2.0, 1.0, 80)
    values = np.r_[falls, [5.0, 50.0, 500.0]]
    smoothed = zero_lag(values, 0.1)
    assert np.argmin(smoothed) >= 70 and smoothed.min() < 1.2


def test_suggest_finds_the_steepest_fall_and_falls_back_when_there_is_none():
    lrs = exponential_lrs(1e-6, 1.0, 61)  # 10 points per decade
    losses = 2.0 - np.tanh(2 * (np.log10(lrs) + 3))  # falls fastest at 1e-3, lowest at the end
    steepest, min_loss = suggest(lrs, losses)
    assert steepest == pytest.approx(1e-3, rel=0.05)
    assert min_loss == pytest.approx(0.1)

    rising = np.linspace(1.0, 3.0, 30)  # lowest at the start: no fall to measure
    steepest, min_loss = suggest(exponential_lrs(1e-5, 1.0, 30), rising)
    assert steepest is None and min_loss == pytest.approx(1e-6)


def test_falls_back_to_min_loss_and_says_why():
    x, y = blobs()
    model = mlp()
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    # Starts far too high: the loss blows up at the second step, no descent to measure.
    result = range_test(
        model, optimizer, Batches(x, y), CPU, settings(start_lr=50.0, end_lr=1e4, num_iter=20)
    )
    assert result.diverged and len(result.lrs) == 2
    assert result.steepest_lr is None
    assert result.suggested_lr == result.min_loss_lr == pytest.approx(5.0)  # 50 / 10
    assert "min loss / 10" in result.note


def test_min_loss_rule_is_used_when_asked():
    x, y = blobs()
    model = mlp()
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    result = range_test(model, optimizer, Batches(x, y), CPU, settings(rule="min_loss"))
    assert result.suggested_lr == result.min_loss_lr != result.steepest_lr


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"start_lr": 1.0, "end_lr": 0.1}, "lr_find.start_lr=1.0, lr_find.end_lr=0.1"),
        ({"num_iter": 3}, "lr_find.num_iter=3"),
        ({"smoothing": 1.0}, "lr_find.smoothing=1.0"),
        ({"diverge_threshold": 1.0}, "lr_find.diverge_threshold=1.0"),
        ({"rule": "valley"}, "lr_find.rule='valley'"),
    ],
)
def test_bad_settings_name_the_value(change, named):
    model = mlp()
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    with pytest.raises(EvaError) as e:
        range_test(model, optimizer, [], CPU, settings(**change))
    assert str(e.value).startswith(named) and "\n" not in str(e.value)


def test_an_empty_loader_is_a_clear_error():
    model = mlp()
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    with pytest.raises(EvaError, match="training loader is empty"):
        range_test(model, optimizer, [], CPU, settings())
