"""Sign-in in a real browser against a real OpenID Connect provider on loopback.

``oidc-provider-mock`` (an Authlib OpenID provider) runs in this process with one user per role
(email and groups claims); the dashboard runs as in production: ``streamlit run`` with an
``[auth]`` secrets file (written here, pointing at the provider, never in the tree) and a role
file. For each role, Chromium signs in through the provider's form, then the test checks the
pages the sidebar offers, that each of them opens, and that a page of another role, opened by
its address, shows a refusal and no data. The audit log must hold each patient view and SQL
query made.

Needs Debian's chromium (skips without it), like test_dashboard_browser.py, whose helpers it uses.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import polars as pl
import pytest
from playwright.sync_api import Browser, Page, expect

from lakehouse.audit import sql_sha256
from lakehouse.catalog import AUDIT_LOG
from lakehouse.storage import Lake
from tests.browser.test_dashboard_browser import (
    SCREENSHOTS,
    TIMEOUT_MS,
    VIEWPORT,
    Dashboard,
    _free_port,
    metric,
    screenshot,
    serve,
    stop,
    wait_idle,
)
from tests.dashboard.demo_lake import build_demo_lake

pytestmark = pytest.mark.browser

ROLES_TOML = """
groups_claim = "groups"
[roles.clinician]
groups = ["clinic-staff"]
[roles.analyst]
emails = ["analyst@hospital.test"]
[roles.ops]
groups = ["it-ops"]
[roles.admin]
emails = ["admin@hospital.test"]
"""
# subject -> claims the provider puts in the identity token
IDENTITIES = {
    "clinician": {"email": "clinician@hospital.test", "groups": ["clinic-staff"]},
    "analyst": {"email": "analyst@hospital.test", "groups": []},
    "ops": {"email": "ops@hospital.test", "groups": ["it-ops"]},
    "admin": {"email": "admin@hospital.test", "groups": []},
    "stranger": {"email": "stranger@hospital.test", "groups": ["visitors"]},
    # the admin's address, which the provider did not verify (sent as text, as some do)
    "impostor": {"email": "admin@hospital.test", "email_verified": "false", "groups": []},
}
TITLES = {
    "cohort": "Cohort overview",
    "patient": "Patient",
    "sql": "Cohort SQL",
    "monitoring": "Monitoring",
    "audit": "Audit log",
    "reidentify": "Re-identification",
}
PAGES = {
    "clinician": ["cohort", "patient"],
    "analyst": ["cohort", "sql"],
    "ops": ["monitoring", "audit"],
    "admin": list(TITLES),
}
# a page each role is refused, opened by its address
REFUSED = {"clinician": "sql", "analyst": "patient", "ops": "cohort"}


@pytest.fixture(scope="module")
def provider(chromium: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The OpenID provider's address (``http://127.0.0.1:PORT``), one user per identity. Its own
    process: Authlib's deprecation warnings there are not this test session's errors."""
    port = _free_port()
    users = [
        json.dumps({"sub": sub, "email_verified": True, "name": sub.title(), **claims})
        for sub, claims in IDENTITIES.items()
    ]
    command = [sys.executable, "-m", "oidc_provider_mock", "--host", "127.0.0.1"]
    command += ["--port", str(port)]
    for user in users:
        command += ["--user-claims", user]
    url = f"http://127.0.0.1:{port}"
    log = tmp_path_factory.mktemp("oidc") / "provider.log"
    with log.open("w") as out:
        server = subprocess.Popen(
            command,
            env={**os.environ, "PYTHONWARNINGS": "ignore"},
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 30
        while not _answers(f"{url}/.well-known/openid-configuration"):
            if server.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"the OpenID provider did not start:\n{log.read_text()[-2000:]}")
            time.sleep(0.2)
        yield url
    finally:
        stop(server, timeout=10)


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


@pytest.fixture(scope="module")
def signed_in_dashboard(
    provider: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Dashboard]:
    """The dashboard as in production: sign-in required, the provider above, the test role
    file, over the dashboard tests' demo lake."""
    root = tmp_path_factory.mktemp("login")
    lake = build_demo_lake(root).lake
    roles = root / "roles.toml"
    roles.write_text(ROLES_TOML, encoding="utf-8")
    # the redirect address names the dashboard's port: chosen here, passed to serve()
    port = _free_port()
    secrets_file = root / "secrets.toml"
    secrets_file.write_text(
        "[auth]\n"
        f'redirect_uri = "http://127.0.0.1:{port}/oauth2callback"\n'
        f'cookie_secret = "{secrets.token_urlsafe(32)}"\n'
        'client_id = "mobility-dashboard"\n'
        f'client_secret = "{secrets.token_urlsafe(24)}"\n'
        f'server_metadata_url = "{provider}/.well-known/openid-configuration"\n',
        encoding="utf-8",
    )
    log = root / "streamlit.log"
    env = {"MOBILITY_ROLES_FILE": str(roles), "MOBILITY_IDLE_MINUTES": "30"}
    with serve(
        lake, log, env=env, args=("--secrets.files", str(secrets_file)), port=port
    ) as running:
        yield running


@pytest.fixture
def tab(
    browser: Browser, signed_in_dashboard: Dashboard, request: pytest.FixtureRequest
) -> Iterator[Page]:
    """A fresh browser (no cookies: nobody signed in); screenshots and the log when failed."""
    context = browser.new_context(viewport=VIEWPORT)
    context.set_default_timeout(TIMEOUT_MS)
    failed_before = request.session.testsfailed
    page = context.new_page()
    yield page
    if request.session.testsfailed > failed_before:
        name = re.sub(r"[^\w.-]+", "_", request.node.name)
        for number, open_tab in enumerate(context.pages):
            screenshot(open_tab, f"FAILED-{name}-{number}")
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(signed_in_dashboard.log, SCREENSHOTS / f"FAILED-{name}-streamlit.log")
        print(f"streamlit log:\n{signed_in_dashboard.log_tail()}")
    context.close()


# ----------------------------------------------------------------------------------- helpers


def sign_in(page: Page, dashboard: Dashboard, subject: str) -> None:
    """Through the dashboard's sign-in button and the provider's form, back to the dashboard."""
    page.goto(dashboard.url)
    page.get_by_role("button", name="Sign in").click()
    page.locator("input[name='sub']").fill(subject)
    page.get_by_role("button", name="Authorize").click()
    page.wait_for_url(re.compile(re.escape(dashboard.url)))
    wait_idle(page)


def open_path(page: Page, dashboard: Dashboard, path: str) -> None:
    """Open the page at ``path`` by its address; until it shows its title or a refusal."""
    page.goto(f"{dashboard.url}/{path}")
    page.locator("h1, [data-testid='stAlertContentError']").first.wait_for()
    wait_idle(page)


def nav_titles(page: Page) -> list[str]:
    links = page.locator("[data-testid='stSidebarNav'] a")
    # a link's text is its icon's name, then its title
    return [text.strip().splitlines()[-1] for text in links.all_inner_texts()]


def refusal(page: Page) -> str:
    return " ".join(page.locator("[data-testid='stAlertContentError']").all_inner_texts())


def audit_rows(lake: Lake, since: datetime, user: str) -> pl.DataFrame:
    if not lake.exists(AUDIT_LOG):
        return pl.DataFrame()
    return (
        lake.read(AUDIT_LOG).filter((pl.col("at") >= since) & (pl.col("user") == user)).sort("at")
    )


# ------------------------------------------------------------------------------------- tests


def test_nobody_reaches_a_page_without_signing_in(
    tab: Page, signed_in_dashboard: Dashboard
) -> None:
    for path in ("", "patient?patient_id=P001", "sql", "monitoring"):
        tab.goto(f"{signed_in_dashboard.url}/{path}")
        expect(tab.get_by_role("button", name="Sign in")).to_be_visible()
        wait_idle(tab)
        assert tab.locator("[data-testid='stMetric']").count() == 0
        assert tab.locator("[data-testid='stDataFrame']").count() == 0
        assert tab.locator(".js-plotly-plot").count() == 0
    screenshot(tab, "login-required")


@pytest.mark.parametrize("role", list(PAGES))
def test_each_role_signs_in_and_opens_exactly_its_pages(
    tab: Page, signed_in_dashboard: Dashboard, role: str
) -> None:
    sign_in(tab, signed_in_dashboard, role)
    expect(tab.get_by_text(f"Signed in as {role.title()}")).to_be_visible()
    assert nav_titles(tab) == [TITLES[p] for p in PAGES[role]]
    for page in PAGES[role]:
        open_path(tab, signed_in_dashboard, page)
        expect(tab.get_by_role("heading", name=TITLES[page], exact=True)).to_be_visible()
        assert "Not for your role" not in refusal(tab)
        assert tab.locator("[data-testid='stException']").count() == 0
    screenshot(tab, f"login-{role}")

    if role in REFUSED:
        page = REFUSED[role]
        open_path(tab, signed_in_dashboard, page)
        expect(tab.get_by_text("Not for your role")).to_be_visible()
        assert tab.get_by_role("heading", name=TITLES[page], exact=True).count() == 0
        assert tab.locator("[data-testid='stDataFrame']").count() == 0
        assert tab.locator(".js-plotly-plot").count() == 0
        screenshot(tab, f"login-{role}-refused-{page}")


def test_an_identity_without_a_role_is_refused(tab: Page, signed_in_dashboard: Dashboard) -> None:
    sign_in(tab, signed_in_dashboard, "stranger")
    expect(tab.get_by_text("has no role in Mobility")).to_be_visible()
    assert nav_titles(tab) == []
    assert tab.locator("[data-testid='stDataFrame']").count() == 0


@pytest.mark.parametrize(
    "subject",
    [
        "impostor",  # email_verified "false"
        # a subject the provider does not know: the mock signs it in with only an email claim,
        # the subject itself (no email_verified at all)
        "admin@hospital.test",
    ],
)
def test_an_unverified_admin_email_is_refused_and_audited_by_its_subject(
    tab: Page, signed_in_dashboard: Dashboard, provider: str, subject: str
) -> None:
    lake = signed_in_dashboard.lake
    since = datetime.now(UTC)
    sign_in(tab, signed_in_dashboard, subject)
    expect(tab.get_by_text("has no role in Mobility")).to_be_visible()
    assert "did not mark it verified" in refusal(tab)
    assert nav_titles(tab) == []
    open_path(tab, signed_in_dashboard, "reidentify")
    assert tab.get_by_role("heading", name=TITLES["reidentify"], exact=True).count() == 0
    assert tab.locator("[data-testid='stDataFrame']").count() == 0
    screenshot(tab, f"login-unverified-{subject}")

    rows = lake.read(AUDIT_LOG).filter(pl.col("at") >= since)
    assert set(rows.select("user", "issuer", "subject", "roles").rows()) == {
        (f"sub:{subject}", provider, subject, "")
    }
    assert set(rows["action"]) == {"refused"}


def test_patient_views_and_queries_are_audited(tab: Page, signed_in_dashboard: Dashboard) -> None:
    lake = signed_in_dashboard.lake
    since = datetime.now(UTC)
    sign_in(tab, signed_in_dashboard, "clinician")
    open_path(tab, signed_in_dashboard, "patient?patient_id=P001")
    tab.locator(".js-plotly-plot").first.wait_for()
    open_path(tab, signed_in_dashboard, "patient?patient_id=P002")
    views = audit_rows(lake, since, "clinician@hospital.test").filter(pl.col("action") == "patient")
    assert views["patient_id"].to_list() == ["P001", "P002"]

    tab.context.clear_cookies()
    sign_in(tab, signed_in_dashboard, "analyst")
    open_path(tab, signed_in_dashboard, "sql")
    query = "SELECT disease_group, count(*) AS n FROM bronze.patients GROUP BY 1 ORDER BY 1"
    tab.locator("textarea").fill(query)
    tab.get_by_role("button", name="Run").click()
    expect(tab.get_by_text(re.compile(r"^3 rows in "))).to_be_visible()
    queries = audit_rows(lake, since, "analyst@hospital.test").filter(pl.col("action") == "sql")
    assert queries.select("sql_sha256", "rows", "outcome").rows() == [(sql_sha256(query), 3, "ok")]

    tab.context.clear_cookies()
    sign_in(tab, signed_in_dashboard, "ops")
    open_path(tab, signed_in_dashboard, "audit")
    tab.get_by_role("textbox", name="User contains").fill("analyst@hospital.test")
    tab.keyboard.press("Enter")
    expect(metric(tab, "SQL queries")).to_have_text("1")
    wait_idle(tab)
    screenshot(tab, "login-ops-audit-log")


def test_sign_out_ends_the_session(
    tab: Page, signed_in_dashboard: Dashboard, provider: str
) -> None:
    sign_in(tab, signed_in_dashboard, "admin")
    tab.get_by_role("button", name="Sign out").click()
    # the identity cookie is cleared, then the provider ends its own session
    tab.wait_for_url(re.compile(re.escape(provider)))
    tab.goto(signed_in_dashboard.url)
    expect(tab.get_by_role("button", name="Sign in")).to_be_visible()


@pytest.fixture(autouse=True)
def _screenshots_folder() -> None:
    Path(SCREENSHOTS).mkdir(parents=True, exist_ok=True)
