"""Bulk appends (lakehouse/bulk.py): pyarrow-written files committed in one Delta commit."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from lakehouse import bulk
from lakehouse.bulk import BulkAppend
from lakehouse.catalog import DAILY_STEPS, PATIENTS, STEP_SAMPLES
from lakehouse.storage import Lake


def _samples(first_patient: int, patients: int, *, seed: int = 0) -> pl.DataFrame:
    """Samples of ``patients`` patients over three months, sorted as bronze is; some times
    with microseconds."""
    rng = np.random.default_rng(seed + first_patient)
    rows = []
    for index in range(first_patient, first_patient + patients):
        start = datetime(2024, 1, 30, tzinfo=UTC)
        for _ in range(40):
            start += timedelta(hours=int(rng.integers(1, 72)), microseconds=int(rng.integers(0, 9)))
            rows.append(
                {
                    "patient_id": f"P{index:04d}",
                    "start_ts": start,
                    "end_ts": start + timedelta(minutes=int(rng.integers(1, 30))),
                    "utc_offset_minutes": int(rng.choice([-300, 60, 330])),
                    "steps": float(rng.integers(0, 500)) + float(rng.choice([0, 0.5])),
                    "source": str(rng.choice(["watch", "phone"])),
                }
            )
    frame = pl.DataFrame(rows, schema_overrides={"utc_offset_minutes": pl.Int16})
    return frame.with_columns(month=pl.col("start_ts").dt.strftime("%Y-%m")).sort(
        "patient_id", "source", "start_ts"
    )


def test_rows_read_back_exactly_in_one_commit(tmp_path: Path) -> None:
    lake = Lake(str(tmp_path))
    batches = [_samples(1 + 10 * i, 10) for i in range(4)]
    # half of them month by month (written as slices), half patient by patient (split)
    batches[::2] = [batch.sort("month", maintain_order=True) for batch in batches[::2]]
    with BulkAppend(lake, STEP_SAMPLES, metadata={"job": "test"}) as load:
        for batch in batches:
            load.add(batch)
    expected = pl.concat(batches).sort("patient_id", "source", "start_ts")
    stored = lake.read(STEP_SAMPLES).sort("patient_id", "source", "start_ts")
    assert stored.equals(expected.select(stored.columns))
    history = lake.history(STEP_SAMPLES)
    assert [h.get("job") for h in history[:1]] == ["test"]
    assert len(history) == 2  # the empty table's creation, then the one commit


def test_file_count_grows_with_rows_not_with_batches(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lake = Lake(str(tmp_path))
    with BulkAppend(lake, STEP_SAMPLES) as load:
        for i in range(12):
            load.add(_samples(1 + 5 * i, 5))
    months = lake.read(STEP_SAMPLES)["month"].n_unique()
    assert lake.info(STEP_SAMPLES).files == months  # one file per month for all 12 batches

    # a file is rolled over when full: 3 months, at most 1,000 rows a file
    monkeypatch.setattr(bulk, "FILE_ROWS", 1_000)
    other = Lake(str(tmp_path / "other"))
    with BulkAppend(other, STEP_SAMPLES) as load:
        for i in range(6):  # two batches a call: one file can fill up between them
            load.add(_samples(1 + 10 * i, 5), _samples(6 + 10 * i, 5))
    assert (
        other.read(STEP_SAMPLES)
        .sort("patient_id", "start_ts")
        .equals(lake.read(STEP_SAMPLES).sort("patient_id", "start_ts"))
    )
    stats = other.file_stats(STEP_SAMPLES)
    assert stats["num_records"].max() <= 1_000
    assert stats.height <= 3 * (-(-other.info(STEP_SAMPLES).rows // 800))


def test_statistics_are_those_of_the_rows(tmp_path: Path) -> None:
    lake = Lake(str(tmp_path))
    with BulkAppend(lake, STEP_SAMPLES) as load:
        load.add(_samples(1, 30))
    rows = lake.read(STEP_SAMPLES)
    for file in lake.file_stats(STEP_SAMPLES).iter_rows(named=True):
        month = rows.filter(pl.col("month") == file["partition.month"])
        assert file["num_records"] == month.height
        for column in ("patient_id", "start_ts", "end_ts", "utc_offset_minutes", "steps"):
            assert file[f"min.{column}"] == month[column].min(), column
            assert file[f"max.{column}"] == month[column].max(), column
    # pruning by those statistics finds every row of a patient and time range
    some = rows.filter(
        (pl.col("patient_id") == "P0007") & (pl.col("start_ts") > rows["start_ts"].median())
    )
    found = (
        lake.scan(STEP_SAMPLES)
        .filter(pl.col("patient_id") == "P0007")
        .filter(pl.col("start_ts") > rows["start_ts"].median())
        .collect()
    )
    assert found.sort("start_ts").equals(some.sort("start_ts"))


def test_a_failed_load_commits_nothing_and_removes_its_files(tmp_path: Path) -> None:
    lake = Lake(str(tmp_path))
    with BulkAppend(lake, STEP_SAMPLES) as load:
        load.add(_samples(1, 5))
    before = lake.read(STEP_SAMPLES)
    files_before = {p for p in (tmp_path / STEP_SAMPLES.path).rglob("*.parquet")}

    with (
        pytest.raises(RuntimeError, match="simulation failed"),
        BulkAppend(lake, STEP_SAMPLES) as load,
    ):
        load.add(_samples(100, 5))
        raise RuntimeError("simulation failed")
    assert lake.read(STEP_SAMPLES).equals(before)
    assert {p for p in (tmp_path / STEP_SAMPLES.path).rglob("*.parquet")} == files_before


def test_rows_without_a_column_are_refused(tmp_path: Path) -> None:
    with (
        pytest.raises(ValueError, match="rows lack columns"),
        BulkAppend(Lake(str(tmp_path)), STEP_SAMPLES) as load,
    ):
        load.add(_samples(1, 2).drop("source"))
    with pytest.raises(ValueError, match="not partitioned"):
        BulkAppend(Lake(str(tmp_path)), PATIENTS)


def test_a_load_commits_once(tmp_path: Path) -> None:
    lake = Lake(str(tmp_path))
    with BulkAppend(lake, STEP_SAMPLES) as load:
        load.add(_samples(1, 3))
        load.commit()  # committed inside the block: leaving it must not commit again
    assert lake.info(STEP_SAMPLES).rows == _samples(1, 3).height
    with pytest.raises(ValueError, match="committed already"):
        load.add(_samples(10, 1))
    with pytest.raises(ValueError, match="committed already"):
        load.commit()


def test_date_columns_get_statistics(tmp_path: Path) -> None:
    lake = Lake(str(tmp_path))
    days = pl.DataFrame(
        {
            "patient_id": ["P1", "P1", "P2"],
            "date": [date(2024, 1, 30), date(2024, 2, 2), date(2024, 1, 31)],
            "steps": [10.0, 20.0, 30.0],
            "coverage_hours": [10, 12, 9],
            "n_samples": [5, 6, 7],
            "n_sources": [1, 1, 2],
            "is_wear_day": [True, True, True],
        },
        schema_overrides={"coverage_hours": pl.Int16, "n_samples": pl.Int32, "n_sources": pl.Int16},
    ).with_columns(month=pl.col("date").dt.strftime("%Y-%m"))
    with BulkAppend(lake, DAILY_STEPS) as load:
        load.add(days)
    stats = lake.file_stats(DAILY_STEPS).sort("partition.month")
    assert stats["min.date"].to_list() == [date(2024, 1, 30), date(2024, 2, 2)]
    assert stats["max.date"].to_list() == [date(2024, 1, 31), date(2024, 2, 2)]
    assert lake.read(DAILY_STEPS).sort("date").equals(days.sort("date").select(DAILY_STEPS.columns))
