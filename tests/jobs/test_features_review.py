"""Review findings for the features job (fixed): incremental runs that differed from a full run.

Each test builds a tiny lake by hand, runs the job, changes the inputs the way real pipelines do
and checks that the incremental run leaves exactly what a full recomputation of the transform over
the current inputs gives.
"""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa
import pytest

from jobs.features import run as features_job
from lakehouse import feature_dictionary
from lakehouse.catalog import (
    DAILY_STEPS,
    FEATURES,
    THERAPIES,
    TableSpec,
)
from lakehouse.storage import Lake
from tests.jobs.test_features_job import assert_features_current


def _frame(table: TableSpec, rows: list[dict[str, Any]]) -> pl.DataFrame:
    frame = pl.from_arrow(pa.Table.from_pylist(rows, schema=table.schema))
    assert isinstance(frame, pl.DataFrame)
    return frame


def _days(patient: str, first: date, count: int) -> pl.DataFrame:
    """``count`` consecutive wear days of one patient from ``first``."""
    return _frame(
        DAILY_STEPS,
        [
            {
                "patient_id": patient,
                "date": first + timedelta(days=i),
                "steps": 1000.0 + 10 * i,
                "coverage_hours": 12,
                "n_samples": 10,
                "n_sources": 1,
                "is_wear_day": True,
                "month": (first + timedelta(days=i)).strftime("%Y-%m"),
            }
            for i in range(count)
        ],
    )


def test_new_days_after_a_wear_gap_write_the_gap_days(tmp_path: Path) -> None:
    """A device left in a drawer for a week, then synced: the rows of the gap days are missing.

    The daily_steps file of the new days starts on the first new day, so the scope's first_day
    is that day; the rows between the old 'day after the last day' and it are never written
    (run.py: _daily_scopes takes min.date of the changed files as the first changed day).
    """
    lake = Lake(str(tmp_path / "lake"))
    lake.append(DAILY_STEPS, _days("A", date(2024, 1, 1), 10))
    lake.append(DAILY_STEPS, _days("B", date(2024, 1, 1), 10))
    assert features_job.run(lake).mode == "full"
    lake.append(DAILY_STEPS, _days("A", date(2024, 1, 20), 5))  # Jan 11 .. Jan 19 not worn
    assert features_job.run(lake).mode == "incremental"
    assert_features_current(lake)


def test_deleting_the_days_after_a_gap_removes_the_gap_rows(tmp_path: Path) -> None:
    """Days after a gap are deleted (re-aggregation, withdrawn consent for a period): the rows of
    the gap days stay, though the patient's record now ends before them."""
    lake = Lake(str(tmp_path / "lake"))
    lake.append(DAILY_STEPS, _days("A", date(2024, 1, 1), 10))
    lake.append(DAILY_STEPS, _days("A", date(2024, 3, 1), 5))
    features_job.run(lake)
    lake.delete(DAILY_STEPS, "date >= '2024-03-01'")
    assert features_job.run(lake).mode == "incremental"
    assert_features_current(lake)


def test_a_new_brand_name_in_the_dictionary_recomputes_the_features(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The dictionary is the single source of truth, but the feature-set fingerprint only hashes
    column names and types: a new alias (or a changed minimum of wear days, EWM horizon, ...)
    leaves every stored row computed with the old definition and the next run 'up-to-date'."""
    lake = Lake(str(tmp_path / "lake"))
    lake.append(DAILY_STEPS, _days("A", date(2024, 1, 1), 20))
    lake.append(
        THERAPIES,
        _frame(
            THERAPIES,
            [
                {
                    "patient_id": "A",
                    "therapy": "Hyrimoz",  # an adalimumab biosimilar, not yet an alias
                    "start_date": date(2024, 1, 5),
                    "end_date": None,
                }
            ],
        ),
    )
    features_job.run(lake)
    assert not lake.read(FEATURES)["therapy_adalimumab_active"].any()
    # the dictionary gains the alias (what an edit of THERAPIES' aliases does at import)
    monkeypatch.setitem(feature_dictionary.THERAPY_SPELLINGS, "hyrimoz", "adalimumab")
    features_job.run(lake)
    assert_features_current(lake)
