"""Entry point of the dashboard: ``streamlit run dashboard/app.py``.

Builds the page navigation and turns the product's expected errors (an unreadable lake, a failed
query) into one line on the page instead of a traceback. Pages hold layout only.
"""

from __future__ import annotations

import streamlit as st

from lakehouse.errors import MobilityError

st.set_page_config(page_title="Mobility", page_icon=":material/directions_walk:", layout="wide")

PAGES = {
    "Clinic": [
        st.Page(
            "views/cohort.py",
            title="Cohort overview",
            icon=":material/monitoring:",
            url_path="cohort",
            default=True,
        ),
        st.Page("views/patient.py", title="Patient", icon=":material/person:", url_path="patient"),
    ],
    "Analysts": [
        st.Page(
            "views/cohort_sql.py", title="Cohort SQL", icon=":material/database:", url_path="sql"
        ),
    ],
    "Operations": [
        st.Page(
            "views/monitoring.py",
            title="Monitoring",
            icon=":material/health_and_safety:",
            url_path="monitoring",
        ),
    ],
}

page = st.navigation(PAGES)
try:
    page.run()
except MobilityError as err:
    st.error(str(err), icon=":material/error:")
