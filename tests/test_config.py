"""Composition: every group option composes against its schema; bad input fails early."""

import subprocess
import sys
from pathlib import Path

import pytest
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf
from omegaconf.errors import ValidationError

from eva.config import SCHEMAS
from eva.errors import EvaError
from eva.config.validate import validate

REPO = Path(__file__).resolve().parents[1]
GROUP_OPTIONS = [
    (group, path.stem)
    for group in SCHEMAS
    for path in sorted((REPO / "conf" / group).glob("*.yaml"))
]


def test_every_yaml_option_has_a_schema_and_vice_versa():
    on_disk = {(g, o) for g, o in GROUP_OPTIONS}
    in_store = {(g, o) for g, options in SCHEMAS.items() for o in options}
    assert on_disk == in_store


@pytest.mark.parametrize(("group", "option"), GROUP_OPTIONS)
def test_every_group_option_composes_typed(compose, group, option):
    cfg = compose(f"{group}={option}")
    node = cfg[group]
    assert OmegaConf.get_type(node) is SCHEMAS[group][option]
    OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)  # nothing left MISSING


def test_run_level_keys_exist_with_their_names(compose):
    cfg = compose()
    for key in ("seed", "epochs", "batch_size", "device", "mode", "l1_weight", "checkpoint"):
        assert key in cfg
    assert cfg.resume is False
    for dotted in (
        "model.dropout",
        "optimizer.lr",
        "optimizer.weight_decay",
        "scheduler.max_lr",
        "dataset.root",
        "dataset.train_subset",
        "dataset.test_subset",
    ):
        OmegaConf.select(cfg, dotted, throw_on_missing=True)


def test_onecycle_peak_follows_the_optimizer_unless_overridden(compose):
    assert compose("optimizer=adam").scheduler.max_lr == compose("optimizer=adam").optimizer.lr
    assert compose("optimizer=sgd").scheduler.max_lr == 0.05
    assert compose("optimizer=adam", "scheduler.max_lr=0.02").scheduler.max_lr == 0.02


def test_wrong_type_fails_at_compose_time(compose):
    with pytest.raises(ConfigCompositionException) as e:
        compose("epochs=abc")
    assert isinstance(e.value.__cause__, ValidationError)
    with pytest.raises(ConfigCompositionException):
        compose("model.dropout=lots")


def test_unknown_key_fails_at_compose_time(compose):
    with pytest.raises(ConfigCompositionException, match="dropuot"):
        compose("model.dropuot=0.1")


def test_experiment_preset_overrides_groups_and_run_keys(compose):
    cfg = compose("experiment=quickstart")
    assert (cfg.model.name, cfg.dataset.name, cfg.optimizer.name) == (
        "session6",
        "fashion_mnist",
        "adam",
    )
    assert cfg.epochs == 2 and cfg.name == "quickstart"
    assert compose("experiment=quickstart", "epochs=5").epochs == 5


@pytest.mark.parametrize(
    ("override", "named"),
    [
        ("epochs=0", "epochs=0"),
        ("batch_size=-4", "batch_size=-4"),
        ("model.dropout=1.0", "model.dropout=1.0"),
        ("optimizer.lr=-0.1", "optimizer.lr=-0.1"),
        ("l1_weight=-1e-5", "l1_weight=-1e-05"),
        ("mode=predict", "mode='predict'"),
        ("resume=true mode=lr_find", "resume=true continues a training run; mode=lr_find"),
        ("scheduler.max_lr=0", "scheduler.max_lr=0"),
        ("scheduler.max_lr=banana", "scheduler.max_lr=banana: must be a positive number or find"),
        ("scheduler.max_lr=true", "scheduler.max_lr=True"),
        ("mode=test", "mode=test needs checkpoint=PATH"),
        ("mode=lr_find lr_find.start_lr=20", "lr_find.start_lr=20.0, lr_find.end_lr=10.0"),
        ("scheduler.max_lr=find lr_find.num_iter=2", "lr_find.num_iter=2"),
        ("lr_find.num_iter=2", None),  # checked only when the range test runs
        ("mode=lr_find", None),
        ("scheduler.max_lr=find", None),
        ("report.misclassified=-1", "report.misclassified=-1"),
        ("dataset=cifar10", None),  # valid: nothing raised
    ],
)
def test_validate_names_the_bad_value(compose, override, named):
    cfg = compose(*override.split())
    if named is None:
        validate(cfg)
        return
    with pytest.raises(EvaError) as e:
        validate(cfg)
    message = str(e.value)
    assert message.startswith(named) and "\n" not in message


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(REPO / "train.py"), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_cli_prints_composed_config(tmp_path):
    r = run_cli("--cfg", "job", "model=ultimus", "optimizer=adam", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    cfg = OmegaConf.create(r.stdout)
    assert cfg.model.name == "ultimus" and cfg.model.variant == "stable"
    assert cfg.optimizer.name == "adam"
