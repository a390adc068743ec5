"""The screenshots of the MLflow UI and optuna-dashboard in the docs (docs/img/), taken in
headless Chromium from one small tracked Optuna sweep.

    python tools/screenshots.py                 # a few minutes of one core
    python tools/screenshots.py --trials 4 --epochs 2 --keep
    python tools/screenshots.py --reuse /tmp/eva-screenshots-XXXX   # shoot a kept sweep again

The sweep is eva's own `python -m eva -m hparams_search=optuna` (the session-6 net, part of
Fashion-MNIST, one torch thread) into an MLflow store and Optuna journal of its own in a
temporary folder; then `mlflow ui` and `optuna-dashboard` serve them on free ports of
127.0.0.1 and the browser opens the pages as a user does, with the MLflow UI's "Model
training" switch on (the browser remembers it) and its Assistant panel closed:

    mlflow_runs_table.png   the experiment's runs: the study's parent run expanded, its
                            trials with their Dataset, best_test_acc and final_test_acc
    mlflow_run.png          the best trial's run page: its accuracies, dataset inputs, params
    mlflow_run_charts.png   the same run's per-epoch loss and accuracy charts (Model metrics)
    optuna_study.png        optuna-dashboard's page of the study: the history plot

Data: Fashion-MNIST under $EVA_DATA (else data/ in the clone), or unpacked there from the
Debian package dataset-fashion-mnist; with neither, eva's synthetic images. Needs Chromium
and chromedriver (`./run setup --test`). The servers and the browser are those of the
browser tests (tests/browser.py).
"""

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
IMG = REPO / "docs" / "img"
sys.path.insert(0, str(REPO / "tests"))

from browser import (  # noqa: E402  (tests/ is no package: its folder is put on the path)
    DATASET,
    RUN_NAME,
    Browser,
    DashboardPages,
    MlflowPages,
    browser_unavailable,
    metric_column,
    start_mlflow_ui,
    start_optuna_dashboard,
)

METRIC = "best_test_acc"
METRICS = (METRIC, "final_test_acc")  # the table's columns; the trials' names say their params
EXPERIMENT = "eva"  # eva's default experiment: what a first sweep fills
CHARTS = ("train_loss", "test_loss", "train_acc", "test_acc")  # the run's charts shown
LARGEST_BYTES = 400_000  # a screenshot above this makes the docs slow to load
UI_CHOICES = {  # as a user leaves them: Model training on, the Assistant panel closed
    "mlflow.workflowType_v1": "machine_learning",
    "mlflow.assistant.fab.autoOpenedOnFirstLoad_v1": True,
    "mlflow.assistant.panelOpen_v1": False,
}


def data_root() -> Path:
    return Path(os.environ.get("EVA_DATA") or REPO / "data").expanduser().absolute()


def dataset_option(root: Path) -> str:
    """fashion_mnist where eva finds its files (unpacked, or the Debian package), else synthetic."""
    from eva.data.datasets import DEBIAN_FASHION_MNIST, FASHION_MNIST_FILES

    raw = root / "FashionMNIST" / "raw"
    if all((raw / f).is_file() for f in FASHION_MNIST_FILES):
        return "fashion_mnist"
    if all((DEBIAN_FASHION_MNIST / f"{f}.gz").is_file() for f in FASHION_MNIST_FILES):
        return "fashion_mnist"
    return "synthetic"


def sweep(folder: Path, trials: int, epochs: int) -> str:
    """The tracked sweep in folder (its store mlflow.db, its journal optuna.log); returns
    the dataset option it used."""
    root = data_root()
    dataset = dataset_option(root)
    root.mkdir(parents=True, exist_ok=True)
    (folder / "data").symlink_to(root)  # dataset.root=data: no path of this machine in a picture
    args = [
        "-m",
        "hparams_search=optuna",
        "model=session6",
        f"dataset={dataset}",
        "dataset.root=data",
        "dataset.train_subset=4000",
        "dataset.test_subset=1000",
        f"epochs={epochs}",
        "threads=1",
        "progress=false",
        f"hydra.sweeper.n_trials={trials}",
        "hydra.sweeper.sampler.seed=1",
        f"tracking.experiment={EXPERIMENT}",
    ]
    print(f"$ python -m eva {' '.join(args)}", flush=True)
    started = time.monotonic()
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}  # the folder's
    done = subprocess.run(
        [sys.executable, "-m", "eva", *args], cwd=folder, env=env, capture_output=True, text=True
    )
    if done.returncode != 0:
        last = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["(no output)"]
        sys.exit(f"screenshots: the sweep failed: {last[0]}")
    print(f"  {trials} trials in {time.monotonic() - started:.0f} s", flush=True)
    return dataset


def the_study(store: str):
    """(experiment id, the study's parent run, its trial runs, the best trial's run)."""
    from mlflow import MlflowClient

    client = MlflowClient(store)
    experiment = client.get_experiment_by_name(EXPERIMENT)
    runs = client.search_runs([experiment.experiment_id], order_by=["attributes.run_name ASC"])
    (parent,) = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    best = next(r for r in children if r.info.run_id == parent.data.tags["best_child_run_id"])
    return experiment.experiment_id, parent, children, best


def runs_table(mlflow: MlflowPages, parent, children, out: Path) -> Path:
    browser = mlflow.browser
    mlflow.open_experiment_from_list(EXPERIMENT)
    mlflow.wait_for_table(parent.info.run_id, parent.info.run_name)
    mlflow.widen_column(RUN_NAME, 330)  # the trials' names say what each one tried
    mlflow.expand(parent.info.run_id)
    for child in children:
        browser.wait_for(
            lambda d, c=child: mlflow.run_name_shown(c.info.run_id) == c.info.run_name,
            f"the trial {child.info.run_name!r} under its parent",
        )
    mlflow.remove_columns("Source", "Models")  # room for the numbers
    mlflow.add_columns(*METRICS)
    for child in children:
        for column in (DATASET, *map(metric_column, METRICS)):
            browser.wait_for(
                lambda d, r=child.info.run_id, c=column: (
                    browser.shows(mlflow.cell(r, c)) and mlflow.cell(r, c).text
                ),
                f"{column} of {child.info.run_name!r}, in view",
            )
    rows = [mlflow.row(c.info.run_id) for c in children]
    last = max(rows, key=lambda row: row.rect["y"])  # the table ends there: the rest is blank
    return browser.screenshot(out / "mlflow_runs_table.png", below=last)


def run_page(mlflow: MlflowPages, best, out: Path) -> list[Path]:
    """The best trial's page, reached from its name in the runs table (shown by runs_table)."""
    browser = mlflow.browser
    link = browser.wait_for(
        lambda d: browser.find(f"div[col-id='{RUN_NAME}'] a[href$='/runs/{best.info.run_id}']"),
        f"the link of {best.info.run_name!r} in the runs table",
    )
    browser.click(link)
    search = browser.wait_for(
        lambda d: browser.find("input[placeholder='Search metrics']"), "the run's metrics"
    )
    browser.wait_for(lambda d: browser.find_text("Datasets"), "the run's Datasets")
    search.send_keys("acc")
    browser.wait_for(lambda d: browser.find_text(METRIC, tag="a"), f"{METRIC} in the metrics")
    shots = [browser.screenshot(out / "mlflow_run.png")]
    browser.click(browser.find_text("Model metrics"))
    search = browser.wait_for(
        lambda d: browser.find("input[placeholder='Search metric charts']"), "the chart search"
    )
    search.send_keys(f"^({'|'.join(CHARTS)})$")  # the UI's chart search takes a regex
    browser.wait_for(
        lambda d: (
            len(d.find_elements("css selector", ".js-plotly-plot")) == len(CHARTS)
            and all(browser.find_text(name) for name in CHARTS)
        ),
        f"the run's charts of {', '.join(CHARTS)}",
    )
    time.sleep(1)  # plotly draws the lines into the charts' frames after they appear
    shots.append(browser.screenshot(out / "mlflow_run_charts.png"))
    return shots


def study_page(dashboard: DashboardPages, study_name: str, out: Path) -> Path:
    browser = dashboard.browser
    dashboard.open_study_from_list(study_name)
    browser.wait_for(
        lambda d: browser.find_text("History") and browser.find(".js-plotly-plot .scatterlayer"),
        "the history plot",
    )
    time.sleep(1)  # plotly's transition
    return browser.screenshot(out / "optuna_study.png")


def shoot(folder: Path, out: Path) -> list[Path]:
    """Serve the sweep in folder, take the pages; the servers stopped whatever happens."""
    store = f"sqlite:///{folder / 'mlflow.db'}"
    _, parent, children, best = the_study(store)
    study_name = parent.info.run_name.split(" study ", 1)[1]
    logs = folder / "logs"
    servers = []
    try:
        servers.append(start_mlflow_ui(store, logs, cwd=folder, wait=False))
        servers.append(start_optuna_dashboard(str(folder / "optuna.log"), logs, wait=False))
        with Browser(folder / "evidence") as browser:
            for server in servers:
                server.wait()
            mlflow = MlflowPages(browser, servers[0].url)
            mlflow.remember(UI_CHOICES)
            shots = [runs_table(mlflow, parent, children, out)]
            shots += run_page(mlflow, best, out)
            shots.append(study_page(DashboardPages(browser, servers[1].url), study_name, out))
    finally:
        for server in servers:
            server.stop()
    return shots


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--trials", type=int, default=5, help="trials of the sweep (default 5)")
    p.add_argument("--epochs", type=int, default=3, help="epochs of each trial (default 3)")
    p.add_argument("--out", type=Path, default=IMG, help="where the PNGs go (docs/img)")
    p.add_argument("--keep", action="store_true", help="keep the sweep's folder, say where")
    p.add_argument("--reuse", type=Path, help="a folder --keep kept: no sweep, only the pages")
    args = p.parse_args(argv)
    reason = browser_unavailable()
    if reason is not None:
        sys.exit(f"screenshots: {reason}")
    folder = args.reuse or Path(tempfile.mkdtemp(prefix="eva-screenshots-"))
    try:
        if args.reuse is None:
            print(f"data: {sweep(folder, args.trials, args.epochs)}", flush=True)
        shots = shoot(folder, args.out)
    finally:
        if args.keep or args.reuse:
            print(f"the sweep, its servers' logs and any page a wait gave up on: {folder}")
        else:
            shutil.rmtree(folder, ignore_errors=True)
    for path in shots:
        size = path.stat().st_size
        warning = "  (large)" if size > LARGEST_BYTES else ""
        where = path.relative_to(REPO) if path.is_relative_to(REPO) else path
        print(f"{where}  {size / 1000:.0f} kB{warning}")


if __name__ == "__main__":
    main()
