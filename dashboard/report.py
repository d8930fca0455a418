"""The printable patient report: one or two A4 pages of PDF for the patient record.

Page 1: who the patient is (pseudonym, disease group, age), what needs attention (the
worklist's reasons), the summary numbers as of the reference day (last day with data, worn days
of the last 28, 30-day mean against the 180-day baseline), diagnoses with their ICD-10-CM names,
current therapies and the patient page's chart. Page 2: the champion's forecast (next 3 months
and months 10-12 against the baseline at the forecast's start, as the worklist shows them, with
the 80% range), its explanation for months 10-12 (the months the "decline expected" flag looks
at) and the data's completeness month by month.

Every figure the page also shows comes from the functions the page calls
(:mod:`dashboard.data`, :mod:`jobs.recent_activity`), so the report and the page agree; the
forecast's figures are the worklist's (:func:`dashboard.data.patient_outlook`).

Why these libraries:

- The chart is the page's own figure (:func:`dashboard.charts.patient_timeline`, with the
  page's default history of a year) drawn to PNG by plotly's kaleido in the installed Chromium,
  offline (:mod:`dashboard.chart_image`). Where no Chromium is installed, or it fails, the report
  is made without the chart and says so.
- The PDF is written by fpdf2 (pure Python, maintained, about 0.1 s per report). Text from data
  (patient ids, therapy names, diagnosis names, explanation labels) is only ever passed as plain
  text: fpdf2's Markdown and HTML modes are never used, white space runs become one space and any
  character the font cannot draw shows as U+FFFD, so a name is printed exactly as written, never
  interpreted. fpdf2 replaces a page-count alias (``{nb}`` by default) wherever it occurs: the
  report's alias is made of private-use characters, which the font has no glyph for, so no text
  from data can hold it.
- The font is DejaVu Sans as bundled with matplotlib: Unicode, no system font needed.
"""

from __future__ import annotations

import importlib.util
import io
import logging
import math
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import plotly.graph_objects as go
import polars as pl
from fpdf import FPDF, FontFace
from fpdf.enums import Align, TableBordersLayout, XPos, YPos

from dashboard import chart_image, charts, data
from jobs.outlook import DECLINE_SHARE, NEXT_QUARTER_DAYS, YEAR_END_DAYS
from jobs.recent_activity import ENOUGH_WEAR, RECENT_DAYS, RECENT_MIN_DAYS, WEAR_WINDOW_DAYS
from lakehouse import audit
from lakehouse.errors import InputError
from lakehouse.feature_dictionary import BASELINE_DAYS, BASELINE_MIN_DAYS
from lakehouse.storage import Lake

LOGGER = logging.getLogger(__name__)

# chart size in CSS pixels (drawn at twice that resolution)
CHART_WIDTH_PX, CHART_HEIGHT_PX, CHART_SCALE = 1000, 600, 2
# text size in the chart: about 7 pt once the chart is 180 mm wide
CHART_FONT_PX = 14
# the history the chart draws: the patient page's default range
CHART_HISTORY = "1 year"

DISEASE_GROUP_NAMES = {
    "MS": "multiple sclerosis (MS)",
    "PD": "Parkinson's disease (PD)",
    "RA": "rheumatoid arthritis (RA)",
    "OTHER": "other condition",
}
# rows of a list printed before "and N more" (the report stays within two pages)
MAX_LIST_ROWS = 8
COMPLETENESS_MONTHS = 12
REPLACEMENT = "\ufffd"
# fpdf2's stand-in for the page count: private-use characters, never in text from data (the font
# draws none, so :meth:`_ReportPdf.plain` replaces them)
PAGE_COUNT = "\ue000\ue001"
# runs of white space become one space; a no-break space (used in dates) is kept
_SPACES = re.compile(r"[^\S\u00a0]+")

# A4 in millimetres
PAGE_WIDTH, PAGE_HEIGHT, MARGIN = 210.0, 297.0, 15.0
CONTENT_WIDTH = PAGE_WIDTH - 2 * MARGIN
BLUE = (31, 119, 180)
GREY = (90, 90, 90)
LIGHT = (235, 240, 247)
RED = (178, 34, 34)


# ------------------------------------------------------------------------------------ content


@dataclass(frozen=True)
class ReportContent:
    """Everything one report prints, read from the lake, the chart drawn."""

    patient_id: str
    reference: date
    made_at: datetime
    profile: data.PatientProfile
    summary: data.PatientSummary
    daily_steps: pl.DataFrame
    therapies: pl.DataFrame
    forecast: pl.DataFrame
    shown: str | None
    outlook: data.PatientOutlook | None
    choice: str | None
    explanation: data.ForecastExplanation | None
    chart: bytes | None
    chart_note: str | None


def patient_report_pdf(
    lake: Lake, patient_id: str, reference: date, *, made_at: datetime | None = None
) -> bytes:
    """The patient's report as PDF bytes (one or two A4 pages).

    Args:
        lake: the lake.
        patient_id: the patient's stored id (pseudonym).
        reference: the day the summary is measured up to (:func:`jobs.recent_activity.as_of`:
            yesterday).
        made_at: when the report is made (now by default), printed on every page.

    Raises:
        InputError: the lake knows no such patient.
    """
    content = report_content(lake, patient_id, reference, made_at=made_at)
    return bytes(_layout(content).output())


def report_content(
    lake: Lake, patient_id: str, reference: date, *, made_at: datetime | None = None
) -> ReportContent:
    """What the report of ``patient_id`` prints, from the page's queries, the chart drawn.

    Raises:
        InputError: the lake knows no such patient.
    """
    profile = data.patient_profile(lake, patient_id)
    if profile is None:
        raise InputError(f"unknown patient {patient_id!r}: no such patient in the lake")
    daily_steps = data.patient_daily_steps(lake, patient_id)
    therapies = data.patient_therapies(lake, patient_id)
    side_effects = data.patient_side_effects(lake, patient_id)
    forecast = data.patient_forecast(lake, patient_id)
    summary = data.patient_summary(
        lake, patient_id, reference, daily_steps=daily_steps, therapies=therapies
    )
    assert summary is not None  # the profile exists
    shown = data.shown_model(forecast)
    outlook = data.patient_outlook(lake, patient_id)
    choice = explanation = None
    if shown is not None:
        choice = data.forecast_choice(lake, patient_id, profile.disease_group, shown)
        origin = forecast["origin_date"][0]
        assert isinstance(origin, date)
        first_day, last_day = _horizon_days(origin, YEAR_END_DAYS)
        explanation = data.forecast_explanation(
            lake,
            patient_id,
            forecast,
            daily_steps,
            therapies,
            model=shown,
            first_day=first_day,
            last_day=last_day,
        )
    chart, chart_note = None, None
    if daily_steps.is_empty():
        chart_note = "No daily steps for this patient yet: nothing to draw."
    else:
        figure = charts.patient_timeline(
            data.recent_history(daily_steps, data.HISTORY_RANGES[CHART_HISTORY]),
            forecast,
            therapies,
            side_effects,
            patient_id=patient_id,
        )
        chart, chart_note = chart_png(figure)
    return ReportContent(
        patient_id=patient_id,
        reference=reference,
        made_at=made_at or datetime.now(UTC),
        profile=profile,
        summary=summary,
        daily_steps=daily_steps,
        therapies=therapies,
        forecast=forecast,
        shown=shown,
        outlook=outlook if _same_forecast(outlook, shown, forecast) else None,
        choice=choice,
        explanation=explanation,
        chart=chart,
        chart_note=chart_note,
    )


def _same_forecast(
    outlook: data.PatientOutlook | None, shown: str | None, forecast: pl.DataFrame
) -> bool:
    """Whether the worklist's outlook sums up the forecast the report prints (the same model
    and origin)."""
    return (
        outlook is not None
        and shown is not None
        and outlook.model == shown
        and outlook.origin_date == forecast["origin_date"][0]
    )


# -------------------------------------------------------------------------------------- audit


def audited_patient_report(
    lake: Lake, patient_id: str, reference: date, *, event: audit.AuditEvent
) -> bytes:
    """The report of ``patient_id``, recorded in the audit log before it is made, as a patient
    view is before it is shown: ``event`` says who and where; it is written with the action
    ``report``, the patient and ``ok``. A patient the lake does not know is recorded as refused,
    without a patient (what was typed may not be a pseudonym).

    Once the row is written the chart's browser starts, while the patient's data is read.

    Raises:
        InputError: the lake knows no such patient (recorded as refused).
        StorageError: the audit log could not be written: no report then.
    """
    if data.patient_profile(lake, patient_id) is None:
        audit.record(
            lake,
            replace(
                event,
                action="report",
                patient_id=None,
                outcome="refused: unknown patient",
                at=datetime.now(UTC),
            ),
        )
        raise InputError(f"unknown patient {patient_id!r}: no such patient in the lake")
    audit.record(lake, replace(event, action="report", patient_id=patient_id, at=datetime.now(UTC)))
    chart_image.warm_up()
    return patient_report_pdf(lake, patient_id, reference)


def report_file_name(patient_id: str) -> str:
    """``mobility-report-<patient>.pdf`` with only letters, digits, ``.``, ``_`` and ``-``
    of the id (an id from a file may hold anything)."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", patient_id).strip("._") or "patient"
    return f"mobility-report-{safe[:80]}.pdf"


# -------------------------------------------------------------------------------------- chart


def chart_png(figure: go.Figure) -> tuple[bytes | None, str | None]:
    """``figure`` as a PNG for print, and None; or None and why it could not be drawn (no
    Chromium installed, or it failed), for the report to say."""
    printable = go.Figure(figure)
    printable.update_layout(
        title=None,
        width=CHART_WIDTH_PX,
        height=CHART_HEIGHT_PX,
        margin={"l": 60, "r": 20, "t": 30, "b": 40},
        template="plotly_white",
        font={"size": CHART_FONT_PX},
    )
    printable.update_yaxes(automargin=True)  # therapy names in full
    try:
        return chart_image.figure_png(printable, scale=CHART_SCALE), None
    except chart_image.ChartUnavailable as err:
        LOGGER.warning("report chart not drawn: %s", err)
        return None, f"The chart could not be drawn: {err}."


# ------------------------------------------------------------------------------------- layout


def _font_file(name: str) -> Path:
    """A DejaVu font file as matplotlib bundles it (found without importing matplotlib)."""
    spec = importlib.util.find_spec("matplotlib")
    if spec is None or not spec.submodule_search_locations:
        raise InputError("the report needs matplotlib's fonts: pip install matplotlib")
    return Path(next(iter(spec.submodule_search_locations))) / "mpl-data" / "fonts" / "ttf" / name


class _ReportPdf(FPDF):
    """An A4 page with the patient and the page number in the footer of every page."""

    def __init__(self, content: ReportContent) -> None:
        super().__init__(orientation="portrait", unit="mm", format="A4")
        self.content = content
        # text from data may hold "{nb}", fpdf2's default: it is printed as written
        self.alias_nb_pages(PAGE_COUNT)
        self.set_margins(MARGIN, MARGIN, MARGIN)
        self.set_auto_page_break(auto=True, margin=20)
        self.add_font("DejaVu", "", _font_file("DejaVuSans.ttf"))
        self.add_font("DejaVu", "B", _font_file("DejaVuSans-Bold.ttf"))
        fonts = [set(font.cmap) for font in self.fonts.values() if hasattr(font, "cmap")]
        self.drawable = frozenset(set.intersection(*fonts))
        self.set_title(f"Mobility report {self.plain(content.patient_id)}")
        self.set_creator("mobility")
        self.set_font("DejaVu", size=9)

    def plain(self, value: object) -> str:
        """``value`` as it is printed: white space runs as one space, characters the font
        cannot draw as U+FFFD; never markup."""
        words = _SPACES.sub(" ", str(value)).strip()
        return "".join(c if ord(c) in self.drawable else REPLACEMENT for c in words)

    def footer(self) -> None:
        self.set_y(-14)
        self.set_font("DejaVu", size=7)
        self.set_text_color(*GREY)
        content = self.content
        page = f"page {self.page_no()} of {PAGE_COUNT}"
        self.cell(
            CONTENT_WIDTH,
            4,
            f"Mobility report · patient {self.plain(content.patient_id)} · made "
            f"{_when(content.made_at)} · {page}",
            align=Align.C,
        )
        self.set_text_color(0, 0, 0)

    # building blocks

    def heading(self, title: str, *, room: float = 30) -> None:
        """A section heading, on a new page when less than ``room`` mm is left below it."""
        if self.get_y() + room > PAGE_HEIGHT - 20:
            self.add_page()
        self.ln(2)
        self.set_font("DejaVu", "B", 11)
        self.set_text_color(*BLUE)
        self.cell(CONTENT_WIDTH, 6, title, new_x=XPos.LMARGIN, new_y=YPos.NEXT)
        self.set_draw_color(*BLUE)
        self.line(MARGIN, self.get_y(), PAGE_WIDTH - MARGIN, self.get_y())
        self.set_text_color(0, 0, 0)
        self.set_font("DejaVu", size=9)
        self.ln(1.5)

    def paragraph(self, text: str, *, size: float = 9, style: str = "", colour: Any = None) -> None:
        self.set_font("DejaVu", style, size)
        if colour is not None:
            self.set_text_color(*colour)
        self.multi_cell(
            CONTENT_WIDTH, size * 0.5, text, align=Align.L, new_x=XPos.LMARGIN, new_y=YPos.NEXT
        )
        self.set_text_color(0, 0, 0)
        self.set_font("DejaVu", size=9)

    def rows(
        self,
        header: Sequence[str] | None,
        rows: Iterable[Sequence[str | tuple[str, FontFace]]],
        *,
        widths: Sequence[float],
        align: Sequence[str] | None = None,
        size: float = 8.5,
    ) -> None:
        """A table of plain text (header row in bold on a tint when given); a cell given as
        ``(text, style)`` has a style of its own."""
        self.set_font("DejaVu", size=size)
        alignment = list(align or ["LEFT"] * len(widths))
        with self.table(
            col_widths=tuple(widths),
            width=CONTENT_WIDTH,
            first_row_as_headings=header is not None,
            headings_style=FontFace(emphasis="BOLD", fill_color=LIGHT),
            borders_layout=TableBordersLayout.HORIZONTAL_LINES,
            line_height=size * 0.5,
            padding=(0.8, 1.2),
            text_align=tuple(alignment),
            markdown=False,
        ) as table:
            if header is not None:
                table.row(list(header))
            for cells in rows:
                row = table.row()
                for cell in cells:
                    if isinstance(cell, tuple):
                        row.cell(cell[0], style=cell[1])
                    else:
                        row.cell(cell)
        self.set_font("DejaVu", size=9)
        self.ln(1)


def _layout(content: ReportContent) -> _ReportPdf:
    pdf = _ReportPdf(content)
    pdf.add_page()
    _title(pdf, content)
    _summary(pdf, content)
    _diagnoses_and_therapies(pdf, content)
    _chart(pdf, content)
    _forecast(pdf, content)
    _explanation(pdf, content)
    _completeness(pdf, content)
    pdf.ln(2)
    pdf.paragraph(
        "Steps come from the patient's phone and wearable. A day counts as worn with at least "
        "8 hours of data and some steps; other days are left out of every mean (missing data, "
        "not low mobility). The forecast is a statistical estimate from past data, not a "
        "diagnosis.",
        size=7,
        colour=GREY,
    )
    return pdf


def _title(pdf: _ReportPdf, content: ReportContent) -> None:
    summary = content.summary
    pdf.set_font("DejaVu", "B", 16)
    pdf.cell(CONTENT_WIDTH, 8, "Mobility report", new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    pdf.set_font("DejaVu", "B", 11)
    group = summary.disease_group
    who = [
        f"Patient {pdf.plain(content.patient_id)}",
        pdf.plain(DISEASE_GROUP_NAMES.get(group, f"disease group {group}")),
    ]
    if summary.age is not None:
        born = content.profile.birth_year
        who.append(f"age {summary.age}" + (f" (born {born})" if born else ""))
    pdf.multi_cell(CONTENT_WIDTH, 6, " · ".join(who), new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    pdf.paragraph(
        f"Figures as of {_long_day(content.reference)} (the reference day: the last complete "
        f"day). Report made {_when(content.made_at)}.",
        colour=GREY,
    )
    reasons = attention(content)
    if reasons:
        pdf.ln(1)
        pdf.paragraph("Needs attention: " + " · ".join(reasons), style="B", colour=RED)


def attention(content: ReportContent) -> list[str]:
    """The worklist's reasons to look at the patient (:func:`dashboard.data.worklist`), each in
    its words followed by what it is measured against."""
    activity = content.summary.activity
    reasons = []
    if activity["no_data"]:
        without = activity["days_without_data"]
        reasons.append("no data yet" if without is None else f"no data for {without} days")
    elif activity["low_wear"]:
        reasons.append(f"wear {_percent(activity['wear'])} (below {ENOUGH_WEAR:.0%})")
    change = content.outlook.year_end_change if content.outlook else None
    if change is not None and change <= -DECLINE_SHARE:
        reasons.append(
            f"decline expected ({_signed_percent(change)}) in months 10-12 against the baseline"
        )
    return reasons


def _summary(pdf: _ReportPdf, content: ReportContent) -> None:
    activity = content.summary.activity
    pdf.heading(f"Summary as of {_day(content.reference)}")
    last, without = activity["last_day"], activity["days_without_data"]
    if not isinstance(last, date):
        last_text = "none: no data received yet"
    elif without == 0:
        last_text = f"{_day(last)} (up to date)"
    else:
        last_text = f"{_day(last)}, {without} day{'s' if without != 1 else ''} without data since"
    worn = int(activity["worn_days"])  # type: ignore[call-overload]
    wear_text = f"{worn} of the last {WEAR_WINDOW_DAYS} days ({_percent(activity['wear'])})"
    if activity["low_wear"]:
        wear_text += f": below {ENOUGH_WEAR:.0%}"
    recent, baseline, change = activity["recent_mean"], activity["baseline"], activity["change"]
    rows = [
        ("Last day with data", last_text),
        ("Device worn", wear_text),
        (
            f"Mean steps/day, last {RECENT_DAYS} days",
            _steps(recent, f"worn days of the last {RECENT_DAYS}")
            if recent is not None
            else f"not enough worn days (fewer than {RECENT_MIN_DAYS} of the last {RECENT_DAYS})",
        ),
        (
            f"Baseline, {BASELINE_DAYS}-day mean",
            _steps(baseline, f"worn days of the {BASELINE_DAYS} days before those {RECENT_DAYS}")
            if baseline is not None
            else f"not enough worn days (fewer than {BASELINE_MIN_DAYS} of those {BASELINE_DAYS})",
        ),
        (
            f"Change, last {RECENT_DAYS} days against baseline",
            _direction(change) if isinstance(change, float) else "not available",
        ),
    ]
    pdf.rows(None, rows, widths=(62, 118))


def _diagnoses_and_therapies(pdf: _ReportPdf, content: ReportContent) -> None:
    diagnoses = content.summary.diagnoses
    pdf.heading("Diagnoses (ICD-10)", room=20)
    if diagnoses.is_empty():
        pdf.paragraph("None recorded.", colour=GREY)
    else:
        rows = [
            (pdf.plain(code), pdf.plain(name), _day(diagnosed) if diagnosed else "not recorded")
            for code, name, diagnosed in diagnoses.select("code", "name", "diagnosed_on")
            .head(MAX_LIST_ROWS)
            .iter_rows()
        ]
        pdf.rows(("Code", "Diagnosis", "Diagnosed on"), rows, widths=(20, 125, 35))
        _more(pdf, diagnoses.height)
    running = content.summary.current_therapies
    pdf.heading(f"Current therapies (running on {_day(content.reference)})", room=20)
    if running.is_empty():
        pdf.paragraph("None recorded.", colour=GREY)
    else:
        courses = [
            (pdf.plain(therapy), _day(start))
            for therapy, start in running.select("therapy", "start_date")
            .head(MAX_LIST_ROWS)
            .iter_rows()
        ]
        pdf.rows(("Therapy", "Since"), courses, widths=(145, 35))
        _more(pdf, running.height)


def _more(pdf: _ReportPdf, count: int) -> None:
    if count > MAX_LIST_ROWS:
        pdf.paragraph(
            f"and {count - MAX_LIST_ROWS} more (see the patient page)", size=8, colour=GREY
        )


def _chart(pdf: _ReportPdf, content: ReportContent) -> None:
    height = CONTENT_WIDTH * CHART_HEIGHT_PX / CHART_WIDTH_PX
    pdf.heading("Daily steps, therapies and the forecast", room=height + 12)
    if content.chart is None:
        pdf.paragraph(content.chart_note or "No chart.", colour=GREY)
        return
    pdf.image(io.BytesIO(content.chart), x=MARGIN, w=CONTENT_WIDTH, h=height)
    pdf.paragraph(
        "Above: daily steps on worn days with their 7-day average, and the forecast of the "
        "chosen model with its 80% range (8 of 10 days are expected inside it); grey: runs of "
        f"more than {data.GAP_DAYS} days without data. Below: therapy courses and side effects. "
        f"History drawn: {CHART_HISTORY} before the last day with data.",
        size=7,
        colour=GREY,
    )


def _forecast(pdf: _ReportPdf, content: ReportContent) -> None:
    forecast, shown = content.forecast, content.shown
    pdf.heading("Forecast for the next 12 months", room=45)
    if shown is None or forecast.is_empty():
        pdf.paragraph(
            "No forecast for this patient yet: the nightly pipeline forecasts every patient.",
            colour=GREY,
        )
        return
    origin = forecast["origin_date"][0]
    assert isinstance(origin, date)
    text = f"Forecast from {_day(origin)} by the {pdf.plain(data.model_name(shown))}."
    last = content.daily_steps["date"].max() if content.daily_steps.height else None
    if isinstance(last, date) and last >= origin:
        text += (
            f" Data up to {_day(last)} arrived since it was made: the next nightly run updates it."
        )
    pdf.paragraph(text)
    if content.choice:
        pdf.paragraph(pdf.plain(content.choice), size=8, colour=GREY)
    pdf.ln(1)
    outlook = content.outlook
    baseline = outlook.baseline_steps if outlook else None
    rows = [
        (
            label,
            f"{_day(first_day)} to {_day(last_day)}",
            "not forecast" if steps is None else f"{steps:,.0f}",
            "–" if band is None else f"{band[0]:,.0f} to {band[1]:,.0f}",
            _direction(change) if change is not None else "no baseline",
        )
        for label, (first_day, last_day), steps, band, change in forecast_periods(content)
    ]
    pdf.rows(
        ("Period", "Days", "Steps/day", "80% range", "Against baseline"),
        rows,
        widths=(26, 50, 22, 40, 42),
        align=("LEFT", "LEFT", "RIGHT", "RIGHT", "LEFT"),
    )
    if baseline:
        note = (
            f"Baseline at the forecast's start: {baseline:,.0f} steps/day, the mean of the worn "
            f"days of the {BASELINE_DAYS} days before {_day(origin)} (the summary's baseline: the "
            f"{BASELINE_DAYS} days before its last {RECENT_DAYS})."
        )
    elif outlook is not None:
        note = (
            f"No baseline at the forecast's start: fewer than {BASELINE_MIN_DAYS} worn days in "
            f"the {BASELINE_DAYS} days before {_day(origin)}."
        )
    else:
        note = "No baseline: the forecast shown is not the chosen model's summary."
    note += (
        " Steps/day: the mean forecast of the period. 80% range: the mean of the daily range's "
        "lower and upper ends (8 of 10 days are expected inside their day's range). A decline "
        f"is expected when months 10-12 are {DECLINE_SHARE:.0%} or more below the baseline."
    )
    pdf.paragraph(note, size=8, colour=GREY)


def forecast_periods(
    content: ReportContent,
) -> list[tuple[str, tuple[date, date], float | None, tuple[float, float] | None, float | None]]:
    """The forecast table's rows: the period's name, its first and last day, its mean steps/day,
    the mean of the daily 80% range's ends, and the change against the baseline at the
    forecast's start.

    The steps and the change are the worklist's (:func:`dashboard.data.patient_outlook`, made
    by :func:`jobs.outlook.outlook_rows` from the same forecast rows) when it sums up the shown
    forecast; else the mean of the shown forecast's days, as :mod:`jobs.outlook` takes it, and
    no change (there is no baseline to compare with)."""
    shown, outlook = content.shown, content.outlook
    rows_of = content.forecast.filter(pl.col("model") == shown)
    origin = rows_of["origin_date"][0]
    assert isinstance(origin, date)
    baseline = outlook.baseline_steps if outlook else None
    periods = []
    for label, days in (("Next 3 months", NEXT_QUARTER_DAYS), ("Months 10-12", YEAR_END_DAYS)):
        first_day, last_day = _horizon_days(origin, days)
        window = rows_of.filter(pl.col("target_date").is_between(first_day, last_day))
        band = (
            None
            if window.is_empty()
            else (float(window["yhat_lower"].mean()), float(window["yhat_upper"].mean()))  # type: ignore[arg-type]
        )
        if outlook is not None:
            steps = (
                outlook.next_quarter_steps if days == NEXT_QUARTER_DAYS else outlook.year_end_steps
            )
        else:
            steps = None if window.is_empty() else float(window["yhat"].mean())  # type: ignore[arg-type]
        if days == YEAR_END_DAYS and outlook is not None:
            change = outlook.year_end_change
        else:
            change = steps / baseline - 1 if steps is not None and baseline else None
        periods.append((label, (first_day, last_day), steps, band, change))
    return periods


def _explanation(pdf: _ReportPdf, content: ReportContent) -> None:
    explanation = content.explanation
    if explanation is None:
        return
    origin = content.forecast["origin_date"][0]
    assert isinstance(origin, date)
    first_day, last_day = _horizon_days(origin, YEAR_END_DAYS)
    pdf.heading(
        f"Why: the forecast for months 10-12 explained ({_month(first_day)} to {_month(last_day)})",
        room=40,
    )
    pdf.paragraph(pdf.plain(explanation.summary))
    pdf.ln(1)
    rows = []
    for index, (label, detail, value) in enumerate(
        explanation.rows.select("label", "detail", "contribution").iter_rows()
    ):
        amount = f"{value:,.0f}" if index == 0 else _signed(value)
        rows.append((pdf.plain(label), amount, pdf.plain(detail)))
    rows.append(("Forecast (the sum)", f"{explanation.forecast:,.0f}", "Mean steps/day."))
    pdf.rows(
        ("What", "Steps/day", "What it covers"),
        rows,
        widths=(55, 20, 105),
        align=("LEFT", "RIGHT", "LEFT"),
        size=7.5,
    )
    if not explanation.from_model:
        pdf.paragraph(
            "Worked out from the forecast and the worn days before it started.",
            size=7,
            colour=GREY,
        )


def _completeness(pdf: _ReportPdf, content: ReportContent) -> None:
    pdf.heading(f"Data completeness, last {COMPLETENESS_MONTHS} months", room=35)
    since = followed_since(content.profile, content.daily_steps)
    if since is None or since > content.reference:
        pdf.paragraph("No data received from this patient yet.", colour=GREY)
        return
    months = completeness_by_month(content.daily_steps, content.reference, since)
    header = [""]
    for month in months["month"]:
        assert isinstance(month, date)
        partial = data.month_end(month) > content.reference
        header.append(
            f"{month:%b}\n{month.year}" + (f"\n1-{content.reference.day}" if partial else "")
        )
    # a month worn on fewer than 70% of its followed days (the worklist's "low wear") stands out
    low = FontFace(emphasis="BOLD", color=RED)
    followed_cells, data_cells = [], []
    worn_cells: list[str | tuple[str, FontFace]] = []
    for days, with_data, worn in months.select("days", "with_data", "worn").iter_rows():
        if not days:  # before the patient was followed
            followed_cells.append("–")
            data_cells.append("–")
            worn_cells.append("–")
            continue
        followed_cells.append(str(days))
        data_cells.append(str(with_data))
        worn_cells.append((str(worn), low) if worn < ENOUGH_WEAR * days else str(worn))
    rows: list[Sequence[str | tuple[str, FontFace]]] = [
        ["Days followed", *followed_cells],
        ["Days with data", *data_cells],
        ["Worn days", *worn_cells],
    ]
    widths = [32.0, *[(CONTENT_WIDTH - 32) / months.height] * months.height]
    pdf.rows(header, rows, widths=widths, align=["LEFT", *["CENTER"] * months.height], size=7)
    # the sums cover the months of the table
    first_month = months["month"][0]
    assert isinstance(first_month, date)
    start = max(since, first_month)
    span = (content.reference - start).days + 1
    window = content.daily_steps.filter(pl.col("date").is_between(start, content.reference))
    worn = int(window["is_wear_day"].sum()) if window.height else 0
    gap = longest_gap(content.daily_steps, start, content.reference)
    text = (
        f"{_span(start, content.reference)} ({_days(span)}): data on {_days(window.height)}, "
        f"worn on {_days(worn)} ({worn / span:.0%})."
    )
    text += (
        f" Longest stretch without data: {_days(gap[2])} ({_span(gap[0], gap[1])})."
        if gap is not None
        else " No day without data."
    )
    pdf.paragraph(text, size=8)
    pdf.paragraph(
        f"Followed since {_day(since)} ("
        + ("enrolment" if since == content.profile.enrolled_on else "first day with data")
        + f"); the current month up to {_day(content.reference)}. Worn on fewer than "
        f"{ENOUGH_WEAR:.0%} of a month's followed days: in red.",
        size=7,
        colour=GREY,
    )


# ----------------------------------------------------------------------------- completeness


def followed_since(profile: data.PatientProfile, daily_steps: pl.DataFrame) -> date | None:
    """The first day the patient was followed: their enrolment or their first day with data,
    whichever came first (None with neither)."""
    first = daily_steps["date"].min() if daily_steps.height else None
    known = [d for d in (profile.enrolled_on, first) if isinstance(d, date)]
    return min(known) if known else None


def completeness_by_month(daily_steps: pl.DataFrame, reference: date, since: date) -> pl.DataFrame:
    """The last :data:`COMPLETENESS_MONTHS` calendar months up to ``reference``: ``month`` (its
    first day), ``days`` (its days from ``since`` up to the reference day; 0 for a month before
    ``since``), ``with_data`` (of those, days with any data) and ``worn`` (wear days)."""
    first = reference.replace(day=1)
    months = [first]
    while len(months) < COMPLETENESS_MONTHS:
        months.insert(0, (months[0] - timedelta(days=1)).replace(day=1))
    rows = []
    for month in months:
        start, end = max(month, since), min(data.month_end(month), reference)
        days = daily_steps.filter(pl.col("date").is_between(start, end))
        rows.append(
            {
                "month": month,
                "days": max(0, (end - start).days + 1),
                "with_data": days.height,
                "worn": int(days["is_wear_day"].sum()) if days.height else 0,
            }
        )
    return pl.DataFrame(
        rows, schema={"month": pl.Date, "days": pl.Int64, "with_data": pl.Int64, "worn": pl.Int64}
    )


def longest_gap(
    daily_steps: pl.DataFrame, first: date, last: date
) -> tuple[date, date, int] | None:
    """The longest run of days without any data in ``first..last``: its first and last day and
    length (the earliest of equally long runs; None when every day has data)."""
    present = set(daily_steps.filter(pl.col("date").is_between(first, last))["date"].to_list())
    best: tuple[date, date, int] | None = None
    run_start: date | None = None
    day = first
    while day <= last + timedelta(days=1):
        if day <= last and day not in present:
            run_start = run_start or day
        elif run_start is not None:
            length = (day - run_start).days
            if best is None or length > best[2]:
                best = (run_start, day - timedelta(days=1), length)
            run_start = None
        day += timedelta(days=1)
    return best


# ---------------------------------------------------------------------------------- wording


def _horizon_days(origin: date, days: tuple[int, int]) -> tuple[date, date]:
    """The first and last target day of horizon days ``days`` (1 = the origin)."""
    return origin + timedelta(days=days[0] - 1), origin + timedelta(days=days[1] - 1)


def _day(day: object) -> str:
    """``6 Dec 2026`` (no-break spaces: never split over lines)."""
    assert isinstance(day, date)
    return f"{day.day}\u00a0{day:%b}\u00a0{day.year}"


def _days(count: int) -> str:
    return f"{count} day{'s' if count != 1 else ''}"


def _span(first: date, last: date) -> str:
    return _day(first) if first == last else f"{_day(first)} to {_day(last)}"


def _long_day(day: date) -> str:
    return f"{day:%A} {_day(day)}"


def _month(day: date) -> str:
    return f"{day:%b}\u00a0{day.year}"


def _when(moment: datetime) -> str:
    utc = moment.astimezone(UTC)
    return f"{_day(utc.date())} {utc:%H:%M} UTC"


def _percent(share: object) -> str:
    assert isinstance(share, int | float)
    return f"{share:.0%}"


def _signed(value: float) -> str:
    """``+120`` or ``-300`` (whole steps)."""
    rounded = round(value)
    return f"{rounded:+,d}" if rounded else "0"


def _signed_percent(change: float) -> str:
    rounded = round(change * 100)
    return f"{rounded:+d}%" if rounded else "0%"


def _direction(change: object) -> str:
    """``-12% (down)``, ``+4% (up)`` or ``0% (no change)``."""
    assert isinstance(change, float) and math.isfinite(change)
    rounded = round(change * 100)
    word = "down" if rounded < 0 else "up" if rounded > 0 else "no change"
    return f"{_signed_percent(change)} ({word})"


def _steps(value: object, what: str) -> str:
    assert isinstance(value, int | float)
    return f"{value:,.0f} steps/day ({what})"


# ---------------------------------------------------------------------------------- the page


def deferred_report(
    lake: Lake,
    event: audit.AuditEvent,
    patient_id: str,
    *,
    active: Callable[[], bool] = lambda: True,
) -> Callable[[], bytes]:
    """What the patient page's download button calls when it is clicked (Streamlit runs it in a
    thread of its own, without rerunning the page): the report as of that moment's reference
    day, recorded in the audit log (``event``: who, on which page) before it is made.

    ``active`` says whether the user's sign-in still holds at the click (the page checks it at
    each run, and a click reruns nothing): when it does not, the refusal is recorded and there
    is no report.

    The chart's browser starts now, in the background, so that a click finds it open."""
    from jobs.recent_activity import as_of

    chart_image.warm_up()

    def build() -> bytes:
        if not active():
            refused = replace(
                event,
                action="report",
                patient_id=patient_id,
                outcome="refused: signed out (idle too long)",
                at=datetime.now(UTC),
            )
            audit.record(lake, refused)
            raise InputError("signed out after too long idle: reload the page to sign in again")
        return audited_patient_report(lake, patient_id, as_of(), event=event)

    return build
