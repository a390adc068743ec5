"""Two objectives at once: a study whose result is a Pareto front, not one best trial.

    python multi_objective.py -m

Shaped like hydra-optuna-sweeper's multi-objective example (the Binh and Korn problem).
"""

import hydra
from omegaconf import DictConfig


@hydra.main(version_base=None, config_path="multi_objective_conf", config_name="config")
def binh_and_korn(cfg: DictConfig) -> tuple[float, float]:
    # Both are minimized; no (x, y) minimizes both, so the trade-offs are the result.
    near_origin = 4 * cfg.x**2 + 4 * cfg.y**2
    near_five = (cfg.x - 5) ** 2 + (cfg.y - 5) ** 2
    return near_origin, near_five


if __name__ == "__main__":
    binh_and_korn()
