"""Composition and validation: every option of every group composes and validates, run-level
keys are typed at compose time, options' arguments are checked against their builders."""

import subprocess
import sys

import pytest
from helpers import GROUPS, REPO, options_of
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf
from omegaconf.errors import ValidationError

from eva.config.validate import validate
from eva.errors import EvaError

GROUP_OPTIONS = [(group, option) for group in GROUPS for option in options_of(group)]


def test_every_group_has_options_on_disk():
    assert all(options_of(group) for group in GROUPS)


@pytest.mark.parametrize(("group", "option"), GROUP_OPTIONS)
def test_every_group_option_composes_and_validates(compose, group, option):
    overrides = [f"{group}={option}"]
    if group == "augment":
        overrides.append("dataset=synthetic")  # a 32x32 dataset every augmentation fits
    cfg = compose(*overrides)
    assert cfg[group].name == option  # the option's name, without the YAML saying it
    validate(cfg)
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


def test_wrong_type_of_a_run_key_fails_at_compose_time(compose):
    with pytest.raises(ConfigCompositionException) as e:
        compose("epochs=abc")
    assert isinstance(e.value.__cause__, ValidationError)


@pytest.mark.parametrize(
    ("override", "allowed"),
    [
        ("mode=tset", "train, test, lr_find"),
        ("precision=fp8", "fp32, bf16, fp16"),
        ("lr_find.rule=fastest", "steepest, min_loss"),
    ],
)
def test_closed_run_choices_fail_at_compose_time_with_the_list(compose, override, allowed):
    with pytest.raises(ConfigCompositionException) as e:
        compose(override)
    assert allowed in str(e.value.__cause__)


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
        ("model.dropout=lots", "model.dropout='lots'"),
        ("optimizer.lr=-0.1", "optimizer.lr=-0.1"),
        ("l1_weight=-1e-5", "l1_weight=-1e-05"),
        ("resume=true mode=lr_find", "resume=true continues a training run; mode=lr_find"),
        ("scheduler.max_lr=0", "scheduler.max_lr=0"),
        ("scheduler.max_lr=banana", "scheduler.max_lr=banana: must be a positive number or find"),
        ("scheduler.max_lr=true", "scheduler.max_lr=True"),
        ("scheduler.pct_start=1.5", "scheduler.pct_start=1.5"),
        ("scheduler.peak_epoch=30", "scheduler.peak_epoch=30"),
        ("scheduler.anneal=cosine", "scheduler.anneal='cosine': expected one of linear, cos"),
        ("scheduler.div_factor=0", "scheduler.div_factor=0"),
        ("mode=test", "mode=test needs checkpoint=PATH"),
        ("mode=lr_find lr_find.start_lr=20", "lr_find.start_lr=20.0, lr_find.end_lr=10.0"),
        ("scheduler.max_lr=find lr_find.num_iter=2", "lr_find.num_iter=2"),
        ("lr_find.num_iter=2", None),  # checked only when the range test runs
        ("mode=lr_find", None),
        ("scheduler.max_lr=find", None),
        ("report.misclassified=-1", "report.misclassified=-1"),
        ("model=ultimus model.variant=fancy", "model.variant='fancy': expected one of spec"),
        ("model.channels=[8,16]", "model.channels=[8, 16]: expected 4 values, got 2"),
        ("+model.widht=3", "model.widht: Session6Net takes no argument 'widht'"),
        ("model._target_=nosuch.nets.Net", "model._target_=nosuch.nets.Net: cannot import"),
        ("dataset.mean=[0.5,0.5]", "dataset.mean/std have 2/3 values"),
        ("augment=resnet augment.cutout_size=40", "augment.cutout_size=40: the hole must fit"),
        ("augment=resnet augment.pad=40", "augment.pad=40"),
        ("augment=session6 augment.hflip_p=2", "augment.hflip_p=2"),
        ("augment=resnet augment.pad_mode=wrap", "augment.pad_mode='wrap': expected one of"),
        ("augment.hflip_p=0.5", None),  # augment=none: no builder, so not a key it has...
        ("augment.backend=gpu", "augment.backend='gpu': Invalid value 'gpu', expected one of"),
        ("augment=session6 augment.backend=torch", None),
        ("dataset=cifar10", None),  # valid: nothing raised
    ],
)
def test_validate_names_the_bad_value(compose, override, named):
    if override == "augment.hflip_p=0.5":
        with pytest.raises(ConfigCompositionException, match="hflip_p"):
            compose(override)  # ...refused at composition
        return
    cfg = compose(*override.split())
    if named is None:
        validate(cfg)
        return
    with pytest.raises(EvaError) as e:
        validate(cfg)
    message = str(e.value)
    assert message.startswith(named) and "\n" not in message, message


def test_a_builder_argument_of_the_wrong_length_is_one_line(compose):
    with pytest.raises(EvaError, match=r"model.channels=\[8\]: expected 4 values"):
        validate(compose("model.channels=[8]"))


def test_momentum_has_one_owner(compose):
    """One-cycle writes SGD's momentum / Adam's beta1 every step: setting both is refused,
    naming what wins; the defaults and cycle_momentum=false stay valid."""
    validate(compose(), overrides=[])
    with pytest.raises(EvaError, match=r"^optimizer.momentum=0.8: scheduler=onecycle cycles"):
        validate(compose("optimizer.momentum=0.8"), overrides=["optimizer.momentum=0.8"])
    with pytest.raises(EvaError, match=r"^optimizer.betas=\[0.8,0.9\]"):
        overrides = ["optimizer=adam", "optimizer.betas=[0.8,0.9]"]
        validate(compose(*overrides), overrides=overrides)
    overrides = ["optimizer.momentum=0.8", "scheduler.cycle_momentum=false"]
    validate(compose(*overrides), overrides=overrides)
    validate(compose("scheduler=step", "optimizer.momentum=0.8"), ["optimizer.momentum=0.8"])


def run_cli(*args: str, cwd) -> subprocess.CompletedProcess:
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
    assert cfg.model._target_ == "eva.models.ultimus.UltimusNet"
    assert cfg.model.variant == "stable"
    assert cfg.optimizer._target_ == "torch.optim.Adam"


def test_composition_and_help_import_no_torch(tmp_path):
    code = (
        "import sys; from eva.config import compose_config; "
        "cfg = compose_config(['model=ultimus', 'augment=resnet']); "
        "from eva.cli.help import help_text; from eva.config import CONF_DIR; "
        "help_text(CONF_DIR, []); print('torch' in sys.modules)"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "False"
