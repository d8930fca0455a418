"""Re-identification (admin only): the source identifier behind a pseudonym, or the pseudonym of
a source identifier, from the map ingestion keeps. Every look-up is in the audit log."""

from __future__ import annotations

import streamlit as st

from dashboard import auth, data

user = auth.require("reidentify")
st.title("Re-identification")
st.caption(
    "Admin only. The map holds each pseudonym with the identifier ingestion received. "
    "Every look-up is recorded in the audit log before its answer is shown."
)
lake = data.current_lake()

by = st.radio("Look up", ["a pseudonym", "a source identifier"], horizontal=True, key="reid_by")
text = st.text_input(
    "Pseudonym" if by == "a pseudonym" else "Source identifier", key="reid_text"
).strip()
if not text:
    st.stop()

if by == "a pseudonym":
    auth.record(lake, user, "reidentify", "reidentify", patient_id=text)
    rows = data.reidentification(lake, patient_id=text)
else:
    rows = data.reidentification(lake, source_id=text)
    found = rows["patient_id"][0] if rows.height else None
    outcome = "ok" if found else "not found"
    auth.record(lake, user, "reidentify", "reidentify", patient_id=found, outcome=outcome)

if rows.is_empty():
    st.info("Not in the re-identification map.", icon=":material/search_off:")
else:
    st.dataframe(
        rows,
        hide_index=True,
        column_config={
            "patient_id": "pseudonym",
            "source_id": "source identifier",
            "first_seen_at": st.column_config.DatetimeColumn("first ingested (UTC)"),
            "source_file": "from file",
        },
    )
