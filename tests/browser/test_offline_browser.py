"""No request to an outside host: the dashboard works on a hospital network without internet.

The dashboard runs over a demo lake as ``./scripts/run`` builds it (20 synthetic patients, seed
42, then the pipeline). Chromium opens every page the sidebar offers, as admin (who sees them
all) and as each other role, opens what a page hides behind expanders and toggles, and runs a
query and a look-up. Every request the browser makes (documents, scripts, styles, fonts, images,
fetches, WebSockets) is recorded; one to a host other than the dashboard's own fails the test,
and is aborted before it leaves the machine.

The server is watched too: it runs with ``HTTP_PROXY``/``HTTPS_PROXY`` pointing at a recording
proxy on loopback, so a request it makes with Python's HTTP clients (Streamlit looks up the
machine's external IP address with ``checkip.amazonaws.com`` when it prints its welcome message)
is recorded and refused. The Procfile's ``web:`` command itself (listening on every interface,
sign-in required) is checked the same way, with its sign-in page.

``test_readme_screenshot`` takes the README's picture of the cohort overview; it writes
``docs/screenshot-cohort.png`` when ``UPDATE_README_SCREENSHOT=1`` is set, else only under
``test-artifacts/screenshots/`` (so that a test run leaves the tracked file alone).

Needs Debian's chromium (skips without it), like test_dashboard_browser.py, whose helpers it uses.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, Request, Route, WebSocket, expect

from lakehouse.catalog import PATIENTS
from lakehouse.storage import Lake
from tests.browser.test_dashboard_browser import (
    REPO,
    SCREENSHOTS,
    SERVER_START_SECONDS,
    TIMEOUT_MS,
    Dashboard,
    _free_port,
    _healthy,
    assert_no_error,
    serve,
    stop,
    wait_idle,
)
from tests.test_cli import mobility

pytestmark = pytest.mark.browser

# the demo ./scripts/run builds on an empty lake (DEMO_PATIENTS, seed 42)
DEMO_PATIENTS = 20
README_SCREENSHOT = REPO / "docs" / "screenshot-cohort.png"
README_VIEWPORT = {"width": 1400, "height": 900}
# schemes that name no host: nothing goes over the network for them
LOCAL_SCHEMES = frozenset({"data", "blob", "about", "chrome", "chrome-extension"})
# what a browser waits for after the page is idle: deferred fetches (usage statistics, favicons)
SETTLE_MS = 1_500


# ---------------------------------------------------------------------------- the recorders


@dataclass
class BrowserRequests:
    """Every request of a browser context: those to the dashboard's own origin counted, the
    others recorded (method, URL, resource type, page) and aborted before they leave."""

    own_host: str  # host:port of the dashboard
    own: int = 0
    outside: list[str] = field(default_factory=list)

    def is_outside(self, url: str) -> bool:
        parts = urlsplit(url)
        if parts.scheme in LOCAL_SCHEMES:
            return False
        return parts.netloc.lower() != self.own_host

    def watch(self, context: BrowserContext) -> None:
        context.on("request", self._request)
        context.on("page", lambda page: page.on("websocket", self._websocket))
        for page in context.pages:
            page.on("websocket", self._websocket)
        context.route("**/*", self._route)

    def _request(self, request: Request) -> None:
        if self.is_outside(request.url):
            page = request.frame.page.url if request.frame else "?"
            self.outside.append(f"{request.method} {request.url} ({request.resource_type}; {page})")
        else:
            self.own += 1

    def _websocket(self, socket: WebSocket) -> None:
        if self.is_outside(socket.url):
            self.outside.append(f"WebSocket {socket.url}")

    def _route(self, route: Route) -> None:
        if self.is_outside(route.request.url):
            route.abort("blockedbyclient")  # recorded by _request; never leaves the machine
        else:
            route.continue_()


class _ProxyHandler(BaseHTTPRequestHandler):
    """Records each request line (``CONNECT host:443``, ``GET http://host/...``) and refuses it."""

    server: RecordingProxy

    def _refuse(self) -> None:
        self.server.requests.append(f"{self.command} {self.path}")
        self.send_error(403, "outside requests are refused in this test")

    do_CONNECT = do_GET = do_POST = do_PUT = do_HEAD = do_DELETE = do_PATCH = do_OPTIONS = _refuse

    def log_message(self, format: str, *args: object) -> None:
        """Quiet: the test reports what was asked."""


class RecordingProxy(ThreadingHTTPServer):
    """An HTTP proxy on loopback that answers nothing and remembers every request."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _ProxyHandler)
        self.requests: list[str] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def environment(self) -> dict[str, str]:
        """The variables that send a process's HTTP clients through this proxy, loopback
        excepted (the dashboard's own address)."""
        names = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY")
        env = {name: self.url for name in names} | {name.lower(): self.url for name in names}
        return env | {"NO_PROXY": "127.0.0.1,localhost,::1", "no_proxy": "127.0.0.1,localhost,::1"}


@pytest.fixture(scope="module")
def proxy() -> Iterator[RecordingProxy]:
    server = RecordingProxy()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


# ---------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def demo_lake(chromium: str, tmp_path_factory: pytest.TempPathFactory) -> Lake:
    """The demo ./scripts/run builds on an empty lake: generate, then the pipeline (quick
    training: the pages are the same, built in seconds)."""
    root = tmp_path_factory.mktemp("offline")
    uri = str(root / "lake")
    for step in (
        ("generate", "--patients", str(DEMO_PATIENTS), "--seed", "42"),
        ("pipeline",),
    ):
        done = mobility("--lake", uri, *step, cwd=root, env={"MOBILITY_QUICK_TRAINING": "1"})
        assert done.returncode == 0, (
            f"mobility {' '.join(step)} failed:\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}"
        )
    return Lake(uri)


@pytest.fixture(scope="module")
def dashboard(
    demo_lake: Lake, proxy: RecordingProxy, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Dashboard]:
    """The demo dashboard (``streamlit run dashboard/serve.py`` on loopback, demo mode), its
    outgoing HTTP through the recording proxy."""
    log = tmp_path_factory.mktemp("streamlit") / "streamlit.log"
    with serve(demo_lake, log, env={"MOBILITY_DEMO": "1", **proxy.environment()}) as running:
        yield running


@dataclass
class Session:
    """A browser tab on the dashboard and the requests its context made."""

    page: Page
    requests: BrowserRequests


@pytest.fixture
def session(browser: Browser, dashboard: Dashboard) -> Iterator[Session]:
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    context.set_default_timeout(TIMEOUT_MS)
    requests = BrowserRequests(own_host=urlsplit(dashboard.url).netloc)
    requests.watch(context)
    yield Session(context.new_page(), requests)
    context.close()


# ----------------------------------------------------------------------------------- helpers


def open_and_wait(page: Page, url: str) -> None:
    page.goto(url)
    page.locator("[data-testid='stApp']").wait_for()
    wait_idle(page)


def sidebar_pages(page: Page) -> list[str]:
    """The url paths the sidebar offers (each page's link, in order)."""
    links = page.locator("[data-testid='stSidebarNav'] a")
    expect(links.first).to_be_visible()
    return [urlsplit(href).path for href in links.evaluate_all("(a) => a.map((x) => x.href)")]


def open_everything(page: Page) -> None:
    """What a page shows only on demand: every expander opened, every toggle switched on."""
    for expander in page.locator("[data-testid='stExpander'] summary").all():
        if expander.is_visible():
            expander.click()
            wait_idle(page)
    for toggle in page.locator("[data-testid='stCheckbox'] input[type='checkbox']").all():
        if toggle.is_visible() and not toggle.is_checked():
            toggle.check(force=True)  # the input sits under Streamlit's drawn switch
            wait_idle(page)


def visit_every_page(page: Page, dashboard: Dashboard, *, role: str) -> list[str]:
    """As ``role`` (the demo's sidebar picker): open each page the sidebar offers and what it
    hides; the url paths visited."""
    open_and_wait(page, dashboard.url + "/")
    if role != "admin":
        page.get_by_role("combobox", name="Demo: view as", exact=True).click()
        page.get_by_role("option", name=role, exact=True).click()
        wait_idle(page)
    paths = sidebar_pages(page)
    for path in paths:
        # through the sidebar, as a user moves between pages (one session, one WebSocket)
        page.locator(f"[data-testid='stSidebarNav'] a[href$='{path}']").first.click()
        expect(page).to_have_url(re.compile(re.escape(path) + r"(\?.*)?$"))
        page.wait_for_timeout(200)  # the rerun starts
        wait_idle(page)
        open_everything(page)
        assert_no_error(page, dashboard)
    return paths


def outside_report(requests: BrowserRequests, proxy: RecordingProxy) -> str:
    return "\n".join(
        [f"browser: {line}" for line in requests.outside]
        + [f"server: {line}" for line in proxy.requests]
    )


# ------------------------------------------------------------------------------------- tests


def test_the_recorders_catch_an_outside_request(
    session: Session, dashboard: Dashboard, proxy: RecordingProxy
) -> None:
    """The checks below can fail: an image and a fetch to another host, added to a dashboard
    page, are recorded (and aborted); the proxy records a server-side request."""
    page, requests = session.page, session.requests
    open_and_wait(page, dashboard.url + "/")
    assert requests.own > 0, "the recorder saw none of the dashboard's own requests"
    assert requests.outside == []
    page.evaluate(
        """() => {
            const image = document.createElement("img");
            image.src = "https://outside.invalid/pixel.png";
            document.body.appendChild(image);
            fetch("http://example.invalid:8080/metrics.json").catch(() => null);
        }"""
    )
    page.wait_for_timeout(SETTLE_MS)
    assert any("https://outside.invalid/pixel.png (image" in line for line in requests.outside)
    assert any(
        "http://example.invalid:8080/metrics.json (fetch" in line for line in requests.outside
    )
    assert requests.is_outside(f"http://localhost:{urlsplit(dashboard.url).port}/")  # another name

    before = len(proxy.requests)
    probe = subprocess.run(
        [
            sys.executable,
            "-c",
            "import requests\n"
            "try:\n    requests.get('https://checkip.amazonaws.com', timeout=5)\n"
            "except requests.RequestException:\n    pass",
        ],
        env={**os.environ, **proxy.environment()},
        timeout=60,
        check=True,
    )
    assert probe.returncode == 0
    assert proxy.requests[before:] == ["CONNECT checkip.amazonaws.com:443"]
    del proxy.requests[before:]


@pytest.mark.parametrize("role", ["admin", "clinician", "analyst", "ops"])
def test_no_page_requests_an_outside_host(
    session: Session, dashboard: Dashboard, proxy: RecordingProxy, role: str
) -> None:
    """Every page of the role, what it shows on demand, a query and a look-up: only the
    dashboard's own host is asked, by the browser and by the server."""
    page, requests = session.page, session.requests
    paths = visit_every_page(page, dashboard, role=role)
    assert paths, "the sidebar offers no page"
    if role == "admin":
        assert len(paths) == 6, paths  # every page of the app
        page.goto(dashboard.url + "/sql")
        page.locator("textarea").wait_for()
        wait_idle(page)
        page.get_by_role("button", name="Run").click()
        expect(page.locator("[data-testid='stDataFrame']").first).to_be_visible()
        wait_idle(page)
        patient_id = dashboard.lake.read(PATIENTS)["patient_id"].sort()[0]
        page.goto(f"{dashboard.url}/patient?patient_id={patient_id}")
        page.locator(".js-plotly-plot").first.wait_for()
        wait_idle(page)
        open_everything(page)
        assert_no_error(page, dashboard)
    page.wait_for_timeout(SETTLE_MS)
    assert requests.own > 0
    assert not requests.outside and not proxy.requests, (
        f"requests to outside hosts as {role}:\n{outside_report(requests, proxy)}\n"
        f"streamlit log:\n{dashboard.log_tail()}"
    )


def procfile_web() -> str:
    """The Procfile's ``web:`` command."""
    for line in (REPO / "Procfile").read_text().splitlines():
        if line.startswith("web:"):
            return line.removeprefix("web:").strip()
    raise AssertionError("the Procfile has no web: line")


@contextmanager
def serve_procfile(lake: Lake, log: Path, env: dict[str, str]) -> Iterator[str]:
    """The Procfile's web process as a platform runs it (``$PORT``, every interface), signed-in
    mode; its URL on loopback."""
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    base = {
        k: v
        for k, v in os.environ.items()
        if k not in ("LAKE_URI", "MOBILITY_ENGINE", "MOBILITY_DEMO", "MOBILITY_ROLES_FILE")
    }
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    with log.open("w") as out:
        server = subprocess.Popen(
            ["bash", "-c", f"exec {procfile_web()}"],
            cwd=REPO,
            env={**base, "PATH": path, "PORT": str(port), "LAKE_URI": lake.uri, **env},
            stdout=out,
            stderr=subprocess.STDOUT,
            text=True,
        )
    try:
        deadline = time.monotonic() + SERVER_START_SECONDS
        while not _healthy(url):
            tail = log.read_text(errors="replace")[-3000:]
            if server.poll() is not None:
                pytest.fail(f"the Procfile's web process exited ({server.returncode}):\n{tail}")
            if time.monotonic() > deadline:
                pytest.fail(f"the Procfile's web process did not start:\n{tail}")
            time.sleep(0.25)
        yield url
    finally:
        stop(server, timeout=15)  # type: ignore[arg-type]


def test_procfile_web_process_requests_no_outside_host(
    browser: Browser,
    demo_lake: Lake,
    proxy: RecordingProxy,
    tmp_path: Path,
) -> None:
    """The production command (``web:`` of the Procfile: every interface, sign-in required):
    starting it and opening its sign-in page ask no host but its own."""
    assert shlex.split(procfile_web())[:3] == ["streamlit", "run", "dashboard/serve.py"]
    before = len(proxy.requests)
    log = tmp_path / "web.log"
    with serve_procfile(demo_lake, log, {"MOBILITY_DEMO": "0", **proxy.environment()}) as url:
        context = browser.new_context()
        context.set_default_timeout(TIMEOUT_MS)
        requests = BrowserRequests(own_host=urlsplit(url).netloc)
        requests.watch(context)
        page = context.new_page()
        open_and_wait(page, url + "/")
        expect(page.get_by_role("heading", name="Mobility", exact=True)).to_be_visible()
        page.wait_for_timeout(SETTLE_MS)
        context.close()
    server_requests = proxy.requests[before:]
    assert requests.own > 0
    assert not requests.outside and not server_requests, (
        "requests to outside hosts:\n"
        + "\n".join([f"browser: {line}" for line in requests.outside])
        + "\n".join([f"server: {line}" for line in server_requests])
        + f"\nlog:\n{log.read_text(errors='replace')[-3000:]}"
    )


def test_readme_screenshot(browser: Browser, dashboard: Dashboard) -> None:
    """The README's picture: the cohort overview of the demo lake at 1400x900, as a clinician
    opens it. Written to docs/ only with UPDATE_README_SCREENSHOT=1."""
    context = browser.new_context(viewport=README_VIEWPORT)  # type: ignore[arg-type]
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    open_and_wait(page, dashboard.url + "/")
    page.get_by_role("combobox", name="Demo: view as", exact=True).click()
    page.get_by_role("option", name="clinician", exact=True).click()
    wait_idle(page)
    expect(page.get_by_role("heading", name="Cohort overview", exact=True)).to_be_visible()
    page.locator("[data-testid='stMetric']").first.wait_for()
    wait_idle(page)
    assert_no_error(page, dashboard)
    # the role picker keeps the focus after the pick (a red outline): the page as it opens has
    # nothing focused, and no hover effect
    page.evaluate("document.activeElement?.blur()")
    page.mouse.move(0, 0)
    wait_idle(page)
    assert page.evaluate("document.activeElement === document.body")
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    taken = SCREENSHOTS / "readme-cohort.png"
    page.screenshot(path=taken)
    context.close()
    if os.environ.get("UPDATE_README_SCREENSHOT") == "1":
        shutil.copyfile(taken, README_SCREENSHOT)
