"""Plotly figures drawn to PNG by kaleido in the installed Chromium, offline.

The printable report prints the patient page's own figure (:mod:`dashboard.charts`), so there is
one chart implementation. Kaleido draws it with plotly.js in a headless Chromium:

- the browser is the one installed on the machine (Debian's ``chromium``, found on ``PATH``),
  never one downloaded;
- the page kaleido loads holds plotly.js from the installed plotly package (named explicitly:
  kaleido would fall back to a CDN should it not find it) with MathJax turned off, so the chart
  needs nothing from a network;
- Chromium itself calls Google's and its search engine's services in the background (updates,
  sign-in, time, optimisation hints: measured, a dozen requests in 30 s). Its proxy is set to
  :data:`OFFLINE_PROXY`, a privileged loopback port nothing listens on, so every one of them is
  refused on the machine and none leaves it (nor does it follow an ``HTTP_PROXY`` of the
  environment);
- one browser is kept open per process and shared (:class:`ChartRenderer`): starting it and
  loading plotly.js takes 5-7 s on the 2-core test machine, a chart once it is open about 0.5 s.
  It opens on first use or when a page that may soon need it calls :func:`warm_up`, closes after
  :data:`IDLE_SECONDS` without a chart, and is opened again after any failure.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import logging
import shutil
import threading
from pathlib import Path
from typing import Any

import plotly
import plotly.graph_objects as go

LOGGER = logging.getLogger(__name__)

# Chromium binaries as Debian and other distributions name them, looked up on PATH
BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
# the plotly.js the installed plotly package ships (the same version the dashboard draws with)
PLOTLY_JS = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"
# where Chromium sends any request of its own (see above): refused on the machine (a port below
# 1024, which no unprivileged program can listen on, and which no service uses)
OFFLINE_PROXY = "http://127.0.0.1:1"
# starting the browser and loading plotly.js (measured 5-7 s); one chart once it is open
START_TIMEOUT_SECONDS = 60.0
RENDER_TIMEOUT_SECONDS = 30.0
# the browser (about 150 MB) is closed after this long without a chart
IDLE_SECONDS = 600.0
# drawn once the browser is open: the first chart of a page is slow (plotly.js compiles)
_WARM_UP = {"data": [{"type": "scatter", "x": [0, 1], "y": [0, 1]}], "layout": {}}


class ChartUnavailable(Exception):
    """The chart could not be drawn; the message says why in a user's words."""


def browser_path() -> str | None:
    """The installed Chromium (:data:`BROWSERS` on ``PATH``), None without."""
    for name in BROWSERS:
        found = shutil.which(name)
        if found:
            return found
    return None


class ChartRenderer:
    """One headless Chromium driven by kaleido on an event loop of its own thread; any thread
    may ask it for a PNG (kaleido queues them on its one tab)."""

    def __init__(
        self, browser: str, *, idle_seconds: float = IDLE_SECONDS, proxy: str = OFFLINE_PROXY
    ) -> None:
        self.browser = browser
        self.idle_seconds = idle_seconds
        self.proxy = proxy
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="chart-renderer", daemon=True
        )
        self._thread.start()
        self._kaleido: Any = None
        self._opening: asyncio.Lock | None = None
        self._idle: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def is_open(self) -> bool:
        """Whether the browser is open now."""
        return self._kaleido is not None

    def start(self) -> concurrent.futures.Future[Any]:
        """Open the browser in the background (returns at once)."""
        return asyncio.run_coroutine_threadsafe(self._open(), self._loop)

    def png(self, figure: go.Figure, *, scale: float = 2) -> bytes:
        """``figure`` as PNG bytes at its layout's width and height times ``scale``.

        Raises:
            ChartUnavailable: the browser did not start or the chart did not come in time.
        """
        future = asyncio.run_coroutine_threadsafe(self._png(figure, scale), self._loop)
        try:
            return future.result(START_TIMEOUT_SECONDS + RENDER_TIMEOUT_SECONDS)
        except concurrent.futures.TimeoutError as err:
            future.cancel()
            asyncio.run_coroutine_threadsafe(self._close(), self._loop)
            raise ChartUnavailable("the browser drawing it did not answer in time") from err
        except ChartUnavailable:
            raise
        except Exception as err:  # a browser that crashed or refused: said in one line
            raise ChartUnavailable(f"the browser drawing it failed ({type(err).__name__})") from err

    def close(self) -> None:
        """Close the browser and stop the thread (the renderer is not used again)."""
        if not self._loop.is_running():
            return
        try:
            asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(
                START_TIMEOUT_SECONDS + 10
            )
        except Exception as err:  # closing at exit: nothing left to do about it
            LOGGER.debug("chart browser not closed cleanly: %s", err)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        if not self._thread.is_alive():
            self._loop.close()

    # on the renderer's loop

    async def _open(self) -> Any:
        import kaleido

        if self._opening is None:
            self._opening = asyncio.Lock()
        async with self._opening:
            if self._kaleido is None:
                if not PLOTLY_JS.is_file():
                    raise ChartUnavailable(
                        f"plotly.js is missing from the plotly package ({PLOTLY_JS})"
                    )
                browser = kaleido.Kaleido(
                    n=1,
                    timeout=RENDER_TIMEOUT_SECONDS,
                    plotlyjs=str(PLOTLY_JS),
                    mathjax=False,
                    path=self.browser,
                    proxy_server=self.proxy,
                )
                try:
                    await asyncio.wait_for(browser.open(), START_TIMEOUT_SECONDS)
                    await browser.calc_fig(_WARM_UP, opts={"format": "png"})
                except BaseException:
                    await _shut(browser)
                    raise
                self._kaleido = browser
                LOGGER.info("chart browser open (%s)", self.browser)
            self._touch()
            return self._kaleido

    async def _png(self, figure: go.Figure, scale: float) -> bytes:
        browser = await self._open()
        try:
            png = await browser.calc_fig(figure, opts={"format": "png", "scale": scale})
        except BaseException:
            await self._close()
            raise
        self._touch()
        if not isinstance(png, bytes):
            raise ChartUnavailable(f"kaleido returned {type(png).__name__}, not PNG bytes")
        return png

    def _touch(self) -> None:
        """Close the browser :attr:`idle_seconds` from now unless it draws again."""
        if self._idle is not None:
            self._idle.cancel()
        self._idle = self._loop.call_later(self.idle_seconds, self._close_when_idle)

    def _close_when_idle(self) -> None:
        task = self._loop.create_task(self._close())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _stop(self) -> None:
        """Close the browser (once it has opened, if it is opening) and end what is left on the
        loop (a dead browser's watchdog)."""
        if self._opening is not None:
            async with self._opening:
                pass
        await self._close()
        current = asyncio.current_task()
        pending = [task for task in asyncio.all_tasks() if task is not current]
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)

    async def _close(self) -> None:
        if self._idle is not None:
            self._idle.cancel()
            self._idle = None
        browser, self._kaleido = self._kaleido, None
        if browser is not None:
            await _shut(browser)
            LOGGER.info("chart browser closed")


async def _shut(browser: Any) -> None:
    try:
        await asyncio.wait_for(browser.close(), 10)
    except Exception as err:  # already gone
        LOGGER.debug("chart browser close: %s", err)


_renderer: ChartRenderer | None = None
_renderer_lock = threading.Lock()


def renderer() -> ChartRenderer | None:
    """This process's renderer (made on first use), None when no Chromium is installed."""
    global _renderer
    with _renderer_lock:
        if _renderer is None:
            browser = browser_path()
            if browser is None:
                return None
            _renderer = ChartRenderer(browser)
            atexit.register(shutdown)
        return _renderer


def warm_up() -> None:
    """Open the browser in the background, for a chart that may soon be asked for (a page
    with a report button). Does nothing when it is open or no Chromium is installed."""
    shared = renderer()
    if shared is not None and not shared.is_open:
        shared.start().add_done_callback(_log_failure)


def _log_failure(opened: concurrent.futures.Future[Any]) -> None:
    error = None if opened.cancelled() else opened.exception()
    if error is not None:
        LOGGER.warning("chart browser did not open: %s: %s", type(error).__name__, error)


def shutdown() -> None:
    """Close this process's browser, if one is open (at exit; tests)."""
    global _renderer
    with _renderer_lock:
        shared, _renderer = _renderer, None
    if shared is not None:
        shared.close()


def figure_png(figure: go.Figure, *, scale: float = 2) -> bytes:
    """``figure`` as PNG bytes (:class:`ChartRenderer`).

    Raises:
        ChartUnavailable: no Chromium is installed, or it failed.
    """
    shared = renderer()
    if shared is None:
        raise ChartUnavailable("no Chromium is installed on the server (apt-get install chromium)")
    return shared.png(figure, scale=scale)
