"""What `python train.py` runs inside Hydra: the run dir and clean one-line errors."""

import os
import sys
from pathlib import Path

from omegaconf import DictConfig

from eva.errors import EvaError


def run_job(cfg: DictConfig) -> float:
    """Hydra task function body. Returns the sweep objective (see eva.training.train)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    hydra_cfg = HydraConfig.get()
    output_dir = Path(hydra_cfg.runtime.output_dir)
    try:
        from eva.training import train

        return float(train(cfg, output_dir)["objective"])
    except EvaError as e:
        # In a sweep the exception fails this job only; the sweeper decides what follows.
        if hydra_cfg.mode == RunMode.MULTIRUN or os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        print(f"Error: {e}", file=sys.stderr)  # one line, no traceback
        sys.exit(1)
