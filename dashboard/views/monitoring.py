"""Monitoring (ops): job runs, data quality, drift and cost, and the lake's tables."""

from __future__ import annotations

import streamlit as st

from dashboard import data

st.title("Monitoring")
lake = data.current_lake()

st.subheader("Job runs")
runs = data.recent_job_runs(lake, limit=100)
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

st.subheader("Data quality")
quarantined = data.quarantine_by_reason(lake)
if quarantined.is_empty():
    st.success("No input row has been quarantined.", icon=":material/check_circle:")
else:
    st.caption(
        f"{quarantined['rows'].sum():,} input rows were rejected at ingestion; by reason "
        "(numbers in reasons shown as N):"
    )
    st.dataframe(
        quarantined,
        hide_index=True,
        column_config={"latest": st.column_config.DatetimeColumn("latest (UTC)")},
    )

st.subheader("Forecast drift")
st.info(
    "No drift checks yet: scoring matured forecasts against what happened, and feature and "
    "prediction drift, arrive with `mobility monitor`.",
    icon=":material/info:",
)

st.subheader("Cost")
st.info(
    "No cost figures yet: `mobility monitor` will turn the recorded job runs and the lake's "
    "size into monthly cost against the budget.",
    icon=":material/info:",
)

st.subheader("Tables")
st.caption(f"Lake: `{lake.uri}`")
st.dataframe(data.lake_tables(lake), hide_index=True)
