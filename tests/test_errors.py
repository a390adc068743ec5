"""Bad input on the command line: one line naming the bad value, exit 1, nothing left behind.

Each case runs `train.py` in this process (runpy, as `python train.py ...` would, ~0.3 s a
case instead of ~5 s for a new interpreter); test_the_real_command_line... checks that a
real process behaves the same.

The table of docs/resume-and-errors.md (block `errors`) is a snapshot of these cases: each
case also checks that the table has its row, with the line it actually printed. After a
message changes, `EVA_UPDATE_DOCS=1 python -m pytest tests/test_errors.py` rewrites the
table from the lines printed.
"""

import os
import re
import runpy
import shlex
import subprocess
import sys

import pytest
import torch
from helpers import REPO, TINY_CLI, copy_store, run_cli
from mlflow import MlflowClient

if str(REPO / "tools") not in sys.path:
    sys.path.insert(0, str(REPO / "tools"))  # tools/blocks.py: the docs' generated blocks
from blocks import code, read_block, replace_block, table, table_row  # noqa: E402

TRAIN = str(REPO / "train.py")
RUN = ["batch_size=32", "epochs=1", "threads=1", "progress=false", "report.enabled=false"]
SYNTHETIC = ["dataset=synthetic", "dataset.train_size=96", "dataset.test_size=64"]
TINY_MODEL = ["model=session6", "model.channels=[8,16,16,16]"]


@pytest.fixture(scope="module")
def store(empty_store, tmp_path_factory) -> str:
    """An MLflow store of this module's own: after every case, no run in it is RUNNING."""
    from eva.tracking.store import prepare_experiment

    uri = copy_store(empty_store, tmp_path_factory.mktemp("errors") / "mlflow.db")
    prepare_experiment(uri, "errors")
    return uri


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict:
    """A session6 checkpoint, a foreign torch file, a text file, corrupt dataset folders."""
    from eva.config import compose_config
    from eva.modes.train import train

    root = tmp_path_factory.mktemp("inputs")
    cfg = compose_config([*TINY_CLI, "tracking.enabled=false"])
    train(cfg, root / "trained")
    torch.save({"weights": torch.zeros(3)}, root / "foreign.pt")
    (root / "notes.txt").write_text("not a checkpoint\n")
    cifar = root / "corrupt" / "cifar-10-batches-py"
    cifar.mkdir(parents=True)
    for name in ["data_batch_1", "test_batch", "batches.meta"]:
        (cifar / name).write_bytes(b"garbage")
    raw = root / "corrupt" / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    for name in ["train-images", "t10k-images"]:
        (raw / f"{name}-idx3-ubyte").write_bytes(b"\x00\x00\x08\x09garbage")
    for name in ["train-labels", "t10k-labels"]:
        (raw / f"{name}-idx1-ubyte").write_bytes(b"\x00\x00\x08\x01garbage")
    return {
        "best": root / "trained" / "checkpoints" / "best.pt",
        "foreign": root / "foreign.pt",
        "text": root / "notes.txt",
        "corrupt": root / "corrupt",
        "empty": root / "empty",
    }


# (case id, arguments after train.py, text the one line must contain). {name} is filled from
# the `files` fixture. A tiny synthetic run is added unless the case picks a dataset/model.
CASES = [
    ("epochs-zero", ["epochs=0"], "epochs=0: must be a positive whole number"),
    ("epochs-negative", ["epochs=-3"], "epochs=-3: must be a positive whole number"),
    ("epochs-not-a-number", ["epochs=abc"], "epochs=abc: Value 'abc'"),
    ("batch-zero", ["batch_size=0"], "batch_size=0: must be a positive whole number"),
    ("batch-negative", ["batch_size=-32"], "batch_size=-32: must be a positive whole number"),
    ("dropout-one", ["model.dropout=1.0"], "model.dropout=1.0: must be in [0, 1)"),
    ("dropout-negative", ["model.dropout=-0.1"], "model.dropout=-0.1: must be in [0, 1)"),
    ("lr-negative", ["optimizer.lr=-0.1"], "optimizer.lr=-0.1: must be positive"),
    ("l1-negative", ["l1_weight=-1e-05"], "l1_weight=-1e-05: must be 0 or more"),
    ("unknown-model", ["model=resnet9000"], "model=resnet9000: no such option (available:"),
    ("unknown-optimizer", ["optimizer=nadam"], "optimizer=nadam: no such option"),
    ("unknown-key", ["epoch=3"], "epoch=3: Key 'epoch' not in 'TrainConfig'"),
    ("max-lr-banana", ["scheduler.max_lr=banana"], "scheduler.max_lr=banana: must be a posit"),
    ("no-such-gpu", ["device=cuda:7"], "device='cuda:7': this machine has 0 CUDA device(s)"),
    ("no-such-device", ["device=tpu"], "device='tpu': expected auto, cpu, cuda or cuda:N"),
    ("unknown-mode", ["mode=serve"], "mode=serve: Invalid value 'serve', expected one of [train,"),
    ("threads-zero", ["threads=0"], "threads=0: must be positive"),
    ("subset-zero", ["dataset.train_subset=0"], "dataset.train_subset=0: must be positive or null"),
    ("precision-fp8", ["precision=fp8"], "precision=fp8: Invalid value 'fp8', expected one of"),
    (
        "augment-backend-dali",
        ["augment.backend=dali"],
        "augment.backend='dali': Invalid value 'dali', expected one of [albumentations, torch]",
    ),
    (
        "model-key-typo",
        ["model.widht=3"],
        "model.widht=3: model=session6 (Session6Net) takes no 'widht'; its arguments: channels,",
    ),
    ("model-variant", ["model=ultimus", "model.variant=big"], "model.variant='big': expected one"),
    ("model-list-length", ["model.channels=[8,16]"], "model.channels=[8, 16]: expected 4 values"),
    (
        "model-target-import",
        ["model._target_=mylab.nets.Net"],
        "model._target_=mylab.nets.Net: cannot import module mylab.nets (ModuleNotFoundError",
    ),
    (
        "cutout-too-large",
        ["augment=resnet", "augment.cutout_size=33"],
        "augment.cutout_size=33: the hole must fit the 32x32 image",
    ),
    (
        "momentum-twice",
        ["optimizer.momentum=0.8"],
        "optimizer.momentum=0.8: scheduler=onecycle cycles the momentum",
    ),
    ("steps-too-few", ["dataset.train_size=32", "batch_size=32"], "needs at least 3 steps"),
    ("workers-negative", ["dataset.num_workers=-1"], "dataset.num_workers=-1: must be 0 or"),
    (
        "cifar-missing",
        ["dataset=cifar10", "dataset.root={empty}", "dataset.download=false"],
        "cifar-10-batches-py is not there and dataset.download=false",
    ),
    (
        "cifar-corrupt",
        ["dataset=cifar10", "dataset.root={corrupt}", "dataset.download=false"],
        "is corrupt or incomplete (md5 check failed)",
    ),
    (
        "cifar-offline",
        ["dataset=cifar10", "dataset.root={empty}"],
        "the download failed (",
    ),
    (
        "fashion-mnist-corrupt",
        ["dataset=fashion_mnist", "dataset.root={corrupt}"],
        "FashionMNIST/raw cannot be read",
    ),
    ("test-no-checkpoint", ["mode=test"], "mode=test needs checkpoint=PATH"),
    ("test-missing-checkpoint", ["mode=test", "checkpoint=gone.pt"], "checkpoint=gone.pt: no such"),
    (
        "test-foreign-checkpoint",
        ["mode=test", "checkpoint={foreign}"],
        "not an eva checkpoint (no model weights or name)",
    ),
    ("test-text-file", ["mode=test", "checkpoint={text}"], "not a checkpoint eva can read"),
    (
        "test-other-model",
        ["mode=test", "checkpoint={best}", "model=ultimus"],
        "holds a session6 model, the config builds ultimus: add model=session6",
    ),
    (
        "tracking-unreachable",
        ["tracking.uri=http://127.0.0.1:9", "tracking.timeout=1"],
        "tracking.uri=http://127.0.0.1:9",
    ),
    ("resume-nothing", ["resume=true"], "resume=true: no checkpoints/last.pt in"),
    ("resume-test-mode", ["resume=true", "mode=test"], "mode=test has nothing to resume"),
    (
        "sweep-bad-syntax",
        ["-m", "model.dropout=interval(0,"],
        "model.dropout=interval(0,: not a valid override",
    ),
    (
        "sweep-bad-distribution",
        ["-m", "hydra/sweeper=eva_optuna", "model.dropout=interval(0.5)"],
        "model.dropout",
    ),
    ("sweep-resume", ["-m", "resume=true", "seed=1,2"], "resume=true continues one run"),
]


# --------------------------------------------------------------------------- the docs' table

DOCS_PAGE = REPO / "docs" / "resume-and-errors.md"
DOCS_BLOCK = "errors"
UPDATE_DOCS = os.environ.get("EVA_UPDATE_DOCS") == "1"
HOW_TO_UPDATE = "EVA_UPDATE_DOCS=1 python -m pytest tests/test_errors.py"
HEADERS = ["input", "prints"]
ABOUT = (
    "Each input below is run by `tests/test_errors.py` as `python train.py INPUT`, with a "
    f"tiny run added: {code(' '.join(RUN))}, plus {code(' '.join(SYNTHETIC))} unless the "
    f"input picks a dataset and {code(' '.join(TINY_MODEL))} unless it picks a model. "
    "`<dir>` is a folder of prepared files (a trained session6 run, a torch file eva did not "
    "write, a text file, an empty folder and corrupt copies of the datasets), `<launch dir>` "
    "the folder the command runs in, `<run dir>` its `hydra.run.dir`."
)


def as_typed(args: list[str]) -> str:
    """The arguments as one types them in a shell: quoted where the shell needs it, but
    not for the <placeholders>."""
    return " ".join(shlex.quote(a) if re.search(r"[\s()'\"*?;&$]", a) else a for a in args)


def placeholders(files: dict, launch_dir=None, run=None) -> list[tuple[str, str]]:
    """(path, placeholder) pairs, longest path first: these paths differ on every run."""
    pairs = {str(files["text"].parent): "<dir>"}
    if run is not None:
        pairs[str(run)] = "<run dir>"
    if launch_dir is not None:
        pairs[str(launch_dir)] = "<launch dir>"
    return sorted(pairs.items(), key=lambda pair: -len(pair[0]))


def normalise(text: str, pairs: list[tuple[str, str]]) -> str:
    for path, placeholder in pairs:
        text = text.replace(path, placeholder)
    return text


def input_cell(args: list[str], files: dict) -> str:
    """The case's arguments as typed, the prepared files named by their <dir> paths."""
    shown = {name: normalise(str(path), placeholders(files)) for name, path in files.items()}
    return code(as_typed([a.format(**shown) for a in args]))


def docs_row(args: list[str], line: str, files: dict, pairs) -> str:
    return table_row([input_cell(args, files), code(normalise(line, pairs))])


def documented_rows() -> list[str]:
    return [line for line in read_block(DOCS_PAGE, DOCS_BLOCK).splitlines() if line]


def write_docs_table(rows: dict[str, str], files: dict) -> None:
    """The block from the rows of the cases that ran, in CASES order; a case that did not
    run this time (-k) keeps the row it has, a case no longer in CASES loses its row."""
    documented = documented_rows()
    ordered = []
    for case, args, _ in CASES:
        if case in rows:
            ordered.append(rows[case])
            continue
        first_cell = f"| {input_cell(args, files)} |"
        ordered += [line for line in documented if line.startswith(first_cell)][:1]
    header = table(HEADERS, [])
    replace_block(DOCS_PAGE, DOCS_BLOCK, f"{ABOUT}\n\n{header}\n" + "\n".join(ordered) + "\n")


@pytest.fixture(scope="module")
def docs_rows(files):
    """{case: its docs row, from the line it printed}; with EVA_UPDATE_DOCS=1 they are
    written into the docs' table once every case has run."""
    rows: dict[str, str] = {}
    yield rows
    if UPDATE_DOCS and rows:
        write_docs_table(rows, files)


# --------------------------------------------------------------------------- the cases


def run_in_process(args: list[str], capsys) -> tuple[int, str, str]:
    argv = sys.argv
    sys.argv = [TRAIN, *args]
    try:
        runpy.run_path(TRAIN, run_name="__main__")
        code = 0
    except SystemExit as e:
        code = e.code
    finally:
        sys.argv = argv
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize(("case", "args", "expected"), CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_exit_1_and_leaves_nothing(
    case, args, expected, store, files, docs_rows, tmp_path, capsys, monkeypatch
):
    # CIFAR-10 offline, for certain: the download goes to a proxy port nobody listens on.
    # urllib keeps the opener (with its proxies) it builds first: a fresh one here, and the
    # old one back afterwards, or later tests would talk to that dead proxy too.
    import urllib.request

    monkeypatch.setattr(urllib.request, "_opener", None)
    monkeypatch.setenv("https_proxy", "http://127.0.0.1:9")
    monkeypatch.setenv("http_proxy", "http://127.0.0.1:9")
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.chdir(tmp_path)
    run = tmp_path / "run"
    flags = [a for a in args if a.startswith("-")]  # -m goes before the overrides
    filled = [a.format(**files) for a in args if not a.startswith("-")]
    given = [*RUN, f"tracking.uri={store}", "tracking.experiment=errors"]
    if not any(a.startswith("dataset=") for a in args):
        given += SYNTHETIC
    if not any(a.startswith("model=") for a in args):
        given += TINY_MODEL
    extra = [f"hydra.run.dir={run}", f"hydra.sweep.dir={tmp_path / 'multirun'}"]
    code, out, err = run_in_process([*flags, *given, *filled, *extra], capsys)

    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 1, (code, err)
    assert len(lines) == 1, err  # one line, no traceback, no Hydra banner
    assert lines[0].startswith("Error: ")
    assert expected.format(**files) in lines[0], lines[0]
    assert "Traceback" not in err + out

    assert not list(tmp_path.rglob("checkpoints")) and not list(tmp_path.rglob("results.json"))
    if "-m" not in flags:
        assert not run.exists()  # the run folder Hydra made for the job is gone again
    client = MlflowClient(store)
    running = client.search_runs(
        [e.experiment_id for e in client.search_experiments()], "attributes.status = 'RUNNING'"
    )
    assert not running, [r.info.run_name for r in running]

    row = docs_row(args, lines[0], files, placeholders(files, tmp_path, run))
    docs_rows[case] = row
    if not UPDATE_DOCS:
        assert row in documented_rows(), (
            f"{DOCS_PAGE.relative_to(REPO)}: the errors table has no row {row}; run {HOW_TO_UPDATE}"
        )


def test_the_real_command_line_prints_one_line_or_the_traceback_on_request(tmp_path):
    bad = [*TINY_CLI, "tracking.enabled=false", "model.dropout=1.5", f"hydra.run.dir={tmp_path}"]
    r = run_cli(bad, tmp_path)
    assert r.returncode == 1
    assert r.stderr.strip() == "Error: model.dropout=1.5: must be in [0, 1)"

    typo = run_cli([*TINY_CLI, "tracking.enabled=false", "epohcs=2"], tmp_path)
    assert typo.returncode == 1
    assert typo.stderr.strip().startswith("Error: epohcs=2: Key 'epohcs' not in 'TrainConfig'")

    env = {**os.environ, "HYDRA_FULL_ERROR": "1"}
    full = subprocess.run(
        [sys.executable, TRAIN, *bad], cwd=tmp_path, capture_output=True, text=True, env=env
    )
    assert full.returncode == 1
    assert "Traceback (most recent call last)" in full.stderr
    assert "eva.errors.EvaError: model.dropout=1.5: must be in [0, 1)" in full.stderr
