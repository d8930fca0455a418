"""A small lake with known rows for the dashboard tests, and the values written to it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import polars as pl

from lakehouse.catalog import DAILY_STEPS, JOB_RUNS, PATIENTS, SIDE_EFFECTS, THERAPIES
from lakehouse.storage import Lake

APP = Path(__file__).resolve().parents[2] / "dashboard" / "app.py"

# P001 (MS) has 10 days with two non-wear days, P002 (PD) 5 days with one, P003 (RA) none.
P001_STEPS = [4000.0, 5200.0, 150.0, 6100.0, 3900.0, 4500.0, 0.0, 5800.0, 6200.0, 4800.0]
P001_WEAR = [True, True, False, True, True, True, False, True, True, True]
P002_STEPS = [2100.0, 2500.0, 1800.0, 90.0, 2300.0]
P002_WEAR = [True, True, True, False, True]
FIRST_DAY = date(2024, 3, 1)


@dataclass(frozen=True)
class DemoLake:
    """The fixture lake and the rows written to it."""

    lake: Lake
    daily_steps: pl.DataFrame
    patients: pl.DataFrame


def daily_rows(patient_id: str, steps: list[float], wear: list[bool]) -> pl.DataFrame:
    days = [FIRST_DAY + timedelta(days=i) for i in range(len(steps))]
    return pl.DataFrame(
        {
            "patient_id": patient_id,
            "date": days,
            "steps": steps,
            "coverage_hours": [14 if w else 3 for w in wear],
            "n_samples": [40 if w else 5 for w in wear],
            "n_sources": 1,
            "is_wear_day": wear,
            "month": [d.strftime("%Y-%m") for d in days],
        }
    )


def build_demo_lake(root: Path) -> DemoLake:
    """Write a few rows to bronze.patients, therapies, side_effects, silver and ops tables."""
    lake = Lake(str(root))
    patients = pl.DataFrame(
        {
            "patient_id": ["P001", "P002", "P003"],
            "disease_group": ["MS", "PD", "RA"],
            "timezone": ["Europe/Berlin", "America/New_York", "UTC"],
            "sex": ["F", "M", None],
            "birth_year": [1975, 1950, None],
            "country": ["DE", "US", None],
            "enrolled_on": [FIRST_DAY, FIRST_DAY, None],
        }
    )
    lake.append(PATIENTS, patients)
    lake.append(
        THERAPIES,
        pl.DataFrame(
            {
                "patient_id": ["P001", "P001"],
                "therapy": ["ocrelizumab", "physiotherapy"],
                "start_date": [date(2024, 3, 3), date(2024, 3, 8)],
                "end_date": [date(2024, 3, 6), None],
            }
        ),
    )
    lake.append(
        SIDE_EFFECTS,
        pl.DataFrame(
            {
                "patient_id": ["P001"],
                "date": [date(2024, 3, 4)],
                "effect": ["fatigue"],
                "severity": [2],
            }
        ),
    )
    daily = pl.concat(
        [daily_rows("P001", P001_STEPS, P001_WEAR), daily_rows("P002", P002_STEPS, P002_WEAR)]
    )
    lake.append(DAILY_STEPS, daily)
    started = datetime(2024, 3, 11, 2, 0, tzinfo=UTC)
    lake.append(
        JOB_RUNS,
        pl.DataFrame(
            {
                "run_id": ["run-1", "run-2"],
                "job": ["aggregate", "aggregate"],
                "started_at": [started, started + timedelta(days=1)],
                "finished_at": [
                    started + timedelta(seconds=12.5),
                    started + timedelta(days=1, seconds=3),
                ],
                "status": ["succeeded", "failed"],
                "rows_in": [1000, 10],
                "rows_out": [15, 0],
                "error": [None, "StorageError: commit conflict persisted"],
                "engine": ["local", "local"],
                "wall_seconds": [12.5, 3.0],
                "cpu_seconds": [10.0, 1.0],
                "peak_rss_mb": [300.0, 200.0],
                "details": ["{}", "{}"],
            }
        ),
    )
    return DemoLake(lake=lake, daily_steps=daily, patients=patients)
