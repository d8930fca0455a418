"""Entry point of the dashboard: ``streamlit run dashboard/app.py``.

Signs the user in (:mod:`dashboard.auth`), builds the page navigation with the pages of their
roles (the others are hidden: a direct address to one shows a refusal and loads nothing), records
the page view in the audit log (written before the page shows data, see
:func:`dashboard.auth.require`), and turns the product's expected errors (an unreadable lake, a
failed query) into one line on the page instead of a traceback. Pages hold layout only.
"""

from __future__ import annotations

import streamlit as st
from streamlit.navigation.page import StreamlitPage

from dashboard import auth, data
from dashboard.literal import markdown_literal
from lakehouse.errors import MobilityError
from lakehouse.settings import apply_file_mode, get_settings

# an emoji: the browser draws it itself (a Material icon favicon is fetched from Google's fonts)
st.set_page_config(page_title="Mobility", page_icon="🚶", layout="wide")

# section, file, title, icon, url path
PAGES = (
    ("Clinic", "views/cohort.py", "Cohort overview", ":material/monitoring:", "cohort"),
    ("Clinic", "views/patient.py", "Patient", ":material/person:", "patient"),
    ("Analysts", "views/cohort_sql.py", "Cohort SQL", ":material/database:", "sql"),
    (
        "Operations",
        "views/monitoring.py",
        "Monitoring",
        ":material/health_and_safety:",
        "monitoring",
    ),
    ("Operations", "views/audit.py", "Audit log", ":material/policy:", "audit"),
    ("Operations", "views/reidentify.py", "Re-identification", ":material/badge:", "reidentify"),
)


def _navigation(user: auth.User) -> tuple[StreamlitPage, str]:
    """The page this run shows and its url path. Every page is registered (a refused one
    hidden), so an address to a refused page reaches the refusal, not the default page."""
    allowed = [path for *_, path in PAGES if user.may_open(path)]
    sections: dict[str, list[StreamlitPage]] = {}
    by_page: dict[int, str] = {}
    for section, file, title, icon, path in PAGES:
        page = st.Page(
            file,
            title=title,
            icon=icon,
            url_path=path,
            default=bool(allowed) and path == allowed[0],
            visibility="visible" if path in allowed else "hidden",
        )
        sections.setdefault(section if path in allowed else "", []).append(page)
        by_page[id(page)] = path
    chosen = st.navigation(sections)
    return chosen, by_page.get(id(chosen), "")


try:
    # the audit log and anything else this server writes: 0600/0700 (MOBILITY_FILE_MODE)
    apply_file_mode(get_settings())
    lake = data.current_lake()
    user = auth.signed_in_user(lake)
    page, path = _navigation(user)
    auth.sidebar(user, lake)
    if user.demo:
        st.warning(auth.DEMO_BANNER, icon=":material/science:")
    if not user.may_open(path):
        auth.record(lake, user, "refused", path or "unknown", outcome="role")
        st.error(auth.refusal(user, path), icon=":material/block:")
        st.stop()
    auth.record_page_view(lake, user, path)
    try:
        page.run()
    finally:
        # events of a page that stopped before showing data are written all the same
        auth.wait_until_recorded()
except MobilityError as err:
    # a message may quote a file name or a value of the data: shown as text
    st.error(markdown_literal(err), icon=":material/error:")
