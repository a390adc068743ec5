"""The package's shape: no import cycles (function-level imports and the parent packages
an import runs included), the sweeper below eva and never the other way round, and a new
model inside eva is one .py plus one YAML."""

import ast
import shutil
import subprocess
import sys
import textwrap

from helpers import PYTHON_M_EVA, REPO, run_cli

EVA = REPO / "eva"
SWEEPER = REPO / "sweeper"  # evasweep and the Hydra plugin: a distribution of their own


def modules() -> dict:
    """Module name -> file, for eva, evasweep and the plugin (hydra_plugins.*)."""
    found = {}
    sources = [(REPO, EVA), (SWEEPER, SWEEPER / "evasweep"), (SWEEPER, SWEEPER / "hydra_plugins")]
    for root, folder in sources:
        for path in folder.rglob("*.py"):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join(parts)] = path
    return found


def imports_of(name: str, path, known: dict) -> set[str]:
    """eva modules that importing `name` runs, at any depth of its code: each imported
    module and the packages above it, except the packages above `name` itself."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    targets = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(up + ([base] if base else []))
            subs = {f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in known}
            targets.update(subs)
            if len(subs) < len(node.names):  # names defined in `base` itself
                targets.add(base)
    out = set()
    for target in targets:
        parts = target.split(".")
        for i in range(1, len(parts) + 1):
            module = ".".join(parts[:i])
            own_parent = name.startswith(module + ".")
            if module in known and module != name and (not own_parent or module == target):
                out.add(module)
    return out


def cycles(graph: dict) -> list[list[str]]:
    found, state, stack = [], {}, []

    def visit(u):
        state[u] = "open"
        stack.append(u)
        for v in sorted(graph[u]):
            if state.get(v) == "open":
                found.append([*stack[stack.index(v) :], v])
            elif v not in state:
                visit(v)
        stack.pop()
        state[u] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module)
    return found


def test_the_cycle_finder_finds_a_cycle_through_a_function_level_import(tmp_path):
    a = tmp_path / "a.py"
    a.write_text("def f():\n    from eva.b import g\n")
    b = tmp_path / "b.py"
    b.write_text("from eva.a import f\n")
    known = {"eva.a": a, "eva.b": b}
    graph = {m: imports_of(m, p, known) for m, p in known.items()}
    assert cycles(graph) == [["eva.a", "eva.b", "eva.a"]]


def test_eva_has_no_import_cycles():
    known = modules()
    graph = {m: imports_of(m, p, known) for m, p in known.items()}
    assert cycles(graph) == []


def test_the_sweeper_never_imports_eva():
    """evasweep and its Hydra plugin are installable on their own (tests/
    test_sweeper_standalone.py): eva uses them through evasweep.integration, not back."""
    known = modules()
    sweeper = [m for m in known if m.startswith(("evasweep", "hydra_plugins"))]
    assert "evasweep.runner" in sweeper and "hydra_plugins.eva_optuna_sweeper.sweeper" in sweeper
    into_eva = {
        m: sorted(i for i in imports_of(m, known[m], known) if i.split(".")[0] == "eva")
        for m in sweeper
    }
    assert {m: found for m, found in into_eva.items() if found} == {}


def test_a_new_model_inside_eva_is_one_py_and_one_yaml(tmp_path):
    """Copy eva, add eva/models/wide.py and eva/conf/model/wide.yaml, touch nothing else:
    the model trains, is listed by --help, and its arguments are checked."""
    shutil.copytree(EVA, tmp_path / "eva", ignore=shutil.ignore_patterns("__pycache__"))
    (tmp_path / "eva" / "models" / "wide.py").write_text(
        textwrap.dedent(
            """\
            from torch import nn


            class Wide(nn.Module):
                def __init__(self, in_channels: int, num_classes: int, width: int = 8):
                    super().__init__()
                    self.conv = nn.Conv2d(in_channels, width, 3, padding=1)
                    self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
                    self.fc = nn.Linear(width, num_classes)

                def forward(self, x):
                    return self.fc(self.head(self.conv(x).relu()))
            """
        )
    )
    (tmp_path / "eva" / "conf" / "model" / "wide.yaml").write_text(
        "_target_: eva.models.wide.Wide\nwidth: 4\n"
    )
    env = {"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}

    def eva(*args):
        return run_cli(args, tmp_path, env=env, timeout=300, entry=PYTHON_M_EVA)

    run = eva("debug=default", "model=wide", "model.width=6", "hydra.run.dir=run")
    assert run.returncode == 0, run.stderr
    assert (tmp_path / "run" / "checkpoints" / "best.pt").is_file()
    assert "name: wide" in (tmp_path / "run" / "config.yaml").read_text()
    listed = [line.split() for line in eva("--help").stdout.splitlines()]
    assert ["model", "custom_resnet,", "resnet18,", "session6,", "ultimus,", "wide"] in listed
    typo = eva("debug=default", "model=wide", "model.widht=6")
    assert typo.returncode == 1
    assert "takes no 'widht'; its arguments: width" in typo.stderr, typo.stderr


def test_an_installed_eva_runs_without_a_clone(tmp_path):
    """The wheel carries the configs: `python -m eva` works from any folder, no repo."""
    import zipfile

    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
         "-w", str(tmp_path / "wheel"), str(REPO)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert built.returncode == 0, built.stderr
    (wheel,) = (tmp_path / "wheel").glob("eva-*.whl")
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        z.extractall(tmp_path / "site")
    assert {"eva/conf/train.yaml", "eva/conf/model/session6.yaml"} <= names
    assert not any(n.startswith("tests/") for n in names)
    work = tmp_path / "elsewhere"
    work.mkdir()
    env = {"PYTHONPATH": str(tmp_path / "site"), "PATH": "/usr/bin:/bin", "HOME": str(work)}
    run = subprocess.run(
        [sys.executable, "-m", "eva", "debug=default", "hydra.run.dir=run"],
        cwd=work, capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert (work / "run" / "results.json").is_file()
    where = subprocess.run(
        [sys.executable, "-c", "import eva; print(eva.__file__)"],
        cwd=work, capture_output=True, text=True, env=env,
    )  # fmt: skip
    assert where.stdout.startswith(str(tmp_path / "site"))  # the wheel's eva, not the clone
