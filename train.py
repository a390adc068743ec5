"""Command line of eva: `python train.py model=ultimus optimizer=adam epochs=2`.

Thin Hydra entry point; the work is done by eva.run.run(cfg, output_dir).
"""

import hydra
from omegaconf import DictConfig

import eva.config  # noqa: F401  (registers the config schemas before Hydra composes)


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float:
    from eva.app import run_job

    return run_job(cfg)


if __name__ == "__main__":
    main()
