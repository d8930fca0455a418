"""Patient: one patient's daily steps with therapies, side effects and non-wear days."""

from __future__ import annotations

import streamlit as st

from dashboard import charts, data

# calendar days, shown without a time of day
DATES = {
    column: st.column_config.DateColumn(format="YYYY-MM-DD")
    for column in ("date", "start_date", "end_date")
}

st.title("Patient")
lake = data.current_lake()

group_filter, search_filter = st.columns(2)
group = group_filter.selectbox("Disease group", ["All", *data.DISEASE_GROUPS], key="disease_group")
search = search_filter.text_input("Patient id contains", key="patient_search")
ids = data.patient_ids(lake, disease_group=None if group == "All" else group, search=search or None)

if not ids:
    if group == "All" and not search:
        st.info(
            "No patients yet: run `mobility generate --patients 20 --seed 42` or ingest "
            "data, then `mobility pipeline`.",
            icon=":material/info:",
        )
    else:
        st.info("No patient matches the filters.", icon=":material/search_off:")
    st.stop()

if len(ids) == data.MAX_PATIENT_OPTIONS:
    st.caption(f"Showing the first {data.MAX_PATIENT_OPTIONS:,} matches; narrow the search.")
patient_id = st.selectbox("Patient", ids, key="patient_id")
assert patient_id is not None

profile = data.patient_profile(lake, patient_id)
if profile is not None:
    st.caption(
        " · ".join(
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
    )

daily_steps = data.patient_daily_steps(lake, patient_id)
therapies = data.patient_therapies(lake, patient_id)
side_effects = data.patient_side_effects(lake, patient_id)

if daily_steps.is_empty():
    st.info("No daily steps for this patient yet: run `mobility pipeline`.", icon=":material/info:")
else:
    st.plotly_chart(
        charts.patient_daily_steps(daily_steps, therapies, side_effects, patient_id=patient_id)
    )
    st.subheader("Recent days")
    st.dataframe(data.recent_days(daily_steps), hide_index=True, column_config=DATES)

for column, title, rows in zip(
    st.columns(2), ("Therapies", "Side effects"), (therapies, side_effects), strict=True
):
    with column:
        st.subheader(title)
        if rows.is_empty():
            st.caption("None recorded.")
        else:
            st.dataframe(rows, hide_index=True, column_config=DATES)
