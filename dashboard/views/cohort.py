"""Cohort overview: filters, headline figures, the worklist (every patient, those who need
attention first), the patients whose forecast falls well below their own baseline, and steps by
group and week."""

from __future__ import annotations

import math

import streamlit as st

from dashboard import auth, charts, data
from jobs.outlook import DECLINE_SHARE
from jobs.recent_activity import ENOUGH_WEAR, NO_DATA_DAYS, WEAR_WINDOW_DAYS, as_of

EMPTY_LAKE = (
    "No data yet: run `mobility generate --patients 20 --seed 42` (a synthetic demo) or "
    "`mobility ingest FILE`, then `mobility pipeline`. `./scripts/run` does all of this."
)

user = auth.require("cohort")
st.title("Cohort overview")
lake = data.current_lake()
period = data.data_period(lake)
if period is None:
    st.info(EMPTY_LAKE, icon=":material/info:")
    st.stop()
first_day, last_day = period

groups_filter, therapy_filter, age_filter, period_filter = st.columns(4)
groups = groups_filter.multiselect(
    "Disease group", data.DISEASE_GROUPS, key="cohort_groups", placeholder="All groups"
)
therapies = therapy_filter.multiselect(
    "Therapy in the period",
    data.therapy_names(lake),
    key="cohort_therapies",
    placeholder="Any therapy or none",
)
ages = age_filter.multiselect("Age band", data.AGE_BANDS, key="cohort_ages", placeholder="All ages")
chosen = period_filter.date_input(
    "Period",
    value=(data.CohortFilter.default(period).first_day, last_day),
    min_value=first_day,
    max_value=last_day,
    key="cohort_period",
)
if not isinstance(chosen, tuple) or len(chosen) != 2:
    st.info("Pick the last day of the period too.", icon=":material/date_range:")
    st.stop()
cohort = data.CohortFilter(
    first_day=chosen[0],
    last_day=chosen[1],
    disease_groups=tuple(groups),
    age_bands=tuple(ages),
    therapies=tuple(therapies),
)

reference = as_of()
data.start_recent_activity(lake, reference)  # Polars, while DuckDB computes the figures below
kpis = data.cohort_kpis(lake, cohort)
order = st.session_state.get("worklist_order", data.DEFAULT_WORKLIST_ORDER)
worklist = data.worklist(lake, cohort, reference, order=order)
declining = data.declining_patients(lake, cohort)
patients, median_steps, silent, enough_wear, decline = st.columns(5)
patients.metric(
    "Patients",
    f"{kpis.patients:,}",
    help=f"{kpis.patients_with_data:,} of them with daily steps in the period.",
)
median_steps.metric(
    "Median daily steps",
    "–" if kpis.median_wear_day_steps is None else f"{kpis.median_wear_day_steps:,.0f}",
    help="Median over the wear days in the period; non-wear days are missing data, not zero.",
)
silent.metric(
    f"No data for {NO_DATA_DAYS}+ days",
    f"{int(worklist['no_data'].sum()):,}",
    help=f"Patients whose last day with data is {NO_DATA_DAYS} or more days before "
    f"{reference:%d %b %Y} (yesterday).",
)
enough_wear.metric(
    "Enough wear, last 28 days",
    "–" if worklist.is_empty() else f"{1 - worklist['low_wear'].mean():.0%}",  # type: ignore[operator]
    help=(
        f"Share of patients who wore their device on at least {ENOUGH_WEAR:.0%} of the "
        f"{WEAR_WINDOW_DAYS} days up to {reference:%d %b %Y} (days without any data count as "
        "not worn)."
    ),
)
more = "+" if declining.height == data.DECLINE_LIST_LENGTH else ""
decline.metric(
    "Decline expected",
    f"{declining.height}{more}",
    help=f"Patients forecast {DECLINE_SHARE:.0%} or more below their own baseline in months "
    "10-12 of the forecast.",
)

if kpis.patients == 0:
    st.info("No patient matches the filters.", icon=":material/search_off:")
    st.stop()

# a link to the patient page only for those who may open it (analysts see pseudonyms only)
links = user.may_open("patient")

st.subheader("Who needs attention")
st.caption(
    f"Every patient of the cohort as of {reference:%d %b %Y} (yesterday), those with the most "
    f"reasons first: no data for {NO_DATA_DAYS}+ days, wear on fewer than {ENOUGH_WEAR:.0%} of "
    f"the last {WEAR_WINDOW_DAYS} days, or a decline of {DECLINE_SHARE:.0%} or more expected in "
    "months 10-12 of the forecast. Click a column header to sort this page; choose the order of "
    "all pages below."
)
order_pick, page_pick, page_count = st.columns([2, 1, 2])
order_pick.selectbox(
    "Order", list(data.WORKLIST_ORDERS), key="worklist_order", help="Order of the whole list."
)
pages = max(1, -(-worklist.height // data.WORKLIST_PAGE_ROWS))
page = int(
    page_pick.number_input("Page", min_value=1, max_value=pages, value=1, key="worklist_page")
)
first_row = (page - 1) * data.WORKLIST_PAGE_ROWS
shown = worklist.slice(first_row, data.WORKLIST_PAGE_ROWS)
page_count.caption(
    f"Patients {first_row + 1:,}-{first_row + shown.height:,} of {worklist.height:,} "
    f"({pages:,} {'page' if pages == 1 else 'pages'})"
)
st.dataframe(
    data.with_patient_links(shown) if links else shown,
    hide_index=True,
    column_order=(
        *(("open",) if links else ()),
        "patient_id",
        "disease_group",
        "age_band",
        "reasons",
        "last_day",
        "days_without_data",
        "worn_days",
        "recent_mean",
        "baseline",
        "change",
        "forecast_change",
    ),
    column_config={
        "open": st.column_config.LinkColumn("patient page", display_text="open"),
        "patient_id": st.column_config.TextColumn("patient", width="medium"),
        "disease_group": "group",
        "age_band": "age",
        "reasons": st.column_config.TextColumn("needs attention because", width="large"),
        "last_day": st.column_config.DateColumn("last day with data", format="YYYY-MM-DD"),
        "days_without_data": st.column_config.NumberColumn(
            "days without data", help="Days from the last day with data to yesterday."
        ),
        "worn_days": st.column_config.NumberColumn(
            f"worn days of last {WEAR_WINDOW_DAYS}",
            help="Days with at least 8 hours of wear and some steps.",
        ),
        "recent_mean": st.column_config.NumberColumn(
            "last 30 days (steps/day)", format="%.0f", help="Mean over the worn days."
        ),
        "baseline": st.column_config.NumberColumn(
            "baseline (steps/day)",
            format="%.0f",
            help="Mean over the worn days of the 180 days before the last 30.",
        ),
        "change": st.column_config.NumberColumn(
            "last 30 days vs baseline",
            format="percent",
            help="Negative: fewer steps than the patient's own baseline.",
        ),
        "forecast_change": st.column_config.NumberColumn(
            "forecast, months 10-12",
            format="percent",
            help="The chosen model's forecast for months 10-12 ahead against the baseline at "
            "the forecast's start.",
        ),
    },
)

st.subheader("Mobility decline expected")
st.caption(
    f"Patients whose champion forecast for months 10-12 ahead is {DECLINE_SHARE:.0%} or more "
    "below their own 180-day baseline, from each patient's latest forecast; largest fall first. "
    "Open a patient to see the forecast and why."
)
decline_columns = (
    *(("open",) if links else ()),
    "patient_id",
    "disease_group",
    "age_band",
    "baseline_steps",
    "next_quarter_steps",
    "year_end_steps",
    "year_end_change",
    "model",
    "origin_date",
)
decline_config = {
    "open": st.column_config.LinkColumn("patient page", display_text="open"),
    "patient_id": st.column_config.TextColumn("patient", width="medium"),
    "disease_group": "group",
    "age_band": "age",
    "baseline_steps": st.column_config.NumberColumn("baseline (180 d)", format="%.0f"),
    "next_quarter_steps": st.column_config.NumberColumn("next 3 months", format="%.0f"),
    "year_end_steps": st.column_config.NumberColumn("months 10-12", format="%.0f"),
    "year_end_change": st.column_config.NumberColumn("change", format="percent"),
    "model": "chosen model",
    "origin_date": st.column_config.DateColumn("forecast from", format="YYYY-MM-DD"),
}
if not data.has_forecasts(lake):
    st.info(
        "No forecasts yet: `mobility pipeline` trains the models and forecasts every patient.",
        icon=":material/info:",
    )
else:
    listed = declining
    if declining.is_empty():
        listed = data.declining_patients(
            lake, cohort, limit=data.NEAREST_DECLINES, threshold=math.inf
        )
        st.success(
            f"No patient of this cohort is forecast to fall {DECLINE_SHARE:.0%} or more below "
            f"their baseline. The {listed.height} nearest to it:",
            icon=":material/check_circle:",
        )
    if listed.height:
        listed = data.with_model_names(listed)
        st.dataframe(
            data.with_patient_links(listed) if links else listed,
            hide_index=True,
            column_order=decline_columns,
            column_config=decline_config,  # type: ignore[arg-type]
        )

st.subheader("Steps by group and week")
by_group, by_week = st.columns(2)
steps = data.cohort_steps_by_group(lake, cohort)
if steps.is_empty():
    st.info("No wear days in the period for these patients.", icon=":material/info:")
else:
    by_group.plotly_chart(charts.steps_by_disease_group(steps))
    by_week.plotly_chart(charts.weekly_trend(data.cohort_weekly_trend(lake, cohort)))
