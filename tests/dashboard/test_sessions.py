"""Dashboard sessions apart (issue 18, finding 2): nothing an analyst's SQL does reaches what a
clinician's session sees, even with the statement check switched off."""

from __future__ import annotations

import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from dashboard import data
from lakehouse import sandbox
from lakehouse.catalog import PATIENTS
from tests.dashboard.demo_lake import APP, DemoLake
from tests.dashboard.identities import signed_in

TIMEOUT = 30
ATTACKS = [
    # the reproduction: a table in the shared connection, then a view over it
    "EXPLAIN ANALYZE CREATE TABLE main.t AS SELECT * FROM bronze.patients",
    "EXPLAIN ANALYZE CREATE OR REPLACE VIEW bronze.patients AS "
    "SELECT * REPLACE ('[elsewhere](http://evil.test)' AS country) FROM main.t",
    "WITH x AS (UPDATE bronze.patients SET country = 'XX' RETURNING *) SELECT * FROM x",
    "CREATE OR REPLACE VIEW bronze.patients AS "
    "SELECT * REPLACE ('[elsewhere](http://evil.test)' AS country) FROM bronze.patients",
]


def _run_sql(app: AppTest, sql: str) -> str:
    app.text_area(key="sql_query").input(sql).run()
    app.button(key="sql_run").click().run()
    assert not app.exception, [e.value for e in app.exception]
    # markdown escapes removed: the page shows the message as text
    return "\n".join(str(e.value) for e in app.error).replace("\\", "")


def _patient_page(patient_id: str) -> AppTest:
    app = signed_in(AppTest.from_file(APP, default_timeout=TIMEOUT), "clinician")
    app.query_params["patient_id"] = patient_id
    app.run()
    app.switch_page("views/patient.py").run()
    assert not app.exception, [e.value for e in app.exception]
    return app


def _shown_text(app: AppTest) -> str:
    parts = [str(e.value) for kind in ("caption", "markdown", "text") for e in app.get(kind)]
    return "\n".join(parts)


@pytest.mark.parametrize("check", ["on", "off"])
def test_an_analysts_sql_never_changes_what_a_clinician_sees(
    demo_lake: DemoLake, monkeypatch: pytest.MonkeyPatch, check: str
) -> None:
    before = _patient_page("P001")
    assert "evil.test" not in _shown_text(before)
    assert data.patient_profile(demo_lake.lake, "P001").country == "DE"  # type: ignore[union-attr]

    if check == "off":  # defence in depth: as if a statement got past the check
        # in this process, so that the check can be switched off (the worker is another one)
        monkeypatch.setattr(sandbox, "run", sandbox.run_here)
        monkeypatch.setattr(sandbox, "check", lambda sql: sandbox.CheckedQuery(sql, (PATIENTS,)))
    analyst = signed_in(AppTest.from_file(APP, default_timeout=TIMEOUT), "analyst").run()
    analyst.switch_page("views/cohort_sql.py").run()
    for sql in ATTACKS:
        error = _run_sql(analyst, sql)
        if check == "on":
            assert "only read-only queries are allowed" in error or "EXPLAIN ANALYZE" in error
    # the same analyst session's next query sees the lake as it is
    _run_sql(analyst, "SELECT country FROM bronze.patients WHERE patient_id = 'P001'")
    assert analyst.dataframe[0].value["country"].tolist() == ["DE"]

    # a clinician's session, with the results cache dropped so every query runs again on the
    # dashboard's shared connection
    st.cache_data.clear()
    after = _patient_page("P001")
    assert "evil.test" not in _shown_text(after)
    assert data.patient_profile(demo_lake.lake, "P001").country == "DE"  # type: ignore[union-attr]
    assert _shown_text(after) == _shown_text(before)
