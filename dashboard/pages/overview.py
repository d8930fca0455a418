"""Overview: headline figures, steps by disease group, and the lake's tables."""

from __future__ import annotations

import streamlit as st

from dashboard import charts, data

EMPTY_LAKE = (
    "No data yet: run `mobility generate --patients 20 --seed 42` (a synthetic demo) or "
    "`mobility ingest FILE`, then `mobility pipeline`. `./scripts/run` does all of this."
)

st.title("Overview")
lake = data.current_lake()
kpis = data.overview_kpis(lake)

if kpis.is_empty:
    st.info(EMPTY_LAKE, icon=":material/info:")
else:
    patients, patient_days, median_steps, wear_share = st.columns(4)
    patients.metric("Patients", f"{kpis.patients:,}")
    patient_days.metric("Patient-days", f"{kpis.patient_days:,}")
    median_steps.metric(
        "Median daily steps (wear days)",
        "–" if kpis.median_wear_day_steps is None else f"{kpis.median_wear_day_steps:,.0f}",
        help="Median over all wear days of all patients; non-wear days are missing data.",
    )
    wear_share.metric(
        "Wear days",
        "–" if kpis.wear_day_share is None else f"{kpis.wear_day_share:.0%}",
        help="Share of patient-days with enough coverage to count as worn.",
    )
    if kpis.patient_days == 0:
        st.info("No daily steps yet: run `mobility pipeline`.", icon=":material/info:")
    else:
        groups = data.steps_by_disease_group(lake)
        if groups.is_empty():
            st.info("No wear days yet.", icon=":material/info:")
        else:
            st.plotly_chart(charts.steps_by_disease_group(groups))
            st.dataframe(groups, hide_index=True)

st.subheader("Tables")
st.caption(f"Lake: `{lake.uri}`")
st.dataframe(data.lake_tables(lake), hide_index=True)
