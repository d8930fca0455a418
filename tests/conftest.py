"""Fixtures shared by every test package."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from lakehouse import Lake, get_settings
from tests.pseudonyms import TEST_PSEUDONYM_KEY


@pytest.fixture(scope="session", autouse=True)
def pseudonym_key() -> Iterator[None]:
    """The whole session (every test, module fixture and command it starts) runs with the tests'
    pseudonym key and without demo mode; a test may change either with ``monkeypatch``."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MOBILITY_PSEUDONYM_KEY", TEST_PSEUDONYM_KEY)
        patch.delenv("MOBILITY_DEMO", raising=False)
        get_settings.cache_clear()
        yield
    get_settings.cache_clear()


@pytest.fixture(autouse=True)
def fresh_settings() -> Iterator[None]:
    """Settings read anew for each test: one that changed the environment leaves none behind."""
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


@pytest.fixture
def lake(tmp_path: Path) -> Lake:
    """An empty lake in a fresh temporary folder."""
    return Lake(str(tmp_path / "lake"))
