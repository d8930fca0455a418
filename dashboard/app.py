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
        st.Page("pages/overview.py", title="Overview", icon=":material/monitoring:", default=True),
        st.Page("pages/patient.py", title="Patient", icon=":material/person:"),
    ],
    "Operations": [
        st.Page("pages/job_runs.py", title="Job runs", icon=":material/history:"),
    ],
}

page = st.navigation(PAGES)
try:
    page.run()
except MobilityError as err:
    st.error(str(err), icon=":material/error:")
