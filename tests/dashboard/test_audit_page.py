"""The Audit log page as a reader sees it: pseudonyms in a column wide enough to show them whole,
empty cells where an event has no patient, query or provider (never "None"), readable headers,
and a CSV download of exactly the events shown, with formulas neutralised."""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import streamlit
from streamlit.testing.v1 import AppTest

from lakehouse import audit
from lakehouse.storage import Lake
from tests.dashboard.demo_lake import APP
from tests.dashboard.displayed import (
    assert_reads_cleanly,
    column_config,
    displayed_rows,
    headers,
)
from tests.dashboard.identities import signed_in

TIMEOUT = 30
AUDIT = "views/audit.py"
PSEUDONYM = "P-0123456789abcdef0123"  # P- and 20 hex digits, as lakehouse/pseudonyms.py makes
QUERY_SHA = audit.sql_sha256("SELECT count(*) FROM silver.daily_steps")
# an identity provider's subject is the provider's text: it would run as a formula
FORMULA_SUBJECT = '=HYPERLINK("http://evil.test","x")'
NOW = datetime.now(UTC).replace(microsecond=0)


@pytest.fixture
def events(empty_lake: Lake) -> Iterator[Lake]:
    """Three events of the last hour: a patient view, a SQL query of 1,310,906 rows and a refusal
    of a subject named like a formula."""
    audit.record(
        empty_lake,
        [
            audit.AuditEvent(
                user="clinician@example.org",
                roles="clinician",
                client="dashboard",
                action="patient",
                page="patient",
                patient_id=PSEUDONYM,
                issuer="https://login.example.org",
                subject="sub-clinician",
                at=NOW - timedelta(minutes=30),
            ),
            audit.AuditEvent(
                user="analyst",
                roles="cli",
                client="cli",
                action="sql",
                page="mobility sql",
                sql_sha256=QUERY_SHA,
                rows=1_310_906,
                at=NOW - timedelta(minutes=20),
            ),
            audit.AuditEvent(
                user=f"sub:{FORMULA_SUBJECT}",
                roles="",
                client="dashboard",
                action="refused",
                page="cohort",
                outcome="refused: no role",
                issuer="https://login.example.org",
                subject=FORMULA_SUBJECT,
                at=NOW - timedelta(minutes=10),
            ),
        ],
    )
    yield empty_lake


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


def _open(**filters: str) -> AppTest:
    app = signed_in(AppTest.from_file(APP, default_timeout=TIMEOUT), "ops")
    app.run()  # ops land on Monitoring
    app.switch_page(AUDIT).run()
    for key, value in filters.items():
        app.text_input(key=key).input(value).run()
    assert not app.exception, [e.value for e in app.exception]
    return app


def _mine(rows: list[dict[str, str]]) -> list[dict[str, str]]:
    """The fixture's events among those shown (opening the page records events too)."""
    return [row for row in rows if row["page"] in ("patient", "mobility sql", "cohort")]


@pytest.mark.usefixtures("events")
def test_audit_page_shows_pseudonyms_whole_and_empty_cells(downloads: dict[str, Any]) -> None:
    app = _open()

    assert_reads_cleanly(app)
    table = app.dataframe[0]
    # who did what to whom first
    assert headers(table) == [
        "when (UTC)",
        "user",
        "action",
        "page",
        "patient",
        "outcome",
        "rows",
        "query SHA-256",
        "roles",
        "client",
        "identity provider",
        "subject at the provider",
    ]
    config = column_config(table)
    # wide enough for a whole pseudonym, SHA-256 and row count (a pseudonym was cut to
    # "SYN42-0000"); the widths were checked in a browser
    assert config["patient_id"]["width"] == "medium"
    assert config["user"]["width"] == 260 and config["roles"]["width"] == 140
    assert config["sql_sha256"]["width"] == 500  # pixels: 64 hex digits
    assert config["rows"]["width"] == 100  # "1,310,906"
    assert config["rows"]["type_config"]["format"] == "%,d"
    shown = _mine(displayed_rows(table))
    assert [row["action"] for row in shown] == ["refused", "sql", "patient"]  # newest first
    refused, query, viewed = shown
    assert viewed["patient"] == PSEUDONYM
    assert (viewed["query SHA-256"], viewed["rows"]) == ("", "")
    assert (query["patient"], query["query SHA-256"]) == ("", QUERY_SHA)
    assert (query["identity provider"], query["subject at the provider"]) == ("", "")
    assert refused["subject at the provider"] == FORMULA_SUBJECT  # shown as written
    assert refused["roles"] == ""


@pytest.mark.usefixtures("events")
def test_audit_download_is_the_events_shown_with_formulas_neutralised(
    downloads: dict[str, Any],
) -> None:
    app = _open(audit_patient=PSEUDONYM)

    shown = displayed_rows(app.dataframe[0])
    assert [row["patient"] for row in shown] == [PSEUDONYM]
    (button,) = app.get("download_button")
    assert button.proto.label == "Download the event shown (CSV)"
    viewed = list(csv.DictReader(io.StringIO(downloads["audit_download"], newline="")))
    # the table's columns in the table's order, by their names in the lake
    assert list(viewed[0]) == [
        "at",
        "user",
        "action",
        "page",
        "patient_id",
        "outcome",
        "rows",
        "sql_sha256",
        "roles",
        "client",
        "issuer",
        "subject",
    ]
    assert [row["patient_id"] for row in viewed] == [PSEUDONYM]
    assert viewed[0]["rows"] == ""  # no query: an empty field, not "None"

    app = _open()
    everything = list(csv.DictReader(io.StringIO(downloads["audit_download"], newline="")))
    assert len(everything) == len(displayed_rows(app.dataframe[0]))
    (button,) = app.get("download_button")
    assert button.proto.label == f"Download the {len(everything)} events shown (CSV)"
    query = next(row for row in everything if row["action"] == "sql")
    assert (query["sql_sha256"], query["rows"]) == (QUERY_SHA, "1310906")  # a number stays one
    refused = next(row for row in everything if row["action"] == "refused")
    assert refused["subject"] == "'" + FORMULA_SUBJECT  # text, not a formula
    assert refused["user"] == f"sub:{FORMULA_SUBJECT}"  # starts with "s": nothing to neutralise
