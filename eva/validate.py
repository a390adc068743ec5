"""Checks on config values that a type alone cannot express (ranges, choices).

Hydra's schemas already reject wrong types and unknown keys at compose time; these run
before any data is loaded, so a bad value costs a second, not an epoch.
"""

from eva.errors import EvaError

MODES = ("train", "test", "lr_find")
IMPLEMENTED_MODES = ("train",)


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise EvaError(message)


def validate(cfg) -> None:
    _require(cfg.mode in MODES, f"mode={cfg.mode!r}: expected one of {', '.join(MODES)}")
    _require(
        cfg.mode in IMPLEMENTED_MODES,
        f"mode={cfg.mode}: not available in this version of eva (only mode=train)",
    )
    _require(not cfg.resume, "resume=true: not available in this version of eva")
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
        _require(s.max_lr > 0, f"scheduler.max_lr={s.max_lr}: must be positive")
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
    _require(d.num_workers >= 0, f"dataset.num_workers={d.num_workers}: must be 0 or more")
