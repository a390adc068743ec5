"""./run, the set-up script: what it finds installed, what it installs, whom it asks for root.

Each case runs the real script in a subprocess (well under a second each). Its interpreter,
virtual environment and Debian data path are pointed at temporary stand-ins through the
script's own variables (EVA_PYTHON, EVA_VENV, EVA_FASHION_MNIST_PACKAGE), and `sudo` and
`apt-get` are recorders on PATH, so no case installs anything. The non-root cases run as
the user `nobody` when the suite runs as root, with the system's python3 (this venv's
interpreter may sit in a home folder only its owner can read).
"""

import hashlib
import os
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from helpers import REPO

RUN = REPO / "run"


def script(path: Path, text: str) -> Path:
    path.write_text("#!/usr/bin/env bash\n" + text)
    path.chmod(0o755)
    return path


@pytest.fixture
def box():
    """A folder every user can read (the `nobody` cases), with a bin/ of stand-ins."""
    root = Path(tempfile.mkdtemp(prefix="eva-run-"))
    root.chmod(0o755)
    (root / "bin").mkdir()
    yield root
    shutil.rmtree(root)


def fake_venv(root: Path, stamp: str | None) -> Path:
    """bin/python that runs this interpreter and records its arguments; an install stamp."""
    venv = root / "venv"
    (venv / "bin").mkdir(parents=True)
    log = root / "python.log"
    script(venv / "bin" / "python", f'echo "$*" >>{log}\nexec {sys.executable} "$@"\n')
    if stamp is not None:
        (venv / ".eva-install").write_text(stamp)
    return venv


def right_stamp() -> str:
    digest = hashlib.sha256((REPO / "pyproject.toml").read_bytes()).hexdigest()
    return f"{digest} {REPO}\n"


def run(args: list[str], env: dict, as_nobody: bool = False) -> subprocess.CompletedProcess:
    command = ["bash", str(RUN), *args]
    if as_nobody and os.getuid() == 0:
        command = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", *command]
    base = {"PATH": os.environ["PATH"], "HOME": "/tmp", "LANG": "C.UTF-8"}
    return subprocess.run(command, env={**base, **env}, capture_output=True, text=True, timeout=60)


def data_env(root: Path) -> dict:
    """The Debian data package as present (a stand-in folder holding its file) or not."""
    present = root / "fashion-mnist"
    present.mkdir()
    (present / "train-images-idx3-ubyte.gz").write_bytes(b"")
    return {"EVA_FASHION_MNIST_PACKAGE": str(present)}


def test_a_right_install_is_left_alone(box):
    venv = fake_venv(box, right_stamp())
    env = {"EVA_VENV": str(venv), "EVA_PYTHON": sys.executable, **data_env(box)}
    checked = run(["check"], env)
    assert checked.returncode == 0, checked.stderr
    assert "Debian packages: all there" in checked.stderr
    assert f"eva: installed in {venv} (up to date)" in checked.stderr
    again = run(["setup"], env)
    assert again.returncode == 0, again.stderr
    assert "(up to date)" in again.stderr
    # The venv's python was asked whether it runs, never to install anything.
    calls = (box / "python.log").read_text().splitlines()
    assert calls and not [c for c in calls if "pip" in c], calls


def test_a_changed_pyproject_means_install_again(box):
    venv = fake_venv(box, right_stamp().replace(" ", "0 ", 1))
    env = {"EVA_VENV": str(venv), "EVA_PYTHON": sys.executable, **data_env(box)}
    checked = run(["check"], env)
    assert checked.returncode == 1
    assert f"eva: not installed or out of date in {venv}" in checked.stderr


def test_no_venv_is_named_with_how_to_make_it(box):
    env = {"EVA_VENV": str(box / "none"), "EVA_PYTHON": sys.executable, **data_env(box)}
    checked = run(["check"], env)
    assert checked.returncode == 1
    assert f"no virtual environment at {box / 'none'}" in checked.stderr
    assert not (box / "none").exists()


def test_an_old_python_is_refused_in_one_line(box):
    # Answers the version question with 3.10 and fails the >= 3.11 test, as Python 3.10 does.
    answer = 'if [[ "$2" == *print* ]]; then echo 3.10; exit 0; fi\nexit 1\n'
    old = script(box / "bin" / "python3", answer)
    result = run(["quickstart"], {"EVA_PYTHON": str(old), "EVA_VENV": str(box / "venv")})
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    assert "eva needs Python >= 3.11; found" in lines[0] and "3.10" in lines[0]
    assert not (box / "venv").exists()


def test_a_python_without_venv_support_names_the_package(box):
    # Debian ships venv's pip bootstrap (ensurepip) as python3.X-venv.
    real = sys.executable
    python = script(
        box / "bin" / "python3",
        f'[[ "$*" == *ensurepip* ]] && exit 1\nexec {real} "$@"\n',
    )
    env = {"EVA_PYTHON": str(python), "EVA_VENV": str(box / "venv"), **data_env(box)}
    checked = run(["check"], env)
    version = "{}.{}".format(*sys.version_info[:2])
    assert checked.returncode == 1
    assert f"missing Debian packages: python{version}-venv" in checked.stderr


@pytest.mark.skipif(
    os.getuid() == 0 and not shutil.which("setpriv"), reason="needs setpriv to run as nobody"
)
def test_without_root_and_sudo_it_stops_before_any_change(box):
    bin_ = box / "bin"
    script(bin_ / "apt-get", f'echo apt-get "$*" >>{box}/root.log\n')
    env = {
        "PATH": f"{bin_}:/usr/bin:/bin",
        "EVA_VENV": str(box / "venv"),
        "EVA_FASHION_MNIST_PACKAGE": str(box / "absent"),
    }
    if shutil.which("sudo", path="/usr/bin:/bin"):
        pytest.skip("this machine has a real sudo on /usr/bin: cannot show its absence")
    result = run(["setup"], env, as_nobody=True)
    assert result.returncode == 1
    assert "installing dataset-fashion-mnist needs root and there is no sudo" in result.stderr
    assert not (box / "venv").exists() and not (box / "root.log").exists()


def test_without_root_it_asks_sudo_only_for_the_packages(box):
    bin_ = box / "bin"
    log = box / "root.log"
    # sudo refuses here (a wrong password): the script must stop, having asked once.
    script(bin_ / "sudo", f'echo sudo "$*" >>{log}\nexit 1\n')
    script(bin_ / "apt-get", f'echo apt-get "$*" >>{log}\n')
    env = {
        "PATH": f"{bin_}:/usr/bin:/bin",
        "EVA_VENV": str(box / "venv"),
        "EVA_FASHION_MNIST_PACKAGE": str(box / "absent"),
    }
    log.touch()
    log.chmod(log.stat().st_mode | stat.S_IWOTH)
    result = run(["setup"], env, as_nobody=True)
    assert result.returncode != 0
    assert "needs root: sudo asks for your password" in result.stderr
    calls = log.read_text().splitlines()
    # Asked for the install, then for the package lists and the install again: nothing else.
    assert calls[0] == "sudo apt-get install -y -q dataset-fashion-mnist", calls
    assert all(c.startswith("sudo apt-get") for c in calls), calls
    assert not (box / "venv").exists()


def test_unknown_command_and_argument_are_refused():
    assert run(["deploy"], {}).returncode == 2
    refused = run(["check", "--tests"], {})
    assert refused.returncode == 1
    assert "./run check takes --test or nothing, not '--tests'" in refused.stderr


def test_readme_commands_are_the_scripts():
    """The README's two set-up commands, in the fenced blocks .ci/run reads."""
    text = (REPO / "README.md").read_text()
    for marker, command in [("run-command", "./run quickstart"), ("test-command", "./run test")]:
        after = text.split(f"<!-- {marker} -->", 1)[1].lstrip()
        block = after.split("```", 2)[1]
        assert block.split("\n", 1)[1].strip() == command, (marker, block)


# --------------------------------------------------------------------------- the browser tests

BROWSER_PACKAGES = ["chromium", "chromium-driver"]  # programs chromium and chromedriver


def path_without(box: Path, *programs: str) -> str:
    """A PATH with this machine's programs except `programs`: links to everything else in
    /usr/bin and /bin, after box/bin (the stand-ins)."""
    system = box / "system"
    system.mkdir()
    for folder in (Path("/usr/bin"), Path("/bin")):
        for program in folder.iterdir():
            target = system / program.name
            if program.name not in programs and not target.exists():
                target.symlink_to(program)
    return f"{box / 'bin'}:{system}"


def test_the_browser_for_the_suite_is_named_where_missing(box):
    venv = fake_venv(box, right_stamp())
    env = {"EVA_VENV": str(venv), "EVA_PYTHON": sys.executable, **data_env(box)}
    env["PATH"] = path_without(box, "chromium", "chromedriver")
    checked = run(["check", "--test"], env)
    assert checked.returncode == 1, checked.stderr
    (line,) = [li for li in checked.stderr.splitlines() if li.startswith("missing Debian")]
    packages = line.split(": ", 1)[1].split(" (", 1)[0].split()
    assert packages[-2:] == BROWSER_PACKAGES, line
    assert "apt-get install -y " in line and line.endswith(")"), line
    # a check without --test asks for no browser: only the suite needs one
    plain = run(["check"], env)
    assert plain.returncode == 0, plain.stderr
    assert "Debian packages: all there" in plain.stderr


def test_a_browser_on_path_is_not_installed_again(box):
    venv = fake_venv(box, right_stamp())
    env = {"EVA_VENV": str(venv), "EVA_PYTHON": sys.executable, **data_env(box)}
    for program in ("chromium", "chromedriver"):  # stand-ins: present is all that counts
        script(box / "bin" / program, "exit 0\n")
    env["PATH"] = path_without(box, "chromium", "chromedriver")
    checked = run(["check", "--test"], env)
    assert not any(p in checked.stderr.split() for p in BROWSER_PACKAGES), checked.stderr


def test_setup_for_the_suite_installs_the_browser(box):
    """./run setup --test hands chromium and chromium-driver to apt-get (through sudo
    when not root), with the suite's other missing packages."""
    bin_ = box / "bin"
    log = box / "root.log"
    script(bin_ / "apt-get", f'echo apt-get "$*" >>{log}\n')
    script(bin_ / "sudo", f'echo sudo "$*" >>{log}\nexec "$@"\n')
    venv = fake_venv(box, right_stamp())
    env = {"EVA_VENV": str(venv), "EVA_PYTHON": sys.executable, **data_env(box)}
    env["PATH"] = path_without(box, "chromium", "chromedriver", "sudo", "apt-get")
    result = run(["setup", "--test"], env)
    assert result.returncode == 0, result.stderr
    installs = [c for c in log.read_text().splitlines() if c.startswith("apt-get install")]
    assert len(installs) == 1, log.read_text()
    assert installs[0].split()[-2:] == BROWSER_PACKAGES, installs
    assert "(up to date)" in result.stderr  # eva itself was left alone
