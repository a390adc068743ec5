"""The plugin's config: samplers and pruners are Optuna's classes, key for key and default
for default; each sampler runs a sweep; importing the plugin stays light."""

import ast
import dataclasses
import importlib
import importlib.util
import inspect
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest
import yaml
from apps import load, run_app, states, sweep, write_app

from hydra_plugins.eva_optuna_sweeper.config import PRUNERS, SAMPLERS

FILLED_BY_THE_SWEEPER = {"GridSampler": {"search_space"}}  # the grid of the params
OUR_DEFAULTS = {("PercentilePruner", "percentile"): 25.0}  # Optuna has none


def optuna_class(node):
    module, _, name = node._target_.rpartition(".")
    return getattr(importlib.import_module(module), name)


def config_defaults(node) -> dict:
    fields = {}
    for f in dataclasses.fields(node):
        if f.name == "_target_":
            continue
        assert f.default_factory is dataclasses.MISSING, f"{node.__name__}.{f.name}: a factory"
        fields[f.name] = f.default
    return fields


@pytest.mark.parametrize(
    "group, name", [("sampler", n) for n in SAMPLERS] + [("pruner", n) for n in PRUNERS]
)
def test_each_sampler_and_pruner_config_is_its_optuna_class_signature(group, name):
    node = (SAMPLERS if group == "sampler" else PRUNERS)[name]
    cls = optuna_class(node)
    assert node._target_.startswith(f"optuna.{group}s.")
    parameters = inspect.signature(cls).parameters
    variadic = (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
    assert not [p for p in parameters.values() if p.kind in variadic]
    optuna_args = {k: p.default for k, p in parameters.items()}
    for key in FILLED_BY_THE_SWEEPER.get(cls.__name__, ()):
        assert optuna_args.pop(key) is inspect.Parameter.empty  # required: the sweeper's
    ours = config_defaults(node)
    assert sorted(ours) == sorted(optuna_args)
    for key, default in ours.items():
        expected = OUR_DEFAULTS.get((cls.__name__, key), optuna_args[key])
        assert expected is not inspect.Parameter.empty, f"{cls.__name__}({key}) has no default"
        assert (type(default), default) == (type(expected), expected), key


def composed_sweeper(folder, *overrides) -> dict:
    """hydra.sweeper as Hydra composes it for `python app.py -m hydra/sweeper=eva_optuna`."""
    proc = run_app(
        folder, "hydra/sweeper=eva_optuna", *overrides, "--cfg=hydra", "--package=hydra.sweeper"
    )
    return yaml.safe_load(proc.stdout)


def test_the_sweeper_composes_with_our_defaults(quadratic):
    composed = composed_sweeper(quadratic)
    tpe = {"_target_": SAMPLERS["tpe"]._target_, **config_defaults(SAMPLERS["tpe"])}
    assert composed["sampler"] == tpe
    assert composed["pruner"] == {"_target_": "optuna.pruners.NopPruner"}
    settings = (composed["n_trials"], composed["max_failure_rate"], composed["direction"])
    assert settings == (20, 0.25, None)
    assert (composed["storage"], composed["study_name"]) == (None, None)

    pruner = composed_sweeper(quadratic, "hydra/sweeper/pruner=percentile")["pruner"]
    assert pruner == {
        "_target_": PRUNERS["percentile"]._target_,
        **config_defaults(PRUNERS["percentile"]),
    }
    assert pruner["percentile"] == 25.0


NEEDS = {  # sampler -> the modules it needs, looked up with find_spec: none is imported here
    "gp": ("torch", "scipy"),  # Optuna's GPSampler
    "cmaes": ("cmaes",),  # CmaEsSampler: pip install 'hydra-evasweep[cmaes]'
    "qmc": ("scipy",),  # QMCSampler draws with scipy.stats.qmc
}
# finite, so that grid and bruteforce can run it too: x in 0..4, y in -1, -0.5, .., 1
SMALL_SPACE = ("x=range(0,4)", "y=range(-1.0,1.0,0.5)")


def missing_module(sampler: str) -> str | None:
    return next((m for m in NEEDS.get(sampler, ()) if importlib.util.find_spec(m) is None), None)


@pytest.fixture(scope="module")
def sampler_sweeps(tmp_path_factory) -> dict:
    """sampler name -> (app folder, its sweep's CompletedProcess), for every sampler whose
    modules are installed; two sweeps at a time (each is mostly Python start-up)."""

    def run(name):
        app = write_app(tmp_path_factory.mktemp(f"sampler-{name}"))
        overrides = (f"hydra/sweeper/sampler={name}", "hydra.sweeper.sampler.seed=0")
        return app, sweep(app, *overrides, *SMALL_SPACE, "hydra.sweeper.n_trials=4", check=False)

    names = [name for name in SAMPLERS if missing_module(name) is None]
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = {name: pool.submit(run, name) for name in names}
        return {name: future.result() for name, future in futures.items()}


@pytest.mark.parametrize("name", list(SAMPLERS))
def test_a_sweep_runs_with_each_sampler(sampler_sweeps, name):
    if missing_module(name):
        pytest.skip(f"sampler={name} needs {missing_module(name)}, which is not installed")
    app, proc = sampler_sweeps[name]
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr
    study = load(app)
    assert states(study)["COMPLETE"] == 4
    for t in study.trials:
        assert t.params["x"] in range(5) and t.params["y"] in (-1.0, -0.5, 0.0, 0.5, 1.0)
        if t.state.name == "FAIL":  # drawn again in this finite space: not run, not counted
            assert t.user_attrs["duplicate"] is True
        else:
            assert t.value == (t.params["x"] - 1) ** 2 + (t.params["y"] + 2) ** 2
    complete = [t for t in study.trials if t.state.name == "COMPLETE"]
    assert len({(t.params["x"], t.params["y"]) for t in complete}) == 4
    hydra = yaml.safe_load((app / "multirun" / "0" / ".hydra" / "hydra.yaml").read_text())
    assert hydra["hydra"]["sweeper"]["sampler"]["_target_"] == SAMPLERS[name]._target_


def imported_after(code: str) -> list[str]:
    """The top-level packages of torch, eva, mlflow, optuna that `code` imports."""
    packages = "{'torch', 'eva', 'mlflow', 'optuna'}"
    probe = (
        f"{code}\nimport sys\nprint(sorted({{m.split('.')[0] for m in sys.modules}} & {packages}))"
    )
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    return ast.literal_eval(proc.stdout.strip().splitlines()[-1])


def test_the_plugin_imports_no_torch_eva_or_mlflow():
    code = (
        "import hydra_plugins.eva_optuna_sweeper.config, hydra_plugins.eva_optuna_sweeper.sweeper\n"
        "import evasweep, evasweep.runner, evasweep.job"
    )
    assert [m for m in imported_after(code) if m != "optuna"] == []


def test_hydra_finds_the_plugin_without_importing_optuna():
    # Hydra imports every plugin's modules for each command, --help included
    code = (
        "import hydra_plugins.eva_optuna_sweeper.config\n"
        "from hydra.core.plugins import Plugins\n"
        "from hydra.plugins.sweeper import Sweeper\n"
        "names = [p.__name__ for p in Plugins.instance().discover(Sweeper)]\n"
        "assert 'EvaOptunaSweeper' in names, names"
    )
    assert imported_after(code) == []
