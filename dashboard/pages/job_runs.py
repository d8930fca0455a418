"""Job runs: the latest runs of the pipeline's jobs with status, duration, rows and error."""

from __future__ import annotations

import streamlit as st

from dashboard import data

st.title("Job runs")
runs = data.recent_job_runs(data.current_lake(), limit=100)

if runs.is_empty():
    st.info(
        "No job has run yet: `mobility pipeline` records each run here.", icon=":material/info:"
    )
else:
    failed = runs.filter(runs["status"] != "succeeded").height
    latest, failures = st.columns(2)
    latest.metric("Latest run", f"{runs['job'][0]}: {runs['status'][0]}")
    failures.metric("Failed among the last runs", f"{failed} of {runs.height}")
    st.dataframe(
        runs,
        hide_index=True,
        column_config={
            "started_at": st.column_config.DatetimeColumn("started (UTC)"),
            "duration_seconds": st.column_config.NumberColumn("duration (s)", format="%.1f"),
        },
    )
