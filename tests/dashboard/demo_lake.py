"""A small lake with known rows for the dashboard tests, and the values written to it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import polars as pl

from lakehouse.catalog import (
    ALERTS,
    BACKTESTS,
    DAILY_STEPS,
    EXPLANATIONS,
    FORECASTS,
    JOB_RUNS,
    MONITOR_CHECKS,
    OUTLOOK,
    PATIENTS,
    QUARANTINE,
    REGISTRY,
    SIDE_EFFECTS,
    THERAPIES,
)
from lakehouse.storage import Lake

APP = Path(__file__).resolve().parents[2] / "dashboard" / "app.py"

# P001 (MS) has 10 days with two non-wear days, P002 (PD) 5 days with one, P003 (RA) none.
P001_STEPS = [4000.0, 5200.0, 150.0, 6100.0, 3900.0, 4500.0, 0.0, 5800.0, 6200.0, 4800.0]
P001_WEAR = [True, True, False, True, True, True, False, True, True, True]
P002_STEPS = [2100.0, 2500.0, 1800.0, 90.0, 2300.0]
P002_WEAR = [True, True, True, False, True]
FIRST_DAY = date(2024, 3, 1)
# P001's forecast: from the day after their last day, two models, ebm_global the MS champion;
# ebm_global explained on its first two days (a feature outside a day's top rows is absent)
ORIGIN = date(2024, 3, 11)
P001_FORECAST = {"ebm_global": 5000.0, "trailing_mean_28d": 4800.0}
P001_EXPLANATIONS = {
    ORIGIN: {
        "baseline": 5000.0,
        "intercept": 100.0,
        "roll_mean_30d": 300.0,
        "other_features": 50.0,
    },
    ORIGIN + timedelta(days=1): {
        "baseline": 5000.0,
        "intercept": 100.0,
        "cal_is_weekend": -400.0,
        "other_features": 20.0,
    },
}
# the outlook: P001 forecast 20% below their baseline (declining), P002 5% below (not)
P001_CHANGE, P002_CHANGE = -0.2, -0.05
# MS backtests of the latest training: MAE per model at two origins, 7 and 365 days ahead
BACKTEST_MAE = {
    ("ebm_global", 365): (1000.0, 1200.0),
    ("trailing_mean_28d", 365): (1300.0, 1500.0),
    ("ebm_global", 7): (900.0, 700.0),
    ("trailing_mean_28d", 7): (950.0, 1050.0),
}
# the latest monitoring run: accuracy alerting, a job healthy, cost per category and in total
COST = {"storage": (0.01, 30.0), "processing": (0.5, 150.0), "training": (0.2, 60.0)}
COST_TOTAL = (0.71, 240.0)
QUARANTINE_REASONS = ["negative steps (-5)", "negative steps (-70)", "end before start"]


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
                "bytes_read": [52_000_000, 1_000_000],
                "bytes_written": [4_000_000, 0],
                "details": ["{}", "{}"],
            }
        ),
    )
    _write_forecast_tables(lake)
    _write_monitoring(lake, started + timedelta(days=2))
    lake.append(
        QUARANTINE,
        pl.DataFrame(
            {
                "source_file": ["a.csv", "a.csv", "b.csv"],
                "record": [2, 5, 3],
                "reason": QUARANTINE_REASONS,
                "raw": ["x", "y", "z"],
                "patient_id": ["P001", "P001", None],
                "quarantined_at": [started, started, started + timedelta(hours=1)],
            }
        ),
    )
    return DemoLake(lake=lake, daily_steps=daily, patients=patients)


def _write_forecast_tables(lake: Lake) -> None:
    month = ORIGIN.strftime("%Y-%m")
    days = [ORIGIN + timedelta(days=i) for i in range(365)]
    lake.append(
        FORECASTS,
        pl.concat(
            pl.DataFrame(
                {
                    "patient_id": "P001",
                    "model": model,
                    "origin_date": ORIGIN,
                    "target_date": days,
                    "yhat": level,
                    "yhat_lower": level - 1000,
                    "yhat_upper": level + 1000,
                    "origin_month": month,
                }
            )
            for model, level in P001_FORECAST.items()
        ),
    )
    lake.append(
        EXPLANATIONS,
        pl.DataFrame(
            [
                {
                    "patient_id": "P001",
                    "model": "ebm_global",
                    "origin_date": ORIGIN,
                    "target_date": day,
                    "feature": feature,
                    "contribution": value,
                    "origin_month": month,
                }
                for day, rows in P001_EXPLANATIONS.items()
                for feature, value in rows.items()
            ]
        ),
    )
    trained = datetime(2024, 3, 11, 3, 0, tzinfo=UTC)
    lake.append(
        REGISTRY,
        pl.DataFrame(
            {
                "model_id": ["ebm_global:MS:v1", "trailing_mean_28d:MS:v1"],
                "kind": ["ebm", "baseline"],
                "cluster": ["MS", "MS"],
                "version": [1, 1],
                "trained_at": [trained, trained],
                "params": ["{}", "{}"],
                "metrics": ["{}", "{}"],
                "artifact_uri": [None, None],
                "status": ["champion", "candidate"],
            }
        ),
    )
    lake.append(
        OUTLOOK,
        pl.DataFrame(
            {
                "patient_id": ["P001", "P002"],
                "model": ["ebm_global", "trailing_mean_28d"],
                "origin_date": [ORIGIN, date(2024, 3, 6)],
                "champion": [True, True],
                "baseline_steps": [6250.0, 2000.0],
                "next_quarter_steps": [5000.0, 1900.0],
                "year_end_steps": [6250.0 * (1 + P001_CHANGE), 2000.0 * (1 + P002_CHANGE)],
                "year_steps": [5000.0, 1900.0],
                "year_end_change": [P001_CHANGE, P002_CHANGE],
                "origin_month": [month, month],
            }
        ),
    )
    lake.append(
        BACKTESTS,
        pl.DataFrame(
            [
                {
                    "model": model,
                    "cluster": "MS",
                    "origin_date": origin,
                    "horizon_days": horizon,
                    "mae": mae,
                    "rmse": mae * 1.3,
                    "mase": mae / 1000,
                    "coverage": 0.8,
                    "patients": 10,
                    "days": 100,
                    "trained_at": trained,
                }
                for (model, horizon), maes in BACKTEST_MAE.items()
                for origin, mae in zip((date(2023, 1, 1), date(2023, 4, 1)), maes, strict=True)
            ]
        ),
    )


def _write_monitoring(lake: Lake, checked_at: datetime) -> None:
    earlier = checked_at - timedelta(days=1)
    rows = [
        (
            "old",
            earlier,
            "accuracy",
            "ebm_global · MS · first 28 days",
            "mae",
            900.0,
            1000.0,
            1100.0,
            "ok",
        ),
        (
            "run-m",
            checked_at,
            "accuracy",
            "ebm_global · MS · first 28 days",
            "mae",
            1500.0,
            1000.0,
            1100.0,
            "alert",
        ),
        (
            "run-m",
            checked_at,
            "job health",
            "job aggregate",
            "latest run failed",
            0.0,
            None,
            0.0,
            "ok",
        ),
    ]
    rows += [
        ("run-m", checked_at, "cost", subject, "usd_per_month", value, projected, None, "ok")
        for subject, (value, projected) in COST.items()
    ]
    rows.append(("run-m", checked_at, "cost", "total", "usd_per_month", *COST_TOTAL, 500.0, "ok"))
    columns = ["run_id", "checked_at", "check", "subject", "metric", "value", "reference"]
    columns += ["threshold", "status"]
    shares = '{"patients": 40, "shares_now": [0.5, 0.5, 0.0], "shares_reference": [0.3, 0.6, 0.1]}'
    drift = pl.DataFrame(
        [("run-m", checked_at, "feature drift", "ewm_mean_28d", "psi", 0.25, None, 0.2, "alert")],
        schema=columns,
        orient="row",
    ).with_columns(details=pl.lit(shares))
    lake.append(
        MONITOR_CHECKS,
        pl.concat(
            [
                pl.DataFrame(rows, schema=columns, orient="row").with_columns(details=pl.lit("{}")),
                drift,
            ]
        ),
    )
    lake.append(
        ALERTS,
        pl.DataFrame(
            {
                "alert_id": ["a1", "a2"],
                "raised_at": [earlier, checked_at],
                "check": ["job health", "accuracy"],
                "subject": ["job aggregate", "ebm_global · MS · first 28 days"],
                "message": ["aggregate failed", "MAE 1500 over 1100"],
                "run_id": ["old", "run-m"],
                "resolved_at": [checked_at, None],
            }
        ),
    )
