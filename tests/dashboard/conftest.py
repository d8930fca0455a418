"""Fixtures for the dashboard tests: an empty lake and the demo lake, with caches cleared."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import streamlit as st

from dashboard import chart_image, data
from lakehouse.settings import get_settings
from lakehouse.storage import Lake
from tests.dashboard.demo_lake import DemoLake, build_demo_lake
from tests.dashboard.identities import ROLES_TOML


@pytest.fixture(scope="session", autouse=True)
def close_the_chart_browser() -> Iterator[None]:
    """The printable report's browser (the patient page opens it) closes with the session: at
    exit it could not (the thread pools it needs are shut down before ``atexit`` runs)."""
    yield
    chart_image.shutdown()


def forget_caches() -> None:
    get_settings.cache_clear()
    data.clear_caches()
    st.cache_data.clear()
    st.cache_resource.clear()


@pytest.fixture(scope="session")
def roles_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tests' role file (one email per role, see identities.py)."""
    path = tmp_path_factory.mktemp("roles") / "roles.toml"
    path.write_text(ROLES_TOML, encoding="utf-8")
    return path


@pytest.fixture(autouse=True)
def test_roles(roles_file: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Every dashboard test signs in against the tests' role file, outside demo mode."""
    monkeypatch.setenv("MOBILITY_ROLES_FILE", str(roles_file))
    monkeypatch.delenv("MOBILITY_DEMO", raising=False)
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


@pytest.fixture(scope="session")
def demo_lake_root(tmp_path_factory: pytest.TempPathFactory) -> DemoLake:
    """The demo lake, built once for the session (tests only read it)."""
    return build_demo_lake(tmp_path_factory.mktemp("demo_lake"))


@pytest.fixture
def demo_lake(demo_lake_root: DemoLake, monkeypatch: pytest.MonkeyPatch) -> Iterator[DemoLake]:
    """``LAKE_URI`` pointing at the demo lake, with every cache cleared."""
    monkeypatch.setenv("LAKE_URI", demo_lake_root.lake.uri)
    forget_caches()
    yield demo_lake_root
    forget_caches()


@pytest.fixture
def empty_lake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Lake]:
    """``LAKE_URI`` pointing at an empty folder, with every cache cleared."""
    root = tmp_path / "empty_lake"
    root.mkdir()
    monkeypatch.setenv("LAKE_URI", str(root))
    forget_caches()
    yield Lake(str(root))
    forget_caches()
