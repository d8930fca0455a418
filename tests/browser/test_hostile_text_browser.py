"""Text from data shown as text, in a real browser: a patient's sex and country, therapy and side
effect names written to look like Markdown, HTML and spreadsheet formulas are ingested from CSV
files as a clinic would send them, then the patient, cohort and SQL pages are opened in Debian's
chromium.

Every request the pages make is recorded (and any to another host refused): none may leave
127.0.0.1. The header, the chart's tick labels, legend and hover must show the text as written,
with no image, link or bold made from it. A full-page screenshot of the patient page lands in the
test's ``tmp_path`` and in ``test-artifacts/screenshots/``.
"""

from __future__ import annotations

import csv
import shutil
from collections.abc import Iterator
from datetime import date, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import Browser, Page, Request, Route, expect

from dashboard.literal import WORD_JOINER
from jobs.recent_activity import as_of
from lakehouse.storage import Lake
from tests.browser.test_dashboard_browser import (
    TIMEOUT_MS,
    VIEWPORT,
    Dashboard,
    assert_no_error,
    choose,
    open_page,
    screenshot,
    serve,
    wait_idle,
)
from tests.pseudonyms import pseudonym
from tests.test_cli import mobility

pytestmark = pytest.mark.browser

SOURCE_ID = "hostile-1"
# GitHub's autolinks too (an e-mail address, www.): made after parsing, where escapes are gone
SEX = "**bold** _it_ `code` nurse@evil.test"
COUNTRY = (
    "![x](http://evil.test/p.png) [link](http://evil.test/l) <img src=http://evil.test/i.png> "
    ":smile: :red[red] $x^2$ a -> b see www.evil.test/login"
)
THERAPY_LINK = '<a href="http://evil.test/a">x</a>'
THERAPY_BOLD = "<b>bold</b> <img src=http://evil.test/t.png>"
THERAPY_FORMULA = '=HYPERLINK("http://evil.test/h";"click") 50% %{x}'
EFFECT = '<i>dizzy</i> <span style="font-size:90px">big</span>'
FIRST_DAY = date(2024, 3, 1)
DAYS = 21
LOCAL_HOSTS = {"127.0.0.1"}
# the text of styled (bold, italic, sized, coloured...) pieces of a chart, outside its title
STYLED_FROM_DATA_JS = """(pieces) => pieces
    .filter((piece) => !piece.closest('.gtitle'))
    .map((piece) => piece.textContent)"""


def day(offset: int) -> str:
    return (FIRST_DAY + timedelta(days=offset)).isoformat()


def _write_csv(path: Path, rows: list[list[str]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as out:
        csv.writer(out).writerows(rows)
    return path


@pytest.fixture(scope="module")
def hostile_lake(chromium: str, tmp_path_factory: pytest.TempPathFactory) -> Lake:
    """A lake built by the command line from a clinic's files: patients.csv, therapies.csv and
    side_effects.csv holding the hostile text, and three weeks of hourly steps; aggregated."""
    root = tmp_path_factory.mktemp("hostile")
    landing = root / "landing"
    landing.mkdir()
    files = [
        (
            "patients",
            _write_csv(
                landing / "patients.csv",
                [
                    ["patient_id", "disease_group", "timezone", "sex", "birth_year", "country"],
                    [SOURCE_ID, "MS", "Europe/Berlin", SEX, "1975", COUNTRY],
                ],
            ),
        ),
        (
            "therapies",
            _write_csv(
                landing / "therapies.csv",
                [
                    ["patient_id", "therapy", "start_date", "end_date"],
                    [SOURCE_ID, THERAPY_LINK, day(2), day(8)],
                    [SOURCE_ID, THERAPY_BOLD, day(6), ""],
                    [SOURCE_ID, THERAPY_FORMULA, day(10), day(15)],
                ],
            ),
        ),
        (
            "side-effects",
            _write_csv(
                landing / "side_effects.csv",
                [["patient_id", "date", "effect", "severity"], [SOURCE_ID, day(4), EFFECT, "2"]],
            ),
        ),
    ]
    samples = [["patient_id", "start", "end", "steps"]]
    for offset in range(DAYS):
        for hour in range(8, 21):
            start = datetime.combine(FIRST_DAY + timedelta(days=offset), datetime.min.time())
            start += timedelta(hours=hour)
            steps = str(300 + 20 * offset + 10 * hour)
            end = start + timedelta(hours=1)
            samples.append([SOURCE_ID, start.isoformat(" "), end.isoformat(" "), steps])
    files.append(("generic", _write_csv(landing / "steps.csv", samples)))
    uri = str(root / "lake")
    for kind, path in files:
        done = mobility("--lake", uri, "ingest", str(path), "--format", kind, cwd=root)
        assert done.returncode == 0, f"ingest {path.name}:\n{done.stdout}\n{done.stderr}"
    done = mobility("--lake", uri, "aggregate", cwd=root)
    assert done.returncode == 0, f"aggregate:\n{done.stdout}\n{done.stderr}"
    return Lake(uri)


@pytest.fixture(scope="module")
def dashboard(hostile_lake: Lake, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dashboard]:
    log = tmp_path_factory.mktemp("streamlit") / "streamlit.log"
    with serve(hostile_lake, log, env={"MOBILITY_DEMO": "1"}) as running:
        yield running


class Requests:
    """Every URL a tab asked for; any to another host is refused (and recorded)."""

    def __init__(self) -> None:
        self.urls: list[str] = []

    def record(self, request: Request) -> None:
        self.urls.append(request.url)

    def elsewhere(self) -> list[str]:
        return [
            url
            for url in self.urls
            if urlsplit(url).scheme not in ("data", "blob")
            and urlsplit(url).hostname not in LOCAL_HOSTS
        ]


@pytest.fixture
def requests() -> Requests:
    return Requests()


@pytest.fixture
def page(browser: Browser, dashboard: Dashboard, requests: Requests) -> Iterator[Page]:
    context = browser.new_context(viewport=VIEWPORT)
    context.set_default_timeout(TIMEOUT_MS)

    def local_only(route: Route) -> None:
        if urlsplit(route.request.url).hostname in LOCAL_HOSTS:
            route.continue_()
        else:
            route.abort()

    context.route("**/*", local_only)
    tab = context.new_page()
    tab.on("request", requests.record)
    yield tab
    context.close()


def _literal(text: str) -> str:
    """What a reader sees of ``text``: runs of white space as one space, no word joiners."""
    return " ".join(text.replace(WORD_JOINER, "").split())


def test_patient_page_shows_the_hostile_text_as_written(
    page: Page, dashboard: Dashboard, requests: Requests, tmp_path: Path
) -> None:
    patient_id = pseudonym(SOURCE_ID)
    open_page(page, dashboard, f"/patient?patient_id={patient_id}", ".js-plotly-plot")
    assert_no_error(page, dashboard)

    # the header: sex and country as written, nothing made of them
    header = page.locator("[data-testid='stCaptionContainer']").filter(has_text="disease group")
    expect(header).to_have_count(1)
    assert _literal(header.inner_text()) == (
        f"disease group MS · age {as_of().year - 1975} (born 1975) · {_literal(SEX)} · "
        f"{_literal(COUNTRY)} · time zone Europe/Berlin"
    )
    for tag in ("img", "a", "strong", "em", "code", "span.katex", "span[class*='Colored']"):
        assert header.locator(tag).count() == 0, tag
    assert page.locator("[data-testid='stMain'] img").count() == 0

    # the chart: the therapies' tick labels as written, no link, bold or styled text from them
    chart = page.locator(".js-plotly-plot").first
    ticks = [_literal(t) for t in chart.locator(".y2tick text").all_text_contents()]
    for therapy in (THERAPY_LINK, THERAPY_BOLD, THERAPY_FORMULA):
        assert _literal(therapy) in ticks, ticks
    assert chart.locator("a").count() == 0
    # (Streamlit's theme draws the title bold itself)
    styled = chart.locator("tspan[style]").evaluate_all(STYLED_FROM_DATA_JS)
    assert styled == [], styled
    title = _literal(chart.locator(".gtitle").text_content() or "")
    assert title == f"Daily steps and forecast of patient {patient_id}"

    # a therapy's hover: the name as written
    course = chart.locator(".subplot.x2y2 .scatterlayer .trace").first.locator("path.js-line")
    course.scroll_into_view_if_needed()
    box = course.bounding_box()
    assert box is not None
    # on the course's first day: plotly's hover picks the closest point
    page.mouse.move(box["x"] + 6, box["y"] + box["height"] / 2)
    hover = chart.locator(".hoverlayer .hovertext")
    expect(hover).to_have_count(1)
    assert _literal(hover.text_content() or "").startswith(f"{_literal(THERAPY_LINK)}: ")
    assert hover.locator("a").count() == 0
    page.mouse.move(5, 5)

    # the tables show the names as written
    # (current therapies, therapies, side effects)
    tables = page.locator("[data-testid='stDataFrame']")
    expect(tables).to_have_count(3)
    cells = []
    for table in tables.all():
        grid_cells = table.locator("table[role='grid'] td")
        expect(grid_cells).not_to_have_count(0)  # the grid fills its accessible table late
        cells += [_literal(c) for c in grid_cells.all_inner_texts()]
    assert _literal(THERAPY_LINK) in cells, cells

    shot = screenshot(page, "hostile-text-patient")
    shutil.copyfile(shot, tmp_path / shot.name)
    assert requests.urls, "no request recorded"
    assert not requests.elsewhere(), requests.elsewhere()


def test_cohort_filter_lists_the_therapies_as_written(
    page: Page, dashboard: Dashboard, requests: Requests
) -> None:
    open_page(page, dashboard, "/", "[data-testid='stMetric']")
    assert_no_error(page, dashboard)

    # each is an option under its own name, as written, and then a chosen value
    for therapy in (THERAPY_LINK, THERAPY_BOLD, THERAPY_FORMULA):
        choose(page, "Therapy in the period", therapy)
        page.keyboard.press("Escape")
        wait_idle(page)
    chosen = page.locator("[data-testid='stMultiSelect']").filter(has_text="Therapy in the period")
    shown = _literal(chosen.inner_text())
    for therapy in (THERAPY_LINK, THERAPY_BOLD, THERAPY_FORMULA):
        assert _literal(therapy) in shown, shown
    assert chosen.locator("a, b, img").count() == 0
    assert page.locator("[data-testid='stMain'] img").count() == 0
    assert not requests.elsewhere(), requests.elsewhere()


def test_a_sql_error_quoting_the_data_shows_it_as_text(
    page: Page, dashboard: Dashboard, requests: Requests
) -> None:
    open_page(page, dashboard, "/sql", "textarea")
    page.locator("textarea").fill("SELECT CAST(country AS INTEGER) AS n FROM bronze.patients")
    page.get_by_role("button", name="Run").click()
    error = page.locator("[data-testid='stAlertContentError'] [data-testid='stMarkdownContainer']")
    expect(error).to_have_count(1)
    wait_idle(page)

    for tag in ("img", "a", "strong", "em", "span.katex"):
        assert error.locator(tag).count() == 0, tag
    assert not requests.elsewhere(), requests.elsewhere()
