"""The Cohort SQL page's example query answers what its comment says, computed independently."""

from __future__ import annotations

import random
from datetime import date, datetime, timedelta
from pathlib import Path

import polars as pl

from dashboard import data
from dashboard.sql_example import EXAMPLE
from lakehouse.catalog import DAILY_STEPS, PATIENTS
from lakehouse.storage import Lake
from tests.dashboard.demo_lake import append

FIRST_DAY = date(2025, 1, 1)
DAYS = 130  # five calendar months, the last one partial


def _lake(root: Path) -> Lake:
    """36 patients in four groups (one patient with no wear day at all); random days, some not
    worn and some missing."""
    rng = random.Random(7)
    lake = Lake(str(root))
    groups = ["MS", "PD", "RA", "OTHER"]
    ids = [f"P{i:03d}" for i in range(36)]
    append(
        lake,
        PATIENTS,
        pl.DataFrame(
            {
                "patient_id": ids,
                "disease_group": [groups[i % 4] for i in range(36)],
                "timezone": "UTC",
            }
        ),
    )
    rows = []
    for index, patient in enumerate(ids):
        start = rng.randrange(0, 60)  # patients join at different times
        for offset in range(start, DAYS):
            if rng.random() < 0.2:
                continue  # no data that day
            day = FIRST_DAY + timedelta(days=offset)
            rows.append(
                {
                    "patient_id": patient,
                    "date": day,
                    "steps": float(rng.randrange(0, 15_000)),
                    "coverage_hours": 12,
                    "n_samples": 40,
                    "n_sources": 1,
                    "is_wear_day": index != 5 and rng.random() < 0.8,
                    "month": day.strftime("%Y-%m"),
                }
            )
    append(lake, DAILY_STEPS, pl.DataFrame(rows, schema_overrides={"coverage_hours": pl.Int16}))
    return lake


def _as_date(value: date | datetime) -> date:
    return value.date() if isinstance(value, datetime) else value


def test_the_example_gives_each_group_and_months_median_and_patients(tmp_path: Path) -> None:
    lake = _lake(tmp_path / "lake")
    days = pl.read_delta(lake.table_uri(DAILY_STEPS))
    patients = pl.read_delta(lake.table_uri(PATIENTS))
    expected = (
        days.filter(pl.col("is_wear_day"))
        .join(patients.select("patient_id", "disease_group"), on="patient_id")
        .group_by("disease_group", month=pl.col("date").dt.truncate("1mo"))
        .agg(median_steps=pl.col("steps").median(), patients=pl.col("patient_id").n_unique())
        .sort(["month", "disease_group"], descending=[True, False])
    )

    result = data.run_analyst_query(lake, EXAMPLE)

    rows = [{**row, "month": _as_date(row["month"])} for row in result.table.to_pylist()]
    assert not result.truncated
    assert len(rows) == expected.height == 20  # 4 groups x 5 months
    assert rows == expected.to_dicts()
