"""Tiny Hydra apps (no eva, no torch) written into a test's folder, and their sweeps.

Every app has the same shape: a config.yaml and an app.py whose task writes what it saw
(its config, the trial the job API gave it) as job.json into its own output folder, then
returns the objective. A sweep runs as the user would run it, in a subprocess, started in
the app's folder (the launch folder, where the study's optuna.log lands), with
hydra.sweep.dir=multirun so that job N's folder is multirun/N.
"""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import yaml

TIMEOUT = 120  # seconds for one command; the tests' sweeps take one or two

APP = """\
import json
import os
import time

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf


@hydra.main(version_base="1.3", config_path=".", config_name="config")
def main(cfg):
    out = HydraConfig.get().runtime.output_dir
    seen = {{"cfg": OmegaConf.to_container(cfg), "num": HydraConfig.get().job.get("num")}}
    with open(os.path.join(out, "job.json"), "w") as f:
        json.dump(seen, f)
{body}


if __name__ == "__main__":
    main()
"""

# (x - 1)^2 + (y + 2)^2: its minimum is 0 at x=1, y=-2
QUADRATIC = "return (cfg.x - 1) ** 2 + (cfg.y + 2) ** 2"


def write_app(folder: Path, body: str = QUADRATIC, config: str = "x: 0.0\ny: 0.0\n") -> Path:
    """app.py (the task's code after the job.json line: `body`) and config.yaml."""
    folder = Path(folder)
    (folder / "config.yaml").write_text(config)
    (folder / "app.py").write_text(APP.format(body=textwrap.indent(textwrap.dedent(body), "    ")))
    return folder


def clean_env(**extra: str) -> dict[str, str]:
    """The environment of the test, without what would change how a sweep runs."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("EVASWEEP_") and k != "HYDRA_FULL_ERROR"
    }
    env.update(extra)
    return env


def run_app(folder: Path, *args: str, env=None, check=True) -> subprocess.CompletedProcess:
    """`python app.py ARGS` in the app's folder."""
    proc = subprocess.run(
        [sys.executable, "app.py", *args],
        cwd=folder,
        env=env if env is not None else clean_env(),
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"exit {proc.returncode}: {' '.join(args)}\n{proc.stdout[-3000:]}\n{proc.stderr}"
        )
    return proc


def sweep_args(*overrides: str) -> list[str]:
    return ["-m", "hydra/sweeper=eva_optuna", "hydra.sweep.dir=multirun", *overrides]


def sweep(folder: Path, *overrides: str, env=None, check=True) -> subprocess.CompletedProcess:
    """`python app.py -m hydra/sweeper=eva_optuna hydra.sweep.dir=multirun OVERRIDES`."""
    return run_app(folder, *sweep_args(*overrides), env=env, check=check)


def storage(folder: Path):
    """Where a sweep keeps its study by default: the journal optuna.log in the launch folder."""
    from evasweep.storage import open_storage

    return open_storage(f"journal:///{Path(folder).resolve()}/optuna.log")


def no_study(folder: Path) -> bool:
    """No storage was created in the folder: neither the journal default nor a sqlite file."""
    return not any((Path(folder) / name).exists() for name in ("optuna.log", "optuna.db"))


def load(folder: Path):
    """The one study of the folder's optuna.log."""
    import optuna

    names = optuna.get_all_study_names(storage(folder))
    assert len(names) == 1, names
    return optuna.load_study(study_name=names[0], storage=storage(folder))


def results(folder: Path) -> dict:
    """multirun/optimization_results.yaml."""
    return yaml.safe_load((Path(folder) / "multirun" / "optimization_results.yaml").read_text())


def job(folder: Path, number: int) -> dict:
    """What trial `number`'s job wrote: {"cfg": its config, "num": hydra.job.num, ...}."""
    return json.loads((Path(folder) / "multirun" / str(number) / "job.json").read_text())


def states(study) -> dict[str, int]:
    """Trials per state name, only the states that have some."""
    counts: dict[str, int] = {}
    for trial in study.get_trials(deepcopy=False):
        counts[trial.state.name] = counts.get(trial.state.name, 0) + 1
    return counts


def error_line(proc: subprocess.CompletedProcess) -> str:
    """The sweeper's refusal: exit 1 and a single `Error: ...` line on stderr."""
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 1, (proc.returncode, proc.stderr)
    assert len(lines) == 1 and lines[0].startswith("Error: "), proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    return lines[0]
