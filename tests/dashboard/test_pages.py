"""Each page rendered by Streamlit's AppTest on an empty lake and on the demo lake."""

from __future__ import annotations

import base64
import csv
import io
import json
import statistics
from collections.abc import Callable, Iterator
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
import streamlit
from streamlit.testing.v1 import AppTest

from dashboard import data
from jobs.recent_activity import as_of
from lakehouse.catalog import FORECASTS, PATIENTS
from lakehouse.errors import StorageError
from lakehouse.storage import Lake
from tests.dashboard.conftest import forget_caches
from tests.dashboard.demo_lake import (
    APP,
    COST_TOTAL,
    FIRST_DAY,
    K_CHAMPIONS,
    K_ORIGIN,
    ORIGIN,
    P001_STEPS,
    P001_WEAR,
    P002_STEPS,
    P002_WEAR,
    build_champions_lake,
    build_demo_lake,
)
from tests.dashboard.identities import signed_in
from tests.dashboard.rendered import shown, tags

COHORT, PATIENT, SQL, MONITORING = (
    "views/cohort.py",
    "views/patient.py",
    "views/cohort_sql.py",
    "views/monitoring.py",
)
PAGES = (COHORT, PATIENT, SQL, MONITORING)
TIMEOUT = 30


def _open(page: str, *, role: str = "admin", **query: str) -> AppTest:
    app = signed_in(AppTest.from_file(APP, default_timeout=TIMEOUT), role)
    for key, value in query.items():
        app.query_params[key] = value
    app.run()
    if page != COHORT:
        app.switch_page(page).run()
    assert not app.exception, [e.value for e in app.exception]
    return app


def _texts(elements: object) -> str:
    return "\n".join(str(e.value) for e in elements)  # type: ignore[attr-defined]


def _shown(elements: object) -> str:
    """What a reader sees of the elements' Markdown."""
    return "\n".join(shown(str(e.value)) for e in elements)  # type: ignore[attr-defined]


@pytest.mark.usefixtures("empty_lake")
@pytest.mark.parametrize("page", PAGES)
def test_every_page_renders_on_an_empty_lake(page: str) -> None:
    app = _open(page)

    assert not app.error
    if page == SQL:  # the views exist, empty, with their columns: an analyst can still query
        assert app.text_area(key="sql_query").value
    else:
        assert "No " in _texts(app.info) + _texts(app.success)


@pytest.mark.usefixtures("empty_lake")
def test_cohort_page_on_an_empty_lake_says_how_to_get_data() -> None:
    app = _open(COHORT)

    assert "No data yet: run `mobility generate" in _texts(app.info)
    assert not app.metric


@pytest.mark.usefixtures("demo_lake")
def test_cohort_page_shows_the_fixture_kpis_and_the_declining_patient() -> None:
    app = _open(COHORT)

    wear_steps = [
        s for s, w in zip(P001_STEPS + P002_STEPS, P001_WEAR + P002_WEAR, strict=True) if w
    ]
    metrics = {m.label: m.value for m in app.metric}
    # the fixture's days are of March 2024: against today's calendar nobody sends data
    assert metrics == {
        "Patients": "3",
        "Median daily steps": f"{statistics.median(wear_steps):,.0f}",
        "No data for 7+ days": "3",
        "Enough wear, last 28 days": "0%",
        "Decline expected": "1",
    }
    assert len(app.get("plotly_chart")) == 2
    worklist, declining = (frame.value for frame in app.dataframe)
    silent = (as_of() - date(2024, 3, 10)).days
    assert worklist["patient_id"].tolist() == ["P001", "P003", "P002"]
    assert worklist["reasons"].tolist() == [
        f"no data for {silent} days · decline expected (-20%)",
        "no data yet",
        f"no data for {silent + 5} days",
    ]
    assert worklist["open"].tolist()[0] == "patient?patient_id=P001"
    assert declining["patient_id"].tolist() == ["P001"]
    assert declining["open"].tolist() == ["patient?patient_id=P001"]


@pytest.mark.usefixtures("demo_lake")
def test_cohort_filters_narrow_the_cohort() -> None:
    app = _open(COHORT)

    app.multiselect(key="cohort_groups").select("PD").run()
    metrics = {m.label: m.value for m in app.metric}
    assert metrics["Patients"] == "1"
    assert metrics["Decline expected"] == "0"
    assert "No patient of this cohort is forecast to fall" in _texts(app.success)
    # the patients nearest the threshold instead: P002, 5% below their baseline
    assert app.dataframe[1].value["patient_id"].tolist() == ["P002"]

    app.multiselect(key="cohort_groups").unselect("PD").run()
    app.multiselect(key="cohort_ages").select("under 40").run()
    assert not app.exception
    assert "No patient matches the filters" in _texts(app.info)

    app.multiselect(key="cohort_ages").unselect("under 40").run()
    app.multiselect(key="cohort_therapies").select("ocrelizumab").run()
    assert {m.label: m.value for m in app.metric}["Patients"] == "1"


def _figures(app: AppTest) -> list[dict[str, Any]]:
    """The page's plotly figures as the browser gets them."""
    return [json.loads(chart.proto.spec) for chart in app.get("plotly_chart")]


def _numbers(data: Any) -> list[float]:
    """A figure's data array (a plain list, or plotly's base64 typed array) as numbers."""
    if isinstance(data, dict):
        data = np.frombuffer(base64.b64decode(data["bdata"]), dtype=data["dtype"]).tolist()
    return [float(value) for value in data]


def _days(data: Any) -> list[date]:
    return [date.fromisoformat(str(day)[:10]) for day in data]


def _drawn_forecast(timeline: dict[str, Any]) -> tuple[str, dict[date, float]]:
    """The forecast the timeline draws (its name in the legend, its value per day); fails
    unless there is exactly one."""
    (line,) = [t for t in timeline["data"] if t.get("name", "").startswith("forecast: ")]
    return line["name"], dict(zip(_days(line["x"]), _numbers(line["y"]), strict=True))


@pytest.mark.usefixtures("demo_lake")
def test_patient_page_draws_the_forecast_and_its_explanation() -> None:
    app = _open(PATIENT)

    assert app.selectbox(key="patient_id").options == ["P001", "P002", "P003"]
    assert app.selectbox(key="patient_id").value == "P001"
    assert len(app.get("plotly_chart")) == 2  # timeline and waterfall
    assert "by the **ML model \\(all patients\\)**" in _texts(app.caption)  # in bold
    (accuracy,) = [f.value for f in app.dataframe if "horizon_days" in f.value.columns]
    assert accuracy["horizon_days"].tolist() == [365, 365]
    assert accuracy.set_index("model")["chosen"].to_dict() == {
        "ML model (all patients)": True,
        "28-day average": False,
    }
    assert app.get("download_button")

    app.radio(key="explain_kind").set_value("a day").run()
    assert not app.exception
    assert len(app.get("plotly_chart")) == 2


@pytest.fixture(scope="module")
def champions_root(tmp_path_factory: pytest.TempPathFactory) -> Lake:
    return build_champions_lake(tmp_path_factory.mktemp("champions") / "lake")


@pytest.fixture
def champions(champions_root: Lake, monkeypatch: pytest.MonkeyPatch) -> Iterator[Lake]:
    monkeypatch.setenv("LAKE_URI", champions_root.uri)
    forget_caches()
    yield champions_root
    forget_caches()


# the models as the page names them, written out here
PLAIN_NAMES = {
    "usual_level": "usual level (13-week median, by weekday)",
    "trailing_mean_28d": "28-day average",
    "weekday_profile_8w": "weekday pattern",
    "seasonal_naive_7d": "same weekday last week",
    "prophet": "seasonal model (Prophet)",
    "ebm_cluster": "ML model (one per disease group)",
    "ebm_global": "ML model (all patients)",
    "cluster_level": "typical patient of the disease group",
}
SUMMARY_STARTS = {
    "usual_level": "The usual level forecasts each day at the patient's median",
    "trailing_mean_28d": "The 28-day average forecasts every day",
    "weekday_profile_8w": "The weekday pattern forecasts each weekday",
    "seasonal_naive_7d": "Same weekday last week repeats",
    "prophet": "The seasonal model (Prophet) is fitted",
    "ebm_cluster": "The ML model (one per disease group) starts from the patient's recent level",
    "cluster_level": "Too little recent history of the patient's own",
}


@pytest.mark.usefixtures("champions")
@pytest.mark.parametrize("patient_id", list(K_CHAMPIONS))
def test_the_page_explains_the_forecast_it_draws(champions: Lake, patient_id: str) -> None:
    """Whatever kind of model the champion is: the chart draws its forecast alone with its 80%
    range under a plain name, and the explanation is of that forecast: its bars add up to the
    mean of the drawn line over the month explained (the first, by default)."""
    champion = K_CHAMPIONS[patient_id][1] or "cluster_level"
    app = _open(PATIENT, patient_id=patient_id)

    timeline, waterfall = _figures(app)
    name, drawn = _drawn_forecast(timeline)
    assert name == f"forecast: {PLAIN_NAMES[champion]}"
    stored = champions.read(FORECASTS).filter(
        (pl.col("patient_id") == patient_id) & (pl.col("model") == champion)
    )
    assert drawn == dict(zip(stored["target_date"], stored["yhat"], strict=True))
    legend = {t.get("name") for t in timeline["data"]}
    assert "80% range of the forecast" in legend
    assert not {n for n in legend if n and "_" in n}  # no code names
    assert not any(PLAIN_NAMES[m] in legend for m in PLAIN_NAMES if m != champion)

    (bars,) = waterfall["data"]
    june = [value for day, value in drawn.items() if day.month == K_ORIGIN.month]
    values = _numbers(bars["x"])
    assert values[-1] == round(statistics.mean(june))  # the forecast bar: the line's mean
    assert sum(values[:-1]) == values[-1]  # the rows add up to it
    assert _numbers(bars["base"])[0] == 0 and waterfall["layout"]["xaxis"]["range"][0] == 0
    assert len(values) - 1 <= 8
    assert any(shown(m.value).startswith(SUMMARY_STARTS[champion]) for m in app.markdown)
    assert "Why: the forecast explained" in [h.value for h in app.subheader]
    assert not app.get("selectbox") or "explain_model" not in [
        box.key for box in app.selectbox
    ]  # no other model to pick: the page explains the one it draws

    others = set(stored_models(champions, patient_id)) - {champion}
    if not others:  # nothing to compare with
        assert app.toggle(key="compare_models").disabled
        return
    app.toggle(key="compare_models").set_value(True).run()
    timeline = _figures(app)[0]
    legend = {t.get("name") for t in timeline["data"]}
    assert {PLAIN_NAMES[m] for m in others} <= legend
    assert _drawn_forecast(timeline)[0] == name  # still the one forecast explained


def stored_models(lake: Lake, patient_id: str) -> list[str]:
    return (
        lake.read(FORECASTS).filter(pl.col("patient_id") == patient_id)["model"].unique().to_list()
    )


@pytest.mark.usefixtures("champions")
def test_a_therapy_that_stops_in_the_forecast_is_a_row_by_name() -> None:
    app = _open(PATIENT, patient_id="K-EBM")

    (bars,) = _figures(app)[1]["data"]
    labels = [label.replace("<br>", " ") for label in bars["y"]]
    assert "Sinemet (levodopa) stops after 10\u00a0Jun\u00a02024" in labels
    assert labels[0] == "Recent level" and labels[-1] == "Forecast"
    assert not [label for label in labels if "…" in label or "_" in label]


@pytest.mark.usefixtures("demo_lake")
def test_a_link_names_the_patient_and_one_without_forecast_says_so() -> None:
    app = _open(PATIENT, patient_id="P002")

    assert app.selectbox(key="patient_id").value == "P002"
    assert "No forecast for this patient yet" in _texts(app.info)

    app.selectbox(key="patient_id").select("P003").run()
    assert not app.exception
    assert "No daily steps for this patient" in _texts(app.info)
    assert app.query_params["patient_id"] == "P003"  # the address names the patient shown

    app.selectbox(key="disease_group").select("PD").run()
    assert app.selectbox(key="patient_id").options == ["P002"]
    app.selectbox(key="disease_group").select("All").run()
    app.text_input(key="patient_search").input("nobody").run()
    assert not app.exception
    assert "No patient matches" in _texts(app.info)


@pytest.mark.usefixtures("demo_lake")
def test_sql_page_runs_a_query_and_refuses_a_write() -> None:
    app = _open(SQL)

    app.text_area(key="sql_query").input(
        "SELECT patient_id FROM bronze.patients ORDER BY patient_id"
    ).run()
    app.button(key="sql_run").click().run()
    assert not app.exception
    assert app.dataframe[0].value["patient_id"].tolist() == ["P001", "P002", "P003"]
    assert "3 rows" in _texts(app.caption)

    app.text_area(key="sql_query").input("COPY bronze.patients TO '/tmp/x.csv'").run()
    app.button(key="sql_run").click().run()
    assert "only read-only queries are allowed" in _shown(app.error)

    app.selectbox(key="sql_table").select("gold.outlook").run()
    assert "year_end_change" in app.dataframe[-1].value["column"].tolist()


@pytest.mark.usefixtures("demo_lake")
def test_monitoring_page_shows_alerts_checks_cost_runs_and_quarantine() -> None:
    app = _open(MONITORING)

    metrics = {m.label: m.value for m in app.metric}
    assert metrics["Open alerts"] == "1"
    assert metrics["Checks alerting"] == "2"  # the latest run's, not the earlier one's ok
    assert metrics["Measured, per month"] == f"${COST_TOTAL[0]:,.2f}"
    assert metrics["Projected to the budget's patients"] == f"${COST_TOTAL[1]:,.0f}"
    assert metrics["Failed among the last runs"] == "1 of 2"
    tables = [frame.value for frame in app.dataframe]
    alerts = tables[0]
    assert alerts["state"].tolist() == ["open", "resolved"]
    # checks as text: the status a coloured word (no emoji), each value in its unit
    accuracy = tables[1]
    assert accuracy["status"].tolist() == ["alert"]
    assert accuracy["value"].tolist() == ["1,500"]
    assert accuracy["threshold"].tolist() == ["≥ 1,100"]
    drift = tables[2]
    assert drift["subject"].tolist() == ["ewm_mean_28d"]
    assert drift["value"].tolist() == ["0.250"]
    runs = next(t for t in tables if "run_id" in t.columns)
    assert runs["run_id"].tolist() == ["run-2", "run-1"]
    assert runs["duration_seconds"].tolist() == pytest.approx([3.0, 12.5])
    quarantine = next(t for t in tables if "reason" in t.columns)
    assert quarantine["rows"].tolist() == [2, 1]
    assert len(app.get("plotly_chart")) == 2  # the drift distributions and the cost breakdown


def test_an_unreadable_lake_shows_one_line(
    empty_lake: Lake, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(_lake: Lake) -> object:
        raise StorageError("table bronze/patients is corrupt")

    monkeypatch.setattr(data, "data_period", broken)
    app = signed_in(AppTest.from_file(APP, default_timeout=TIMEOUT), "admin").run()

    assert not app.exception
    assert "table bronze/patients is corrupt" in _shown(app.error)


# ------------------------------------------------------------- text from data shown as text

# patients.csv keeps sex and country as written; P009's would render as Markdown, P010's run as
# spreadsheet formulas
P009_SEX, P009_COUNTRY = "**bold**", "![x](http://evil.test/p.png)"
P010_SEX, P010_COUNTRY = "=cmd|' /C calc'!A0", "-2+3"
HOSTILE_MODEL = "@SUM(A1)"


@pytest.fixture
def hostile_lake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Lake]:
    """The demo lake plus two patients whose text would be Markdown or formulas, and a forecast
    model of P001 named like a formula."""
    lake = build_demo_lake(tmp_path / "hostile").lake
    lake.append(
        PATIENTS,
        pl.DataFrame(
            {
                "patient_id": ["P009", "P010"],
                "disease_group": ["MS", "PD"],
                "timezone": ["Europe/Berlin", "UTC"],
                "sex": [P009_SEX, P010_SEX],
                "birth_year": [1975, 1980],
                "country": [P009_COUNTRY, P010_COUNTRY],
                "enrolled_on": [FIRST_DAY, None],
            },
            schema_overrides={"birth_year": pl.Int16},
        ),
    )
    forecast = lake.read(FORECASTS).filter(pl.col("model") == "trailing_mean_28d")
    lake.append(FORECASTS, forecast.with_columns(model=pl.lit(HOSTILE_MODEL), yhat=-5.0))
    monkeypatch.setenv("LAKE_URI", lake.uri)
    forget_caches()
    yield lake
    forget_caches()


@pytest.fixture
def downloads(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """The data of each download button the page draws, by the button's key."""
    offered: dict[str, Any] = {}
    real: Callable[..., Any] = streamlit.download_button

    def recording(label: str, data: Any, *args: Any, **kwargs: Any) -> Any:
        offered[kwargs["key"]] = data
        return real(label, data, *args, **kwargs)

    monkeypatch.setattr(streamlit, "download_button", recording)
    return offered


@pytest.mark.usefixtures("hostile_lake")
def test_patient_header_shows_ingested_text_as_written() -> None:
    app = _open(PATIENT, patient_id="P009")

    header = next(c.value for c in app.caption if "disease group" in c.value)
    assert shown(header) == (
        f"disease group MS · age {as_of().year - 1975} (born 1975) · {P009_SEX} · "
        f"{P009_COUNTRY} · enrolled {FIRST_DAY:%d %b %Y} · time zone Europe/Berlin"
    )
    assert tags(header) == ["<p>", "</p>"]  # no bold, no image


@pytest.mark.usefixtures("hostile_lake")
def test_forecast_download_neutralises_formulas_and_keeps_numbers(
    downloads: dict[str, Any],
) -> None:
    _open(PATIENT, patient_id="P001")

    rows = list(csv.DictReader(io.StringIO(downloads["download_forecast"], newline="")))
    hostile = [row for row in rows if row["model"] == "'" + HOSTILE_MODEL]
    assert len(hostile) == 365
    assert {row["yhat"] for row in hostile} == {"-5.0"}  # a negative number stays a number
    assert {row["target_date"][:4] for row in rows} <= {str(ORIGIN.year), str(ORIGIN.year + 1)}


@pytest.mark.usefixtures("hostile_lake")
def test_sql_download_neutralises_formulas_and_keeps_numbers(downloads: dict[str, Any]) -> None:
    app = _open(SQL)

    app.text_area(key="sql_query").input(
        "SELECT sex, country, -birth_year AS minus_year FROM bronze.patients "
        "WHERE patient_id = 'P010'"
    ).run()
    app.button(key="sql_run").click().run()

    assert not app.exception and not app.error, _texts(app.error)
    rows = list(csv.reader(io.StringIO(downloads["sql_download"], newline="")))
    assert rows == [["sex", "country", "minus_year"], ["'" + P010_SEX, "'" + P010_COUNTRY, "-1980"]]


def test_an_error_quoting_data_shows_it_as_written(
    empty_lake: Lake, monkeypatch: pytest.MonkeyPatch
) -> None:
    message = f"cannot read {P009_COUNTRY}: **{date(2024, 1, 1)}** :red[x] $x$"

    def broken(_lake: Lake) -> object:
        raise StorageError(message)

    monkeypatch.setattr(data, "data_period", broken)
    app = signed_in(AppTest.from_file(APP, default_timeout=TIMEOUT), "admin").run()

    assert not app.exception
    assert shown(app.error[0].value) == message
    assert tags(app.error[0].value) == ["<p>", "</p>"]


@pytest.mark.usefixtures("demo_lake")
def test_patient_page_summarises_the_patient_in_clinical_terms() -> None:
    app = _open(PATIENT)

    metrics = {m.label: (m.value, m.delta) for m in app.metric}
    silent = (as_of() - date(2024, 3, 10)).days
    assert metrics["Last day with data"] == ("10 Mar 2024", f"{silent} days ago")
    # the demo's days are long past: none of the last 28 worn, no recent mean, no baseline
    assert metrics["Worn, last 28 days"] == ("0 days", "0%")
    assert metrics["Last 30 days, steps/day"] == ("too few days", "")
    assert metrics["Baseline, steps/day"] == ("too few days", "")
    (diagnoses,) = [f.value for f in app.dataframe if "diagnosed_on" in f.value.columns]
    assert diagnoses["name"].tolist() == [
        "Multiple sclerosis",
        "Major depressive disorder, single episode, unspecified",
        "**a local code**",
    ]
    (effects,) = [f for f in app.dataframe if "severity" in f.value.columns]
    assert json.loads(effects.proto.columns)["severity"]["label"] == "CTCAE grade"
    history = app.get("button_group")
    assert history, "no history range control"
    assert not app.exception


def test_the_report_button_records_the_report_before_it_is_made(
    demo_lake: Any, downloads: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The patient page offers the printable report; a click writes its audit row (the user,
    the page, the patient) and then makes the PDF; when the row cannot be written there is no
    PDF."""
    from dashboard import chart_image
    from lakehouse import audit
    from lakehouse.catalog import AUDIT_LOG

    def no_chart(*_args: object, **_kwargs: object) -> bytes:  # the chart is test_report's
        raise chart_image.ChartUnavailable("not drawn in this test")

    monkeypatch.setattr(chart_image, "figure_png", no_chart)
    monkeypatch.setattr(chart_image, "warm_up", lambda: None)
    app = _open(PATIENT, role="clinician", patient_id="P001")

    (button,) = [e for e in app.get("download_button") if e.proto.label.startswith("Printable")]
    assert button.proto.label == "Printable report (PDF)"
    make = downloads["download_report"]
    lake = demo_lake.lake
    before = lake.read(AUDIT_LOG).height

    pdf = make()

    assert pdf.startswith(b"%PDF-")
    rows = lake.read(AUDIT_LOG).sort("at").slice(before)
    assert rows.select("user", "client", "action", "page", "patient_id", "outcome").rows() == [
        ("clinician@example.org", "dashboard", "report", "patient", "P001", "ok")
    ]
    assert rows["issuer"].to_list() == ["https://login.example.org"]

    def broken(*_args: object) -> None:
        raise StorageError("could not write the audit log: disk full")

    monkeypatch.setattr(audit, "record", broken)
    with pytest.raises(StorageError, match="disk full"):
        make()
