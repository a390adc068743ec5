"""Checks on config values that a type alone cannot express (ranges, choices).

Hydra's schemas already reject wrong types and unknown keys at compose time; these run
before any data is loaded, so a bad value costs a second, not an epoch.
"""

from eva.errors import EvaError

MODES = ("train", "test", "lr_find")
PRECISIONS = ("fp32", "bf16", "fp16")
AUGMENT_BACKENDS = ("albumentations", "torch")


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise EvaError(message)


def is_number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def validate(cfg) -> None:
    _require(cfg.mode in MODES, f"mode={cfg.mode!r}: expected one of {', '.join(MODES)}")
    _require(
        not cfg.resume or cfg.mode == "train",
        f"resume=true continues a training run; mode={cfg.mode} has nothing to resume",
    )
    _require(cfg.epochs > 0, f"epochs={cfg.epochs}: must be a positive whole number")
    _require(cfg.batch_size > 0, f"batch_size={cfg.batch_size}: must be a positive whole number")
    _require(cfg.threads is None or cfg.threads > 0, f"threads={cfg.threads}: must be positive")
    _require(cfg.l1_weight >= 0, f"l1_weight={cfg.l1_weight}: must be 0 or more")
    _require(0 <= cfg.model.dropout < 1, f"model.dropout={cfg.model.dropout}: must be in [0, 1)")
    _require(cfg.optimizer.lr > 0, f"optimizer.lr={cfg.optimizer.lr}: must be positive")
    _require(
        cfg.optimizer.weight_decay >= 0,
        f"optimizer.weight_decay={cfg.optimizer.weight_decay}: must be 0 or more",
    )
    s = cfg.scheduler
    if s.name == "onecycle":
        _require(
            s.max_lr == "find" or (is_number(s.max_lr) and s.max_lr > 0),
            f"scheduler.max_lr={s.max_lr}: must be a positive number or find",
        )
        _require(s.div_factor > 0, f"scheduler.div_factor={s.div_factor}: must be positive")
        _require(
            s.final_div_factor > 0,
            f"scheduler.final_div_factor={s.final_div_factor}: must be positive",
        )
    d = cfg.dataset
    _require(
        len(d.mean) == len(d.std) == d.in_channels,
        f"dataset.mean/std have {len(d.mean)}/{len(d.std)} values, "
        f"dataset.in_channels={d.in_channels}",
    )
    _require(all(v > 0 for v in d.std), f"dataset.std={list(d.std)}: must all be positive")
    _require(
        d.num_workers is None or d.num_workers >= 0,
        f"dataset.num_workers={d.num_workers}: must be 0 or more (or null: auto)",
    )
    _require(
        cfg.precision in PRECISIONS,
        f"precision={cfg.precision!r}: expected one of {', '.join(PRECISIONS)}",
    )
    _require(
        cfg.augment.backend in AUGMENT_BACKENDS,
        f"augment.backend={cfg.augment.backend!r}: expected one of {', '.join(AUGMENT_BACKENDS)}",
    )
    if cfg.mode == "test":
        _require(bool(cfg.checkpoint), "mode=test needs checkpoint=PATH (a checkpoint eva wrote)")
    if cfg.mode == "lr_find" or (s.name == "onecycle" and s.max_lr == "find"):
        from eva.optim.lr_find import check_settings

        check_settings(cfg.lr_find)
    r = cfg.report
    for key in ("samples", "misclassified", "gradcam"):
        _require(r[key] >= 0, f"report.{key}={r[key]}: must be 0 or more")
    _require(r.dpi > 0, f"report.dpi={r.dpi}: must be positive")
