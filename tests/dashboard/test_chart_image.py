"""dashboard/chart_image.py: figures drawn to PNG in the installed Chromium without a network,
its own requests sent to the proxy it is given, closed when idle; a browser that fails is one
line, never a hang."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import plotly.graph_objects as go
import pytest

from dashboard import chart_image

FIGURE = go.Figure(
    go.Scatter(x=[1, 2, 3], y=[3, 1, 2]),
    layout={"width": 300, "height": 200, "title": {"text": "$x^2$ <b>steps</b>"}},
)


@pytest.fixture(scope="module")
def browser() -> str:
    path = chart_image.browser_path()
    if path is None:
        pytest.skip("no Chromium installed (apt-get install chromium)")
    return path


@pytest.fixture
def recording_proxy() -> Iterator[tuple[str, list[str]]]:
    """A loopback port that records the first line of every connection and closes it: what a
    browser pointed at it as its proxy tried to reach."""
    lines: list[str] = []
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(50)
    server.settimeout(0.2)
    stopped = threading.Event()

    def accept() -> None:
        while not stopped.is_set():
            try:
                connection, _ = server.accept()
            except TimeoutError:
                continue
            with connection:
                connection.settimeout(2)
                try:
                    lines.append(connection.recv(500).decode("latin-1").split("\r\n")[0])
                except OSError:
                    lines.append("(nothing sent)")

    recorder = threading.Thread(target=accept, daemon=True)
    recorder.start()
    yield f"http://127.0.0.1:{server.getsockname()[1]}", lines
    stopped.set()
    recorder.join(5)
    server.close()


def test_a_chart_is_drawn_without_a_network_and_the_browser_closes_when_idle(
    browser: str, recording_proxy: tuple[str, list[str]]
) -> None:
    proxy, requested = recording_proxy
    renderer = chart_image.ChartRenderer(browser, idle_seconds=1.0, proxy=proxy)
    try:
        png = renderer.png(FIGURE, scale=1)
        assert renderer.is_open
        deadline = time.monotonic() + 15
        while renderer.is_open and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not renderer.is_open, "the browser stayed open while idle"
        again = renderer.png(FIGURE, scale=2)  # opened again
    finally:
        renderer.close()

    assert png.startswith(b"\x89PNG\r\n\x1a\n") and again.startswith(b"\x89PNG\r\n\x1a\n")
    # plotly.js and its fonts come from the installed package; MathJax is not loaded: what the
    # browser asked its proxy for is its own background traffic, never the chart's
    for line in requested:
        assert not any(cdn in line for cdn in ("plot.ly", "mathjax", "cdnjs", "jsdelivr")), line


def test_the_offline_proxy_refuses_on_this_machine() -> None:
    host, port = chart_image.OFFLINE_PROXY.removeprefix("http://").split(":")
    assert host == "127.0.0.1" and int(port) < 1024
    with pytest.raises(ConnectionRefusedError), socket.create_connection((host, int(port)), 2):
        pass


def test_a_browser_that_fails_is_one_line_not_a_hang() -> None:
    renderer = chart_image.ChartRenderer("/bin/false")
    started = time.monotonic()
    try:
        with pytest.raises(chart_image.ChartUnavailable, match=r"^the browser drawing it failed"):
            renderer.png(FIGURE)
    finally:
        renderer.close()
    assert time.monotonic() - started < 30
