"""A small lake with known rows for the dashboard tests, and the values written to it."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import polars as pl
import pyarrow as pa

from lakehouse.catalog import (
    ALERTS,
    BACKTESTS,
    DAILY_STEPS,
    DIAGNOSES,
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
    TableSpec,
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


def append(lake: Lake, table: TableSpec, rows: pl.DataFrame) -> None:
    """Append ``rows`` to ``table``, any nullable column of the catalog they do not name as
    null (the fixture keeps working as tables gain columns)."""
    missing = [
        pl.lit(None, pl.DataFrame(pa.schema([field]).empty_table()).dtypes[0]).alias(field.name)
        for field in table.schema
        if field.name not in rows.columns and field.nullable
    ]
    lake.append(table, rows.with_columns(missing) if missing else rows)


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
    append(lake, PATIENTS, patients)
    append(
        lake,
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
    append(
        lake,
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
    append(
        lake,
        DIAGNOSES,
        pl.DataFrame(
            {
                "patient_id": ["P001", "P001", "P001"],
                "code": ["G35", "f329", "Q99.X9"],
                "diagnosed_on": [date(2015, 5, 1), date(2020, 1, 10), date(2021, 2, 3)],
                # the file's description is used only for a code not in ICD-10-CM
                "description": ["MS (as the file wrote it)", None, "**a local code**"],
            }
        ),
    )
    daily = pl.concat(
        [daily_rows("P001", P001_STEPS, P001_WEAR), daily_rows("P002", P002_STEPS, P002_WEAR)]
    )
    append(lake, DAILY_STEPS, daily)
    started = datetime(2024, 3, 11, 2, 0, tzinfo=UTC)
    append(
        lake,
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
    append(
        lake,
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
    append(
        lake,
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
    append(
        lake,
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
    append(
        lake,
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
    append(
        lake,
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
    append(
        lake,
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
    append(
        lake,
        MONITOR_CHECKS,
        pl.concat(
            [
                pl.DataFrame(rows, schema=columns, orient="row").with_columns(details=pl.lit("{}")),
                drift,
            ]
        ),
    )
    append(
        lake,
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


# ----------------------------------------------------- a lake with champions of every kind

# Patients whose champion is each kind of model, forecast from the same origin; the baselines'
# forecasts are the real models' (models/baselines.py) on the patients' daily steps.
K_ORIGIN = date(2024, 6, 1)
K_HISTORY_DAYS = 91
K_CHAMPIONS = {
    "K-MEAN": ("MS", "trailing_mean_28d"),
    "K-GAP": ("MS", "trailing_mean_28d"),  # 5 worn days in the last 28: the last 28 worn days
    "K-WEEK": ("PD", "weekday_profile_8w"),
    "K-NAIVE": ("RA", "seasonal_naive_7d"),
    "K-PROPHET": ("OTHER", "prophet"),
    "K-EBM": ("PD", "ebm_cluster"),
    "K-SHORT": ("RA", None),  # too little history: the cluster-level forecast only, no champion
    "K-USUAL": ("OTHER", "usual_level"),
}
# K-EBM's and K-PROPHET's therapies: levodopa (as "Sinemet") stops 10 days into the forecast,
# physiotherapy (no columns of its own) starts after 40 days, pramipexole runs throughout
K_LEVODOPA_STOP = K_ORIGIN + timedelta(days=9)
K_PHYSIO_START = K_ORIGIN + timedelta(days=40)
K_THERAPIES = (
    ("Sinemet", date(2023, 1, 1), K_LEVODOPA_STOP),
    ("pramipexole", date(2023, 6, 1), None),
    ("physiotherapy", K_PHYSIO_START, K_PHYSIO_START + timedelta(days=30)),
)


def k_daily_steps(patient_id: str) -> pl.DataFrame:
    """The patient's daily steps: a weekday pattern, a slow drift, every 5th day not worn (K-GAP:
    nothing worn in the last 28 days but 5 days; K-SHORT: only the last 10 days)."""
    days: list[date] = []
    steps: list[float] = []
    worn: list[bool] = []
    seed = sum(map(ord, patient_id))
    for offset in range(K_HISTORY_DAYS):
        if patient_id == "K-SHORT" and offset < K_HISTORY_DAYS - 10:
            continue
        day = K_ORIGIN - timedelta(days=K_HISTORY_DAYS - offset)
        wear = offset % 5 != 3
        if patient_id == "K-GAP" and offset >= K_HISTORY_DAYS - 28:
            wear = offset % 6 == 0
        walked = 3000.0 + 400.0 * (day.weekday() in (5, 6)) + 7.0 * offset + (seed * offset) % 350
        days.append(day)
        steps.append(walked if wear else 40.0)
        worn.append(wear)
    return daily_rows(patient_id, steps, worn).with_columns(
        date=pl.Series(days), month=pl.Series([d.strftime("%Y-%m") for d in days])
    )


def k_explanation(day: date) -> dict[str, float]:
    """K-EBM's stored contributions of a target day (they sum to its forecast)."""
    ahead = (day - K_ORIGIN).days
    season = 300.0 * math.sin(2 * math.pi * day.timetuple().tm_yday / 365.25)
    return {
        "baseline": 4000.0,
        "intercept": 60.0,
        "roll_mean_30d": 120.0,
        "baseline_deviation_7d": -30.0,
        "cal_doy_sin_1": season,
        "cal_origin_doy_cos_1": -80.0,
        "cal_day_of_week": 250.0 if day.weekday() >= 5 else -100.0,
        "weekday_offset": 40.0 if day.weekday() >= 5 else -16.0,
        "trend_slope_90d": -2.0 * min(ahead, 90),
        "horizon_days": -0.5 * ahead,
        "therapy_levodopa_change": -450.0 if day > K_LEVODOPA_STOP else 12.0,
        "therapy_pramipexole_change": 8.0,  # ongoing: the model's allowance for no change
        "therapy_other_change": 150.0 if day >= K_PHYSIO_START else -3.0,
        "side_effect_count_30d": -25.0,
        "dx_years_since_diagnosis": -40.0,
        "coverage_nonwear_share_30d": 10.0,
        "roll_mean_7d & horizon_days": 5.0,
        "other_features": 22.0,
    }


def k_prophet_yhat(day: date) -> float:
    """K-PROPHET's forecast: a yearly wave and a weekday pattern on 3,500 steps."""
    season = 600.0 * math.sin(2 * math.pi * day.timetuple().tm_yday / 365.25)
    return 3500.0 + season + (300.0 if day.weekday() >= 5 else -120.0)


def build_champions_lake(root: Path) -> Lake:
    """Write the K- patients: daily steps, therapies, forecasts of each one's models, the
    champion in gold/outlook and K-EBM's explanations."""
    from models.base import ForecastInput
    from models.baselines import SeasonalNaive, TrailingMean, UsualLevel, WeekdayProfile

    lake = Lake(str(root))
    patients = pl.DataFrame(
        {
            "patient_id": list(K_CHAMPIONS),
            "disease_group": [group for group, _ in K_CHAMPIONS.values()],
            "timezone": "UTC",
            "sex": None,
            "birth_year": None,
            "country": None,
            "enrolled_on": None,
        },
        schema_overrides={
            "sex": pl.String,
            "birth_year": pl.Int16,
            "country": pl.String,
            "enrolled_on": pl.Date,
        },
    )
    append(lake, PATIENTS, patients)
    append(
        lake,
        THERAPIES,
        pl.DataFrame(
            [
                {"patient_id": pid, "therapy": t, "start_date": s, "end_date": e}
                for pid in ("K-EBM", "K-PROPHET", "K-MEAN")
                for t, s, e in K_THERAPIES
            ],
            schema={
                "patient_id": pl.String,
                "therapy": pl.String,
                "start_date": pl.Date,
                "end_date": pl.Date,
            },
        ),
    )
    long = [pid for pid in K_CHAMPIONS if pid != "K-SHORT"]
    daily = pl.concat([k_daily_steps(pid) for pid in K_CHAMPIONS])
    append(lake, DAILY_STEPS, daily)
    history = (
        daily.filter(pl.col("patient_id").is_in(long))
        .select("patient_id", "date", steps=pl.when(pl.col("is_wear_day")).then(pl.col("steps")))
        .sort("patient_id", "date")
    )
    known = ForecastInput(
        K_ORIGIN,
        history,
        patients.filter(pl.col("patient_id").is_in(long)),
        pl.DataFrame(),
    )
    forecasts = [
        model().predict(known).with_columns(model=pl.lit(model.name))
        for model in (TrailingMean, WeekdayProfile, SeasonalNaive, UsualLevel)
    ]
    days = [K_ORIGIN + timedelta(days=i) for i in range(365)]

    def rows(patient_id: str, model: str, yhat: list[float]) -> pl.DataFrame:
        return pl.DataFrame(
            {
                "patient_id": patient_id,
                "target_date": days,
                "yhat": yhat,
                "yhat_lower": [max(0.0, y - 800) for y in yhat],
                "yhat_upper": [y + 800 for y in yhat],
                "model": model,
            }
        )

    forecasts += [
        rows("K-PROPHET", "prophet", [k_prophet_yhat(d) for d in days]),
        rows("K-EBM", "ebm_cluster", [math.fsum(k_explanation(d).values()) for d in days]),
        rows("K-SHORT", "cluster_level", [2500.0 + 100 * d.weekday() for d in days]),
    ]
    month = K_ORIGIN.strftime("%Y-%m")
    forecast = pl.concat(forecasts, how="vertical_relaxed").with_columns(
        origin_date=pl.lit(K_ORIGIN), origin_month=pl.lit(month)
    )
    append(lake, FORECASTS, forecast)
    append(
        lake,
        EXPLANATIONS,
        pl.DataFrame(
            [
                {
                    "patient_id": "K-EBM",
                    "model": "ebm_cluster",
                    "origin_date": K_ORIGIN,
                    "target_date": day,
                    "feature": feature,
                    "contribution": value,
                    "origin_month": month,
                }
                for day in days
                for feature, value in k_explanation(day).items()
            ]
        ),
    )
    champions = pl.DataFrame(
        [
            {"patient_id": pid, "model": model}
            for pid, (_, model) in K_CHAMPIONS.items()
            if model is not None
        ]
    )
    outlook = (
        forecast.group_by("patient_id", "model")
        .agg(year_steps=pl.col("yhat").mean())
        .join(champions.with_columns(champion=pl.lit(True)), on=["patient_id", "model"], how="left")
        .select(
            "patient_id",
            "model",
            origin_date=pl.lit(K_ORIGIN),
            champion=pl.col("champion").fill_null(False),
            baseline_steps=pl.lit(None, pl.Float64),
            next_quarter_steps="year_steps",
            year_end_steps="year_steps",
            year_steps="year_steps",
            year_end_change=pl.lit(None, pl.Float64),
            origin_month=pl.lit(month),
        )
    )
    append(lake, OUTLOOK, outlook)
    return lake
