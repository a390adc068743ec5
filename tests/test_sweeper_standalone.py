"""The sweeper installs and works on its own: a fresh venv with `pip install ./sweeper` (no
eva, torch or mlflow) passes the plugin's own tests (sweeper/tests)."""

import shutil
import subprocess
import venv

import pytest

from tests.helpers import REPO

SWEEPER = REPO / "sweeper"


@pytest.fixture(scope="module")
def standalone(tmp_path_factory):
    """(python of a venv holding only hydra-evasweep, its deps and pytest, a copy of sweeper/)."""
    root = tmp_path_factory.mktemp("standalone")
    source = root / "sweeper"  # a copy: building it writes egg-info into the source folder
    shutil.copytree(SWEEPER, source, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    venv.create(root / "venv", with_pip=True)
    python = root / "venv" / "bin" / "python"
    pytest_pin = next(
        line.split('"')[1]
        for line in (REPO / "pyproject.toml").read_text().splitlines()
        if line.strip().startswith('"pytest==')
    )
    install = subprocess.run(
        [python, "-m", "pip", "install", "-q", str(source), pytest_pin],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert install.returncode == 0, install.stderr[-3000:]
    return python, source


def test_the_venv_has_the_plugin_and_nothing_of_eva(standalone):
    python, source = standalone
    probe = (
        "import importlib.util as u, evasweep, hydra_plugins.eva_optuna_sweeper.config; "
        "print([m for m in ('eva', 'torch', 'mlflow') if u.find_spec(m)])"
    )
    r = subprocess.run([python, "-c", probe], capture_output=True, text=True, cwd=source.parent)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip() == "[]"  # none of them installed: what passes below needs none


def test_the_plugins_own_tests_pass_without_eva(standalone):
    python, source = standalone
    # The 4-worker kill -9 tests are about the storages, not about eva's absence: they take
    # a third of this run, and the suite runs them in its own environment already.
    slow = "not test_kill_9_of_one_of_4_workers"
    r = subprocess.run(
        [python, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-k", slow, str(source / "tests")],
        capture_output=True,
        text=True,
        cwd=source,
        timeout=900,
    )
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
    assert " passed" in r.stdout.splitlines()[-1]
