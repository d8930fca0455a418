"""Monitoring (ops): open alerts, the latest monitoring run's checks (forecast accuracy against
the backtests, job health, cost against the budget), job runs, data quality, the lake's tables."""

from __future__ import annotations

import polars as pl
import streamlit as st

from dashboard import auth, charts, data
from dashboard.literal import markdown_literal

STATUS = {
    "ok": "🟢 ok",
    "alert": "🔴 alert",
    "warning": "🟠 warning",
    "too little data": "⚪ too little data",
}

auth.require("monitoring")
st.title("Monitoring")
lake = data.current_lake()
checks = data.latest_checks(lake)
alerts = data.alerts(lake)
open_alerts = alerts.filter(pl.col("resolved_at").is_null()) if alerts.height else alerts

if checks.is_empty():
    st.info(
        "No monitoring run yet: `mobility monitor` (the last stage of `mobility pipeline`) "
        "checks forecast accuracy, job health and cost.",
        icon=":material/info:",
    )
else:
    counts = dict(checks.group_by("status").len().iter_rows())
    alerts_open, ok, alerting, little = st.columns(4)
    alerts_open.metric("Open alerts", f"{open_alerts.height}")
    ok.metric("Checks ok", f"{counts.get('ok', 0)}")
    alerting.metric("Checks alerting", f"{counts.get('alert', 0)}")
    little.metric("Too little data", f"{counts.get('too little data', 0)}")
    st.caption(f"Latest monitoring run: {checks['checked_at'][0]:%Y-%m-%d %H:%M} UTC")

st.subheader("Alerts")
if alerts.is_empty():
    st.success("No alert has been raised.", icon=":material/check_circle:")
else:
    st.dataframe(
        alerts.with_columns(
            state=pl.when(pl.col("resolved_at").is_null())
            .then(pl.lit("open"))
            .otherwise(pl.lit("resolved"))
        ),
        hide_index=True,
        column_order=("state", "raised_at", "check", "subject", "message", "resolved_at"),
        column_config={
            "raised_at": st.column_config.DatetimeColumn("raised (UTC)"),
            "resolved_at": st.column_config.DatetimeColumn("resolved (UTC)"),
        },
    )


def _table(rows: pl.DataFrame, *, value: str, reference: str, threshold: str) -> None:
    st.dataframe(
        rows.with_columns(pl.col("status").replace_strict(STATUS, default=pl.col("status"))),
        hide_index=True,
        column_order=("status", "subject", "metric", "value", "reference", "threshold", "details"),
        column_config={
            "value": st.column_config.NumberColumn(value, format="%.1f"),
            "reference": st.column_config.NumberColumn(reference, format="%.1f"),
            "threshold": st.column_config.NumberColumn(threshold, format="%.1f"),
        },
    )


st.subheader("Forecast accuracy")
accuracy = checks.filter(pl.col("check") == "accuracy") if checks.height else checks
if accuracy.is_empty():
    st.info(
        "No matured forecast yet: accuracy is scored once the days a forecast covered have "
        "happened (wear days of the last 28 days of data).",
        icon=":material/info:",
    )
else:
    st.caption(
        "MAE of stored forecasts on the days that have since happened, against the mean backtest "
        "MAE of the latest training at the same horizon. Above 110%, and worse than the backtest "
        "beyond chance (the lower 95% bound, patients as units), a cluster's champion raises an "
        "alert that makes training due at the next pipeline run; other models show a warning."
    )
    _table(accuracy, value="MAE now", reference="backtest MAE", threshold="alert above")

st.subheader("Feature and prediction drift")
drifting = (
    checks.filter(pl.col("check").is_in(["feature drift", "prediction drift"]))
    if checks.height
    else checks
)
if drifting.is_empty():
    st.info(
        "No drift checks yet: the first monitoring run after a training captures the population "
        "the models were trained for; later runs compare against it.",
        icon=":material/info:",
    )
else:
    st.caption(
        "Each model input and the champion forecast, now against the population at the last "
        "training. Up to 1,000 patients the Kolmogorov-Smirnov test (metric `ks p-value`: under "
        "0.05 a warning, under 0.01 an alert); above, the population stability index (`psi`: "
        "0.1 or more a warning, 0.2 or more an alert)."
    )
    st.dataframe(
        drifting.with_columns(pl.col("status").replace_strict(STATUS, default=pl.col("status"))),
        hide_index=True,
        column_order=("status", "check", "subject", "metric", "value", "threshold", "details"),
        column_config={
            "value": st.column_config.NumberColumn("value", format="%.3g"),
            "threshold": st.column_config.NumberColumn("alert at", format="%.3g"),
        },
    )
    with st.expander("Distributions: now against the reference"):
        subject = st.selectbox("Input", drifting["subject"].to_list(), key="drift_subject")
        row = drifting.filter(pl.col("subject") == subject).row(0, named=True)
        st.plotly_chart(charts.drift_shares(row["details"], title=subject))

st.subheader("Job health")
health = checks.filter(pl.col("check") == "job health") if checks.height else checks
if health.is_empty():
    st.info("No job health checks yet.", icon=":material/info:")
else:
    _table(health, value="value", reference="reference", threshold="threshold")

st.subheader("Cost")
spend = checks.filter(pl.col("check") == "cost") if checks.height else checks
if spend.is_empty():
    st.info("No cost figures yet: `mobility monitor` computes them.", icon=":material/info:")
else:
    total = spend.filter(pl.col("subject") == "total").row(0, named=True)
    measured, projected, budget = st.columns(3)
    measured.metric(
        "Measured, per month",
        f"${total['value']:,.2f}",
        help="CPU time of the recorded job runs (last 30 days, scaled to a month) and the "
        "lake's size, at the price table's rates.",
    )
    projected.metric(
        "Projected to the budget's patients",
        f"${total['reference']:,.0f}",
        help="The measured cost per patient times the budget's patient count (linear).",
    )
    budget.metric("Budget per month", f"${total['threshold']:,.0f}")
    parts = spend.filter(pl.col("subject") != "total")
    st.plotly_chart(charts.cost_breakdown(parts, budget=total["threshold"]))
    st.caption(markdown_literal(total["details"]))
    _table(spend, value="measured $/month", reference="projected $/month", threshold="budget")

st.subheader("Job runs")
runs = data.recent_job_runs(lake, limit=100)
if runs.is_empty():
    st.info(
        "No job has run yet: `mobility pipeline` records each run here.", icon=":material/info:"
    )
else:
    failed = runs.filter(runs["status"] != "succeeded").height
    latest, failures = st.columns(2)
    latest.metric("Latest run", markdown_literal(f"{runs['job'][0]}: {runs['status'][0]}"))
    failures.metric("Failed among the last runs", f"{failed} of {runs.height}")
    st.dataframe(
        runs,
        hide_index=True,
        column_config={
            "started_at": st.column_config.DatetimeColumn("started (UTC)"),
            "duration_seconds": st.column_config.NumberColumn("duration (s)", format="%.1f"),
            "cpu_seconds": st.column_config.NumberColumn(
                "CPU (s)", format="%.1f", help="The job's process and its worker processes."
            ),
            "mb_read": st.column_config.NumberColumn(
                "MB read", format="%.1f", help="Read through the OS by the job and its workers."
            ),
            "mb_written": st.column_config.NumberColumn("MB written", format="%.1f"),
            "peak_rss_mb": st.column_config.NumberColumn("peak memory (MB)", format="%.0f"),
        },
    )

st.subheader("Data quality")
quality = checks.filter(pl.col("check") == "data quality") if checks.height else checks
if quality.height:
    st.caption(
        "Files ingested since the previous monitoring run (quarantine share, columns against the "
        "previous file of the same format) and the last 28 days of daily steps."
    )
    _table(quality, value="value", reference="-", threshold="threshold")
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

st.subheader("Tables")
st.caption(f"Lake: `{lake.uri}`")
st.dataframe(data.lake_tables(lake), hide_index=True)
