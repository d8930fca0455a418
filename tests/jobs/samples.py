"""Step samples for tests: built by hand in local time, and compared with the reference."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import polars as pl
import pytest

from jobs.daily import MIN_WEAR_HOURS
from tests.jobs.reference_daily import reference_daily

SAMPLE_SCHEMA = {
    "patient_id": pl.String,
    "start_ts": pl.Datetime("us", "UTC"),
    "end_ts": pl.Datetime("us", "UTC"),
    "utc_offset_minutes": pl.Int16,
    "steps": pl.Float64,
    "source": pl.String,
}


def utc(text: str) -> datetime:
    """An ISO timestamp read as UTC."""
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def local_sample(
    start: str,
    end: str,
    steps: float,
    *,
    offset: int = 0,
    source: str = "phone",
    patient: str = "P1",
) -> dict[str, Any]:
    """A sample given in LOCAL wall-clock time with its UTC offset in minutes."""
    shift = timedelta(minutes=offset)
    return {
        "patient_id": patient,
        "start_ts": utc(start) - shift,
        "end_ts": utc(end) - shift,
        "utc_offset_minutes": offset,
        "steps": float(steps),
        "source": source,
    }


def sample_frame(samples: list[dict[str, Any]]) -> pl.DataFrame:
    """Sample dicts as a frame with the bronze column types."""
    return pl.DataFrame(samples, schema=SAMPLE_SCHEMA)


def assert_days_match_reference(samples: list[dict[str, Any]], days: pl.DataFrame) -> None:
    """Every column of ``days`` equals the plain-Python reference computed from ``samples``."""
    expected = reference_daily(samples)
    actual = {(r["patient_id"], r["date"]): r for r in days.iter_rows(named=True)}
    assert set(actual) == set(expected)
    for key, want in expected.items():
        got = actual[key]
        assert got["steps"] == pytest.approx(want["steps"], rel=1e-9, abs=1e-6), key
        assert got["steps"] >= 0, key
        assert got["coverage_hours"] == want["coverage_hours"], key
        assert got["n_samples"] == want["n_samples"], key
        assert got["n_sources"] == want["n_sources"], key
        assert got["is_wear_day"] == (want["coverage_hours"] >= MIN_WEAR_HOURS and got["steps"] > 0)
        assert got["month"] == key[1].strftime("%Y-%m")
