"""evasweep/compose.py: a sweep's job configs composed from a copy are Hydra's own.

Each test composes the same override lists with Hydra's loader and with the cache, in this
process (no job runs), and compares the two configs key by key, node types included.
"""

import pickle
from dataclasses import dataclass, field
from typing import Any

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.config_store import ConfigStore
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf, open_dict

from evasweep.compose import ComposeCache

CONFIG = """\
defaults:
  - compose_schema
  - db: mysql
  - _self_
lr: 0.1
name: run-${db.driver}
tags: [a, b]
hydra:
  job:
    env_copy: [COMPOSE_TEST_COPIED]
    config:
      override_dirname:
        exclude_keys: [seed]
"""


@dataclass
class Schema:  # a structured config: its node types must survive the copy
    lr: float = 0.0
    seed: int = 0
    layers: int = 2
    name: str = ""
    tags: list[str] = field(default_factory=list)
    db: dict[str, Any] = field(default_factory=dict)  # the group's option fills it


@pytest.fixture
def loaders(tmp_path, monkeypatch):
    """(Hydra's loader, the cache around it, the master config of a multirun)."""
    monkeypatch.setenv("COMPOSE_TEST_COPIED", "from-the-env")
    ConfigStore.instance().store(name="compose_schema", node=Schema)
    (tmp_path / "config.yaml").write_text(CONFIG)
    (tmp_path / "db").mkdir()
    (tmp_path / "db" / "mysql.yaml").write_text("driver: mysql\nport: 3306\n")
    (tmp_path / "db" / "postgres.yaml").write_text("driver: postgres\nport: 5432\nuser: pg\n")
    with initialize_config_dir(str(tmp_path), version_base="1.3"):
        master = compose("config", overrides=["hydra.job.chdir=false"], return_hydra_config=True)
        loader = GlobalHydra.instance().config_loader()
        yield loader, ComposeCache(loader), master


def trial(i: int, *extra: str) -> list[str]:
    """A sweeper's job overrides: fixed lines, the trial's values, its env and subdir."""
    return [
        "layers=3",
        f"lr={0.01 * (i + 1)}",
        f"seed={i}",
        f"++hydra.job.env_set.TRIAL='{i}'",
        f"hydra.sweep.subdir={i}",
        *extra,
    ]


def assert_same(expected, got) -> None:
    assert OmegaConf.to_yaml(got) == OmegaConf.to_yaml(expected)
    assert OmegaConf.to_container(got) == OmegaConf.to_container(expected)
    assert OmegaConf.get_type(got) is OmegaConf.get_type(expected)
    assert OmegaConf.is_struct(got) == OmegaConf.is_struct(expected)
    assert OmegaConf.is_readonly(got.hydra) == OmegaConf.is_readonly(expected.hydra)


def test_jobs_of_one_shape_are_composed_once_and_equal_hydras(loaders):
    hydra_loader, cache, master = loaders
    for i in range(4):
        overrides = trial(i)
        expected = hydra_loader.load_sweep_config(master, overrides)
        got = cache.load_sweep_config(master, overrides)
        assert_same(expected, got)
        assert got.lr == pytest.approx(0.01 * (i + 1)) and got.seed == i
        assert got.hydra.job.env_set == {"TRIAL": str(i), "COMPOSE_TEST_COPIED": "from-the-env"}
        assert got.hydra.overrides.task == ["layers=3", f"lr={0.01 * (i + 1)}", f"seed={i}"]
        assert got.hydra.job.override_dirname == f"layers=3,lr={0.01 * (i + 1)}"  # seed excluded
        assert got.name == "run-mysql"  # interpolations stay, and resolve in the copy
    assert cache.full_composes == 1


def test_a_searched_group_choice_is_a_shape_of_its_own(loaders):
    hydra_loader, cache, master = loaders
    for i, db in enumerate(["mysql", "postgres", "mysql", "postgres"]):
        overrides = trial(i, f"db={db}", f"db.port={1000 + i}")
        got = cache.load_sweep_config(master, overrides)
        assert_same(hydra_loader.load_sweep_config(master, overrides), got)
        assert (got.db.driver, got.db.port) == (db, 1000 + i)
        assert ("user" in got.db) == (db == "postgres")  # nothing of the other option stays
    assert cache.full_composes == 2


@pytest.mark.parametrize(
    "line", ["+extra={i}", "tags=[x, y{i}]", "db={{driver: sqlite, port: {i}}}", "~tags"]
)
def test_other_lines_are_part_of_the_shape_as_written(loaders, line):
    hydra_loader, cache, master = loaders
    for i in range(2):
        overrides = trial(i, line.format(i=i))
        got = cache.load_sweep_config(master, overrides)
        assert_same(hydra_loader.load_sweep_config(master, overrides), got)
    assert cache.full_composes == (1 if line == "~tags" else 2)  # the same line: one shape


def test_a_bad_value_fails_as_hydra_fails(loaders):
    hydra_loader, cache, master = loaders
    cache.load_sweep_config(master, trial(0))  # the shape's base
    for bad in (trial(1)[:2] + ["seed=abc"] + trial(1)[3:], trial(1, "nokey=1")):
        errors = []
        for loader in (hydra_loader, cache):
            with pytest.raises(Exception) as caught:
                loader.load_sweep_config(master, bad)
            errors.append((type(caught.value), str(caught.value)))
        assert errors[0] == errors[1]
    assert cache.load_sweep_config(master, trial(2)).seed == 2  # the base is intact


def test_a_job_changing_its_config_does_not_change_the_next(loaders):
    _, cache, master = loaders
    first = cache.load_sweep_config(master, trial(0))
    with open_dict(first):
        first.hydra.job.num = 99  # as a launcher does
    first.layers = 7
    first.db.port = 1
    second = cache.load_sweep_config(master, trial(1))
    assert (second.layers, second.db.port) == (3, 3306)
    assert OmegaConf.is_missing(second.hydra.job, "num")


def test_a_pickled_cache_composes_without_the_configs(loaders):
    hydra_loader, cache, master = loaders
    cache.load_sweep_config(master, trial(0))
    copied = pickle.loads(pickle.dumps(cache))  # a launcher sending it to a job
    assert copied.full_composes == 0
    got = copied.load_sweep_config(master, trial(1))
    assert_same(hydra_loader.load_sweep_config(master, trial(1)), got)


def test_the_sweeper_gives_its_launcher_the_cache(loaders):
    from hydra._internal.callbacks import Callbacks
    from hydra.types import HydraContext

    from hydra_plugins.eva_optuna_sweeper.sweeper import EvaOptunaSweeper

    hydra_loader, _, master = loaders
    sweeper = EvaOptunaSweeper()
    context = HydraContext(config_loader=hydra_loader, callbacks=Callbacks())
    sweeper.setup(hydra_context=context, task_function=lambda cfg: 0.0, config=master)
    loader = sweeper.launcher.hydra_context.config_loader
    assert isinstance(loader, ComposeCache) and loader.loader is hydra_loader
    configs = sweeper.compose([trial(i) for i in range(3)])  # as the probes compose
    assert [c.seed for c in configs] == [0, 1, 2] and loader.full_composes == 1
