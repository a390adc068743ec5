"""What a run's MLflow params and tags say.

Params are the resolved config flattened to dotted keys spelled exactly like command-line
overrides (`scheduler.max_lr`, `model.dropout`), with values written the way an override
takes them (`null`, `true`, `[24, 48, 64, 96]`): any param copied from the UI reruns as
`python -m eva key=value`. Derived facts live under `derived.`, which is no config key.
"""

import getpass
import socket
import subprocess
from pathlib import Path

import eva
from eva.tracking.store import redact
from evasweep.overrides import override_value

MAX_VALUE = 6000  # MLflow's limit on a param value, in characters


def flatten(config: dict, prefix: str = "") -> dict[str, str]:
    """{"model": {"dropout": 0.1}} -> {"model.dropout": "0.1"} (a resolved, plain dict)."""
    flat: dict[str, str] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, prefix=f"{name}."))
        else:
            flat[name] = override_value(value)[:MAX_VALUE]
    return flat


def config_params(config: dict) -> dict[str, str]:
    flat = flatten(config)
    if flat.get("tracking.uri", "null") != "null":
        flat["tracking.uri"] = redact(flat["tracking.uri"])  # never log a password
    return flat


def derived_params(*, parameters: int, sizes: dict, device, steps_per_epoch: int) -> dict:
    derived = {
        "derived.parameters": parameters,
        "derived.device": device,
        "derived.steps_per_epoch": steps_per_epoch,
    }
    derived.update({f"derived.{split}_size": n for split, n in sizes.items()})
    return {key: str(value) for key, value in derived.items()}


def git_state(repo: Path) -> dict[str, str]:
    """Commit of the eva checkout that runs, and whether it has uncommitted changes."""
    if not (repo / ".git").exists():
        return {}
    try:
        commit = subprocess.run(
            ["git", "-C", str(repo), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return {}
    return {
        "git_commit": commit,
        "mlflow.source.git.commit": commit,  # the UI shows this one on the run page
        "git_dirty": "true" if dirty else "false",
    }


def run_tags(cfg, output_dir: Path) -> dict[str, str]:
    tags = {
        "model": cfg.model.name,
        "dataset": cfg.dataset.name,
        "optimizer": cfg.optimizer.name,
        "scheduler": cfg.scheduler.name,
        "augment": cfg.augment.name,
        "mode": str(cfg.mode),
        "host": socket.gethostname(),
        "output_dir": str(Path(output_dir).absolute()),
        "eva_version": eva.__version__,
        "mlflow.source.name": "train.py",
        "mlflow.source.type": "LOCAL",
    }
    try:
        tags["mlflow.user"] = getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (some containers)
        pass
    tags.update(git_state(Path(eva.__file__).resolve().parents[1]))
    return tags
