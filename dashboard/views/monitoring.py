"""Monitoring (ops): open alerts, the latest monitoring run's checks (data freshness against
today, forecast accuracy against the backtests, drift, job health, cost against the budget, data
quality), job runs, the lake's tables.

Every value is shown in its unit with its threshold's direction (:mod:`dashboard.monitoring_table`),
statuses as coloured words, missing values as empty cells."""

from __future__ import annotations

import polars as pl
import streamlit as st

from dashboard import auth, charts, data
from dashboard.literal import markdown_literal
from dashboard.monitoring_table import details_text, problem_lines, shown_checks, styled

# UTC times to the minute (Streamlit's default shows seconds and "+00:00")
WHEN = "YYYY-MM-DD HH:mm"
# pixels that show the longest status, "too little data", whole in bold
STATUS_PX = 120

auth.require("monitoring")
st.title("Monitoring")
lake = data.current_lake()
checks = data.latest_checks(lake)
alerts = data.alerts(lake)
open_alerts = alerts.filter(pl.col("resolved_at").is_null()) if alerts.height else alerts


def _of(*kinds: str) -> pl.DataFrame:
    """The latest run's checks of these kinds."""
    return checks.filter(pl.col("check").is_in(kinds)) if checks.height else checks


def _table(
    rows: pl.DataFrame,
    *,
    value: str = "value",
    reference: str | None = None,
    threshold: str = "threshold",
    with_check: bool = False,
    problems: bool = True,
) -> None:
    """Checks as a table of text (status coloured, each number in its unit), and under it, when
    ``problems``, a line per check that warns or alerts with its details whole."""
    shown = [
        "status",
        *(["check"] if with_check else []),
        "subject",
        "metric",
        "value",
        *(["reference"] if reference else []),
        "threshold",
        "details",
    ]
    st.dataframe(
        styled(shown_checks(rows)),
        hide_index=True,
        column_order=shown,
        placeholder="",
        column_config={
            "status": st.column_config.TextColumn("status", width=STATUS_PX),
            "subject": st.column_config.TextColumn("subject", width="medium"),
            "value": st.column_config.TextColumn(value),
            "reference": st.column_config.TextColumn(reference or "reference"),
            "threshold": st.column_config.TextColumn(threshold),
            "details": st.column_config.TextColumn("details", width="large"),
        },
    )
    lines = problem_lines(rows) if problems else []
    if lines:
        st.markdown("  \n".join(lines))


if checks.is_empty():
    st.info(
        "No monitoring run yet: `mobility monitor` (the last stage of `mobility pipeline`) "
        "checks data freshness, forecast accuracy, drift, job health and cost.",
        icon=":material/info:",
    )
else:
    counts = dict(checks.group_by("status").len().iter_rows())
    alerts_open, alerting, warning, ok, little = st.columns(5)
    alerts_open.metric("Open alerts", f"{open_alerts.height:,}")
    alerting.metric("Checks alerting", f"{counts.get('alert', 0):,}")
    warning.metric("Checks warning", f"{counts.get('warning', 0):,}")
    ok.metric("Checks ok", f"{counts.get('ok', 0):,}")
    little.metric("Too little data", f"{counts.get('too little data', 0):,}")
    st.caption(
        f"Latest monitoring run: {checks['checked_at'][0]:%Y-%m-%d %H:%M} UTC. Thresholds are "
        "inclusive: a value at its threshold warns or alerts."
    )

st.subheader("Alerts")
if alerts.is_empty():
    st.success("No alert has been raised.", icon=":material/check_circle:")
else:
    st.dataframe(
        alerts.with_columns(
            state=pl.when(pl.col("resolved_at").is_null())
            .then(pl.lit("open"))
            .otherwise(pl.lit("resolved")),
            message=pl.col("message").map_elements(details_text, return_dtype=pl.String),
        ),
        hide_index=True,
        placeholder="",
        column_order=("state", "raised_at", "resolved_at", "check", "subject", "message"),
        column_config={
            "state": st.column_config.TextColumn("state", width="small"),
            "raised_at": st.column_config.DatetimeColumn("raised (UTC)", format=WHEN),
            "resolved_at": st.column_config.DatetimeColumn("resolved (UTC)", format=WHEN),
            "subject": st.column_config.TextColumn("subject", width="medium"),
            "message": st.column_config.TextColumn("message", width="large"),
        },
    )

st.subheader("Data freshness")
freshness = _of("data freshness")
if freshness.is_empty():
    st.info(
        "No freshness check yet: `mobility monitor` measures it once there are daily steps.",
        icon=":material/info:",
    )
else:
    st.caption(
        "Days without data before yesterday (the last complete day) by the monitoring run's "
        "clock: the lake's newest day (an alert from `MOBILITY_FRESHNESS_DAYS` days), and the "
        "patients without data for 7 days or more (or ever)."
    )
    _table(freshness)

st.subheader("Forecast accuracy")
accuracy = _of("accuracy")
if accuracy.is_empty():
    st.info(
        "No matured forecast yet: accuracy is scored once the days a forecast covered have "
        "happened (wear days of the last 28 days of data).",
        icon=":material/info:",
    )
else:
    st.caption(
        "MAE of stored forecasts on the days that have since happened, against the mean backtest "
        "MAE of the latest training at the same horizon. At 110% or more, and worse than the "
        "backtest beyond chance (the lower 95% bound, patients as units), a cluster's champion "
        "raises an alert that makes training due at the next pipeline run; other models show a "
        "warning."
    )
    _table(accuracy, value="MAE now", reference="backtest MAE", threshold="alert at")

st.subheader("Feature and prediction drift")
drifting = _of("feature drift", "prediction drift")
if drifting.is_empty():
    st.info(
        "No drift checks yet: the first monitoring run after a training captures the population "
        "the models were trained for; later runs compare against it.",
        icon=":material/info:",
    )
else:
    st.caption(
        "Each model input and the champion forecast, now against the population at the last "
        "training. Up to 1,000 patients the Kolmogorov-Smirnov test (K-S p-value: 0.05 or less a "
        "warning, 0.01 or less an alert); above, the population stability index (PSI: 0.1 or "
        "more a warning, 0.2 or more an alert)."
    )
    _table(drifting, threshold="alert at", with_check=True)
    with st.expander("Distributions: now against the reference"):
        subject = st.selectbox("Input", drifting["subject"].to_list(), key="drift_subject")
        row = drifting.filter(pl.col("subject") == subject).row(0, named=True)
        st.plotly_chart(charts.drift_shares(row["details"], title=subject))

st.subheader("Job health")
health = _of("job health")
if health.is_empty():
    st.info("No job health checks yet.", icon=":material/info:")
else:
    st.caption(
        "Each job's latest run, and the hours since the daily stages (aggregate, features, "
        "forecast) last succeeded: an alert from 26 hours."
    )
    _table(health, threshold="alert at")

st.subheader("Cost")
spend = _of("cost")
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
    summary = details_text(total["details"])
    if total["status"] in ("warning", "alert"):
        st.warning(markdown_literal(summary), icon=":material/warning:")
    elif summary:
        st.caption(markdown_literal(summary))
    parts = spend.filter(pl.col("subject") != "total")
    st.plotly_chart(charts.cost_breakdown(parts, budget=total["threshold"]))
    # the total's warning or alert is the message above
    _table(spend, value="measured", reference="projected", threshold="budget", problems=False)

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
    failures.metric("Failed among the last runs", f"{failed:,} of {runs.height:,}")
    st.dataframe(
        runs,
        hide_index=True,
        placeholder="",
        column_config={
            "started_at": st.column_config.DatetimeColumn("started (UTC)", format=WHEN),
            "duration_seconds": st.column_config.NumberColumn("duration (s)", format="%,.1f"),
            "rows_in": st.column_config.NumberColumn("rows in", format="%,d"),
            "rows_out": st.column_config.NumberColumn("rows out", format="%,d"),
            "cpu_seconds": st.column_config.NumberColumn(
                "CPU (s)", format="%,.1f", help="The job's process and its worker processes."
            ),
            "mb_read": st.column_config.NumberColumn(
                "MB read", format="%,.1f", help="Read through the OS by the job and its workers."
            ),
            "mb_written": st.column_config.NumberColumn("MB written", format="%,.1f"),
            "peak_rss_mb": st.column_config.NumberColumn("peak memory (MB)", format="%,.0f"),
            "error": st.column_config.TextColumn("error", width="large"),
            "run_id": st.column_config.TextColumn("run"),
        },
    )

st.subheader("Data quality")
quality = _of("data quality")
if quality.height:
    st.caption(
        "Files ingested since the previous monitoring run (quarantine share, columns against the "
        "previous file of the same format) and the last 28 days up to yesterday of daily steps "
        "(wear as the cohort page counts it)."
    )
    _table(quality)
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
        placeholder="",
        column_config={
            "reason": st.column_config.TextColumn("reason", width="large"),
            "rows": st.column_config.NumberColumn("rows", format="%,d"),
            "files": st.column_config.NumberColumn("files", format="%,d"),
            "latest": st.column_config.DatetimeColumn("latest (UTC)", format=WHEN),
        },
    )

st.subheader("Tables")
st.caption(f"Lake: `{lake.uri}`")
st.dataframe(
    data.lake_tables(lake).with_columns(pl.col("partitioned_by").replace("-", "")),
    hide_index=True,
    placeholder="",
    column_config={
        "version": st.column_config.NumberColumn("version", format="%d"),
        "rows": st.column_config.NumberColumn("rows", format="%,d"),
        "files": st.column_config.NumberColumn("files", format="%,d"),
        "size_mb": st.column_config.NumberColumn("size (MB)", format="%,.2f"),
        "partitioned_by": st.column_config.TextColumn("partitioned by"),
        "description": st.column_config.TextColumn("description", width="large"),
    },
)
