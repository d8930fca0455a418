"""The printable report in a real browser: from the cohort page's worklist to a patient, then the
patient page's "Printable report (PDF)" button, as a clinician goes.

The dashboard runs over a lake built with the command line as ``./scripts/run`` builds the demo
(synthetic patients, then the pipeline with MOBILITY_QUICK_TRAINING) in Debian's chromium,
started as test_dashboard_browser.py starts it. The first worklist row's
link opens the patient page in a new tab; the button's download must be a PDF of one or two
pages naming that patient (read back with poppler's pdftotext), recorded in the audit log. The
cohort and patient pages are saved as screenshots and the PDF's pages as PNG images in
``test-artifacts/screenshots/``.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time

import polars as pl
import pytest
from playwright.sync_api import Page, expect

from lakehouse.catalog import AUDIT_LOG, EXPLANATIONS, FORECASTS, OUTLOOK
from lakehouse.storage import Lake
from tests.browser.test_dashboard_browser import (
    GRID_ROW_PX,
    SCREENSHOTS,
    Dashboard,
    assert_no_error,
    dashboard,  # noqa: F401 (a fixture)
    grid_cells,
    grid_rows,
    open_page,
    page,  # noqa: F401 (a fixture)
    screenshot,
    show_patient,
    table_after,
    wait_idle,
)
from tests.pdf_pages import ink, pdf_pages, pdf_text

pytestmark = pytest.mark.browser

PATIENTS_IN_LAKE = 16
BUILD_STEPS = (("generate", "--patients", str(PATIENTS_IN_LAKE), "--seed", "42"), ("pipeline",))
# each step, on 2 cores shared with other test runs
STEP_TIMEOUT_SECONDS = 600
# generous: a cold report starts the chart's browser on the server's 2 shared cores
DOWNLOAD_TIMEOUT_MS = 90_000


@pytest.fixture(scope="module")
def built_lake(chromium: str, tmp_path_factory: pytest.TempPathFactory) -> Lake:
    """A lake as ``./scripts/run`` builds the demo: synthetic patients, then the pipeline with
    a quick training (the ``dashboard`` fixture serves it)."""
    root = tmp_path_factory.mktemp("report-browser")
    uri = str(root / "lake")
    environment = {k: v for k, v in os.environ.items() if k not in ("LAKE_URI", "COLUMNS")}
    environment["MOBILITY_QUICK_TRAINING"] = "1"
    for step in BUILD_STEPS:
        done = subprocess.run(
            [sys.executable, "-m", "jobs", "--lake", uri, *step],
            cwd=root,
            env=environment,
            capture_output=True,
            text=True,
            timeout=STEP_TIMEOUT_SECONDS,
        )
        assert done.returncode == 0, f"mobility {' '.join(step)} failed:\n{done.stderr[-4000:]}"
    lake = Lake(uri)
    assert all(lake.exists(table) for table in (FORECASTS, OUTLOOK, EXPLANATIONS))
    return lake


def test_worklist_to_patient_to_printable_report(
    page: Page,  # noqa: F811
    dashboard: Dashboard,  # noqa: F811
) -> None:
    open_page(page, dashboard, "/", "[data-testid='stMetric']")
    worklist = table_after(page, "Who needs attention")
    assert grid_rows(worklist) > 0, "an empty worklist"
    link, patient_id = grid_cells(worklist)[0][:2]
    assert link == f"patient?patient_id={patient_id}"
    screenshot(page, "report-1-cohort")

    # the first row's "open" link, clicked where the canvas grid draws it
    canvas = worklist.locator("canvas[data-testid='data-grid-canvas']").first
    canvas.scroll_into_view_if_needed()
    box = canvas.bounding_box()
    assert box is not None
    x, y = box["x"] + 20, box["y"] + GRID_ROW_PX * 1.5
    page.mouse.move(x, y)  # the grid makes a link clickable only once the pointer rests on it
    expect(canvas).to_have_css("cursor", "pointer")
    with page.context.expect_page() as opened:
        page.mouse.click(x, y)
    patient_page = opened.value
    patient_page.wait_for_load_state()
    page.close()

    assert re.search(rf"/patient\?patient_id={re.escape(patient_id)}$", patient_page.url)
    patient_page.locator(".js-plotly-plot").first.wait_for()
    wait_idle(patient_page)
    assert_no_error(patient_page, dashboard)
    show_patient(patient_page, patient_id)
    button = patient_page.get_by_role("button", name="Printable report (PDF)")
    expect(button).to_be_visible()
    screenshot(patient_page, "report-2-patient")

    recorded_before = time.time()
    button.scroll_into_view_if_needed()
    with patient_page.expect_download(timeout=DOWNLOAD_TIMEOUT_MS) as download:
        button.click()
    saved = SCREENSHOTS / "report-3-download.pdf"
    download.value.save_as(saved)
    pdf = saved.read_bytes()
    assert download.value.suggested_filename == f"mobility-report-{patient_id}.pdf"
    assert_no_error(patient_page, dashboard)

    assert pdf.startswith(b"%PDF-")
    text = pdf_text(pdf, saved.parent)
    assert f"Patient {patient_id}" in text
    assert "Summary as of" in text and "Forecast for the next 12 months" in text
    pages = pdf_pages(pdf, SCREENSHOTS, name="report-3-download", dpi=100)
    assert 1 <= len(pages) <= 2
    assert all(ink(png) > 0.02 for png in pages)

    # on record before it was made: the report row of this patient, from the dashboard
    rows = dashboard.lake.read(AUDIT_LOG).filter(
        (pl.col("action") == "report") & (pl.col("patient_id") == patient_id)
    )
    assert rows.select("client", "page", "outcome").rows() == [("dashboard", "patient", "ok")]
    assert rows["at"][0].timestamp() >= recorded_before - 1
