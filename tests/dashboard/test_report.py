"""The printable patient report (dashboard/report.py) on the demo lake: the figures are the
patient page's and the worklist's, its text as a reader sees it (pdftotext), its pages printed
on A4 and not blank (pdftoppm), and the audit row on record before the report is made."""

from __future__ import annotations

import re
import time
from datetime import date, timedelta
from pathlib import Path

import polars as pl
import pytest
from PIL import Image

from dashboard import chart_image, data, report
from lakehouse import audit
from lakehouse.catalog import AUDIT_LOG, THERAPIES
from lakehouse.errors import InputError, StorageError
from lakehouse.settings import get_settings
from lakehouse.storage import Lake
from tests.dashboard.demo_lake import (
    FIRST_DAY,
    ORIGIN,
    P001_CHANGE,
    DemoLake,
    append,
    build_demo_lake,
)
from tests.pdf_pages import ARTIFACTS, colour, ink, pdf_images, pdf_pages, pdf_text

# the day the demo's figures are measured up to: two days after P001's last day (10 Mar)
REFERENCE = date(2024, 3, 12)
EVENT = audit.AuditEvent(
    user="kim@hospital.test", roles="clinician", client="dashboard", action="page", page="patient"
)
# the idle timeout of the test of a click after it
IDLE_SECONDS = 1.5
# what the text of a therapy may hold: Markdown, HTML, fpdf2's default page-count alias
HOSTILE_THERAPY = "{nb} **bold** <b>x</b> [a](http://evil.test)"


@pytest.fixture
def lake(tmp_path: Path) -> Lake:
    """A demo lake of this test's own, to write to (the audit log)."""
    return build_demo_lake(tmp_path / "lake").lake


def test_the_report_prints_the_page_figures(demo_lake: DemoLake) -> None:
    lake = demo_lake.lake
    content = report.report_content(lake, "P001", REFERENCE)

    # the page's queries, as the patient page calls them
    forecast = data.patient_forecast(lake, "P001")
    page = data.patient_summary(lake, "P001", REFERENCE)
    assert page is not None
    assert content.summary.activity == page.activity
    assert content.summary.diagnoses.equals(page.diagnoses)
    assert content.summary.current_therapies.equals(page.current_therapies)
    assert content.shown == data.shown_model(forecast) == "ebm_global"
    assert content.outlook == data.patient_outlook(lake, "P001")
    explained = data.forecast_explanation(
        lake,
        "P001",
        forecast,
        data.patient_daily_steps(lake, "P001"),
        data.patient_therapies(lake, "P001"),
        model="ebm_global",
        first_day=ORIGIN + timedelta(days=273),
        last_day=ORIGIN + timedelta(days=364),
    )
    assert explained is not None and content.explanation is not None
    assert content.explanation.rows.equals(explained.rows)
    assert content.explanation.forecast == explained.forecast

    # worked by hand: 10 days from 1 Mar, 8 worn (3 and 7 Mar not), the last on 10 Mar
    activity = content.summary.activity
    assert (activity["last_day"], activity["days_without_data"]) == (date(2024, 3, 10), 2)
    assert (activity["worn_days"], activity["wear"]) == (8, pytest.approx(8 / 28))
    # the worklist's figures: 5,000 steps/day against a baseline of 6,250 (-20%); the 80%
    # range is the forecast's +-1,000 every day
    assert report.forecast_periods(content) == [
        (
            "Next 3 months",
            (ORIGIN, ORIGIN + timedelta(days=90)),
            5000.0,
            (4000.0, 6000.0),
            pytest.approx(-0.2),
        ),
        (
            "Months 10-12",
            (ORIGIN + timedelta(days=273), ORIGIN + timedelta(days=364)),
            pytest.approx(5000.0),
            (4000.0, 6000.0),
            P001_CHANGE,
        ),
    ]


def test_the_reasons_to_look_are_the_worklist_s(demo_lake: DemoLake) -> None:
    lake = demo_lake.lake
    cohort = data.CohortFilter(first_day=FIRST_DAY, last_day=REFERENCE)
    worklist = data.worklist(lake, cohort, REFERENCE)
    assert worklist.height == 3
    for row in worklist.iter_rows(named=True):
        reasons = report.attention(report.report_content(lake, row["patient_id"], REFERENCE))
        listed = row["reasons"].split(" · ") if row["reasons"] else []
        assert len(reasons) == len(listed), (row["patient_id"], reasons, listed)
        for printed, worklisted in zip(reasons, listed, strict=True):
            assert printed.startswith(worklisted), (printed, worklisted)


def test_the_report_reads_as_the_page_says_it(demo_lake: DemoLake, tmp_path: Path) -> None:
    pdf = report.patient_report_pdf(demo_lake.lake, "P001", REFERENCE)
    text = pdf_text(pdf, tmp_path)

    for line in (
        "Patient P001 · multiple sclerosis (MS) · age 49 (born 1975)",
        "Needs attention: wear 29% (below 70%) · decline expected (-20%) in months 10-12 "
        "against the baseline",
        "Summary as of 12 Mar 2024",
        "Last day with data 10 Mar 2024, 2 days without data since",
        "Device worn 8 of the last 28 days (29%): below 70%",
        "G35 Multiple sclerosis 1 May 2015",
        "Q99.X9 **a local code** 3 Feb 2021",  # the file's description, as written
        "physiotherapy 8 Mar 2024",  # running on the reference day; ocrelizumab ended
        "Forecast from 11 Mar 2024 by the ML model (all patients).",
        "Next 3 months 11 Mar 2024 to 9 Jun 2024 5,000 4,000 to 6,000 -20% (down)",
        "Months 10-12 9 Dec 2024 to 10 Mar 2025 5,000 4,000 to 6,000 -20% (down)",
        "Baseline at the forecast's start: 6,250 steps/day, the mean of the worn days of the 180 "
        "days before 11 Mar 2024 (the summary's baseline: the 180 days before its last 30).",
        "Forecast (the sum) 5,000",
        "1 Mar 2024 to 12 Mar 2024 (12 days): data on 10 days, worn on 8 days (67%). "
        "Longest stretch without data: 2 days (11 Mar 2024 to 12 Mar 2024).",
        "page 1 of 2",
        "page 2 of 2",
    ):
        assert line in text, line
    assert "ocrelizumab 3 Mar 2024" not in text  # ended before the reference day


def test_a_patient_without_data_or_forecast_gets_one_page(
    demo_lake: DemoLake, tmp_path: Path
) -> None:
    pdf = report.patient_report_pdf(demo_lake.lake, "P003", REFERENCE)
    text = pdf_text(pdf, tmp_path)

    assert "Patient P003 · rheumatoid arthritis (RA)" in text
    assert "Needs attention: no data yet" in text
    assert "No daily steps for this patient yet: nothing to draw." in text
    assert "No forecast for this patient yet" in text
    assert "No data received from this patient yet." in text
    assert "page 1 of 1" in text


def test_the_pages_print_on_a4_and_are_not_blank(demo_lake: DemoLake, tmp_path: Path) -> None:
    pdf = report.patient_report_pdf(demo_lake.lake, "P001", REFERENCE)
    assert pdf.startswith(b"%PDF-")

    pages = pdf_pages(pdf, ARTIFACTS, name="report-P001", dpi=100)

    assert 1 <= len(pages) <= 2
    for page in pages:
        with Image.open(page) as image:
            # A4 at 100 dpi: 8.27 x 11.69 inches
            assert abs(image.width - 827) <= 1 and abs(image.height - 1169) <= 1, image.size
        assert ink(page) > 0.02, f"{page.name} is blank"
    if chart_image.browser_path() is not None:
        # the chart: on page 1, full width, drawn (not a blank image)
        assert pdf_images(pdf, tmp_path) == [
            (1, report.CHART_WIDTH_PX * 2, report.CHART_HEIGHT_PX * 2)
        ]
        chart = report.report_content(demo_lake.lake, "P001", REFERENCE).chart
        assert chart is not None
        drawn = ARTIFACTS / "report-P001-chart.png"
        drawn.write_bytes(chart)
        assert ink(drawn) > 0.1 and colour(drawn) > 0.01


def test_without_a_browser_the_report_says_why_there_is_no_chart(
    demo_lake: DemoLake, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def missing(*_args: object, **_kwargs: object) -> bytes:
        raise chart_image.ChartUnavailable("no Chromium is installed on the server")

    monkeypatch.setattr(chart_image, "figure_png", missing)
    content = report.report_content(demo_lake.lake, "P001", REFERENCE)
    assert content.chart is None

    text = pdf_text(report.patient_report_pdf(demo_lake.lake, "P001", REFERENCE), tmp_path)
    assert "The chart could not be drawn: no Chromium is installed on the server." in text
    assert "Forecast for the next 12 months" in text


def test_text_from_data_is_printed_as_written(lake: Lake, tmp_path: Path) -> None:
    append(
        lake,
        THERAPIES,
        pl.DataFrame(
            {
                "patient_id": ["P001"],
                "therapy": [HOSTILE_THERAPY],
                "start_date": [date(2024, 3, 9)],
                "end_date": [None],
            },
            schema_overrides={"end_date": pl.Date},
        ),
    )
    text = pdf_text(report.patient_report_pdf(lake, "P001", REFERENCE), tmp_path)

    assert f"{HOSTILE_THERAPY} 9 Mar 2024" in text
    assert "page 1 of 2" in text  # the page count still filled in


# ------------------------------------------------------------------------------------ audit


def test_the_audit_row_is_on_record_before_the_report_is_made(
    lake: Lake, monkeypatch: pytest.MonkeyPatch
) -> None:
    made = report.patient_report_pdf
    on_record: list[pl.DataFrame] = []

    def make(*args: object, **kwargs: object) -> bytes:
        on_record.append(lake.read(AUDIT_LOG))
        return made(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(report, "patient_report_pdf", make)
    pdf = report.audited_patient_report(lake, "P001", REFERENCE, event=EVENT)

    assert pdf.startswith(b"%PDF-")
    (rows,) = on_record
    assert rows.select("user", "roles", "client", "action", "page", "patient_id", "outcome").rows(
        named=True
    ) == [
        {
            "user": "kim@hospital.test",
            "roles": "clinician",
            "client": "dashboard",
            "action": "report",
            "page": "patient",
            "patient_id": "P001",
            "outcome": "ok",
        }
    ]


def test_no_report_when_the_audit_log_cannot_be_written(
    lake: Lake, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*_args: object) -> None:
        raise StorageError("could not write the audit log: disk full")

    def never(*_args: object, **_kwargs: object) -> bytes:
        raise AssertionError("the report was made without its audit row")

    monkeypatch.setattr(audit, "record", broken)
    monkeypatch.setattr(report, "patient_report_pdf", never)

    with pytest.raises(StorageError, match="disk full"):
        report.audited_patient_report(lake, "P001", REFERENCE, event=EVENT)


def test_an_unknown_patient_is_refused_and_recorded_without_a_name(lake: Lake) -> None:
    with pytest.raises(InputError, match=re.escape("unknown patient 'jane.doe@example.org'")):
        report.audited_patient_report(lake, "jane.doe@example.org", REFERENCE, event=EVENT)

    rows = lake.read(AUDIT_LOG)
    assert rows.select("action", "patient_id", "outcome").rows() == [
        ("report", None, "refused: unknown patient")
    ]


# ------------------------------------------------------------------------------ completeness


def days(*spans: tuple[date, int, bool]) -> pl.DataFrame:
    """Daily rows: for each span its first day, length and whether its days were worn."""
    rows = [
        {"date": first + timedelta(days=i), "steps": 1000.0, "is_wear_day": worn}
        for first, length, worn in spans
        for i in range(length)
    ]
    return pl.DataFrame(rows, schema={"date": pl.Date, "steps": pl.Float64, "is_wear_day": bool})


def test_completeness_counts_the_followed_days_of_each_month() -> None:
    # followed from 20 Jan: 12 days of data in January (10 worn), February whole but 5 days
    # without data, March up to the 10th all worn
    steps = days(
        (date(2024, 1, 20), 10, True),
        (date(2024, 1, 30), 2, False),
        (date(2024, 2, 1), 12, True),
        (date(2024, 2, 18), 12, True),
        (date(2024, 3, 1), 10, True),
    )
    months = report.completeness_by_month(steps, date(2024, 3, 10), date(2024, 1, 20))

    assert months.height == report.COMPLETENESS_MONTHS
    assert months["month"][0] == date(2023, 4, 1)
    assert months.tail(4).rows() == [
        (date(2023, 12, 1), 0, 0, 0),
        (date(2024, 1, 1), 12, 12, 10),
        (date(2024, 2, 1), 29, 24, 24),
        (date(2024, 3, 1), 10, 10, 10),
    ]
    assert set(months["days"].head(8)) == {0}


def test_the_longest_gap_is_the_first_of_the_longest_runs_and_may_run_to_the_last_day() -> None:
    steps = days(
        (date(2024, 3, 1), 2, True),  # 3-5 Mar missing (3 days)
        (date(2024, 3, 6), 1, True),  # 7-9 Mar missing (3 days)
        (date(2024, 3, 10), 1, False),
    )
    assert report.longest_gap(steps, date(2024, 3, 1), date(2024, 3, 10)) == (
        date(2024, 3, 3),
        date(2024, 3, 5),
        3,
    )
    # 11-14 Mar without data up to the last day counted: the longest
    assert report.longest_gap(steps, date(2024, 3, 1), date(2024, 3, 14)) == (
        date(2024, 3, 11),
        date(2024, 3, 14),
        4,
    )
    assert report.longest_gap(steps, date(2024, 3, 1), date(2024, 3, 2)) is None


def test_report_file_names_hold_only_safe_characters() -> None:
    assert report.report_file_name("P001") == "mobility-report-P001.pdf"
    assert report.report_file_name("../a b/ü") == "mobility-report-a_b.pdf"
    assert report.report_file_name("...") == "mobility-report-patient.pdf"


def test_a_click_after_the_idle_timeout_makes_no_report(
    lake: Lake, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The page's button makes the report when clicked, without rerunning the page (where the
    idle timeout is checked): the click checks it itself."""
    from dashboard import auth

    user = auth.User(
        name="Kim",
        audit_name="kim@hospital.test",
        roles=frozenset({"clinician"}),
        login=f"https://login.example.org|kim|{time.time():.0f}",
    )
    monkeypatch.setenv("MOBILITY_IDLE_MINUTES", str(IDLE_SECONDS / 60))
    get_settings.cache_clear()
    monkeypatch.setattr(chart_image, "figure_png", _no_chart)
    make = report.deferred_report(lake, EVENT, "P001", active=lambda: auth.still_active(user))
    assert make().startswith(b"%PDF-")  # active: the page was just drawn

    time.sleep(IDLE_SECONDS + 0.5)
    with pytest.raises(InputError, match=r"^signed out after too long idle"):
        make()

    rows = lake.read(AUDIT_LOG).sort("at")
    assert rows.select("action", "patient_id", "outcome").rows() == [
        ("report", "P001", "ok"),
        ("report", "P001", "refused: signed out (idle too long)"),
    ]


def _no_chart(*_args: object, **_kwargs: object) -> bytes:
    raise chart_image.ChartUnavailable("not drawn in this test")
