"""The entry point: `python -m eva KEY=VALUE ...` (and `python train.py ...` in a clone).

A thin Hydra main over eva.cli.job.run_job, which runs the mode the config asks for
(train, test or lr_find) in Hydra's output folder. The configs ship inside the package
(eva/conf); a user's own options join through Hydra's search path:

    python -m eva model=tinynet hydra.searchpath=[file://$PWD/conf]

`python -m eva` also keeps the working directory importable, so an option's
`_target_: mylab.nets.TinyNet` finds the package `mylab` in the folder it is run from.
"""

import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

from eva.config import CONF_DIR  # importing eva.config registers the run schema
from evasweep import use_integration

# Sweeps of eva (hydra/sweeper=eva_optuna) get its MLflow parent run, checks and slots;
# imported only when a sweep starts.
use_integration("eva.sweep.integration:EvaIntegration")


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="train")
def hydra_main(cfg: DictConfig) -> float | None:
    from eva.cli.job import run_job

    return run_job(cfg)


def main() -> None:
    """Bad input: one line on stderr, exit 1 (HYDRA_FULL_ERROR=1: tracebacks); --help: eva's."""
    from eva.cli.errors import run

    if "" not in sys.path and str(Path.cwd()) not in sys.path:
        sys.path.insert(0, str(Path.cwd()))  # `_target_: mylab...` from the launch folder
    run(hydra_main, conf_dir=CONF_DIR)
