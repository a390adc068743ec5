"""The config layer: typed keys (schemas), `_target_` options (options), checks (validate).

Data flows one way: Hydra composes the config, eva/config/validate.py checks all of it,
then a mode (eva/modes/) builds the run from it. Importing this package registers the
run schema with Hydra and imports no torch.
"""

from pathlib import Path

from eva.config.schemas import register_configs

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"  # the configs ship in the package

__all__ = ["CONF_DIR", "compose_config", "register_configs"]


def compose_config(overrides: list[str], conf_dir: Path = CONF_DIR):
    """The config `python -m eva <overrides>` would run with, outside a Hydra app (tests,
    notebooks, eva's error hints): composed, each group's `name` filled in from the option
    chosen, Hydra's own node dropped."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import open_dict

    from eva.config.validate import fill_names

    GlobalHydra.instance().clear()
    with initialize_config_dir(str(Path(conf_dir).resolve()), version_base="1.3", job_name="eva"):
        cfg = compose("train", overrides=list(overrides), return_hydra_config=True)
    choices = dict(cfg.hydra.runtime.choices)
    with open_dict(cfg):
        del cfg["hydra"]
    fill_names(cfg, choices)
    return cfg
