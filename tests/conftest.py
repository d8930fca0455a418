"""Fixtures shared by every test package."""

from __future__ import annotations

from pathlib import Path

import pytest

from lakehouse import Lake


@pytest.fixture
def lake(tmp_path: Path) -> Lake:
    """An empty lake in a fresh temporary folder."""
    return Lake(str(tmp_path / "lake"))
