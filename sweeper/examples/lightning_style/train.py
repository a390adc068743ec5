"""A Hydra app shaped like lightning-hydra-template's src/train.py, its training faked.

    python train.py hparams_search=mnist_optuna

configs/hparams_search/mnist_optuna.yaml is the template's sweep file with the sweeper
renamed to eva_optuna; nothing here imports eva.
"""

import math

import hydra
from omegaconf import DictConfig


def fake_fit(cfg: DictConfig) -> dict[str, float]:
    """The metrics a run would log: smooth in the params, best at lr 0.01, batch 64, 128 units."""
    off = (
        (math.log10(cfg.model.optimizer.lr) + 2.0) ** 2
        + (math.log2(cfg.data.batch_size) - 6.0) ** 2 / 10
        + ((cfg.model.net.lin1_size - 128) / 128) ** 2
    )
    acc = 0.99 - 0.05 * off
    return {"val/acc_best": acc, "val/loss": 1.0 - acc, "train/acc": acc + 0.004}


@hydra.main(version_base="1.3", config_path="configs", config_name="train")
def main(cfg: DictConfig) -> float | None:
    metrics = fake_fit(cfg)
    # As the template does: a sweep file names the metric to optimize; a plain run has none.
    name = cfg.get("optimized_metric")
    return metrics[name] if name else None


if __name__ == "__main__":
    main()
