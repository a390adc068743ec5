"""The sweeper plugin's own tests: Hydra apps of a few lines, no eva, torch or mlflow.

They need hydra-core, optuna and pytest, and the plugin importable (`pip install ./sweeper`,
or PYTHONPATH=sweeper). hydra-joblib-launcher, hydra-submitit-launcher and cmaes are
optional: tests that need them are skipped without. apps.py writes the apps and runs their
sweeps in subprocesses.
"""

import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:  # apps.py, whatever pytest's --import-mode
    sys.path.insert(0, str(HERE))


@pytest.fixture
def quadratic(tmp_path):
    """A folder with the quadratic app: (x - 1)^2 + (y + 2)^2 of config x, y."""
    from apps import write_app

    return write_app(tmp_path)
