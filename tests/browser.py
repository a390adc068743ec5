"""The MLflow UI and optuna-dashboard in a real browser, for tests and the docs' screenshots.

    from browser import Browser, browser_unavailable, start_mlflow_ui, start_optuna_dashboard

    ui = start_mlflow_ui("sqlite:///.../mlflow.db", log_dir)      # mlflow ui on a free port
    try:
        with Browser(evidence_dir) as browser:                    # headless Chromium
            browser.open(ui.url)
            browser.wait_for(lambda d: ..., "what the user should see")
    finally:
        ui.stop()                                                 # its whole process group

No pytest in here: tools/screenshots.py imports this module too.

Servers. Each runs in a session (and process group) of its own on a free port of
127.0.0.1, its output in a log file; start_* returns once it answers HTTP and stop() ends
the whole group (mlflow ui runs uvicorn workers), SIGTERM first, SIGKILL after a grace
period. A server that exits or does not answer in time raises with its log's tail.

Browser. Chromium headless through selenium and Debian's chromedriver, the viewport a fixed
size. Every wait is a WebDriverWait on what the rendered page shows; one that times out
saves the page (PNG and HTML) into the evidence folder and raises AssertionError naming
both files, the URL and what was expected.

MLflow UI 3.17 notes (what the helpers below rely on): the runs table is an ag-grid, one
div[role=row][row-id=<run id>] per run, its cells div[col-id=...] (`attributes.`Run Name``,
`attributes.`Dataset``, `metrics.`<key>``, `params.`<key>``); a parent row's first button
in its name cell expands its children; the "Columns" button opens a tree of checkboxes.
Whether an experiment opens on its runs or on the GenAI overview is a switch at the top of
the sidebar ("GenAI" / "Model training"), remembered in the browser's localStorage
(mlflow.workflowType_v1) and overridden by ?workflowType= in the URL.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

from postgres import free_port

# Debian's packages: chromium (/usr/bin/chromium) and chromium-driver (/usr/bin/chromedriver).
CHROMIUM = ("chromium", "chromium")  # (program, Debian package)
CHROMEDRIVER = ("chromedriver", "chromium-driver")
HOW_TO_INSTALL = "./run setup --test installs them (apt-get install chromium chromium-driver)"

# The viewport the pages are drawn in (and the screenshots' size).
VIEWPORT = (1600, 1000)
# Seconds for a server to answer (mlflow ui: ~6 s here), and for its group to end on SIGTERM.
START_TIMEOUT = 90
STOP_GRACE = 10
# Seconds a page may take to show what is waited for (the UIs render in 1-5 s here).
WAIT = 40


def find_program(name: str) -> str | None:
    """The program on PATH, else in /usr/bin (a PATH without it: cron, sudo)."""
    return shutil.which(name) or shutil.which(name, path="/usr/bin")


def browser_unavailable() -> str | None:
    """Why the browser tests cannot run here, or None: the programs missing, and how to get them."""
    missing = [
        f"`{program}` (Debian package {package})"
        for program, package in (CHROMIUM, CHROMEDRIVER)
        if find_program(program) is None
    ]
    if not missing:
        return None
    return f"no {' and no '.join(missing)} on PATH or in /usr/bin: {HOW_TO_INSTALL}"


def venv_program(name: str) -> str:
    """A console script of this interpreter's environment (mlflow, optuna-dashboard)."""
    beside = Path(sys.executable).parent / name
    if beside.is_file():
        return str(beside)
    found = shutil.which(name)
    if found is None:
        raise RuntimeError(f"no `{name}` next to {sys.executable} or on PATH")
    return found


# --------------------------------------------------------------------------- servers


def _log_tail(log: Path, lines: int = 25) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError as error:
        return f"(no log: {error})"


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status == 200
    except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
        return False


class Server:
    """A web server on a free port of 127.0.0.1, in a session (process group) of its own.

    Server(...) launches it and returns at once; wait() returns once its health URL answers
    200, so that several servers start side by side. A port taken between free_port() and
    the bind is retried on another. stop() ends the whole group."""

    def __init__(
        self,
        name: str,
        command: Callable[[int], list[str]],
        health: str,
        log_dir: Path,
        cwd: Path | None = None,
        env: dict | None = None,
    ):
        self.name, self.command, self.health = name, command, health
        self.log_dir, self.cwd, self.env = Path(log_dir), cwd, env
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.process: subprocess.Popen | None = None
        self._launch()

    def _launch(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = self.log_dir / f"{self.name}-{self.port}.log"
        with open(self.log, "wb") as out:
            self.process = subprocess.Popen(
                self.command(self.port),
                cwd=self.cwd,
                env={**os.environ, **(self.env or {})},
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def wait(self, timeout: float = START_TIMEOUT) -> Server:
        """Return once the server answers; RuntimeError with its log's tail if it exits or
        stays silent (it is stopped then)."""
        for attempt in range(3):
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline and self.process.poll() is None:
                if _answers(self.url + self.health):
                    return self
                time.sleep(0.2)
            self.stop()
            tail = _log_tail(self.log)
            if attempt < 2 and "address already in use" in tail.lower():
                self._launch()
                continue
            code = self.process.returncode
            state = (
                f"exited with {code}"
                if code is not None and code >= 0
                else f"did not answer {self.url + self.health} within {timeout:.0f}s"
            )
            command = " ".join(self.command(self.port))
            raise RuntimeError(f"{self.name} {state}: {command}\nlast lines of {self.log}:\n{tail}")
        raise AssertionError("unreachable")

    def stop(self) -> None:
        """End the server's whole process group: SIGTERM, then SIGKILL after STOP_GRACE s."""
        if self.process is None:
            return
        pgid = self.process.pid  # start_new_session: the leader's pid is the group's id
        try:
            os.killpg(pgid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        deadline = time.monotonic() + STOP_GRACE
        while time.monotonic() < deadline:
            self.process.poll()  # reap the leader: a zombie still counts as in the group
            try:
                os.killpg(pgid, 0)
            except ProcessLookupError:
                break  # nobody left in the group
            time.sleep(0.1)
        else:
            try:
                os.killpg(pgid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        try:
            self.process.wait(timeout=STOP_GRACE)
        except subprocess.TimeoutExpired:
            pass

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def start_mlflow_ui(
    store_uri: str, log_dir: Path, cwd: Path | None = None, wait: bool = True
) -> Server:
    """`mlflow ui --backend-store-uri STORE --host 127.0.0.1 --port P`, as the docs start it
    (one worker; no job runner: it serves GenAI evaluations, and its processes cost seconds
    of both cores to start). wait=False: launched only; call .wait() before using it."""
    mlflow = venv_program("mlflow")

    def command(port: int) -> list[str]:
        return [
            mlflow,
            "ui",
            "--backend-store-uri",
            store_uri,
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
        ]

    env = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", "MLFLOW_DISABLE_TELEMETRY": "true"}
    server = Server("mlflow-ui", command, "/health", log_dir, cwd=cwd, env=env)
    return server.wait() if wait else server


def start_optuna_dashboard(
    storage: str, log_dir: Path, cwd: Path | None = None, wait: bool = True
) -> Server:
    """`optuna-dashboard --host 127.0.0.1 --port P STORAGE`: STORAGE a URL (sqlite:///...)
    or the path of a journal file (eva's default optuna.log), which it opens as a
    JournalFileBackend. wait=False: launched only; call .wait() before using it."""
    dashboard = venv_program("optuna-dashboard")

    def command(port: int) -> list[str]:
        return [dashboard, "--host", "127.0.0.1", "--port", str(port), storage]

    server = Server("optuna-dashboard", command, "/api/studies", log_dir, cwd=cwd)
    return server.wait() if wait else server


# --------------------------------------------------------------------------- the browser


class Browser:
    """Headless Chromium through chromedriver; failed waits leave the page in evidence_dir."""

    def __init__(self, evidence_dir: Path, viewport: tuple[int, int] = VIEWPORT):
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service

        reason = browser_unavailable()
        if reason is not None:
            raise RuntimeError(reason)
        options = webdriver.ChromeOptions()
        options.binary_location = find_program(CHROMIUM[0])
        for argument in (
            "--headless=new",
            "--no-sandbox",  # root in a container: no user namespaces for the sandbox
            "--disable-dev-shm-usage",  # a small /dev/shm in containers
            f"--window-size={viewport[0]},{viewport[1]}",
            "--lang=en-US",
            "--no-first-run",
            "--disable-background-networking",  # no network here: nothing to wait for
            "--disable-component-update",
            "--disable-sync",
            "--disable-extensions",
        ):
            options.add_argument(argument)
        service = Service(executable_path=find_program(CHROMEDRIVER[0]))
        self.driver = webdriver.Chrome(options=options, service=service)
        self.evidence_dir = Path(evidence_dir)
        self._saved = 0
        try:
            self.driver.set_page_load_timeout(60)
            self._fit_viewport(viewport)
        except BaseException:
            self.driver.quit()
            raise

    def _fit_viewport(self, viewport: tuple[int, int]) -> None:
        """Make the page's viewport (not the window, which counts its frame) the size asked."""
        width, height = viewport
        inner = self.driver.execute_script("return [window.innerWidth, window.innerHeight]")
        self.driver.set_window_size(width + (width - inner[0]), height + (height - inner[1]))

    def close(self) -> None:
        self.driver.quit()

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ----------------------------------------------------------------- evidence and waits

    def save_page(self, label: str) -> str:
        """The page as it is now, as PNG and HTML in evidence_dir; a sentence naming them."""
        self.evidence_dir.mkdir(parents=True, exist_ok=True)
        self._saved += 1
        stem = self.evidence_dir / f"{self._saved:02d}-{label}"
        png, html = stem.with_suffix(".png"), stem.with_suffix(".html")
        try:
            self.driver.save_screenshot(str(png))
            html.write_text(self.driver.page_source)
        except Exception as error:  # a dead browser: say so instead of hiding the failure
            return f"(the page could not be saved: {error})"
        return f"the page as it was: {png} and {html}"

    def failure(self, what: str, label: str = "failure") -> str:
        """An assertion message: what was expected, where, and the saved page."""
        url = self.driver.current_url
        return f"{what}\n  at {url}\n  {self.save_page(label)}\n  it showed: {self.visible_text()}"

    def visible_text(self, limit: int = 600) -> str:
        from selenium.webdriver.common.by import By

        try:
            text = self.driver.find_element(By.TAG_NAME, "body").text
        except Exception:
            return "(no body)"
        text = " | ".join(line for line in text.splitlines() if line.strip())
        return text if len(text) <= limit else text[:limit] + " ..."

    def wait_for(self, condition: Callable, what: str, timeout: float = WAIT, label: str = ""):
        """condition(driver)'s first truthy value, polled; AssertionError (page saved) if
        none within timeout. Missing or re-rendered elements count as not yet."""
        from selenium.common.exceptions import (
            NoSuchElementException,
            StaleElementReferenceException,
            TimeoutException,
        )
        from selenium.webdriver.support.wait import WebDriverWait

        wait = WebDriverWait(
            self.driver,
            timeout,
            poll_frequency=0.25,
            ignored_exceptions=(NoSuchElementException, StaleElementReferenceException),
        )
        try:
            return wait.until(condition)
        except TimeoutException:
            message = self.failure(f"not seen within {timeout:.0f}s: {what}", label or "timeout")
            raise AssertionError(message) from None

    def open(self, url: str) -> None:
        self.driver.get(url)

    def present(self, css: str):
        """The first element matching css, shown or not (scrolled away, say), or None."""
        from selenium.webdriver.common.by import By

        found = self.driver.find_elements(By.CSS_SELECTOR, css)
        return found[0] if found else None

    def find(self, css: str):
        """The first element matching css that is displayed (not hidden, not clipped by a
        scrolled container), or None: for wait_for conditions."""
        from selenium.webdriver.common.by import By

        for element in self.driver.find_elements(By.CSS_SELECTOR, css):
            if element.is_displayed():
                return element
        return None

    def find_text(self, text: str, tag: str = "*", exact: bool = True):
        """The first displayed element whose own text is (or contains) text, or None."""
        from selenium.webdriver.common.by import By

        test = f"normalize-space(.)={_xpath_string(text)}"
        if not exact:
            test = f"contains(normalize-space(.), {_xpath_string(text)})"
        xpath = f"//{tag}[{test}][not(.//{tag}[{test}])]"  # the innermost such element
        for element in self.driver.find_elements(By.XPATH, xpath):
            if element.is_displayed():
                return element
        return None

    def click(self, element) -> None:
        """Scroll the element into view and click it as a user would."""
        self.scroll_to(element)
        element.click()

    def scroll_to(self, element) -> None:
        self.driver.execute_script(
            "arguments[0].scrollIntoView({block: 'nearest', inline: 'nearest'})", element
        )

    def shows(self, element) -> bool:
        """Whether the element is displayed and at least partly inside the viewport."""
        if element is None or not element.is_displayed():
            return False
        return bool(
            self.driver.execute_script(
                "const r = arguments[0].getBoundingClientRect();"
                "return r.width > 0 && r.height > 0 && r.right > 0 && r.bottom > 0"
                " && r.left < window.innerWidth && r.top < window.innerHeight;",
                element,
            )
        )

    def screenshot(self, path: Path, below=None, margin: int = 48) -> Path:
        """The viewport as a PNG; `below` an element: only down to margin px under it."""
        path.parent.mkdir(parents=True, exist_ok=True)
        self.driver.save_screenshot(str(path))
        if below is not None:
            from PIL import Image

            bottom = self.driver.execute_script(
                "return arguments[0].getBoundingClientRect().bottom", below
            )
            with Image.open(path) as image:
                scale = image.width / self.driver.execute_script("return window.innerWidth")
                height = min(image.height, int((bottom + margin) * scale))
                image.crop((0, 0, image.width, height)).save(path, optimize=True)
        return path


def _xpath_string(text: str) -> str:
    """text as an XPath 1.0 string literal (which has no escapes)."""
    if "'" not in text:
        return f"'{text}'"
    if '"' not in text:
        return f'"{text}"'
    parts = text.split("'")
    return "concat(" + ', "\'", '.join(f"'{p}'" for p in parts) + ")"


# --------------------------------------------------------------------------- the MLflow UI

RUN_NAME = "attributes.`Run Name`"
DATASET = "attributes.`Dataset`"


def metric_column(key: str) -> str:
    return f"metrics.`{key}`"


def param_column(key: str) -> str:
    return f"params.`{key}`"


class MlflowPages:
    """The MLflow UI's pages as a user reaches them, on a Browser."""

    def __init__(self, browser: Browser, url: str):
        self.browser = browser
        self.url = url.rstrip("/")

    def forget_settings(self) -> None:
        """A first visit again: the browser's saved UI choices (localStorage) cleared, on a
        plain page of the server's origin (/health), so that the next page is a fresh load
        of the app instead of a change of route inside the running one."""
        self.browser.open(self.url + "/health")
        self.browser.driver.execute_script("window.localStorage.clear()")

    def remember(self, choices: dict) -> None:
        """Start from these UI choices, as if a user had made them on an earlier visit:
        localStorage items of MLflow 3.17's UI (their values JSON-encoded), e.g.
        {"mlflow.workflowType_v1": "machine_learning"} (the Model training switch) or
        {"mlflow.assistant.panelOpen_v1": False} (the Assistant panel closed)."""
        self.forget_settings()
        for key, value in choices.items():
            self.browser.driver.execute_script(
                "window.localStorage.setItem(arguments[0], JSON.stringify(arguments[1]))",
                key,
                value,
            )

    def open_experiment_from_list(self, name: str) -> None:
        """The Experiments page, then a click on the experiment's name: what a user does."""
        self.browser.open(self.url + "/#/experiments")
        # its link in the list, not the sidebar's item of the same name (back to the list)
        xpath = f"//a[normalize-space(.)={_xpath_string(name)}][contains(@href, '#/experiments/')]"
        link = self.browser.wait_for(
            lambda d: next((a for a in d.find_elements("xpath", xpath) if a.is_displayed()), None),
            f"the experiment {name!r} in the Experiments list",
            label="experiments-list",
        )
        self.browser.click(link)
        self.browser.wait_for(
            lambda d: re.search(r"#/experiments/\w", d.current_url),
            f"the page of experiment {name!r} after a click on its name",
            label="experiment-click",
        )

    def experiment_tab(self, experiment_id: str) -> str:
        """Wait until the experiment's page has chosen its tab; returns the route after
        #/experiments/<id>/ (e.g. 'runs', 'overview/usage')."""
        prefix = f"#/experiments/{experiment_id}/"

        def tab(d):
            url = d.current_url
            if prefix not in url:
                return None
            return url.split(prefix, 1)[1].split("?", 1)[0] or None

        return self.browser.wait_for(tab, f"the page of experiment {experiment_id}", label="tab")

    def dismiss_guidance(self) -> None:
        """Close the one-off tips MLflow lays over a first visit ("Got it"), if shown."""
        button = self.browser.find_text("Got it", tag="button")
        if button is not None:
            button.click()

    def switch_to_model_training(self) -> None:
        """The sidebar's "Model training" switch (the other side is "GenAI")."""
        self.dismiss_guidance()
        switch = self.browser.wait_for(
            lambda d: self.browser.find_text("Model training"),
            'the "Model training" switch in the sidebar',
            label="switch",
        )
        self.browser.click(switch)

    def open_runs(self, experiment_id: str) -> None:
        """The experiment's runs table, whatever the switch says (?workflowType= wins)."""
        self.browser.open(
            f"{self.url}/#/experiments/{experiment_id}/runs?workflowType=machine_learning"
        )

    def close_assistant(self) -> None:
        """Close the "MLflow Assistant" side panel a first visit opens (it narrows the table)."""
        panel = self.browser.find_text("MLflow Assistant")
        if panel is None:
            return
        close = self.browser.find('button[aria-label="Close"]')
        if close is not None:
            close.click()
            self.browser.wait_for(
                lambda d: self.browser.find_text("MLflow Assistant") is None,
                "the MLflow Assistant panel closed",
                label="assistant",
            )

    # ----------------------------------------------------------------- the runs table

    def row(self, run_id: str):
        """The run's row in the table's left (pinned) part: its name and creation time."""
        return self.browser.find(f".ag-pinned-left-cols-container div[role=row][row-id='{run_id}']")

    def cell(self, run_id: str, column: str):
        """The run's cell in a column (col-id), or None; it may be scrolled out of view
        (then its .text is empty): Browser.scroll_to it first."""
        return self.browser.present(f"div[role=row][row-id='{run_id}'] div[col-id='{column}']")

    def header(self, column: str):
        """The column's header cell, or None; it scrolls sideways with the rows' cells."""
        return self.browser.present(f".ag-header-cell[col-id='{column}']")

    def run_name_shown(self, run_id: str) -> str | None:
        """The name in the run's row (its link to the run's page), once the row is shown."""
        link = self.browser.find(
            f"div[role=row][row-id='{run_id}'] div[col-id='{RUN_NAME}'] a[href*='{run_id}']"
        )
        if link is None:
            return None
        return link.text.strip() or None

    def wait_for_table(self, run_id: str, name: str) -> None:
        self.browser.wait_for(
            lambda d: self.run_name_shown(run_id) == name,
            f"the runs table with the run {name!r}",
            label="runs-table",
        )

    def widen_column(self, column: str, pixels: int) -> None:
        """Drag the right edge of a column's header, as a user widens it."""
        from selenium.webdriver.common.action_chains import ActionChains

        edge = self.browser.wait_for(
            lambda d: self.header(column).find_element("css selector", ".ag-header-cell-resize"),
            f"the edge of the {column} header",
            label="column-edge",
        )
        ActionChains(self.browser.driver).drag_and_drop_by_offset(edge, pixels, 0).perform()

    def expand(self, parent_id: str) -> None:
        """Click the +/- button in front of a parent run's name."""
        button = self.browser.wait_for(
            lambda d: self.cell(parent_id, RUN_NAME).find_element("css selector", "button"),
            "the expand button of the parent run's row",
            label="expand",
        )
        self.browser.click(button)

    def add_columns(self, *titles: str) -> None:
        """Tick columns in the "Columns" selector (a metric's or param's key), then close it."""
        from selenium.webdriver.common.by import By
        from selenium.webdriver.common.keys import Keys

        button = self.browser.wait_for(
            lambda d: self.browser.find_text("Columns", tag="button"),
            'the "Columns" button above the runs table',
            label="columns-button",
        )
        self.browser.click(button)
        dialog = self.browser.wait_for(
            lambda d: self.browser.find("div[role=dialog]"),
            "the column selector",
            label="columns-dialog",
        )
        for title in titles:
            node = self.browser.wait_for(
                lambda d, t=title: dialog.find_element(
                    By.XPATH, f".//span[@title={_xpath_string(t)}]"
                ),
                f"{title!r} in the column selector",
                label="columns-entry",
            )
            self.browser.click(node)
        dialog.find_element(By.TAG_NAME, "input").send_keys(Keys.ESCAPE)
        self.browser.wait_for(
            lambda d: self.browser.find("div[role=dialog]") is None,
            "the column selector closed",
            label="columns-closed",
        )

    def remove_columns(self, *titles: str) -> None:
        """Untick columns (attributes such as 'Source', 'Models') in the selector."""
        self.add_columns(*titles)  # a click toggles


# --------------------------------------------------------------------------- optuna-dashboard


class DashboardPages:
    """optuna-dashboard's pages as a user reaches them, on a Browser."""

    def __init__(self, browser: Browser, url: str):
        self.browser = browser
        self.url = url.rstrip("/")

    def open_study_from_list(self, study_name: str) -> None:
        """The study list, then a click on the study: its page (history, importance, ...)."""
        self.browser.open(self.url + "/dashboard")
        link = self.browser.wait_for(
            lambda d: self.browser.find_text(study_name, tag="a", exact=False),
            f"the study {study_name!r} in optuna-dashboard's study list",
            label="study-list",
        )
        self.browser.click(link)
        self.browser.wait_for(
            lambda d: "/dashboard/studies/" in d.current_url,
            f"the page of study {study_name!r}",
            label="study-page",
        )

    def open_trials(self) -> None:
        """The study's trial list (a link in the left bar)."""
        link = self.browser.wait_for(
            lambda d: self.browser.find("a[href$='/trials']"),
            "the link to the trial list in the left bar",
            label="trials-link",
        )
        self.browser.click(link)
        self.browser.wait_for(
            lambda d: d.current_url.split("?")[0].endswith("/trials"),
            "the trial list",
            label="trials-page",
        )
