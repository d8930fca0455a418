"""Patient: daily steps with the 365-day forecast of every model, therapies and side effects on
the same time axis, the EBM's explanation of a chosen month or day, and the models' accuracy."""

from __future__ import annotations

from datetime import date, timedelta

import polars as pl
import streamlit as st

from dashboard import auth, charts, data
from dashboard.literal import markdown_literal
from lakehouse import csv_export

# calendar days, shown without a time of day
DATES = {
    column: st.column_config.DateColumn(format="YYYY-MM-DD")
    for column in ("date", "start_date", "end_date", "target_date", "origin_date")
}

# the page view is written while the patient list loads, and the patient view while the
# patient's data loads: each is on record before what it covers is shown
user = auth.require("patient", wait_for_audit=False)
st.title("Patient")
lake = data.current_lake()

# a link from the cohort page names the patient in the address
linked = st.query_params.get("patient_id")
group_filter, search_filter = st.columns(2)
group = group_filter.selectbox("Disease group", ["All", *data.DISEASE_GROUPS], key="disease_group")
search = search_filter.text_input("Patient id contains", key="patient_search")
ids = data.patient_ids(lake, disease_group=None if group == "All" else group, search=search or None)
unfiltered = group == "All" and not search
if unfiltered and linked and linked not in ids and data.patient_profile(lake, linked) is not None:
    ids = [linked, *ids]  # beyond the first matches listed
auth.wait_until_recorded()

if not ids:
    if unfiltered:
        st.info(
            "No patients yet: run `mobility generate --patients 20 --seed 42` or ingest "
            "data, then `mobility pipeline`.",
            icon=":material/info:",
        )
    else:
        st.info("No patient matches the filters.", icon=":material/search_off:")
    st.stop()

if len(ids) >= data.MAX_PATIENT_OPTIONS:
    st.caption(f"Showing the first {data.MAX_PATIENT_OPTIONS:,} matches; narrow the search.")
patient_id = st.selectbox(
    "Patient", ids, index=ids.index(linked) if linked in ids else 0, key="patient_id"
)
assert patient_id is not None
st.query_params["patient_id"] = patient_id
# recorded in the background while the patient's data loads
auth.record_patient_view(lake, user, "patient", patient_id)
profile = data.patient_profile(lake, patient_id)
daily_steps = data.patient_daily_steps(lake, patient_id)
therapies = data.patient_therapies(lake, patient_id)
side_effects = data.patient_side_effects(lake, patient_id)
forecast = data.patient_forecast(lake, patient_id)
# nothing of the patient is shown before the view is on record
auth.wait_until_recorded()

if profile is not None:
    # sex, country and time zone are as patients.csv wrote them: shown as text, never Markdown
    header = " · ".join(
        part
        for part in (
            f"disease group {profile.disease_group}",
            f"time zone {profile.timezone}",
            f"enrolled {profile.enrolled_on}" if profile.enrolled_on else "",
            f"born {profile.birth_year}" if profile.birth_year else "",
            profile.sex or "",
            profile.country or "",
        )
        if part
    )
    st.caption(markdown_literal(header))

if daily_steps.is_empty():
    st.info("No daily steps for this patient yet: run `mobility pipeline`.", icon=":material/info:")
else:
    st.plotly_chart(
        charts.patient_timeline(
            data.recent_history(daily_steps),
            forecast,
            therapies,
            side_effects,
            patient_id=patient_id,
        )
    )

if forecast.is_empty():
    st.info(
        "No forecast for this patient yet: `mobility pipeline` forecasts every patient.",
        icon=":material/info:",
    )
else:
    origin = forecast["origin_date"][0]
    champion = forecast.filter(pl.col("champion"))["model"].unique().to_list()
    newest = daily_steps["date"].max() if daily_steps.height else None
    st.caption(
        f"Forecast from {origin:%Y-%m-%d} for 365 days"
        + (f"; champion of the cluster: **{markdown_literal(champion[0])}**" if champion else "")
        + (
            f". Data up to {newest:%Y-%m-%d} arrived since: the next `mobility forecast` "
            "updates it."
            if isinstance(newest, date) and newest >= origin
            else "."
        )
    )
    models = forecast["model"].unique().sort().to_list()
    explained = [m for m in models if m.startswith("ebm_")]
    st.subheader("Why: the forecast explained")
    if not explained:
        st.info(
            "No explainable (EBM) forecast for this patient: too little history of their own, "
            "or no model trained yet.",
            icon=":material/info:",
        )
    else:
        model_pick, kind_pick, when_pick = st.columns(3)
        model = model_pick.selectbox(
            "Model",
            explained,
            index=explained.index(champion[0]) if champion and champion[0] in explained else 0,
            key="explain_model",
        )
        kind = kind_pick.radio("Explain", ["a month", "a day"], horizontal=True, key="explain_kind")
        last = origin + timedelta(days=364)
        if kind == "a month":
            months = data.horizon_months(origin, last)
            month = when_pick.selectbox(
                "Month", months, format_func=lambda m: f"{m:%B %Y}", key="explain_month"
            )
            first_day = max(month, origin)
            last_day = min(data.month_end(month), last)
            what = f"{month:%B %Y}"
        else:
            day = when_pick.date_input(
                "Day", value=origin, min_value=origin, max_value=last, key="explain_day"
            )
            assert isinstance(day, date)
            first_day = last_day = day
            what = f"{day:%Y-%m-%d}"
        rows = data.patient_explanation(lake, patient_id, model, origin, first_day, last_day)
        if rows.is_empty():
            st.info("No explanation stored for these days.", icon=":material/info:")
        else:
            title = f"{model}: average daily steps forecast for {what}"
            st.plotly_chart(charts.explanation_waterfall(rows, title=title))
            st.caption(
                "Starts at the patient's recent level; each bar is what one input adds or takes "
                "away (a day's smaller inputs are in 'All other inputs together'). The bars add "
                "up to the forecast."
            )

    st.subheader("How accurate the models are for this cluster")
    cluster = profile.disease_group if profile is not None else "OTHER"
    accuracy = data.cluster_accuracy(lake, cluster)
    if accuracy.is_empty():
        st.info("No backtests yet: `mobility train` runs them.", icon=":material/info:")
    else:
        horizon = st.select_slider(
            "Days ahead",
            options=sorted(accuracy["horizon_days"].unique().to_list()),
            value=accuracy["horizon_days"].max(),
            key="accuracy_horizon",
        )
        st.dataframe(
            accuracy.filter(pl.col("horizon_days") == horizon).with_columns(
                champion=pl.col("model").is_in(champion)
            ),
            hide_index=True,
            column_config={
                "mae": st.column_config.NumberColumn("MAE (steps)", format="%.0f"),
                "rmse": st.column_config.NumberColumn("RMSE (steps)", format="%.0f"),
                "mase": st.column_config.NumberColumn("MASE", format="%.2f"),
                "coverage": st.column_config.NumberColumn("80% coverage", format="percent"),
            },
        )
        st.caption(
            f"Rolling-origin backtests of cluster {markdown_literal(cluster)} from the latest "
            "training: mean over "
            "the origins of the error over the first N days ahead (wear days only). MASE below "
            "1 beats last week's same weekday."
        )

    st.download_button(
        "Download the forecast (CSV)",
        data=csv_export.frame_csv(forecast),
        file_name=f"forecast-{patient_id}.csv",
        mime="text/csv",
        icon=":material/download:",
        key="download_forecast",
    )

for column, title, table in zip(
    st.columns(2), ("Therapies", "Side effects"), (therapies, side_effects), strict=True
):
    with column:
        st.subheader(title)
        if table.is_empty():
            st.caption("None recorded.")
        else:
            st.dataframe(table, hide_index=True, column_config=DATES)
