"""Cohort overview: filters, headline figures, steps by group and week, and the patients whose
forecast falls well below their own baseline."""

from __future__ import annotations

from datetime import timedelta

import streamlit as st

from dashboard import auth, charts, data
from jobs.outlook import DECLINE_SHARE

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
    value=(max(first_day, last_day - timedelta(days=364)), last_day),
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

kpis = data.cohort_kpis(lake, cohort)
declining = data.declining_patients(lake, cohort)
patients, median_steps, enough_wear, decline = st.columns(4)
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
enough_wear.metric(
    "Enough wear",
    "–" if kpis.enough_wear_share is None else f"{kpis.enough_wear_share:.0%}",
    help=(
        f"Share of patients with data whose wear days cover at least "
        f"{data.ENOUGH_WEAR_SHARE:.0%} of the days from their first to their last day in the "
        "period."
    ),
)
more = "+" if declining.height == data.DECLINE_LIST_LENGTH else ""
decline.metric(
    "Decline expected",
    f"{declining.height}{more}",
    help=f"Patients forecast {DECLINE_SHARE:.0%} or more below their own baseline in 9-12 months.",
)

if kpis.patients == 0:
    st.info("No patient matches the filters.", icon=":material/search_off:")
    st.stop()

by_group, by_week = st.columns(2)
steps = data.cohort_steps_by_group(lake, cohort)
if steps.is_empty():
    st.info("No wear days in the period for these patients.", icon=":material/info:")
else:
    by_group.plotly_chart(charts.steps_by_disease_group(steps))
    by_week.plotly_chart(charts.weekly_trend(data.cohort_weekly_trend(lake, cohort)))

st.subheader("Mobility decline expected")
st.caption(
    f"Patients whose champion forecast for months 10-12 ahead is {DECLINE_SHARE:.0%} or more "
    "below their own 180-day baseline, from each patient's latest forecast; largest fall first. "
    "Open a patient to see the forecast and why."
)
if not data.has_forecasts(lake):
    st.info(
        "No forecasts yet: `mobility pipeline` trains the models and forecasts every patient.",
        icon=":material/info:",
    )
elif declining.is_empty():
    st.success(
        f"No patient of this cohort is forecast to fall {DECLINE_SHARE:.0%} or more below "
        "their baseline.",
        icon=":material/check_circle:",
    )
else:
    # a link to the patient page only for those who may open it (analysts see pseudonyms only)
    links = user.may_open("patient")
    st.dataframe(
        data.with_patient_links(declining) if links else declining,
        hide_index=True,
        column_order=(
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
        ),
        column_config={
            "open": st.column_config.LinkColumn("patient page", display_text="open"),
            "patient_id": "patient",
            "disease_group": "group",
            "age_band": "age",
            "baseline_steps": st.column_config.NumberColumn("baseline (180 d)", format="%.0f"),
            "next_quarter_steps": st.column_config.NumberColumn("next 3 months", format="%.0f"),
            "year_end_steps": st.column_config.NumberColumn("months 10-12", format="%.0f"),
            "year_end_change": st.column_config.NumberColumn("change", format="percent"),
            "model": "champion model",
            "origin_date": st.column_config.DateColumn("forecast from", format="YYYY-MM-DD"),
        },
    )
