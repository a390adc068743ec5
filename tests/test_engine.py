"""Device selection and checkpoint files."""

import numpy as np
import pytest
import torch

from eva.engine.checkpoint import load_checkpoint, save_checkpoint
from eva.engine.device import resolve_device
from eva.errors import EvaError


def test_auto_and_cpu_devices():
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected
    assert resolve_device("cpu") == torch.device("cpu")


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("cuda:7", "device='cuda:7': this machine has"),
        ("tpu", "device='tpu': expected auto, cpu, cuda or cuda:N"),
        ("meta", "device='meta': expected auto, cpu, cuda or cuda:N"),
    ],
)
def test_unavailable_or_unknown_devices_are_clear_errors(spec, message):
    if spec == "cuda:7" and torch.cuda.device_count() > 7:
        pytest.skip("this machine really has a cuda:7")
    with pytest.raises(EvaError, match=message.replace("(", r"\(")):
        resolve_device(spec)


def test_checkpoint_round_trip_is_weights_only_and_leaves_no_temp_file(tmp_path):
    path = tmp_path / "checkpoints" / "best.pt"
    state = {"model": {"w": torch.arange(3.0)}, "epoch": 2, "config": {"seed": 1}}
    save_checkpoint(state, path)
    loaded = load_checkpoint(path)
    assert torch.equal(loaded["model"]["w"], state["model"]["w"])
    assert loaded["epoch"] == 2 and loaded["config"] == {"seed": 1}
    assert [p.name for p in path.parent.iterdir()] == ["best.pt"]


def test_a_failed_save_keeps_the_previous_checkpoint(tmp_path):
    path = tmp_path / "best.pt"
    save_checkpoint({"epoch": 1}, path)
    with pytest.raises(Exception):  # noqa: B017 (pickling a lambda fails; which error varies)
        save_checkpoint({"epoch": 2, "bad": lambda: None}, path)
    assert load_checkpoint(path) == {"epoch": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["best.pt"]  # no temp file left over


def test_loading_refuses_pickled_code(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"callback": print}, path)  # plain torch.save can pickle any object
    with pytest.raises(Exception, match="[Ww]eights only"):
        load_checkpoint(path)


def test_a_loss_gone_nan_mid_epoch_stops_at_the_next_check(monkeypatch):
    """No progress bar: the loss is read back every CHECK_EVERY (50) steps, not every step."""
    from eva.engine import loop
    from eva.optim.schedulers import Schedule

    class GoesNan(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = torch.nn.Linear(4, 3)
            self.calls = 0

        def forward(self, x):
            self.calls += 1
            out = self.fc(x)
            return out * float("nan") if self.calls > 60 else out  # from step 61 on

    batches = [(torch.randn(2, 4), torch.tensor([0, 1])) for _ in range(120)]
    model = GoesNan()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    with pytest.raises(loop.NonFiniteLoss) as e:
        loop.train_one_epoch(
            model,
            batches,
            optimizer,
            Schedule(None, False),
            torch.device("cpu"),
            progress=False,
            description="epoch 3/5",
        )
    assert str(e.value).startswith("epoch 3/5: the training loss is nan by step 100 of 120")
    assert model.calls == 100  # stopped at the check after step 100, not at the epoch's end


def test_evaluate_keeps_predictions_from_the_same_pass():
    """One pass serves both: the loss and accuracy are the same with or without predictions."""
    from eva.engine.loop import Evaluation, Predictions, evaluate

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 5)).train()
    images, labels = torch.randn(23, 3, 2, 2), torch.randint(0, 5, (23,))
    batches = [(images[i : i + 8], labels[i : i + 8]) for i in range(0, 23, 8)]
    calls = []
    model.register_forward_hook(lambda *_: calls.append(1))

    plain = evaluate(model, batches, torch.device("cpu"))
    assert type(plain) is Evaluation and not hasattr(plain, "preds")  # nothing per sample
    loss, acc = plain  # the form training and mode=test unpack
    assert (loss, acc) == (plain.loss, plain.acc)
    kept = evaluate(model, batches, "cpu", keep_predictions=True)
    assert isinstance(kept, Predictions) and len(calls) == 2 * len(batches)
    assert (kept.loss, kept.acc) == (plain.loss, plain.acc)  # exactly, not approximately

    with torch.no_grad():
        logits = model.eval()(images)
    np.testing.assert_array_equal(kept.labels, labels.numpy())
    np.testing.assert_array_equal(kept.preds, logits.argmax(1).numpy())
    np.testing.assert_allclose(kept.confidence, torch.softmax(logits, 1).max(1).values, rtol=1e-6)
    assert kept.acc == (kept.preds == kept.labels).mean()
    assert kept.loss == pytest.approx(torch.nn.functional.cross_entropy(logits, labels).item())
    assert kept.labels.dtype == kept.preds.dtype == np.int64
    assert kept.confidence.dtype == np.float32


def test_evaluate_on_no_batches_is_a_clear_error():
    from eva.engine.loop import evaluate

    model = torch.nn.Linear(3, 2)
    for keep in (False, True):
        with pytest.raises(ValueError, match="evaluate: the evaluation batches were empty"):
            evaluate(model, [], torch.device("cpu"), keep_predictions=keep)
