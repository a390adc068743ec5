"""Command line of eva: `python train.py model=ultimus optimizer=adam epochs=2`.

Thin Hydra entry point: eva.app.run_job runs the mode the config asks for
(train, test or lr_find) in Hydra's output folder.
"""

import hydra
from omegaconf import DictConfig

import eva.config  # noqa: F401  (registers the config schemas before Hydra composes)


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float:
    from eva.app import run_job

    return run_job(cfg)


if __name__ == "__main__":
    from pathlib import Path

    from eva.cli import run

    # bad input: one line on stderr, exit 1 (HYDRA_FULL_ERROR=1: tracebacks); --help: eva's
    run(main, conf_dir=Path(__file__).resolve().parent / "conf")
