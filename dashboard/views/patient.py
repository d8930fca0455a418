"""Patient: daily steps with the forecast of the year ahead (the champion of the patient's group
with its 80% range; the other models behind a toggle), therapies and side effects on the same
time axis, the explanation of that forecast for a chosen month or day, and the models'
accuracy."""

from __future__ import annotations

from datetime import date, timedelta

import polars as pl
import streamlit as st

from dashboard import auth, charts, data, report
from dashboard.literal import markdown_literal
from jobs.recent_activity import ENOUGH_WEAR, WEAR_WINDOW_DAYS, as_of
from lakehouse import csv_export

# the clinical tables' headers (calendar days shown without a time of day)
THERAPY_HEADERS = {
    "therapy": st.column_config.TextColumn("Therapy", width="medium"),
    "start_date": st.column_config.DateColumn("Started", format="YYYY-MM-DD"),
    "end_date": st.column_config.DateColumn(
        "Ended", format="YYYY-MM-DD", help="Empty while the therapy goes on."
    ),
}
SIDE_EFFECT_HEADERS = {
    "date": st.column_config.DateColumn("Reported", format="YYYY-MM-DD"),
    "effect": st.column_config.TextColumn("Side effect", width="medium"),
    "severity": st.column_config.NumberColumn(
        "CTCAE grade",
        help="Common Terminology Criteria for Adverse Events: 1 mild, 2 moderate, 3 severe, "
        "4 life-threatening, 5 death.",
    ),
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

reference = as_of()
summary = data.patient_summary(
    lake, patient_id, reference, daily_steps=daily_steps, therapies=therapies
)
if profile is not None and summary is not None:
    activity = summary.activity
    # sex, country and time zone are as patients.csv wrote them: shown as text, never Markdown
    header = " · ".join(
        part
        for part in (
            f"disease group {profile.disease_group}",
            f"age {summary.age} (born {profile.birth_year})" if summary.age is not None else "",
            profile.sex or "",
            profile.country or "",
            f"enrolled {profile.enrolled_on:%d %b %Y}" if profile.enrolled_on else "",
            f"time zone {profile.timezone}",
        )
        if part
    )
    st.caption(markdown_literal(header))
    # made when clicked, after its own audit row is written (a download is a view of its own)
    st.download_button(
        "Printable report (PDF)",
        data=report.deferred_report(
            lake,
            auth.audit_event(user, "report", "patient"),
            patient_id,
            active=lambda: auth.still_active(user),
        ),
        file_name=report.report_file_name(patient_id),
        mime="application/pdf",
        on_click="ignore",
        icon=":material/picture_as_pdf:",
        key="download_report",
        help="One or two A4 pages for the patient record: the summary, the chart, the forecast "
        "with its explanation, therapies and data completeness. Recorded in the audit log.",
    )
    last_data, wear, recent, baseline = st.columns(4)
    last_day = activity["last_day"]
    silent = activity["days_without_data"]
    last_data.metric(
        "Last day with data",
        f"{last_day:%d %b %Y}" if isinstance(last_day, date) else "none yet",
        delta=None if silent is None else ("up to date" if silent == 0 else f"{silent} days ago"),
        delta_color="off" if not activity["no_data"] else "inverse",
        delta_arrow="off",
        help=f"Measured against {reference:%d %b %Y} (yesterday).",
    )
    wear.metric(
        f"Worn, last {WEAR_WINDOW_DAYS} days",
        f"{activity['worn_days']} days",
        delta=f"{activity['wear']:.0%}",
        delta_color="off" if not activity["low_wear"] else "inverse",
        delta_arrow="off",
        help=f"Days with at least 8 hours of wear and some steps, of the {WEAR_WINDOW_DAYS} days "
        f"up to {reference:%d %b %Y}; below {ENOUGH_WEAR:.0%} the figures below rest on few "
        "days.",
    )
    change = activity["change"]
    # the unit in the label: a card is too narrow for "4,516 steps/day"
    recent.metric(
        "Last 30 days, steps/day",
        "too few days" if activity["recent_mean"] is None else f"{activity['recent_mean']:,.0f}",
        delta=None if change is None else f"{change:+.0%} against the baseline",
        help=f"Mean of the worn days of the 30 days up to {reference:%d %b %Y} (at least 10 "
        "needed).",
    )
    baseline.metric(
        "Baseline, steps/day",
        "too few days" if activity["baseline"] is None else f"{activity['baseline']:,.0f}",
        help="Mean of the worn days of the 180 days before the last 30 (at least 60 needed).",
    )
    diagnoses, current = st.columns(2)
    with diagnoses:
        if summary.diagnoses.is_empty():
            st.caption("No diagnosis on record.")
        else:
            st.dataframe(
                summary.diagnoses,
                hide_index=True,
                column_config={
                    "code": st.column_config.TextColumn("ICD-10", width="small"),
                    "name": st.column_config.TextColumn("Diagnosis", width="large"),
                    "diagnosed_on": st.column_config.DateColumn("Diagnosed", format="YYYY-MM-DD"),
                },
            )
    with current:
        if summary.current_therapies.is_empty():
            st.caption(f"No therapy running on {reference:%d %b %Y}.")
        else:
            st.dataframe(
                summary.current_therapies,
                hide_index=True,
                column_config={
                    "therapy": st.column_config.TextColumn("Current therapy", width="medium"),
                    "start_date": st.column_config.DateColumn("Since", format="YYYY-MM-DD"),
                },
            )

shown = data.shown_model(forecast)
if daily_steps.is_empty():
    st.info("No daily steps for this patient yet: run `mobility pipeline`.", icon=":material/info:")
else:
    history_pick, compare_pick = st.columns([2, 3])
    history = history_pick.segmented_control(
        "History shown",
        list(data.HISTORY_RANGES),
        default="1 year",
        key="history_range",
    )
    others = compare_pick.toggle(
        "Compare with the other models",
        key="compare_models",
        disabled=forecast["model"].n_unique() < 2 if forecast.height else True,
        help="Draws the forecasts of the models that were not chosen, each under its name.",
    )
    st.plotly_chart(
        charts.patient_timeline(
            data.recent_history(daily_steps, data.HISTORY_RANGES.get(history or "1 year")),
            forecast,
            therapies,
            side_effects,
            patient_id=patient_id,
            others=others,
        )
    )

if forecast.is_empty() or shown is None:
    st.info(
        "No forecast for this patient yet: `mobility pipeline` forecasts every patient.",
        icon=":material/info:",
    )
else:
    origin = forecast["origin_date"][0]
    champion = bool(forecast.filter(pl.col("model") == shown)["champion"].any())
    group = profile.disease_group if profile is not None else "OTHER"
    newest = daily_steps["date"].max() if daily_steps.height else None
    chosen = markdown_literal(data.forecast_choice(lake, patient_id, group, shown))
    st.caption(
        f"Forecast from {origin.day} {origin:%b %Y} for 365 days by the "
        f"**{markdown_literal(data.model_name(shown))}**. {chosen} The band is its 80% "
        "range: 8 of 10 days are expected inside it."
        + (
            f" Data up to {newest.day} {newest:%b %Y} arrived since: the next `mobility forecast` "
            "updates it."
            if isinstance(newest, date) and newest >= origin
            else ""
        )
    )
    st.subheader("Why: the forecast explained")
    kind_pick, when_pick = st.columns(2)
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
        what = f"{day:%A %d %B %Y}"
    explanation = data.forecast_explanation(
        lake,
        patient_id,
        forecast,
        daily_steps,
        therapies,
        model=shown,
        first_day=first_day,
        last_day=last_day,
    )
    if explanation is None:
        st.info("No forecast for these days.", icon=":material/info:")
    else:
        # the summary may name therapies as recorded: shown as text
        st.markdown(markdown_literal(explanation.summary))
        title = (
            f"Forecast for {what}: {charts.whole_steps([explanation.forecast])[0]:,} steps/day"
            + (" on average" if explanation.days > 1 else "")
        )
        st.plotly_chart(charts.explanation_waterfall(explanation.rows, title=title))
        st.caption(
            "The blue bar is where the forecast starts; each bar below adds (green) or takes "
            "away (red) steps per day; the orange bar is the forecast, the sum of the bars. "
            "Point at a bar for what it covers."
            + (
                ""
                if explanation.from_model
                else " Worked out from the forecast and the worn days before it started."
            )
        )

    st.subheader("How accurate the models are for this disease group")
    accuracy = data.cluster_accuracy(lake, group)
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
            data.with_model_names(
                accuracy.filter(pl.col("horizon_days") == horizon).with_columns(
                    chosen=pl.lit(champion) & (pl.col("model") == shown)
                )
            ),
            hide_index=True,
            column_order=("model", "chosen", "mae", "mase", "coverage", "origins", "patients"),
            column_config={
                "model": st.column_config.TextColumn("Model"),
                "chosen": st.column_config.CheckboxColumn("Chosen"),
                "mae": st.column_config.NumberColumn(
                    "Typical error",
                    format="%.0f",
                    help="Average difference between forecast and actual steps per day.",
                ),
                "mase": st.column_config.NumberColumn(
                    "Relative error",
                    format="%.2f",
                    help="The typical error divided by that of repeating the same weekday of "
                    "last week: below 1 is better than that.",
                ),
                "coverage": st.column_config.NumberColumn(
                    "Inside 80% range",
                    format="percent",
                    help="Share of days whose steps fell inside the model's 80% range.",
                ),
                "origins": st.column_config.NumberColumn(
                    "Forecasts tested", help="Past forecast start days scored."
                ),
                "patients": st.column_config.NumberColumn("Patients"),
            },
        )
        st.caption(
            f"How each model did when it forecast the past of disease group "
            f"{markdown_literal(group)} (latest training): the errors over the first N days "
            "ahead (worn days only), in steps per day."
        )

    st.download_button(
        "Download the forecast (CSV)",
        data=csv_export.frame_csv(forecast),
        file_name=f"forecast-{patient_id}.csv",
        mime="text/csv",
        icon=":material/download:",
        key="download_forecast",
    )

for column, title, table, headers in zip(
    st.columns(2),
    ("Therapies", "Side effects"),
    (therapies, side_effects),
    (THERAPY_HEADERS, SIDE_EFFECT_HEADERS),
    strict=True,
):
    with column:
        st.subheader(title)
        if table.is_empty():
            st.caption("None recorded.")
        else:
            st.dataframe(table, hide_index=True, column_config=headers, placeholder="")
