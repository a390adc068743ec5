"""Defects found by review and by trying bad input, one regression test each.
The one-line errors for bad input live with their kind: tests/test_config.py,
tests/test_errors.py, tests/test_sweep_input.py."""

import json

import pytest
import torch
from helpers import TINY_CLI, run_cli
from omegaconf import OmegaConf
from torch import nn

from eva.modes.test import same_split
from eva.modes.train import train
from eva.optim import build_optimizer


def test_startup_seconds_of_a_sweep_job_count_from_that_job(tmp_path):
    """Jobs after the first in one process used to count from the process start, so each
    one included every job before it (10 s, 32 s, 48 s for three trials)."""
    r = run_cli(["-m", *TINY_CLI, "tracking.enabled=false", "seed=1,2,3", "hydra.sweep.dir=m"],
                cwd=tmp_path)  # fmt: skip
    assert r.returncode == 0, r.stderr
    results = [json.loads((tmp_path / "m" / str(i) / "results.json").read_text()) for i in range(3)]
    first, *later = [r["startup_seconds"] for r in results]
    # The first job's start-up holds the interpreter and the imports; later jobs only build
    # their run, and neither includes the jobs that ran before it.
    assert all(s < first for s in later), (first, later)
    assert later[1] < results[0]["seconds"] + results[1]["seconds"]


def test_weight_decay_skips_norms_and_biases_when_asked(compose):
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4, 2))
    every = build_optimizer(compose("optimizer=sgd"), model)
    assert len(every.param_groups) == 1 and every.param_groups[0]["weight_decay"] == 5e-4

    cfg = compose("optimizer=sgd", "optimizer.decay_norm_and_bias=false")
    optimizer = build_optimizer(cfg, model)
    decayed, exempt = optimizer.param_groups
    assert [p.ndim for p in decayed["params"]] == [4, 2]  # conv and linear weights
    assert len(exempt["params"]) == 4 and exempt["weight_decay"] == 0.0  # BN w/b, biases
    assert decayed["weight_decay"] == 5e-4
    # a parameter with no gradient moves only by its decay: the exempt ones stay put
    bn_weight = model[1].weight.detach().clone()
    conv_weight = model[0].weight.detach().clone()
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    optimizer.step()
    assert torch.equal(model[1].weight, bn_weight)
    assert not torch.equal(model[0].weight, conv_weight)


def test_a_kill_between_the_two_checkpoint_writes_resumes_consistently(
    compose, tmp_path, monkeypatch
):
    """best.pt was written before last.pt: a kill between them left best.pt ahead of the
    state a resume continues from (here: a best.pt and no last.pt to resume at all)."""
    cfg = compose(*TINY_CLI, "tracking.enabled=false", "epochs=2")
    real_save, calls = torch.save, []

    def killed_on_the_second_write(obj, f, *args, **kwargs):
        calls.append(1)
        if len(calls) == 2:  # epoch 1 improves (it is the first): its second file
            raise KeyboardInterrupt
        return real_save(obj, f, *args, **kwargs)

    with monkeypatch.context() as m:
        m.setattr(torch, "save", killed_on_the_second_write)
        with pytest.raises(KeyboardInterrupt):
            train(cfg, tmp_path)
    last = torch.load(tmp_path / "checkpoints" / "last.pt", weights_only=True)
    assert last["epoch"] == 1  # what a resume continues from is on disk

    resumed = OmegaConf.merge(cfg, {"resume": True})
    results = train(resumed, tmp_path)
    best = torch.load(tmp_path / "checkpoints" / "best.pt", weights_only=True)
    assert best["epoch"] == results["best_epoch"]
    assert best["metrics"] == results["history"][results["best_epoch"] - 1]


def test_mode_test_knows_the_whole_test_split_is_the_same_for_any_seed(compose):
    trained = {"seed": 1, "dataset": {"name": "synthetic", "test_subset": None}}
    state = {"config": trained}
    assert same_split(compose("dataset=synthetic", "seed=7"), state)
    subset = {"config": {"seed": 1, "dataset": {"name": "synthetic", "test_subset": 32}}}
    assert not same_split(compose("dataset=synthetic", "dataset.test_subset=32", "seed=7"), subset)
    assert same_split(compose("dataset=synthetic", "dataset.test_subset=32", "seed=1"), subset)
    assert not same_split(compose("dataset=synthetic", "seed=1"), subset)


def test_two_writers_of_one_file_never_rename_each_others_temporary(tmp_path):
    """Two eva-sweep workers that both see the study end write optimization_results.yaml at
    once; with one shared temporary name, one renamed the other's file away and crashed."""
    import threading

    from eva.files import write_text

    target = tmp_path / "optimization_results.yaml"
    errors: list[BaseException] = []

    def writer(text: str) -> None:
        try:
            for _ in range(300):
                write_text(target, text)
        except BaseException as e:  # any failure of a writer fails the test
            errors.append(e)

    threads = [threading.Thread(target=writer, args=(f"worker {k}\n" * 200,)) for k in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[0]
    assert target.read_text() in {"worker 0\n" * 200, "worker 1\n" * 200}  # one whole file
    assert [p.name for p in tmp_path.iterdir()] == [target.name]  # no temporary left
