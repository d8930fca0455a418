"""Sign-in, roles, idle timeout, demo mode and the audit log, through Streamlit's AppTest.

AppTest cannot run ``st.login``; it takes the identity token's claims as ``AppTest.user`` (what
``st.user`` holds after a real sign-in, which tests/browser/test_login_browser.py does against an
OpenID provider on loopback).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime

import polars as pl
import pytest
from streamlit.testing.v1 import AppTest

from dashboard import auth, data
from lakehouse import audit
from lakehouse.catalog import AUDIT_LOG, REIDENTIFICATION
from lakehouse.errors import InputError, StorageError
from lakehouse.storage import Lake
from tests.dashboard.conftest import forget_caches
from tests.dashboard.demo_lake import APP
from tests.dashboard.identities import ISSUER, claims, signed_in
from tests.dashboard.rendered import shown

TIMEOUT = 30
FILES = {
    "cohort": "views/cohort.py",
    "patient": "views/patient.py",
    "sql": "views/cohort_sql.py",
    "monitoring": "views/monitoring.py",
    "audit": "views/audit.py",
    "reidentify": "views/reidentify.py",
}
TITLES = {
    "cohort": "Cohort overview",
    "patient": "Patient",
    "sql": "Cohort SQL",
    "monitoring": "Monitoring",
    "audit": "Audit log",
    "reidentify": "Re-identification",
}
# what each role may open: exactly these pages
ALLOWED = {
    "clinician": {"cohort", "patient"},
    "analyst": {"cohort", "sql"},
    "ops": {"monitoring", "audit"},
    "admin": set(FILES),
}


def _texts(elements: object) -> str:
    """What a reader sees of the elements' Markdown (errors quoting data are escaped)."""
    return "\n".join(shown(str(e.value)) for e in elements)  # type: ignore[attr-defined]


def _app(user: dict[str, object] | None = None) -> AppTest:
    app = AppTest.from_file(APP, default_timeout=TIMEOUT)
    if user is not None:
        app.user = user
    return app


def _visit(role: str, page: str, **query: str) -> AppTest:
    app = signed_in(_app(), role)
    for key, value in query.items():
        app.query_params[key] = value
    app.run()
    if page != sorted(ALLOWED[role], key=list(FILES).index)[0]:
        app.switch_page(FILES[page]).run()
    assert not app.exception, [e.value for e in app.exception]
    return app


def _events(lake: Lake, since: datetime, **equal: str) -> pl.DataFrame:
    rows = lake.read(AUDIT_LOG).filter(pl.col("at") >= since)
    for column, value in equal.items():
        rows = rows.filter(pl.col(column) == value)
    return rows.sort("at")


@pytest.fixture
def no_data_loaded(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Any query of patient data fails the test."""

    def forbidden(*_args: object, **_kwargs: object) -> object:
        raise AssertionError("data was loaded")

    for name in ("data_period", "patient_ids", "patient_daily_steps", "latest_checks"):
        monkeypatch.setattr(data, name, forbidden)
    yield


# ------------------------------------------------------------------------------- signing in


@pytest.mark.usefixtures("demo_lake", "no_data_loaded")
def test_nobody_signed_in_sees_no_page_and_no_data() -> None:
    # AppTest's default user has an email but is not logged in: that is nobody
    app = _app().run()

    assert not app.exception
    assert "Sign-in is not configured" in _texts(app.error)
    assert not app.metric and not app.dataframe and not app.get("plotly_chart")


@pytest.mark.usefixtures("demo_lake", "no_data_loaded")
def test_logged_out_user_with_login_configured_gets_a_sign_in_button() -> None:
    app = _app({"is_logged_in": False})
    app.secrets["auth"] = {
        "redirect_uri": "http://localhost:8501/oauth2callback",
        "cookie_secret": "x" * 32,
        "client_id": "mobility",
        "client_secret": "y" * 32,
        "server_metadata_url": "http://localhost:9/.well-known/openid-configuration",
    }
    app.run()

    assert not app.exception
    assert [b.label for b in app.button] == ["Sign in"]
    assert not app.metric and not app.dataframe


@pytest.mark.usefixtures("demo_lake")
@pytest.mark.parametrize("role", list(ALLOWED))
def test_each_role_opens_exactly_its_pages(role: str) -> None:
    for page in FILES:
        app = _visit(role, page)
        headings = [t.value for t in app.title]
        if page in ALLOWED[role]:
            assert TITLES[page] in headings, (role, page, _texts(app.error))
            assert "Not for your role" not in _texts(app.error)
        else:
            assert TITLES[page] not in headings, (role, page)
            refusal = _texts(app.error)
            assert "Not for your role" in refusal and "Nothing was loaded" in refusal
            assert not app.metric and not app.dataframe and not app.get("plotly_chart")


@pytest.mark.usefixtures("demo_lake")
def test_a_refused_page_loads_nothing_and_is_audited(
    demo_lake: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    lake = data.current_lake()
    since = datetime.now(UTC)
    app = signed_in(_app(), "analyst").run()
    loaded: list[str] = []
    original = data.patient_daily_steps

    def spy(lake: Lake, patient_id: str) -> pl.DataFrame:
        loaded.append(patient_id)
        return original(lake, patient_id)

    monkeypatch.setattr(data, "patient_daily_steps", spy)
    app.switch_page(FILES["patient"]).run()

    assert "Not for your role" in _texts(app.error)
    assert loaded == []
    refused = _events(lake, since, user="analyst@example.org", action="refused")
    assert refused["page"].to_list() == ["patient"]
    assert refused["roles"].to_list() == ["analyst"]


@pytest.mark.usefixtures("demo_lake")
def test_analysts_see_pseudonyms_without_links_to_patients() -> None:
    analyst = _visit("analyst", "cohort")
    worklist, declining = (frame.value for frame in analyst.dataframe[:2])
    assert sorted(worklist["patient_id"]) == ["P001", "P002", "P003"]
    assert declining["patient_id"].tolist() == ["P001"]
    assert all("open" not in frame.value.columns for frame in analyst.dataframe)

    clinician = _visit("clinician", "cohort")
    worklist, declining = (frame.value for frame in clinician.dataframe[:2])
    assert worklist["open"].tolist() == [
        f"patient?patient_id={pid}" for pid in worklist["patient_id"]
    ]
    assert declining["open"].tolist() == ["patient?patient_id=P001"]


@pytest.mark.usefixtures("demo_lake")
def test_an_identity_without_a_role_is_refused_and_audited() -> None:
    lake = data.current_lake()
    since = datetime.now(UTC)
    app = _app(claims("stranger@example.org")).run()

    assert "has no role in Mobility" in _texts(app.error)
    assert [b.label for b in app.button] == ["Sign out"]
    assert not app.metric and not app.dataframe
    refused = _events(lake, since, user="stranger@example.org")
    assert refused.select("action", "page", "outcome").rows() == [("refused", "sign-in", "no role")]


# email_verified values that do not vouch for the email (None: the claim is missing)
UNVERIFIED = [None, False, "false", "False", 0, 1, "yes", "", "true ", ["true"]]


def _admin_claims(
    verified: object, *, sub: str = "mallory-7", groups: list[str] | None = None
) -> dict[str, object]:
    """A token with the admin's email, its ``email_verified`` set to ``verified`` (removed when
    None), and a subject that is not the admin's."""
    token = claims("admin@example.org", sub=sub, groups=groups)
    token.pop("email_verified")
    if verified is not None:
        token["email_verified"] = verified
    return token


@pytest.mark.parametrize(
    ("verified", "groups", "expected"),
    [
        *(pytest.param(v, [], set(), id=f"unverified-{v!r}") for v in UNVERIFIED),
        pytest.param(True, [], {"admin"}, id="verified-True"),
        # some providers send the claim as text
        pytest.param("true", [], {"admin"}, id="verified-'true'"),
        pytest.param("TRUE", [], {"admin"}, id="verified-'TRUE'"),
        pytest.param(None, ["mobility-admins"], {"admin"}, id="groups-only"),
        pytest.param("false", ["mobility-admins"], {"admin"}, id="groups-unverified-email"),
        pytest.param(None, ["visitors"], set(), id="neither"),
    ],
)
def test_roles_come_only_from_a_verified_email_or_the_groups_claim(
    verified: object, groups: list[str], expected: set[str]
) -> None:
    roles = auth.role_map().roles_of(_admin_claims(verified, groups=groups))

    assert roles == expected


@pytest.mark.usefixtures("demo_lake", "no_data_loaded")
@pytest.mark.parametrize("verified", UNVERIFIED, ids=repr)
def test_an_unverified_admin_email_is_refused_and_audited_by_its_subject(verified: object) -> None:
    lake = data.current_lake()
    since = datetime.now(UTC)
    app = _app(_admin_claims(verified)).run()

    assert not app.exception
    refusal = _texts(app.error)
    assert "has no role in Mobility" in refusal and "did not mark it verified" in refusal
    assert "admin@example.org" not in refusal
    assert not app.metric and not app.dataframe and not app.get("plotly_chart")
    rows = lake.read(AUDIT_LOG).filter(pl.col("at") >= since)
    assert rows.select("user", "issuer", "subject", "action", "outcome").rows() == [
        ("sub:mallory-7", ISSUER, "mallory-7", "refused", "no role")
    ]


@pytest.mark.usefixtures("demo_lake")
def test_the_audit_log_names_the_provider_subject_of_each_event() -> None:
    lake = data.current_lake()
    since = datetime.now(UTC)
    app = _app(claims("clinician@example.org", sub="c-1234")).run()
    app.query_params["patient_id"] = "P002"
    app.switch_page(FILES["patient"]).run()
    assert not app.exception and not app.error

    rows = _events(lake, since)
    assert set(rows["action"]) == {"sign-in", "page", "patient"}
    assert set(rows.select("user", "issuer", "subject").rows()) == {
        ("clinician@example.org", ISSUER, "c-1234")
    }


@pytest.mark.usefixtures("demo_lake")
def test_groups_alone_sign_in_and_the_sidebar_marks_an_unverified_email() -> None:
    lake = data.current_lake()
    since = datetime.now(UTC)
    token = _admin_claims("false", groups=["mobility-admins"])
    token.pop("name")
    app = _app(token).run()

    assert not app.exception and not app.error
    assert "Cohort overview" in [t.value for t in app.title]
    assert "admin@example.org (email not verified)" in _texts(app.sidebar.caption)
    rows = _events(lake, since, action="sign-in")
    assert rows.select("user", "issuer", "subject", "roles").rows() == [
        ("sub:mallory-7", ISSUER, "mallory-7", "admin")
    ]


@pytest.mark.usefixtures("demo_lake")
def test_an_unverified_email_grants_no_role_but_groups_do() -> None:
    unverified = _app(claims("admin@example.org", email_verified=False)).run()
    assert "has no role in Mobility" in _texts(unverified.error)

    by_group = _app(claims("someone@example.org", groups=["mobility-admins"])).run()
    assert not by_group.error
    assert "Cohort overview" in [t.value for t in by_group.title]


@pytest.mark.usefixtures("demo_lake")
def test_an_idle_login_is_signed_out_and_audited(monkeypatch: pytest.MonkeyPatch) -> None:
    lake = data.current_lake()
    since = datetime.now(UTC)
    monkeypatch.setenv("MOBILITY_IDLE_MINUTES", "10")
    forget_caches()
    # signed in 11 minutes ago and not seen since (a reload of a tab left open)
    app = _app(claims("clinician@example.org", issued_at=time.time() - 11 * 60)).run()

    assert not app.exception
    assert app.user.get("is_logged_in") is False  # st.logout() ran
    assert not app.metric and not app.dataframe
    expired = _events(lake, since, user="clinician@example.org", action="expired")
    assert expired.height == 1


def test_idle_logins_expire_after_the_timeout_from_the_last_activity() -> None:
    logins = auth.IdleLogins()
    assert logins.touch("a", issued_at=1000.0, now=1100.0, idle_seconds=600)
    assert logins.touch("a", issued_at=1000.0, now=1650.0, idle_seconds=600)  # active at 1100
    assert not logins.touch("a", issued_at=1000.0, now=2300.0, idle_seconds=600)
    # once expired it stays expired for that login, whatever its token says
    assert not logins.touch("a", issued_at=1000.0, now=2301.0, idle_seconds=600)
    assert logins.touch("b", issued_at=None, now=5000.0, idle_seconds=600)


# ----------------------------------------------------------------------------------- audit


@pytest.mark.usefixtures("demo_lake")
def test_each_patient_view_is_audited_once_before_the_data_is_shown() -> None:
    lake = data.current_lake()
    since = datetime.now(UTC)
    app = _visit("clinician", "patient", patient_id="P002")
    assert app.selectbox(key="patient_id").value == "P002"
    app.selectbox(key="patient_id").select("P003").run()
    app.selectbox(key="patient_id").select("P003").run()  # a rerun is the same view
    app.selectbox(key="patient_id").select("P001").run()

    views = _events(lake, since, user="clinician@example.org", action="patient")
    assert views["patient_id"].to_list() == ["P002", "P003", "P001"]
    assert set(views["page"]) == {"patient"} and set(views["roles"]) == {"clinician"}
    pages = _events(lake, since, user="clinician@example.org", action="page")
    assert pages["page"].to_list() == ["cohort", "patient"]
    assert _events(lake, since, user="clinician@example.org", action="sign-in").height == 1


@pytest.mark.usefixtures("demo_lake")
@pytest.mark.parametrize("page", list(FILES))
def test_no_page_shows_data_when_the_audit_log_cannot_be_written(
    page: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    def unwritable(_lake: Lake, _events: object) -> None:
        raise StorageError("could not write the audit log: disk full")

    monkeypatch.setattr(audit, "record", unwritable)
    app = signed_in(_app(), "admin")
    app.query_params["patient_id"] = "P002"
    app.run()
    if page != "cohort":
        app.switch_page(FILES[page]).run()

    assert not app.exception, [e.value for e in app.exception]
    assert "could not write the audit log: disk full" in _texts(app.error)
    assert not app.metric and not app.dataframe and not app.get("plotly_chart")
    assert "patient_id" not in [box.key for box in app.selectbox]  # not even the patient list


@pytest.mark.usefixtures("demo_lake")
def test_a_patient_is_not_shown_until_the_view_is_on_record(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    lake = data.current_lake()
    since = datetime.now(UTC)
    written = audit.record
    failing = True

    def patient_views_fail(target: Lake, events: list[audit.AuditEvent]) -> None:
        if failing and any(event.action == "patient" for event in events):
            raise StorageError("could not write the audit log: timeout")
        written(target, events)

    monkeypatch.setattr(audit, "record", patient_views_fail)
    app = _visit("clinician", "cohort")
    app.query_params["patient_id"] = "P002"
    app.switch_page(FILES["patient"]).run()

    # the patient list was shown (its page view is on record), nothing of the patient
    assert app.selectbox(key="patient_id").value == "P002"
    assert "could not write the audit log: timeout" in _texts(app.error)
    assert not app.dataframe and not app.get("plotly_chart")
    assert "disease group" not in _texts(app.caption)  # not even the profile line
    assert _events(lake, since, user="clinician@example.org", action="patient").is_empty()

    failing = False  # storage is back: the next run writes the view, then shows the patient
    app.run()
    assert not app.error and app.get("plotly_chart")
    assert "disease group" in _texts(app.caption)
    views = _events(lake, since, user="clinician@example.org", action="patient")
    assert views["patient_id"].to_list() == ["P002"]
    # each event once, however many runs it took
    pages = _events(lake, since, user="clinician@example.org", action="page")
    assert pages["page"].to_list() == ["cohort", "patient"]


@pytest.mark.usefixtures("demo_lake")
def test_each_sql_query_is_audited_with_its_hash_and_row_count() -> None:
    lake = data.current_lake()
    since = datetime.now(UTC)
    app = _visit("analyst", "sql")
    query = "SELECT patient_id FROM bronze.patients ORDER BY patient_id"
    app.text_area(key="sql_query").input(query).run()
    app.button(key="sql_run").click().run()
    assert app.dataframe[0].value["patient_id"].tolist() == ["P001", "P002", "P003"]
    refused = "COPY bronze.patients TO '/tmp/x.csv'"
    app.text_area(key="sql_query").input(refused).run()
    app.button(key="sql_run").click().run()
    assert "only read-only queries are allowed" in _texts(app.error)

    queries = _events(lake, since, user="analyst@example.org", action="sql")
    assert queries["sql_sha256"].to_list() == [audit.sql_sha256(query), audit.sql_sha256(refused)]
    assert queries["rows"].to_list() == [3, None]
    assert queries["outcome"][0] == "ok"
    assert queries["outcome"][1] == "refused: COPY statement"  # the reason, not the message
    # the text itself is not kept (it may name patients)
    assert not lake.read(AUDIT_LOG).filter(pl.col("outcome").str.contains("bronze.patients")).height


@pytest.mark.usefixtures("demo_lake")
def test_ops_read_the_audit_log_page() -> None:
    lake = data.current_lake()
    audit.record(
        lake,
        audit.AuditEvent(
            user="someone@example.org",
            roles="clinician",
            client="dashboard",
            action="patient",
            page="patient",
            patient_id="P-audited",
        ),
    )
    app = _visit("ops", "audit")
    app.text_input(key="audit_patient").input("P-audited").run()

    assert not app.exception and not app.error
    shown = app.dataframe[0].value
    assert shown["user"].tolist() == ["someone@example.org"]
    assert {m.label: m.value for m in app.metric}["Patient views and reports"] == "1"


def test_the_audit_log_refuses_rewrites(lake: Lake) -> None:
    event = audit.AuditEvent(user="u", roles="ops", client="cli", action="sql", page="x")
    audit.record(lake, event)
    with pytest.raises(Exception, match="append-only"):
        lake.delete(AUDIT_LOG, "true")
    with pytest.raises(Exception, match="append-only"):
        lake.replace(AUDIT_LOG, lake.read(AUDIT_LOG), predicate=None)
    assert lake.read(AUDIT_LOG).height == 1


def test_admins_reidentify_a_pseudonym_and_it_is_audited(empty_lake: Lake) -> None:
    empty_lake.append(
        REIDENTIFICATION,
        pl.DataFrame(
            {
                "patient_id": ["P-0123456789abcdef0123"],
                "source_id": ["MRN-42"],
                "key_id": ["k"],
                "first_seen_at": [datetime(2024, 1, 1, tzinfo=UTC)],
                "source_file": ["/landing/x.xml"],
            }
        ),
    )
    since = datetime.now(UTC)
    app = _visit("admin", "reidentify")
    app.text_input(key="reid_text").input("P-0123456789abcdef0123").run()
    assert app.dataframe[0].value["source_id"].tolist() == ["MRN-42"]
    app.radio(key="reid_by").set_value("a source identifier").run()
    app.text_input(key="reid_text").input("MRN-42").run()
    assert app.dataframe[0].value["patient_id"].tolist() == ["P-0123456789abcdef0123"]

    looks = _events(empty_lake, since, action="reidentify")
    assert looks["patient_id"].to_list()[-1] == "P-0123456789abcdef0123"
    assert set(looks["user"]) == {"admin@example.org"}


# --------------------------------------------------------------------------------- demo mode


@pytest.mark.usefixtures("demo_lake")
def test_demo_mode_needs_no_sign_in_shows_a_banner_and_previews_roles(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MOBILITY_DEMO", "1")
    forget_caches()
    app = _app().run()

    assert not app.exception and not app.error
    assert "Demo mode" in _texts(app.warning)
    assert "Cohort overview" in [t.value for t in app.title]
    app.selectbox(key=auth.DEMO_ROLE_KEY).select("ops").run()
    app.switch_page(FILES["patient"]).run()
    assert "Not for your role" in _texts(app.error)
    assert "Demo mode" in _texts(app.warning)


def test_demo_mode_refuses_a_lake_on_object_storage(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MOBILITY_DEMO", "1")
    monkeypatch.setenv("LAKE_URI", "s3://clinic-bucket/mobility")
    forget_caches()
    app = _app().run()

    assert not app.exception
    assert "for the local synthetic demo only" in _texts(app.error)
    assert not app.metric and not app.dataframe


# -------------------------------------------------------------------------------- role file


def test_role_file_maps_emails_without_case_and_groups() -> None:
    roles = auth.parse_role_map(
        """
        groups_claim = "roles"
        [roles.clinician]
        emails = ["Dr.Who@Example.org"]
        [roles.ops]
        groups = ["night-shift"]
        """
    )
    verified = {"email": "dr.who@example.org", "email_verified": True}
    assert roles.roles_of(verified) == {"clinician"}
    assert roles.roles_of({**verified, "roles": "night-shift"}) == {"clinician", "ops"}
    assert roles.roles_of({"email": "dr.who@example.org"}) == set()  # not verified
    assert roles.roles_of({"groups": ["night-shift"]}) == set()  # another claim's name


KIM = """
[roles.admin]
emails = ["kim@hospital.test"]
groups = ["mobility-admins"]
"""
# e-mails that Python's str.lower() / str.strip() would have turned into kim@hospital.test
LOOKALIKES = [
    "\u212aim@hospital.test",  # KELVIN SIGN, lower-cased to "k"
    "\u212aIM@HOSPITAL.TEST",
    "kim@hospital.test\u00a0",  # a trailing NO-BREAK SPACE, stripped
    "\u3000kim@hospital.test",  # IDEOGRAPHIC SPACE
    "kim@hospital.test\u2028",  # LINE SEPARATOR
    "kim@hospital.test\x85",  # NEXT LINE
]


@pytest.mark.parametrize("email", LOOKALIKES, ids=ascii)
def test_an_email_that_is_not_ascii_grants_no_role_but_groups_still_do(email: str) -> None:
    roles = auth.parse_role_map(KIM)
    token = {"email": email, "email_verified": True}

    assert roles.roles_of(token) == set()
    assert roles.roles_of({**token, "groups": ["mobility-admins"]}) == {"admin"}


def test_an_ascii_email_still_matches_without_case_or_ascii_white_space() -> None:
    roles = auth.parse_role_map(KIM)
    for email in ("kim@hospital.test", "KIM@Hospital.Test", " kim@hospital.test\t\n"):
        assert roles.roles_of({"email": email, "email_verified": True}) == {"admin"}, email


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        # an e-mail of the role file that is not ASCII would match no token: said, not ignored
        ('[roles.admin]\nemails = ["\u212aim@hospital.test"]', "is not ASCII"),
        ('[roles.admin]\nemails = ["kim@hospital.test\u00a0"]', "is not ASCII"),
        ("[roles.superuser]\nemails = []", "unknown role 'superuser'"),
        ("[roles.admin]\nemails = 'a@b'", "must be a list of text"),
        ("not toml at all = = =", "not TOML"),
    ],
)
def test_a_bad_role_file_is_one_line(text: str, fragment: str) -> None:
    with pytest.raises(InputError, match=fragment) as info:
        auth.parse_role_map(text)
    assert "\n" not in str(info.value)
