"""Fixtures shared by the browser tests: Debian's chromium and one browser per module."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, sync_playwright

from tests.browser.test_dashboard_browser import _chromium


@pytest.fixture(scope="module")
def chromium() -> str:
    """Debian's chromium (never a browser downloaded by Playwright)."""
    path = _chromium()
    if path is None:
        pytest.skip(
            "Debian's chromium is not installed (/usr/bin/chromium): "
            "apt-get install chromium, or run ./scripts/test as root to install it"
        )
    return path


@pytest.fixture(scope="module")
def browser(chromium: str) -> Iterator[Browser]:
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        yield launched
        launched.close()
