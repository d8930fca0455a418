"""The dashboard in a real browser: ``streamlit run dashboard/serve.py`` over a lake built with the
command line (synthetic patients, then the pipeline), driven by Playwright through Debian's
chromium.

Every page is opened, waited on until the app is idle and checked for exceptions and error
alerts; a full-page screenshot of each lands in ``test-artifacts/screenshots/`` (and of the page
as it was when a test failed). The interactions are checked against figures computed from the
lake independently of the dashboard's own queries.

Needs ``chromium`` (``apt-get install chromium``; ``scripts/test`` installs it when it can);
skips without it. Playwright's own browser downloads are never used.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import polars as pl
import pytest
from playwright.sync_api import Browser, Locator, Page, ViewportSize, expect

from lakehouse.catalog import (
    BACKTESTS,
    EXPLANATIONS,
    FORECASTS,
    JOB_RUNS,
    OUTLOOK,
    PATIENTS,
    QUARANTINE,
)
from lakehouse.storage import Lake
from tests.test_cli import mobility

pytestmark = pytest.mark.browser

REPO = Path(__file__).resolve().parents[2]
APP = "dashboard/serve.py"  # as the Procfile and scripts/run start it
SCREENSHOTS = REPO / "test-artifacts" / "screenshots"
PATIENTS_IN_LAKE = 16
SERVER_START_SECONDS = 60.0
# Generous: the pages query Delta tables and draw plotly charts on 2 shared cores.
TIMEOUT_MS = 60_000
VIEWPORT: ViewportSize = {"width": 1400, "height": 1000}
# Streamlit's data grid (glide): the header and every row are this many CSS pixels high.
GRID_ROW_PX = 35

# a page's path, its title and the element that shows it has drawn its content
PAGES = {
    "cohort": ("/", "Cohort overview", "[data-testid='stMetric']"),
    "patient": ("/patient", "Patient", ".js-plotly-plot"),
    "sql": ("/sql", "Cohort SQL", "textarea"),
    "monitoring": ("/monitoring", "Monitoring", "[data-testid='stDataFrame']"),
}

IDLE_JS = """() => {
    const app = document.querySelector("[data-testid='stApp']");
    return app !== null
        && app.dataset.testScriptState === "notRunning"
        && document.querySelector("[data-testid='stStatusWidget']") === null;
}"""
CHARTS_DRAWN_JS = """() => Array.from(document.querySelectorAll("[data-testid='stPlotlyChart']"))
    .every((chart) => chart.querySelector(".js-plotly-plot .main-svg") !== null)"""


@dataclass(frozen=True)
class Dashboard:
    """A running dashboard: its address, the lake it shows and its log."""

    url: str
    lake: Lake
    log: Path

    def log_tail(self, lines: int = 60) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return "\n".join(text.splitlines()[-lines:])


# ---------------------------------------------------------------------------------- fixtures


def _chromium() -> str | None:
    if Path("/usr/bin/chromium").is_file():
        return "/usr/bin/chromium"
    return shutil.which("chromium")


@pytest.fixture(scope="module")
def built_lake(chromium: str, tmp_path_factory: pytest.TempPathFactory) -> Lake:
    """A lake as a user builds it: synthetic patients, then the pipeline (aggregate, features,
    train, forecast)."""
    root = tmp_path_factory.mktemp("browser")
    uri = str(root / "lake")
    for step in (
        ("generate", "--patients", str(PATIENTS_IN_LAKE), "--seed", "42"),
        ("pipeline",),
    ):
        done = mobility("--lake", uri, *step, cwd=root)
        assert done.returncode == 0, (
            f"mobility {' '.join(step)} failed:\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}"
        )
    lake = Lake(uri)
    missing = [
        t.qualified_name
        for t in (FORECASTS, OUTLOOK, EXPLANATIONS, BACKTESTS)
        if not lake.exists(t)
    ]
    assert not missing, f"the pipeline did not write {missing}"
    return lake


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as response:
            return bool(response.read().decode().strip() == "ok")
    except (urllib.error.URLError, OSError):
        return False


@contextmanager
def serve(
    lake: Lake,
    log: Path,
    *,
    env: dict[str, str],
    args: tuple[str, ...] = (),
    port: int | None = None,
) -> Iterator[Dashboard]:
    """``streamlit run dashboard/serve.py`` on ``port`` (default: a free one) of 127.0.0.1 over
    ``lake`` with this process's environment plus ``env`` (and extra command-line ``args``),
    until the block ends; the test fails when it does not start."""
    port = port or _free_port()
    url = f"http://127.0.0.1:{port}"
    base = {
        k: v
        for k, v in os.environ.items()
        if k not in ("LAKE_URI", "MOBILITY_ENGINE", "MOBILITY_DEMO", "MOBILITY_ROLES_FILE")
    }
    command = [
        sys.executable,
        "-m",
        "streamlit",
        "run",
        APP,
        "--server.port",
        str(port),
        "--server.address",
        "127.0.0.1",
        "--server.headless",
        "true",
        *args,
    ]
    with log.open("w") as out:
        server = subprocess.Popen(
            command,
            cwd=REPO,
            env={**base, "LAKE_URI": lake.uri, **env},
            stdout=out,
            stderr=subprocess.STDOUT,
            text=True,
        )
    running = Dashboard(url=url, lake=lake, log=log)
    try:
        deadline = time.monotonic() + SERVER_START_SECONDS
        while not _healthy(url):
            if server.poll() is not None:
                pytest.fail(f"streamlit exited ({server.returncode}):\n{running.log_tail()}")
            if time.monotonic() > deadline:
                pytest.fail(
                    f"streamlit not healthy after {SERVER_START_SECONDS:.0f} s:\n"
                    f"{running.log_tail()}"
                )
            time.sleep(0.25)
        yield running
    finally:
        stop(server, timeout=15)


def stop(process: subprocess.Popen[bytes], *, timeout: float) -> None:
    """Terminate ``process``; kill it when it is still running after ``timeout`` seconds."""
    process.terminate()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=timeout)


@pytest.fixture(scope="module")
def dashboard(built_lake: Lake, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dashboard]:
    """The dashboard over the built lake in demo mode (no sign-in, every page: the sign-in and
    roles are tests/browser/test_login_browser.py's); stopped at the end of the module."""
    log = tmp_path_factory.mktemp("streamlit") / "streamlit.log"
    with serve(built_lake, log, env={"MOBILITY_DEMO": "1"}) as running:
        yield running


@pytest.fixture
def page(browser: Browser, dashboard: Dashboard, request: pytest.FixtureRequest) -> Iterator[Page]:
    """A fresh browser tab (its own Streamlit session). When the test failed: a screenshot of
    each open tab and the server's log next to them, and the log's tail in the report."""
    context = browser.new_context(viewport=VIEWPORT)
    context.set_default_timeout(TIMEOUT_MS)
    failed_before = request.session.testsfailed
    tab = context.new_page()
    yield tab
    if request.session.testsfailed > failed_before:
        name = re.sub(r"[^\w.-]+", "_", request.node.name)
        for number, open_tab in enumerate(context.pages):
            screenshot(open_tab, f"FAILED-{name}-{number}")
        shutil.copyfile(dashboard.log, SCREENSHOTS / f"FAILED-{name}-streamlit.log")
        print(f"streamlit log:\n{dashboard.log_tail()}")
    context.close()


# ----------------------------------------------------------------------------------- helpers


def wait_idle(page: Page) -> None:
    """Until the script has finished running and every plotly chart is drawn."""
    page.wait_for_function(IDLE_JS)
    page.wait_for_function(CHARTS_DRAWN_JS)


def open_page(page: Page, dashboard: Dashboard, path: str, ready: str) -> None:
    page.goto(dashboard.url + path)
    page.locator(ready).first.wait_for()
    wait_idle(page)


def assert_no_error(page: Page, dashboard: Dashboard) -> None:
    exceptions = page.locator("[data-testid='stException']")
    errors = page.locator("[data-testid='stAlertContentError']")
    log = f"\nstreamlit log:\n{dashboard.log_tail()}"
    assert exceptions.count() == 0, f"exception on {page.url}: {exceptions.all_inner_texts()}{log}"
    assert errors.count() == 0, f"error on {page.url}: {errors.all_inner_texts()}{log}"


def screenshot(page: Page, name: str) -> Path:
    """The whole page: Streamlit scrolls inside its main area, so the window is made as tall as
    the content first."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    size = page.viewport_size or VIEWPORT
    height = page.evaluate(
        "() => document.querySelector(\"[data-testid='stMain']\")?.scrollHeight ?? 0"
    )
    if height > size["height"]:
        page.set_viewport_size({"width": size["width"], "height": min(int(height), 16_000)})
        page.wait_for_timeout(300)  # plotly redraws at the new size
    page.screenshot(path=path, full_page=True)
    page.set_viewport_size(size)
    return path


def metric(page: Page, label: str) -> Locator:
    """The value of the metric with this label."""
    return (
        page.locator("[data-testid='stMetric']")
        .filter(has=page.get_by_text(label, exact=True))
        .locator("[data-testid='stMetricValue']")
    )


def grid(frame: Locator) -> Locator:
    """The accessible table Streamlit's canvas data grid keeps for screen readers."""
    return frame.locator("table[role='grid']")


def grid_rows(frame: Locator) -> int:
    count = grid(frame).get_attribute("aria-rowcount")
    assert count is not None
    return int(count) - 1  # the header row counts


def expect_grid_rows(frame: Locator, rows: int) -> None:
    """The grid holds ``rows`` rows (its accessible table follows the canvas a moment later)."""
    expect(grid(frame)).to_have_attribute("aria-rowcount", str(rows + 1))


def grid_cells(frame: Locator) -> list[list[str]]:
    """The rendered body rows' cell texts."""
    rows = grid(frame).locator("tbody tr[role='row']")
    return [row.locator("td").all_inner_texts() for row in rows.all()]


def section(page: Page, heading: str) -> Locator:
    return page.get_by_role("heading", name=heading, exact=True)


def table_after(page: Page, heading: str) -> Locator:
    """The first data grid below the heading."""
    return section(page, heading).locator("xpath=following::*[@data-testid='stDataFrame'][1]")


def choose(page: Page, label: str, option: str) -> None:
    """Pick ``option`` in the selectbox or multiselect labelled ``label``."""
    page.get_by_role("combobox", name=label, exact=True).click()
    page.get_by_role("option", name=option, exact=True).click()


def patients(lake: Lake) -> pl.DataFrame:
    return lake.read(PATIENTS).with_columns(pl.col("disease_group").fill_null("OTHER"))


# ------------------------------------------------------------------------------------- tests


@pytest.mark.parametrize("name", list(PAGES))
def test_page_opens_without_errors(page: Page, dashboard: Dashboard, name: str) -> None:
    path, title, ready = PAGES[name]
    open_page(page, dashboard, path, ready)
    expect(page.get_by_role("heading", name=title, exact=True)).to_be_visible()
    assert_no_error(page, dashboard)
    screenshot(page, name)


def test_cohort_filter_by_disease_group(page: Page, dashboard: Dashboard) -> None:
    everyone = patients(dashboard.lake)
    group = everyone["disease_group"].value_counts(sort=True)["disease_group"][0]
    open_page(page, dashboard, "/", "[data-testid='stMetric']")
    expect(metric(page, "Patients")).to_have_text(f"{everyone.height:,}")

    choose(page, "Disease group", group)
    page.keyboard.press("Escape")  # close the multiselect's list
    in_group = everyone.filter(pl.col("disease_group") == group).height
    expect(metric(page, "Patients")).to_have_text(f"{in_group:,}")
    wait_idle(page)
    assert_no_error(page, dashboard)

    # the decline list holds only patients of the group, as many as the metric says
    declines = table_after(page, "Mobility decline expected")
    if declines.count():
        expected = metric(page, "Decline expected").inner_text().rstrip("+")
        expect_grid_rows(declines, int(expected))
        assert {row[2] for row in grid_cells(declines)} <= {group}
    screenshot(page, "cohort-filtered")


def test_open_a_patient_and_pick_another(page: Page, dashboard: Dashboard) -> None:
    ids = patients(dashboard.lake)["patient_id"].sort().to_list()
    open_page(page, dashboard, "/", "[data-testid='stMetric']")
    declines = table_after(page, "Mobility decline expected")
    if declines.count() and grid_rows(declines) > 0:
        # the first row's "open" link, clicked where the canvas grid draws it
        first_row = grid_cells(declines)[0]
        link, patient_id = first_row[0], first_row[1]
        assert link == f"patient?patient_id={patient_id}"
        canvas = declines.locator("canvas[data-testid='data-grid-canvas']").first
        canvas.scroll_into_view_if_needed()
        box = canvas.bounding_box()
        assert box is not None
        x, y = box["x"] + 20, box["y"] + GRID_ROW_PX * 1.5
        # the grid makes a link clickable only once the pointer rests on it
        page.mouse.move(x, y)
        expect(canvas).to_have_css("cursor", "pointer")
        with page.context.expect_page() as opened:
            page.mouse.click(x, y)
        patient_page = opened.value
        patient_page.wait_for_load_state()
        page.close()
    else:
        patient_id = ids[0]
        patient_page = page
        patient_page.goto(f"{dashboard.url}/patient?patient_id={patient_id}")
    assert re.search(rf"/patient\?patient_id={re.escape(patient_id)}$", patient_page.url)
    patient_page.locator(".js-plotly-plot").first.wait_for()
    wait_idle(patient_page)
    assert_no_error(patient_page, dashboard)
    show_patient(patient_page, patient_id)
    expect(section(patient_page, "Why: the forecast explained")).to_be_visible()
    waterfall = patient_page.locator(".js-plotly-plot").nth(1).locator(".barlayer .point")
    assert waterfall.count() > 1, "no explanation waterfall"
    screenshot(patient_page, "patient-opened")

    other = next(i for i in ids if i != patient_id)
    choose(patient_page, "Patient", other)
    expect(patient_page).to_have_url(re.compile(rf"patient_id={re.escape(other)}$"))
    wait_idle(patient_page)
    assert_no_error(patient_page, dashboard)
    show_patient(patient_page, other)
    expect(section(patient_page, "Why: the forecast explained")).to_be_visible()
    screenshot(patient_page, "patient-other")


# the rows an explanation may show besides a therapy's (which is named after it)
FAMILY_LABELS = {
    "Recent level",
    "Weekday pattern",
    "Time of year",
    "Trend",
    "Side effects",
    "Disease course, similar patients",
    "Other, smaller influences",
    "Patients of the same disease group",
    "Time of year, trend and therapies",
    "Rest of the stored forecast",
    "Forecast",
}
THERAPY_ROW = re.compile(r".+ (starts|stops after) \d{1,2}\s\w{3}\s\d{4}")


# a tick label's text, its wrapped lines (one tspan each) joined by spaces
TICK_LINES_JS = """(texts) => texts.map((text) => {
    const lines = Array.from(text.querySelectorAll("tspan.line"));
    return (lines.length ? lines : [text]).map((line) => line.textContent).join(" ");
})"""


def legend(chart: Locator) -> list[str]:
    return [text.strip() for text in chart.locator(".legend .legendtext").all_text_contents()]


def test_patient_page_draws_one_forecast_and_explains_it(page: Page, dashboard: Dashboard) -> None:
    """The champion's forecast alone with its 80% range under a plain name, the other models
    behind the toggle; the explanation's rows are clinical families on an axis from zero, and
    its numbers add up to the forecast in its title."""
    everyone = patients(dashboard.lake)["patient_id"].sort().to_list()
    patient_id = everyone[len(everyone) // 2]
    open_page(page, dashboard, f"/patient?patient_id={patient_id}", ".js-plotly-plot")
    assert_no_error(page, dashboard)
    timeline, waterfall = page.locator(".js-plotly-plot").all()[:2]

    names = legend(timeline)
    drawn = [name for name in names if name.startswith("forecast: ")]
    assert len(drawn) == 1, names
    assert "80% range of the forecast" in names
    assert not [name for name in names if "_" in name], names

    # the explanation: rows in a clinician's words, whole, from zero steps to the forecast
    rows = [
        " ".join(text.split())
        for text in waterfall.locator(".yaxislayer-above .ytick text").evaluate_all(TICK_LINES_JS)
    ]
    assert "Forecast" in rows and 2 <= len(rows) <= 9, rows  # (in the DOM bottom up)
    for row in rows:
        assert row in FAMILY_LABELS or THERAPY_ROW.fullmatch(row), row
        assert "…" not in row
    assert waterfall.locator(".xaxislayer-above .xtick text").first.text_content() == "0"
    numbers = [
        int(text.split(" ")[0].replace(",", "").replace("+", "").replace("\u2212", "-"))
        for text in waterfall.locator(".barlayer .point text").all_text_contents()
    ]
    assert sum(numbers[:-1]) == numbers[-1], numbers
    title = waterfall.locator(".gtitle").text_content() or ""
    assert f"{numbers[-1]:,} steps/day" in title, title
    screenshot(page, "patient-explained")

    page.get_by_text("Compare with the other models", exact=True).click()
    expect(page.locator(".js-plotly-plot").first.locator(".legend .legendtext")).not_to_have_count(
        len(names)
    )
    wait_idle(page)
    assert_no_error(page, dashboard)
    compared = legend(page.locator(".js-plotly-plot").first)
    assert len(compared) > len(names), compared
    assert not [name for name in compared if "_" in name], compared
    assert [name for name in compared if name.startswith("forecast: ")] == drawn
    screenshot(page, "patient-compared")


def show_patient(page: Page, patient_id: str) -> None:
    """The patient is selected and their history chart drawn."""
    expect(page.get_by_role("combobox", name="Patient", exact=True)).to_have_value(patient_id)
    title = page.locator(".js-plotly-plot .gtitle").filter(has_text=patient_id)
    expect(title).to_have_count(1)
    assert page.locator(".js-plotly-plot").first.locator(".scatterlayer .trace").count() > 0


def test_sql_query_and_refusal(page: Page, dashboard: Dashboard, tmp_path: Path) -> None:
    expected = dashboard.lake.read(PATIENTS).group_by("disease_group").agg(n=pl.len()).sort("n")
    open_page(page, dashboard, "/sql", "textarea")
    query = page.locator("textarea")
    query.fill("SELECT disease_group, count(*) AS n FROM bronze.patients GROUP BY 1 ORDER BY 1")
    page.get_by_role("button", name="Run").click()
    expect(page.get_by_text(re.compile(rf"^{expected.height} rows in "))).to_be_visible()
    wait_idle(page)
    assert_no_error(page, dashboard)
    result = page.locator("[data-testid='stDataFrame']").first
    expect_grid_rows(result, expected.height)
    shown = {(group, int(n)) for group, n in grid_cells(result)}
    assert shown == {(row["disease_group"], row["n"]) for row in expected.iter_rows(named=True)}
    expect(page.get_by_role("button", name="Download (CSV)")).to_be_visible()
    screenshot(page, "sql-result")

    target = tmp_path / "x.csv"
    query.fill(f"COPY bronze.patients TO '{target}'")
    page.get_by_role("button", name="Run").click()
    refusal = page.locator(
        "[data-testid='stAlertContentError'] [data-testid='stMarkdownContainer']"
    )
    expect(refusal).to_have_count(1)
    wait_idle(page)
    message = refusal.inner_text().strip()
    assert "\n" not in message and "Traceback" not in message
    assert "read-only" in message, message
    assert page.locator("[data-testid='stException']").count() == 0
    assert page.locator("[data-testid='stDataFrame']").count() == 1  # the result is gone
    assert not target.exists()
    screenshot(page, "sql-refused")


def test_monitoring_from_the_sidebar(page: Page, dashboard: Dashboard) -> None:
    open_page(page, dashboard, "/", "[data-testid='stMetric']")
    page.locator("[data-testid='stSidebarNav']").get_by_role("link", name="Monitoring").click()
    expect(page).to_have_url(re.compile(r"/monitoring$"))
    expect(section(page, "Job runs")).to_be_visible()
    table_after(page, "Job runs").wait_for()
    wait_idle(page)
    assert_no_error(page, dashboard)

    runs = dashboard.lake.read(JOB_RUNS).sort("started_at", descending=True)
    latest = runs.row(0, named=True)
    expect(metric(page, "Latest run")).to_have_text(f"{latest['job']}: {latest['status']}")
    expect_grid_rows(table_after(page, "Job runs"), min(runs.height, 100))

    expect(section(page, "Data quality")).to_be_visible()
    quarantined = dashboard.lake.read(QUARANTINE).height
    if quarantined:
        expect(page.get_by_text(f"{quarantined:,} input rows were rejected")).to_be_visible()
    else:
        expect(page.get_by_text("No input row has been quarantined.")).to_be_visible()
    screenshot(page, "monitoring-from-sidebar")
