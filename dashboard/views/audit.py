"""Audit log (ops, admin): who signed in, opened which page, viewed which patient (by pseudonym)
and ran which query (its SHA-256 and row count), and what was refused; the events shown can be
downloaded as CSV (text neutralised against spreadsheet formulas: lakehouse/csv_export.py)."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from typing import get_args

import streamlit as st

from dashboard import auth, data
from lakehouse import audit, csv_export

ACTIONS = get_args(audit.Action)
LIMIT = 1000
# column widths in pixels that show whole, in the table's font, a SHA-256's 64 hex digits, a
# row count in the millions, an e-mail address of some 35 characters and two roles
SHA256_PX = 500
ROWS_PX = 100
USER_PX = 260
ROLES_PX = 140
# who did what to whom first; the query's fingerprint and the sign-in's details after (the
# table's columns and the download's, in this order)
COLUMNS = (
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
)

auth.require("audit")
st.title("Audit log")
st.caption(
    "Append-only: every sign-in, page opened, patient viewed, SQL query (dashboard and "
    "`mobility sql`), refusal and re-identification, newest first. Queries are recorded by "
    "the SHA-256 of their text, patients by pseudonym."
)
lake = data.current_lake()

who, what, patient, since = st.columns(4)
user = who.text_input("User contains", key="audit_user")
action = what.selectbox("Action", ["all", *ACTIONS], key="audit_action")
patient_id = patient.text_input("Patient (pseudonym)", key="audit_patient")
first_day = since.date_input(
    "Since", value=datetime.now(UTC).date() - timedelta(days=7), key="audit_since"
)
start = datetime.combine(first_day, time(0), tzinfo=UTC) if first_day else None

events = data.audit_events(
    lake,
    since=start,
    user=user or None,
    action=None if action == "all" else action,
    patient_id=patient_id or None,
    limit=LIMIT,
)
if events.is_empty():
    st.info("No audit event matches.", icon=":material/info:")
    st.stop()

views, queries, refused, people = st.columns(4)
views.metric(
    "Patient views and reports",
    f"{events.filter(events['action'].is_in(['patient', 'report'])).height:,}",
    help="Patient pages opened and printable reports made (dashboard and mobility report).",
)
queries.metric("SQL queries", f"{events.filter(events['action'] == 'sql').height:,}")
refused.metric("Refusals", f"{events.filter(events['action'] == 'refused').height:,}")
people.metric("People", f"{events['user'].n_unique():,}")
if events.height == LIMIT:
    st.caption(f"The newest {LIMIT:,} events; narrow the filters to see older ones.")
st.dataframe(
    events,
    hide_index=True,
    # an event without a patient, a query or a provider has empty cells, not "None"
    placeholder="",
    column_order=COLUMNS,
    column_config={
        "at": st.column_config.DatetimeColumn("when (UTC)", format="YYYY-MM-DD HH:mm:ss"),
        "user": st.column_config.TextColumn("user", width=USER_PX),
        # a pseudonym is P- and 20 hex digits: shown whole
        "patient_id": st.column_config.TextColumn("patient", width="medium"),
        "outcome": st.column_config.TextColumn("outcome", width="medium"),
        "rows": st.column_config.NumberColumn("rows", format="%,d", width=ROWS_PX),
        # the 64 hex digits whole, to compare with a query's own (lakehouse.audit.sql_sha256)
        "sql_sha256": st.column_config.TextColumn("query SHA-256", width=SHA256_PX),
        "roles": st.column_config.TextColumn("roles", width=ROLES_PX),
        "issuer": st.column_config.TextColumn("identity provider", width="large"),
        "subject": st.column_config.TextColumn("subject at the provider", width="large"),
    },
)
st.download_button(
    (
        "Download the event shown (CSV)"
        if events.height == 1
        else f"Download the {events.height:,} events shown (CSV)"
    ),
    data=csv_export.frame_csv(events.select(COLUMNS)),
    file_name=f"audit-log-{datetime.now(UTC):%Y%m%d-%H%M}.csv",
    mime="text/csv",
    icon=":material/download:",
    key="audit_download",
)
