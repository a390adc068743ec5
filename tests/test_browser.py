"""A tracked sweep as a user sees it: the MLflow UI and optuna-dashboard in a real browser.

One tiny tracked Optuna sweep for the module (2 trials of one epoch on 96 synthetic images,
its own MLflow sqlite store, the study in eva's default journal next to it), then
`mlflow ui` and `optuna-dashboard` on free ports of 127.0.0.1 and headless Chromium
(tests/browser.py). Every assertion reads the rendered page; a wait that fails saves the
page's PNG and HTML into the test's tmp folder and names them in its message.

Skipped, saying what to install, only where Chromium or chromedriver is missing.
"""

import math
import uuid
from pathlib import Path
from types import SimpleNamespace

import pytest
from browser import (
    DATASET,
    Browser,
    DashboardPages,
    MlflowPages,
    browser_unavailable,
    metric_column,
    start_mlflow_ui,
    start_optuna_dashboard,
)
from helpers import TINY_CLI, copy_store, run_cli, runs_of
from mlflow import MlflowClient

TRIALS = 2
METRIC = "best_test_acc"  # what eva's trials log, and the name its studies give their value


@pytest.fixture(scope="module")
def sweep(empty_store, tmp_path_factory):
    """The sweep, both servers and the browser; all stopped at the end, also on failure."""
    reason = browser_unavailable()
    if reason is not None:
        pytest.skip(reason)
    root = tmp_path_factory.mktemp("browser")
    store = copy_store(empty_store, root / "mlflow.db")
    experiment = f"browser-{uuid.uuid4().hex[:8]}"
    args = [
        "-m",
        "hparams_search=optuna",
        *TINY_CLI,
        f"tracking.uri={store}",
        f"tracking.experiment={experiment}",
        f"hydra.sweeper.n_trials={TRIALS}",
        "hydra.sweeper.sampler.seed=3",
    ]
    done = run_cli(args, root)
    assert done.returncode == 0, done.stderr[-3000:]
    journal = root / "optuna.log"  # the default storage: a journal next to the MLflow store
    assert journal.is_file(), f"no study journal next to the store: {sorted(root.iterdir())}"

    runs = runs_of(store, experiment)
    (parent,) = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = sorted(
        (r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id),
        key=lambda r: r.info.run_name,
    )
    assert len(children) == TRIALS, [r.info.run_name for r in runs]
    study_name = parent.info.run_name.split(" study ", 1)[1]

    servers = []
    try:  # both servers and the browser start side by side
        servers.append(start_mlflow_ui(store, root / "logs", cwd=root, wait=False))
        servers.append(start_optuna_dashboard(str(journal), root / "logs", cwd=root, wait=False))
        with Browser(root / "evidence") as browser:
            for server in servers:
                server.wait()
            yield SimpleNamespace(
                store=store,
                experiment=experiment,
                experiment_id=parent.info.experiment_id,
                parent=parent,
                children=children,
                study_name=study_name,
                browser=browser,
                mlflow=MlflowPages(browser, servers[0].url),
                dashboard=DashboardPages(browser, servers[1].url),
            )
    finally:
        for server in servers:
            server.stop()


@pytest.fixture
def ui(sweep, tmp_path):
    """The module's sweep and browser, this test's failures saved into its tmp_path, and the
    MLflow UI as on a first visit (no choices of an earlier test remembered)."""
    sweep.browser.evidence_dir = tmp_path
    sweep.mlflow.forget_settings()
    return sweep


# --------------------------------------------------------------------------- the MLflow UI


def test_the_model_training_switch_opens_the_runs_and_is_remembered(ui):
    """MLflow 3.17's UI opens every experiment on its GenAI overview until "Model training"
    is picked in its sidebar (it does not read the experiment's mlflow.experimentKind tag,
    which eva still sets): one click shows the runs table, and the experiment opens on it
    from then on (the browser keeps the choice; docs/tracking.md says so)."""
    ui.mlflow.open_experiment_from_list(ui.experiment)
    ui.mlflow.experiment_tab(ui.experiment_id)
    ui.mlflow.switch_to_model_training()
    runs = f"#/experiments/{ui.experiment_id}/runs"
    ui.browser.wait_for(lambda d: runs in d.current_url, f"{runs} after the switch", label="switch")
    ui.mlflow.wait_for_table(ui.parent.info.run_id, ui.parent.info.run_name)
    ui.mlflow.open_experiment_from_list(ui.experiment)  # again, from the list
    tab = ui.mlflow.experiment_tab(ui.experiment_id)
    assert tab == "runs", ui.browser.failure(f"opened on {tab!r} the second time", "second")
    ui.mlflow.wait_for_table(ui.parent.info.run_id, ui.parent.info.run_name)


def test_the_study_is_a_parent_run_and_its_trials_its_children(ui):
    parent = ui.parent
    assert parent.info.run_name == f"session6-synthetic study {ui.study_name}"
    ui.mlflow.open_runs(ui.experiment_id)
    ui.mlflow.wait_for_table(parent.info.run_id, parent.info.run_name)
    for child in ui.children:  # folded under the parent at first
        assert ui.mlflow.row(child.info.run_id) is None, ui.browser.failure(
            f"the trial {child.info.run_name!r} is shown before its parent is expanded"
        )
    ui.mlflow.expand(parent.info.run_id)
    for child in ui.children:
        ui.browser.wait_for(
            lambda d, c=child: ui.mlflow.run_name_shown(c.info.run_id) == c.info.run_name,
            f"the trial run {child.info.run_name!r} under its parent",
            label="child",
        )
    names = [c.info.run_name for c in ui.children]
    assert sorted(n.split(":")[0] for n in names) == [str(i) for i in range(TRIALS)], names


def test_a_metric_column_shows_each_trials_number(ui):
    ui.mlflow.open_runs(ui.experiment_id)
    ui.mlflow.wait_for_table(ui.parent.info.run_id, ui.parent.info.run_name)
    ui.mlflow.expand(ui.parent.info.run_id)
    ui.mlflow.add_columns(METRIC)
    column = metric_column(METRIC)
    for child in ui.children:
        expected = child.data.metrics[METRIC]
        cell = ui.browser.wait_for(
            lambda d, c=child: ui.mlflow.cell(c.info.run_id, column),
            f"a {METRIC} cell in the row of {child.info.run_name!r}",
            label="metric-cell",
        )
        ui.browser.scroll_to(cell)  # the new column comes last: scroll the table sideways
        shown = ui.browser.wait_for(
            lambda d, c=cell: ui.browser.shows(c) and c.text.strip(),
            f"{METRIC} of {child.info.run_name!r} in view",
            label="metric-value",
        )
        try:
            value = float(shown)
        except ValueError:
            value = math.nan
        assert math.isclose(value, expected, rel_tol=1e-3), ui.browser.failure(
            f"{child.info.run_name}: the {METRIC} column shows {shown!r}, MLflow has {expected}"
        )
    header = ui.browser.wait_for(
        lambda d: ui.browser.shows(ui.mlflow.header(column)) and ui.mlflow.header(column),
        f"the header of the {METRIC} column above its numbers",
        label="metric-header",
    )
    assert header.text.strip() == METRIC, ui.browser.failure(f"the header says {header.text!r}")


def test_the_dataset_column_names_the_dataset(ui):
    """Each trial's run logs its data as MLflow dataset inputs (train, test): the runs
    table's Dataset column shows the dataset's name."""
    client = MlflowClient(ui.store)
    for child in ui.children:
        inputs = client.get_run(child.info.run_id).inputs.dataset_inputs
        assert inputs, (
            f"the trial run {child.info.run_name!r} has no dataset inputs in MLflow "
            "(run.inputs.dataset_inputs is empty): eva does not log its data with log_inputs"
        )
    ui.mlflow.open_runs(ui.experiment_id)
    ui.mlflow.wait_for_table(ui.parent.info.run_id, ui.parent.info.run_name)
    ui.mlflow.expand(ui.parent.info.run_id)
    for child in ui.children:
        name = child.data.tags["dataset"]  # eva's tag: the dataset option, e.g. synthetic
        cell = ui.browser.wait_for(
            lambda d, c=child: ui.mlflow.cell(c.info.run_id, DATASET),
            f"the Dataset cell of {child.info.run_name!r}",
            label="dataset-cell",
        )
        ui.browser.scroll_to(cell)
        ui.browser.wait_for(
            lambda d, c=cell, n=name: c.text.strip().startswith(n) and ui.browser.shows(c),
            f"{name!r} in the Dataset column of {child.info.run_name!r}",
            label="dataset",
        )


# --------------------------------------------------------------------------- optuna-dashboard


def test_optuna_dashboard_shows_the_study_its_trials_and_the_metric_name(ui):
    dashboard, browser = ui.dashboard, ui.browser
    dashboard.open_study_from_list(ui.study_name)
    browser.wait_for(
        lambda d: browser.find_text(ui.study_name, exact=False),
        f"the study's name {ui.study_name!r} on its page",
        label="study-name",
    )
    # the history plot's y axis and selector name the objective, not "Objective 0"
    browser.wait_for(
        lambda d: browser.find_text("History") and browser.find_text(METRIC),
        f"the History plot of {METRIC}",
        label="history",
    )
    page = browser.visible_text(limit=100_000)
    assert "Objective 0" not in page, browser.failure("the objective is unnamed", "unnamed")
    dashboard.open_trials()
    browser.wait_for(
        lambda d: browser.find_text(f"{TRIALS} Trials"),
        f'"{TRIALS} Trials" on the trial list',
        label="trial-count",
    )
    for number in range(TRIALS):
        browser.wait_for(
            lambda d, n=number: browser.find_text(f"Trial {n}"),
            f'"Trial {number}" in the trial list',
            label="trial",
        )


def test_a_missing_browser_is_named_with_how_to_install_it(monkeypatch):
    """The skip reason: which program is missing, its Debian package, the command."""
    import browser

    which = browser.shutil.which
    monkeypatch.setattr(
        browser.shutil, "which", lambda n, path=None: None if n == "chromedriver" else which(n)
    )
    reason = browser.browser_unavailable()
    assert reason.startswith("no `chromedriver` (Debian package chromium-driver) on PATH"), reason
    assert "./run setup --test" in reason and "`chromium`" not in reason
    monkeypatch.setattr(browser.shutil, "which", lambda n, path=None: None)
    assert "no `chromium` (Debian package chromium) and no `chromedriver`" in (
        browser.browser_unavailable()
    )


def test_screenshots_on_failure_name_the_saved_page(ui, tmp_path):
    """A wait that fails says what it waited for and where the page was saved."""
    ui.mlflow.open_runs(ui.experiment_id)
    with pytest.raises(AssertionError) as failed:
        ui.browser.wait_for(lambda d: False, "something never shown", timeout=1, label="never")
    message = str(failed.value)
    assert "something never shown" in message
    saved = sorted(Path(tmp_path).glob("*-never.*"))
    assert [p.suffix for p in saved] == [".html", ".png"], saved
    assert all(str(p) in message for p in saved), message
    assert saved[1].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
