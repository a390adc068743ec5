"""The sphere of hydra-optuna-sweeper's examples: the smallest Hydra app a sweep can tune.

    python sphere.py -m

conf/config.yaml is shaped like the official example's, with the sweeper renamed.
"""

import hydra
from omegaconf import DictConfig


@hydra.main(version_base=None, config_path="conf", config_name="config")
def sphere(cfg: DictConfig) -> float:
    return cfg.x**2 + cfg.y**2


if __name__ == "__main__":
    sphere()
