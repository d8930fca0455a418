"""Each page rendered by Streamlit's AppTest on an empty lake and on the demo lake."""

from __future__ import annotations

import statistics

import pytest
from streamlit.testing.v1 import AppTest

from dashboard import data
from lakehouse.errors import StorageError
from lakehouse.storage import Lake
from tests.dashboard.demo_lake import APP, P001_STEPS, P001_WEAR, P002_STEPS, P002_WEAR

PAGES = ("pages/overview.py", "pages/patient.py", "pages/job_runs.py")
TIMEOUT = 30


def _open(page: str) -> AppTest:
    app = AppTest.from_file(APP, default_timeout=TIMEOUT).run()
    if page != "pages/overview.py":
        app.switch_page(page).run()
    assert not app.exception, [e.value for e in app.exception]
    return app


def _texts(elements: object) -> str:
    return "\n".join(str(e.value) for e in elements)  # type: ignore[attr-defined]


@pytest.mark.usefixtures("empty_lake")
@pytest.mark.parametrize("page", PAGES)
def test_every_page_renders_on_an_empty_lake(page: str) -> None:
    app = _open(page)

    assert not app.error
    assert not app.metric
    assert "No " in _texts(app.info)


@pytest.mark.usefixtures("empty_lake")
def test_overview_on_an_empty_lake_says_how_to_get_data() -> None:
    app = _open("pages/overview.py")

    assert "No data yet: run `mobility generate" in _texts(app.info)
    assert app.dataframe[0].value["table"].tolist()[0] == "bronze/step_samples"


@pytest.mark.usefixtures("demo_lake")
def test_overview_shows_the_fixture_kpis() -> None:
    app = _open("pages/overview.py")

    wear_steps = [
        s for s, w in zip(P001_STEPS + P002_STEPS, P001_WEAR + P002_WEAR, strict=True) if w
    ]
    all_days = len(P001_STEPS) + len(P002_STEPS)
    metrics = {m.label: m.value for m in app.metric}
    assert metrics == {
        "Patients": "3",
        "Patient-days": str(all_days),
        "Median daily steps (wear days)": f"{statistics.median(wear_steps):,.0f}",
        "Wear days": f"{len(wear_steps) / all_days:.0%}",
    }
    assert app.get("plotly_chart"), "the disease group chart is shown"
    groups = app.dataframe[0].value
    assert groups["disease_group"].tolist() == ["MS", "PD"]


@pytest.mark.usefixtures("demo_lake")
def test_patient_page_lists_the_fixture_patients_and_charts_one() -> None:
    app = _open("pages/patient.py")

    assert app.selectbox(key="patient_id").options == ["P001", "P002", "P003"]
    assert app.selectbox(key="patient_id").value == "P001"
    assert app.get("plotly_chart")
    recent = app.dataframe[0].value
    assert len(recent) == len(P001_STEPS)
    assert str(recent["date"].iloc[0])[:10] == "2024-03-10"


@pytest.mark.usefixtures("demo_lake")
def test_patient_page_without_daily_steps_and_with_filters() -> None:
    app = _open("pages/patient.py")

    app.selectbox(key="patient_id").select("P003").run()
    assert not app.exception
    assert "No daily steps for this patient" in _texts(app.info)

    app.selectbox(key="disease_group").select("PD").run()
    assert app.selectbox(key="patient_id").options == ["P002"]

    app.selectbox(key="disease_group").select("All").run()
    app.text_input(key="patient_search").input("nobody").run()
    assert not app.exception
    assert "No patient matches" in _texts(app.info)


@pytest.mark.usefixtures("demo_lake")
def test_job_runs_page_lists_the_runs_newest_first() -> None:
    app = _open("pages/job_runs.py")

    runs = app.dataframe[0].value
    assert runs["run_id"].tolist() == ["run-2", "run-1"]
    assert runs["status"].tolist() == ["failed", "succeeded"]
    assert runs["duration_seconds"].tolist() == pytest.approx([3.0, 12.5])
    metrics = {m.label: m.value for m in app.metric}
    assert metrics["Failed among the last runs"] == "1 of 2"


def test_an_unreadable_lake_shows_one_line(
    empty_lake: Lake, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(_lake: Lake) -> object:
        raise StorageError("table bronze/patients is corrupt")

    monkeypatch.setattr(data, "overview_kpis", broken)
    app = AppTest.from_file(APP, default_timeout=TIMEOUT).run()

    assert not app.exception
    assert "table bronze/patients is corrupt" in _texts(app.error)
