"""Hydra's config loader for a sweep's jobs, with one full compose per shape of overrides.

Hydra composes each job from scratch: the defaults list, every YAML file read and merged,
in pure Python, for every trial and every probe of the search space. A sweep's jobs
differ only in values (the trial's parameters, its env_set lines, its subdir): their
defaults lists are the same. So the loader composes the first job of a shape in full,
as Hydra does, and every later one from a copy of it with its own value overrides
applied by Hydra's own function, then writes hydra.overrides, override_dirname and the
env_copy entries again, as Hydra does.

A shape is the config name, every line that picks a config group or is not a plain
`key=value` / `++key=value` of one element, in order, and the keys of the other lines.
Anything else (a group choice searched over, `+key`, `~key`, a list or dict value, a
line that does not parse) has its own shape or a full compose, which also reports its
errors in Hydra's words. A sweep therefore reads its YAML files once per shape: edits
to them while it runs reach the next shape, not the next trial.
"""

import copy
import os
import threading
from dataclasses import dataclass

from hydra.core.config_loader import ConfigLoader
from omegaconf import DictConfig, OmegaConf, open_dict

PRIMITIVE = (str, int, float, bool, type(None))


@dataclass
class Base:
    """A composed job config, kept untouched, and what its lists held before the job's
    own override lines were appended to them."""

    config: DictConfig
    hydra_lines: list[str]  # hydra.overrides.hydra before this compose's lines
    task_lines: list[str]  # hydra.overrides.task before them


class ComposeCache(ConfigLoader):
    """Wraps a Hydra ConfigLoader: load_sweep_config is faster, the rest is the same."""

    def __init__(self, loader: ConfigLoader):
        self.loader = loader
        self._bases: dict[tuple, Base] = {}
        self._groups: set[str] = set()  # config groups seen in composed configs' choices
        self._lock = threading.Lock()
        self.full_composes = 0  # Hydra's own composes so far (for tests and benchmarks)

    def __getstate__(self):  # a launcher may pickle it to its jobs: not the configs
        return {"loader": self.loader}

    def __setstate__(self, state):
        self.__init__(state["loader"])

    # ------------------------------------------------------------------ the fast path

    def load_sweep_config(self, master_config: DictConfig, sweep_overrides: list[str]):
        lines = list(OmegaConf.to_container(master_config.hydra.overrides.hydra))
        lines += list(sweep_overrides)
        parsed = _parse(lines)
        with self._lock:
            shape = self._shape(master_config, parsed)
            base = self._bases.get(shape) if shape is not None else None
            values = [o for o in parsed if self._is_value(o)] if base is not None else []
        if base is None:
            return self._compose(master_config, sweep_overrides, parsed)
        cfg = copy.deepcopy(base.config)
        _apply(cfg, base, parsed, values)
        OmegaConf.copy_cache(from_config=master_config, to_config=cfg)
        return cfg

    def _compose(self, master_config, sweep_overrides, parsed):
        cfg = self.loader.load_sweep_config(master_config, list(sweep_overrides))
        with self._lock:
            self.full_composes += 1
            self._groups.update(str(k) for k in cfg.hydra.runtime.choices)
            shape = self._shape(master_config, parsed)
            if shape is not None and shape not in self._bases:
                ours = sum(o.is_hydra_override() for o in parsed)  # lines this compose added
                held_hydra = list(cfg.hydra.overrides.hydra)
                held_task = list(cfg.hydra.overrides.task)
                self._bases[shape] = Base(
                    copy.deepcopy(cfg),
                    held_hydra[: len(held_hydra) - ours],
                    held_task[: len(held_task) - (len(parsed) - ours)],
                )
        return cfg

    def _shape(self, master_config, parsed) -> tuple | None:
        """What the jobs sharing one composed base have in common (None: always compose)."""
        if parsed is None:
            return None
        parts: list = [str(master_config.hydra.job.config_name)]
        for o in parsed:
            if self._is_value(o):
                parts.append(("value", o.type.name, o.key_or_group))
            else:
                parts.append(("line", o.input_line))
        return tuple(parts)

    def _is_value(self, o) -> bool:
        """A line Hydra applies to the composed config as a value, which changes nothing of
        its defaults list: `key=v` or `++key=v`, one element, not a config group."""
        if o.package is not None or o.is_sweep_override():
            return False
        if not (o.type.name == "CHANGE" or o.is_force_add()):
            return False
        key = o.key_or_group
        if "/" in key or key in self._groups or key.replace(".", "/") in self._groups:
            return False
        if key.startswith("hydra.searchpath") or key.startswith("hydra.job.config_name"):
            return False  # read before the defaults list is made
        return isinstance(o.value(), PRIMITIVE)

    # ------------------------------------------------------------------ the rest: Hydra's

    def load_configuration(self, *args, **kwargs):
        return self.loader.load_configuration(*args, **kwargs)

    def get_search_path(self):
        return self.loader.get_search_path()

    def get_sources(self):
        return self.loader.get_sources()

    def list_groups(self, parent_name: str):
        return self.loader.list_groups(parent_name)

    def get_group_options(self, *args, **kwargs):
        return self.loader.get_group_options(*args, **kwargs)

    def compute_defaults_list(self, *args, **kwargs):
        return self.loader.compute_defaults_list(*args, **kwargs)

    def __getattr__(self, name):  # anything else a plugin reads from Hydra's loader
        if name == "loader":
            raise AttributeError(name)
        return getattr(self.loader, name)


def _parse(lines: list[str]):
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        return OverridesParser.create().parse_overrides(overrides=lines)
    except Exception:  # the full compose reports it in Hydra's words
        return None


def _apply(cfg: DictConfig, base: Base, parsed, values) -> None:
    """The tail of Hydra's compose (ConfigLoaderImpl._load_configuration_impl), for a
    copy of a config composed with the same shape: the value lines again (every one of
    them set the same keys in the copy), then what Hydra writes from the override lines."""
    from hydra._internal.config_loader_impl import ConfigLoaderImpl, get_overrides_dirname

    ConfigLoaderImpl._apply_overrides_to_config(values, cfg)
    hydra_lines = [o.input_line for o in parsed if o.is_hydra_override()]
    app = [o for o in parsed if not o.is_hydra_override()]
    cfg.hydra.overrides.hydra = base.hydra_lines + hydra_lines
    cfg.hydra.overrides.task = base.task_lines + [o.input_line for o in app]
    with open_dict(cfg.hydra):
        for key in cfg.hydra.job.env_copy:
            cfg.hydra.job.env_set[key] = os.environ[key]
    cfg.hydra.runtime.cwd = os.getcwd()
    dirname = cfg.hydra.job.config.override_dirname
    cfg.hydra.job.override_dirname = get_overrides_dirname(
        overrides=app,
        kv_sep=dirname.kv_sep,
        item_sep=dirname.item_sep,
        exclude_keys=dirname.exclude_keys,
    )
