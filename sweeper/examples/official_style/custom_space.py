"""A search space that params cannot write: z's range depends on the x a trial drew.

    python custom_space.py -m

hydra.sweeper.custom_search_space names configure() below: the sweeper calls it with the
app's config and each Optuna trial, after the params are drawn, and runs the job with
every value the trial then holds (z too). Shaped like hydra-optuna-sweeper's example.
"""

import hydra
from omegaconf import DictConfig
from optuna.trial import Trial


@hydra.main(version_base=None, config_path="custom_search_space_conf", config_name="config")
def shifted_sphere(cfg: DictConfig) -> float:
    return cfg.x**2 + cfg.y**2 + (cfg.z - 1) ** 2


def configure(cfg: DictConfig, trial: Trial) -> None:
    # Define-by-run: z stays within max_z_difference_from_x of this trial's x.
    x = trial.params["x"]
    gap = cfg.max_z_difference_from_x
    trial.suggest_float("z", x - gap, x + gap)


if __name__ == "__main__":
    shifted_sphere()
