"""The dashboard's server as production starts it (``streamlit run dashboard/serve.py``: the
Procfile, scripts/run and the browser tests), on loopback: what answers without sign-in.

Streamlit's ``/_stcore/metrics`` (sessions open, their durations, cached queries and their memory)
answers anyone and no setting turns it off; the launcher closes it. The endpoints that stay open
are checked to say nothing about patients or users (docs/security.md, "Endpoints").
"""

from __future__ import annotations

import re
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.browser.test_dashboard_browser import REPO, Dashboard, serve
from tests.dashboard.demo_lake import build_demo_lake

# what Streamlit's metrics look like (OpenMetrics families it registers)
METRICS = re.compile(r"session_events|active_sessions|session_duration|cache_memory_bytes")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dashboard]:
    """The dashboard over the demo lake, started like the Procfile's ``web:`` line."""
    root = tmp_path_factory.mktemp("serve")
    lake = build_demo_lake(root).lake
    with serve(lake, root / "streamlit.log", env={"MOBILITY_DEMO": "1"}) as running:
        yield running


def _get(url: str, *, method: str = "GET") -> tuple[int, str]:
    request = urllib.request.Request(url, method=method)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return int(response.status), response.read().decode(errors="replace")
    except urllib.error.HTTPError as err:
        return int(err.code), err.read().decode(errors="replace")


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/_stcore/metrics"),
        ("GET", "/_stcore/metrics?families=active_sessions"),
        ("GET", "/_stcore/metrics/"),
        ("GET", "/_stcore/%6Detrics"),  # percent-encoded
        ("GET", "/_STCORE/Metrics"),
        ("HEAD", "/_stcore/metrics"),
        ("OPTIONS", "/_stcore/metrics"),
    ],
)
def test_the_metrics_endpoint_answers_404_without_metrics(
    server: Dashboard, method: str, path: str
) -> None:
    status, body = _get(server.url + path, method=method)

    assert status == 404, (status, body[:200])
    assert not METRICS.search(body)


def test_what_stays_open_tells_nothing_about_patients_or_users(server: Dashboard) -> None:
    # for load balancers: up or not
    assert _get(f"{server.url}/_stcore/health") == (200, "ok")
    # the frontend's settings: no origin may drive the app from a frame
    status, host_config = _get(f"{server.url}/_stcore/host-config")
    assert status == 200 and '"allowedOrigins":[]' in host_config
    # the app's shell (static HTML, no data) and a media file that is not there
    status, shell = _get(f"{server.url}/patient?patient_id=P001")
    assert status == 200 and "P001" not in shell
    assert _get(f"{server.url}/media/0123456789abcdef.csv")[0] == 404


def test_production_starts_the_dashboard_through_the_launcher() -> None:
    procfile = (REPO / "Procfile").read_text(encoding="utf-8")
    run = (REPO / "scripts" / "run").read_text(encoding="utf-8")

    assert re.search(r"^web: streamlit run dashboard/serve\.py ", procfile, re.MULTILINE)
    assert re.search(r"^exec streamlit run dashboard/serve\.py ", run, re.MULTILINE)
    assert "dashboard/app.py" not in procfile + run
    assert Path(REPO / "dashboard" / "serve.py").is_file()
