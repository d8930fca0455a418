"""Audit log (ops, admin): who signed in, opened which page, viewed which patient (by pseudonym)
and ran which query (its SHA-256 and row count), and what was refused."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from typing import get_args

import streamlit as st

from dashboard import auth, data
from lakehouse import audit

ACTIONS = get_args(audit.Action)
LIMIT = 1000

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
views.metric("Patient views", f"{events.filter(events['action'] == 'patient').height:,}")
queries.metric("SQL queries", f"{events.filter(events['action'] == 'sql').height:,}")
refused.metric("Refusals", f"{events.filter(events['action'] == 'refused').height:,}")
people.metric("People", f"{events['user'].n_unique():,}")
if events.height == LIMIT:
    st.caption(f"The newest {LIMIT:,} events; narrow the filters to see older ones.")
st.dataframe(
    events,
    hide_index=True,
    column_config={
        "at": st.column_config.DatetimeColumn("when (UTC)", format="YYYY-MM-DD HH:mm:ss"),
        "patient_id": "patient",
        "sql_sha256": "query SHA-256",
    },
)
