"""Every page on a lake holding one real patient: the Apple Health export in ../shared, a month
long (too short to train on; the forecast is the cluster-level one)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from lakehouse.catalog import FORECASTS
from lakehouse.storage import Lake
from tests.dashboard.conftest import forget_caches
from tests.dashboard.demo_lake import APP
from tests.dashboard.identities import signed_in
from tests.pseudonyms import pseudonym
from tests.test_cli import mobility

REALDATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "realdata"
EXPORT = REALDATA / "apple-health" / "export.xml"


@pytest.fixture(scope="module")
def real_lake(tmp_path_factory: pytest.TempPathFactory) -> Lake:
    if not EXPORT.exists():
        pytest.skip("real device exports not beside the project")
    root = tmp_path_factory.mktemp("real")
    lake = Lake(str(root / "lake"))
    for command in (["ingest", str(EXPORT), "--patient-id", "apple-1"], ["pipeline"]):
        done = mobility("--lake", lake.uri, *command, cwd=root)
        assert done.returncode == 0, done.stderr
    assert lake.exists(FORECASTS)
    return lake


@pytest.fixture
def real_patient(real_lake: Lake, monkeypatch: pytest.MonkeyPatch) -> Iterator[Lake]:
    monkeypatch.setenv("LAKE_URI", real_lake.uri)
    forget_caches()
    yield real_lake
    forget_caches()


@pytest.mark.usefixtures("real_patient")
@pytest.mark.parametrize(
    "page", ["views/cohort.py", "views/patient.py", "views/cohort_sql.py", "views/monitoring.py"]
)
def test_every_page_works_with_one_real_patient(page: str) -> None:
    app = signed_in(AppTest.from_file(APP, default_timeout=60), "admin").run()
    if page != "views/cohort.py":
        app.switch_page(page).run()

    assert not app.exception, [e.value for e in app.exception]
    assert not app.error
    if page == "views/cohort.py":
        metrics = {m.label: m.value for m in app.metric}
        assert metrics["Patients"] == "1"
    if page == "views/patient.py":
        assert app.selectbox(key="patient_id").value == pseudonym("apple-1")
        assert app.get("plotly_chart")
        # a month of data, no model trained on it: a baseline's forecast, explained as what
        # it is (a summary with its numbers and the waterfall below the chart)
        assert len(app.get("plotly_chart")) == 2
        summaries = [str(m.value).replace("\\", "") for m in app.markdown]
        assert any("steps/day" in summary for summary in summaries), summaries
