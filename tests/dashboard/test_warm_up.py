"""The server's warm-up: the cohort page as it opens finds every query it runs cached, and the
caches are warmed again when a table the page reads gets a new version."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from streamlit.testing.v1 import AppTest

from dashboard import data, warm_up
from lakehouse.catalog import PATIENTS
from lakehouse.storage import Lake
from tests.dashboard.demo_lake import APP, DemoLake
from tests.dashboard.identities import signed_in


@pytest.fixture
def queries(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The SQL of every DuckDB query the dashboard runs from now on."""
    ran: list[str] = []
    real = data.run_query

    def counted(con: Any, sql: str, *args: Any, **kwargs: Any) -> Any:
        ran.append(sql)
        return real(con, sql, *args, **kwargs)

    monkeypatch.setattr(data, "run_query", counted)
    return ran


def _cohort_page() -> AppTest:
    app = signed_in(AppTest.from_file(APP, default_timeout=30), "admin")
    app.run()
    assert not app.exception, [e.value for e in app.exception]
    assert app.title[0].value == "Cohort overview"
    return app


@pytest.mark.parametrize("warmed", [False, True])
def test_after_the_warm_up_the_cohort_page_runs_no_query(
    demo_lake: DemoLake, queries: list[str], warmed: bool
) -> None:
    if warmed:
        assert warm_up.warm(demo_lake.lake)
        queries.clear()

    _cohort_page()

    if warmed:
        assert queries == []
    else:  # the same page cold: its queries run (the count above can fail)
        assert len(queries) >= 5


def test_the_warm_up_runs_again_when_a_table_of_the_page_changes(
    demo_lake: DemoLake, tmp_path: Path
) -> None:
    lake = Lake(str(shutil.copytree(demo_lake.lake.uri, tmp_path / "lake")))  # changed below
    warmed: list[Lake] = []
    warmer = warm_up.Warmer(lake, lambda lake: warmed.append(lake) or True)

    first, again = warmer.check(), warmer.check()
    patients = lake.read(PATIENTS).head(1)
    lake.append(PATIENTS, patients.with_columns(patient_id=pl.lit("P999")))
    data.clear_caches()  # the versions are looked up at most every 10 s
    changed = warmer.check()

    assert (first, again, changed) == (True, False, True)
    assert len(warmed) == 2


def test_a_failed_warm_up_is_logged_and_tried_again(
    demo_lake: DemoLake, caplog: pytest.LogCaptureFixture
) -> None:
    calls: list[int] = []

    def failing_once(lake: Lake) -> bool:
        calls.append(1)
        if len(calls) == 1:
            raise OSError("the lake is unreachable")
        return True

    warmer = warm_up.Warmer(demo_lake.lake, failing_once)

    assert warmer.check() is False
    assert "warming the dashboard's caches failed" in caplog.text
    assert warmer.check() is True
    assert len(calls) == 2


def test_an_empty_lake_is_not_warmed(empty_lake: Lake) -> None:
    assert warm_up.warm(empty_lake) is False
    assert warm_up.Warmer(empty_lake).check() is False
