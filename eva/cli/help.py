"""`python -m eva --help`: eva's own help, in well under a second.

Hydra's --help lists config groups by building a config repository per group (about 140 of
them, each deep-copying the ConfigStore): 2+ seconds, and it lists eva's internal schema/*
groups as if they were options. eva lists the groups from conf/ itself and composes the
config once, with the command's overrides, like Hydra's help shows it. `--hydra-help` is
still Hydra's.
"""

import re
from pathlib import Path

HELP_FLAGS = ("--help", "-h")

USAGE = """\
eva: train image classifiers on CIFAR-10 (and Fashion-MNIST), composed by Hydra.

  python -m eva [KEY=VALUE ...]            one run, e.g. model=ultimus optimizer=adam epochs=2
  python -m eva experiment=quickstart      the offline first run (Fashion-MNIST, 2 epochs)
  python -m eva debug=default              a quick check: one tiny epoch, nothing recorded
  python -m eva experiment=session10       a course session's recipe (session6, 9, 10, 11)
  python -m eva -m hparams_search=optuna   an Optuna sweep of max_lr, dropout, l1_weight
  python -m eva mode=test checkpoint=PATH  evaluate a checkpoint; mode=lr_find: LR range test
  python -m eva ... resume=true hydra.run.dir=DIR   continue a killed run
  python -m eva --cfg job [KEY=VALUE ...]  print the composed config and exit
  python -m eva model=mine hydra.searchpath=[file://$PWD/conf]   your own options
  python -m eva --hydra-help               Hydra's own flags

Config groups (GROUP=OPTION):
{groups}

Speed (docs/performance.md): augment.backend=torch precision=bf16 channels_last=true
compile=true dataset.num_workers=N

Config{overridden} (any key can be set: KEY=VALUE; a new key: +KEY=VALUE):
{config}"""


def wants_help(argv: list[str]) -> bool:
    return any(arg in HELP_FLAGS for arg in argv)


def natural(name: str) -> tuple:
    """Sort key: digits compare as numbers (session6 before session10)."""
    return tuple(int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name))


def config_groups(conf_dir: Path) -> dict[str, list[str]]:
    """{group: options} from the conf/ folder (one folder per group, one YAML per option)."""
    return {
        group.name: sorted((p.stem for p in group.glob("*.yaml")), key=natural)
        for group in sorted(conf_dir.iterdir())
        if group.is_dir() and any(group.glob("*.yaml"))
    }


def searchpath_dirs(overrides: list[str]) -> list[Path]:
    """The folders of `hydra.searchpath=[file://..., pkg://...]` on the command line."""
    import importlib.util

    found = []
    for override in overrides:
        if not override.startswith("hydra.searchpath="):
            continue
        for item in override.split("=", 1)[1].strip("[]").split(","):
            item = item.strip().strip("'\"")
            if item.startswith("file://"):
                found.append(Path(item[len("file://") :]).expanduser().absolute())
            elif item.startswith("pkg://"):
                package, _, sub = item[len("pkg://") :].partition("/")
                spec = importlib.util.find_spec(package)  # imports its parent packages
                if spec and spec.submodule_search_locations:
                    root = Path(next(iter(spec.submodule_search_locations)))
                    found.append(root / sub if sub else root)
    return [d for d in found if d.is_dir()]


def help_text(conf_dir: Path, overrides: list[str], config_name: str = "train") -> str:
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    groups = config_groups(conf_dir)
    for extra in searchpath_dirs(overrides):  # a user's own options are listed too
        for group, options in config_groups(extra).items():
            groups[group] = sorted(set(groups.get(group, [])) | set(options), key=natural)
    width = max(map(len, groups)) + 2
    listed = "\n".join(f"  {g.ljust(width)}{', '.join(opts)}" for g, opts in groups.items())
    with initialize_config_dir(str(conf_dir.resolve()), version_base="1.3", job_name="train"):
        cfg = compose(config_name, overrides=overrides)
    shown = f" with {' '.join(overrides)}" if overrides else ""
    return USAGE.format(groups=listed, overridden=shown, config=OmegaConf.to_yaml(cfg))


def print_help(conf_dir: Path, argv: list[str]) -> None:
    overrides = [arg for arg in argv if not arg.startswith("-")]
    print(help_text(Path(conf_dir), overrides), end="")
