"""Every check of a composed config, run before any data loads, any MLflow run or Optuna
trial exists: a bad value costs a second and one line, never an epoch or a stray run.

Hydra's schema (eva/config/schemas.py) already rejected wrong types, unknown run-level
keys and closed choices at compose time. Here: ranges, eva's keys of each group, each
option's builder arguments against its signature (eva/config/options.py), and the checks a
builder attaches to itself (`builder.check`, e.g. the one-cycle schedule's).
"""

import dataclasses
import math
import posixpath

from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import ValidationError

from eva.config import options
from eva.config.schemas import GROUP_KEYS, RangeTestRule
from eva.errors import EvaError

GROUPS = tuple(GROUP_KEYS)
# What eva passes each group's builder itself (those its signature names): never YAML keys.
PROVIDED = {
    "model": ("in_channels", "num_classes"),
    "dataset": ("train", "root", "download", "num_classes", "in_channels", "image_size"),
    "augment": ("image_size", "mean", "std"),
    "optimizer": ("params", "lr"),
    "scheduler": ("optimizer", "epochs", "steps_per_epoch"),
}


def require(ok: bool, message: str) -> None:
    if not ok:
        raise EvaError(message)


def is_number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def eva_keys(group: str) -> set[str]:
    return {f.name for f in dataclasses.fields(GROUP_KEYS[group])}


def fill_names(cfg: DictConfig, choices: dict | None = None) -> None:
    """Give each group's `name` a plain value: the YAML's own, else the option chosen
    (Hydra's runtime choices, passed in: never read from Hydra's global state, which may
    be another command's), else the builder's name. Resolved once, here."""
    for group in GROUPS:
        node = cfg.get(group)
        if node is None:
            continue
        name = None
        if not _names_the_choice(node):  # the YAML (or an override) set a name
            name = node.get("name")
        if name is None:
            name = (choices or {}).get(group)
        if name is None:
            target = node.get(options.TARGET)
            name = options.target_name(target).lower() if target else "none"
        with open_dict(cfg):
            node.name = str(name)


def _names_the_choice(node: DictConfig) -> bool:
    """Is `name` still train.yaml's ${hydra:runtime.choices.<group>}?"""
    if "name" not in node or not OmegaConf.is_interpolation(node, "name"):
        return "name" not in node
    raw = OmegaConf.to_container(node, resolve=False)["name"]  # the interpolation's text
    return "hydra:runtime.choices" in str(raw)


def check_group_keys(group: str, node: DictConfig) -> DictConfig:
    """eva's keys of a group (types, missing values), as a typed node."""
    spec = GROUP_KEYS[group]
    given = {k: node[k] for k in eva_keys(group) if k in node}
    try:
        typed = OmegaConf.merge(OmegaConf.structured(spec), given)
    except ValidationError as e:
        key = str(e.full_key).split(".")[-1]
        why = str(e.msg).splitlines()[0] if e.msg else type(e).__name__
        raise EvaError(f"{group}.{key}={given.get(key)!r}: {why}") from None
    missing = [f.name for f in dataclasses.fields(spec) if OmegaConf.is_missing(typed, f.name)]
    require(not missing, f"{group}={node.get('name')}: needs {group}.{', '.join(missing)}")
    return typed


def validate(cfg: DictConfig, overrides: list[str] | None = None) -> None:
    """Raise an EvaError (one line naming the bad value) for anything a run would trip on.

    `overrides` are the command line's (Hydra's task overrides): a setting that another one
    silently replaces is refused only when the user asked for both.
    """
    fill_names(cfg)
    check_run(cfg)
    check_model(cfg)
    check_dataset(cfg)
    check_augment(cfg)
    check_optimizer(cfg, overrides or [])
    check_scheduler(cfg)
    if cfg.mode == "lr_find" or finds_max_lr(cfg):
        check_range_test(cfg.lr_find)
    check_tracking(cfg)
    r = cfg.report
    for key in ("samples", "misclassified", "gradcam"):
        require(r[key] >= 0, f"report.{key}={r[key]}: must be 0 or more")
    require(r.dpi > 0, f"report.dpi={r.dpi}: must be positive")


def check_range_test(lf) -> None:
    """The LR range test's settings (lr_find.*), when a range test will run."""
    require(
        0 < lf.start_lr < lf.end_lr,
        f"lr_find.start_lr={lf.start_lr}, lr_find.end_lr={lf.end_lr}: need 0 < start < end",
    )
    require(lf.num_iter >= 5, f"lr_find.num_iter={lf.num_iter}: must be at least 5")
    require(0 <= lf.smoothing < 1, f"lr_find.smoothing={lf.smoothing}: must be in [0, 1)")
    require(
        lf.diverge_threshold > 1,
        f"lr_find.diverge_threshold={lf.diverge_threshold}: must be above 1",
    )
    rules = [r.value for r in RangeTestRule]
    require(lf.rule in rules, f"lr_find.rule={lf.rule!r}: expected one of {', '.join(rules)}")


def validate_job(job_cfg: DictConfig) -> None:
    """validate() for a job's config as Hydra composes it (its `hydra` node included): the
    option names from its runtime choices, the overrides from its task overrides."""
    hydra = job_cfg.hydra
    cfg = OmegaConf.masked_copy(job_cfg, [k for k in job_cfg if k != "hydra"])
    fill_names(cfg, dict(hydra.runtime.choices))
    validate(cfg, list(hydra.overrides.task))


def finds_max_lr(cfg) -> bool:
    return cfg.scheduler.get("max_lr") == "find"


def check_run(cfg) -> None:
    require(
        not cfg.resume or cfg.mode == "train",
        f"resume=true continues a training run; mode={cfg.mode} has nothing to resume",
    )
    require(cfg.epochs > 0, f"epochs={cfg.epochs}: must be a positive whole number")
    require(cfg.batch_size > 0, f"batch_size={cfg.batch_size}: must be a positive whole number")
    require(cfg.threads is None or cfg.threads > 0, f"threads={cfg.threads}: must be positive")
    require(cfg.l1_weight >= 0, f"l1_weight={cfg.l1_weight}: must be 0 or more")
    if cfg.mode == "test":
        require(bool(cfg.checkpoint), "mode=test needs checkpoint=PATH (a checkpoint eva wrote)")


def check_tracking(cfg) -> None:
    t = cfg.tracking
    interval = t.system_metrics_interval
    require(
        is_number(interval) and interval > 0 and math.isfinite(interval),
        f"tracking.system_metrics_interval={interval}: must be a positive number of seconds",
    )
    if t.register is None:
        return
    problem = registered_name_problem(str(t.register))
    require(problem is None, f"tracking.register={t.register!r}: {problem}")
    if cfg.mode == "train":  # mode=test and lr_find log no model: nothing to register
        require(
            t.enabled and t.log_model,
            f"tracking.register={t.register}: registers the run's logged model, which needs "
            "tracking.enabled=true and tracking.log_model=true",
        )


def registered_name_problem(name: str) -> str | None:
    """Why MLflow would refuse `name` for a registered model, or None: its own rule
    (mlflow.utils.validation._validate_model_name) and its store's length, checked here
    before the training rather than by the registry after it."""
    if not name.strip():
        return "a registered model's name must not be blank"
    if "/" in name or ":" in name:
        return "a registered model's name must not contain '/' or ':' (e.g. session6-fmnist)"
    norm = posixpath.normpath(name)
    if norm != name or norm == "." or norm.startswith(".."):
        return "a registered model's name must not read as a path such as '.' or '..x'"
    if len(name) > 256:
        return f"a registered model's name has at most 256 characters, not {len(name)}"
    return None


# ----------------------------------------------------------------------------- groups


def model_inputs(cfg) -> dict:
    """What eva passes a model builder: the dataset's shape."""
    return {"in_channels": cfg.dataset.in_channels, "num_classes": cfg.dataset.num_classes}


def check_model(cfg) -> None:
    node = cfg.model
    check_group_keys("model", node)
    require(options.TARGET in node, f"model={node.name}: its YAML needs _target_ (the class)")
    builder, kwargs = options.resolve("model", node, eva_keys("model"), model_inputs(cfg))
    dropout = kwargs.get("dropout", 0.0)
    require(is_number(dropout) and 0 <= dropout < 1, f"model.dropout={dropout}: must be in [0, 1)")


def dataset_inputs(cfg, train: bool = True) -> dict:
    """What eva passes a dataset builder (those its signature takes): see eva/data."""
    from pathlib import Path

    d = cfg.dataset
    return {
        "train": train,
        "root": Path(d.root).expanduser().absolute(),
        "download": d.download,
        "num_classes": d.num_classes,
        "in_channels": d.in_channels,
        "image_size": d.image_size,
    }


def check_dataset(cfg) -> None:
    d = cfg.dataset
    keys = check_group_keys("dataset", d)
    require(options.TARGET in d, f"dataset={d.name}: its YAML needs _target_ (the builder)")
    require(
        len(keys.mean) == len(keys.std) == keys.in_channels,
        f"dataset.mean/std have {len(keys.mean)}/{len(keys.std)} values, "
        f"dataset.in_channels={keys.in_channels}: give one value per channel",
    )
    require(all(v > 0 for v in keys.std), f"dataset.std={list(keys.std)}: must all be positive")
    require(keys.image_size > 0, f"dataset.image_size={keys.image_size}: must be positive")
    require(keys.num_classes > 1, f"dataset.num_classes={keys.num_classes}: must be 2 or more")
    require(keys.val_size >= 0, f"dataset.val_size={keys.val_size}: must be 0 or more")
    for key in ("train_subset", "test_subset"):
        value = keys[key]
        require(value is None or value > 0, f"dataset.{key}={value}: must be positive or null")
    require(
        keys.num_workers is None or keys.num_workers >= 0,
        f"dataset.num_workers={keys.num_workers}: must be 0 or more (or null: auto)",
    )
    options.resolve("dataset", d, eva_keys("dataset"), dataset_inputs(cfg))


def augment_inputs(cfg) -> dict:
    """What eva passes an augmentation builder (those its signature takes)."""
    d = cfg.dataset
    return {"image_size": d.image_size, "mean": list(d.mean), "std": list(d.std)}


def check_augment(cfg) -> None:
    a = cfg.augment
    keys = check_group_keys("augment", a)
    if options.TARGET not in a:  # augment=none: nothing to build
        given = options.own_keys(a, eva_keys("augment"))
        require(
            not given,
            f"augment.{next(iter(given), '')}: augment={a.name} has no _target_ to take arguments",
        )
        return
    builders = [options.TARGET] + (["batched"] if keys.backend == "torch" else [])
    if keys.backend == "torch":
        require(
            keys.batched is not None,
            f"augment.backend=torch: augment={a.name} runs on albumentations only (its YAML "
            "names no `batched` builder)",
        )
    for key in builders:
        node = a if key == options.TARGET else OmegaConf.merge(a, {options.TARGET: a[key]})
        builder, kwargs = options.resolve("augment", node, eva_keys("augment"), augment_inputs(cfg))
        run_check(builder, "augment", kwargs)


def check_optimizer(cfg, overrides: list[str]) -> None:
    o = cfg.optimizer
    keys = check_group_keys("optimizer", o)
    require(options.TARGET in o, f"optimizer={o.name}: its YAML needs _target_ (the class)")
    require(keys.lr > 0, f"optimizer.lr={keys.lr}: must be positive")
    wd = o.get("weight_decay", 0.0)
    require(is_number(wd) and wd >= 0, f"optimizer.weight_decay={wd}: must be 0 or more")
    options.resolve("optimizer", o, eva_keys("optimizer"), {"params": [], "lr": keys.lr})
    check_momentum_owner(cfg, overrides)


def check_momentum_owner(cfg, overrides: list[str]) -> None:
    """One owner for the momentum: with `cycle_momentum`, one-cycle writes SGD's momentum
    and Adam's beta1 at every step, so a command that sets those too is refused."""
    s = cfg.scheduler
    if not s.get("cycle_momentum"):
        return
    for key in ("momentum", "betas"):
        given = [o for o in overrides if o.lstrip("+~").split("=", 1)[0] == f"optimizer.{key}"]
        if given and key in cfg.optimizer:
            raise EvaError(
                f"{given[0]}: scheduler={s.name} cycles the momentum between "
                f"scheduler.base_momentum={s.base_momentum} and max_momentum={s.max_momentum} "
                "and would replace it: set those, or add scheduler.cycle_momentum=false"
            )


def scheduler_inputs(cfg, steps_per_epoch: int | None = None) -> dict:
    return {"optimizer": None, "epochs": cfg.epochs, "steps_per_epoch": steps_per_epoch}


def check_scheduler(cfg, steps_per_epoch: int | None = None) -> None:
    """Also called once the data is loaded (steps_per_epoch known), before any run exists."""
    s = cfg.scheduler
    check_group_keys("scheduler", s)
    require(options.TARGET in s, f"scheduler={s.name}: its YAML needs _target_ (the builder)")
    inputs = scheduler_inputs(cfg, steps_per_epoch)
    builder, kwargs = options.resolve("scheduler", s, eva_keys("scheduler"), inputs)
    if "max_lr" in kwargs:
        lr = kwargs["max_lr"]
        require(
            lr == "find" or (is_number(lr) and lr > 0 and math.isfinite(lr)),
            f"scheduler.max_lr={lr}: must be a positive number or find",
        )
    run_check(builder, "scheduler", {k: v for k, v in kwargs.items() if k != "optimizer"})


def run_check(builder, where: str, kwargs: dict) -> None:
    """A builder's own `check` (its arguments, before any work); a ValueError from it is
    bad input too."""
    check = getattr(builder, "check", None)
    if check is None:
        return
    try:
        check(**kwargs)
    except ValueError as e:
        raise EvaError(f"{where}: {' '.join(str(e).split())}") from None
