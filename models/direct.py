"""Direct multi-horizon rows: one row per (patient, forecast origin, target day), built only from
what is known at the origin.

A row holds the patient's state at the origin (their silver/features row dated the origin, which
reads only days before it), the horizon, the target day's calendar, the therapy state planned for
the target day (courses recorded at the origin, ongoing until their end date), and the weekday
offset: how the patient's last 8 weeks on the target's weekday differ from their last 8 weeks
overall. Models learn the target as a deviation from the patient's level at the origin
(``ewm_mean_28d``): shrinking that deviation toward zero is shrinking toward the patient's own
recent level.
"""

from __future__ import annotations

from datetime import date, timedelta

import numpy as np
import polars as pl

from jobs.features.calendar import calendar_features
from jobs.features.clinical import THERAPY_SLUGS
from lakehouse.feature_dictionary import therapy_slug
from models.base import ForecastInput

LEVEL = "ewm_mean_28d"
STATE_FEATURES: tuple[str, ...] = (
    "roll_mean_7d",
    "roll_mean_30d",
    "roll_mean_90d",
    "roll_std_30d",
    "ewm_mean_7d",
    "trend_slope_30d",
    "trend_slope_90d",
    "baseline_mean_180d",
    "baseline_std_180d",
    "baseline_deviation_7d",
    "coverage_nonwear_share_30d",
    "dx_years_since_diagnosis",
    "side_effect_count_30d",
    "side_effect_worst_severity_30d",
)
CALENDAR_FEATURES: tuple[str, ...] = (
    "cal_day_of_week",
    "cal_is_weekend",
    "cal_doy_sin_1",
    "cal_doy_cos_1",
    "cal_doy_sin_2",
    "cal_doy_cos_2",
    "cal_is_public_holiday",
)
THERAPY_FEATURES: tuple[str, ...] = tuple(f"therapy_{slug}_active" for slug in THERAPY_SLUGS)
HORIZON = "horizon_days"
WEEKDAY_OFFSET = "weekday_offset"
TARGET_FEATURES: tuple[str, ...] = (HORIZON, WEEKDAY_OFFSET, *CALENDAR_FEATURES, *THERAPY_FEATURES)
FEATURE_COLUMNS: tuple[str, ...] = (*STATE_FEATURES, *TARGET_FEATURES)
# Labels of the model inputs that are not in the feature dictionary.
LABELS = {
    HORIZON: "Days ahead",
    WEEKDAY_OFFSET: "Usual steps on this weekday vs the patient's average (last 8 weeks)",
}
WEEKS = 8


def _weekday_offsets(history: pl.DataFrame, origins: pl.DataFrame) -> pl.DataFrame:
    """``patient_id, origin, weekday, weekday_offset`` for each origin and weekday: the mean of the
    wear days with that weekday among the 8 weeks before the origin, minus the mean of all wear
    days of those 8 weeks (missing when either is)."""
    pairs = origins.select("patient_id", "origin").unique()
    window = (
        pairs.join(history.filter(pl.col("steps").is_not_null()), on="patient_id")
        .filter(
            (pl.col("date") < pl.col("origin"))
            & (pl.col("date") >= pl.col("origin") - pl.duration(days=7 * WEEKS))
        )
        .with_columns(weekday=pl.col("date").dt.weekday())
    )
    overall = window.group_by("patient_id", "origin").agg(mean=pl.col("steps").mean())
    by_day = window.group_by("patient_id", "origin", "weekday").agg(day=pl.col("steps").mean())
    return by_day.join(overall, on=["patient_id", "origin"]).select(
        "patient_id", "origin", "weekday", (pl.col("day") - pl.col("mean")).alias(WEEKDAY_OFFSET)
    )


def _planned_therapies(rows: pl.DataFrame, therapies: pl.DataFrame) -> pl.DataFrame:
    """``patient_id, origin, target_date, therapy_<slug>_active``: courses recorded before the
    origin, active on the target day (no end date: ongoing)."""
    courses = therapies.select(
        "patient_id",
        "start_date",
        "end_date",
        slug=pl.col("therapy").map_elements(therapy_slug, pl.String),
    )
    keys = ["patient_id", "origin", "target_date"]
    active = (
        rows.select(keys)
        .join(courses, on="patient_id")
        .filter(
            (pl.col("start_date") < pl.col("origin"))
            & (pl.col("start_date") <= pl.col("target_date"))
            & (pl.col("end_date").is_null() | (pl.col("target_date") <= pl.col("end_date")))
        )
        .select(*keys, "slug")
        .unique()
    )
    flags = rows.select(keys)
    for slug in THERAPY_SLUGS:
        taken = active.filter(pl.col("slug") == slug).select(keys).with_columns(_on=pl.lit(True))
        flags = flags.join(taken, on=keys, how="left").select(
            *flags.columns, pl.col("_on").fill_null(False).alias(f"therapy_{slug}_active")
        )
    return flags


def _assemble(rows: pl.DataFrame, data: ForecastInput) -> pl.DataFrame:
    """Add every model input to ``patient_id, origin, target_date`` rows."""
    state = data.features.select(
        "patient_id", pl.col("date").alias("origin"), LEVEL, *STATE_FEATURES
    )
    rows = rows.join(state, on=["patient_id", "origin"], how="inner")
    rows = rows.with_columns(
        (pl.col("target_date") - pl.col("origin")).dt.total_days().add(1).alias(HORIZON),
        weekday=pl.col("target_date").dt.weekday(),
    )
    offsets = _weekday_offsets(data.history, rows)
    rows = rows.join(offsets, on=["patient_id", "origin", "weekday"], how="left").drop("weekday")
    first = rows["target_date"].min()
    last = rows["target_date"].max()
    years = (
        range(first.year, last.year + 1)
        if isinstance(first, date) and isinstance(last, date)
        else range(0)
    )
    calendar = (
        calendar_features(
            rows.select("patient_id", pl.col("target_date").alias("date")).unique().lazy(),
            data.patients,
            years,
        )
        .rename({"date": "target_date"})
        .select("patient_id", "target_date", *CALENDAR_FEATURES)
        .collect()
    )
    rows = rows.join(calendar, on=["patient_id", "target_date"], how="left")
    planned = _planned_therapies(rows, data.therapies)
    return rows.join(planned, on=["patient_id", "origin", "target_date"], how="left")


def training_rows(
    data: ForecastInput,
    *,
    horizon: int,
    origins_every: int,
    horizons_per_origin: int,
    seed: int,
) -> pl.DataFrame:
    """Rows for learning: past origins every ``origins_every`` days with a level, a sample of
    horizons each, targets that are wear days before ``data.origin``; ``target`` = steps minus
    the level at the origin."""
    rng = np.random.default_rng(seed)
    cutoff = data.origin
    origins = data.features.filter(
        (pl.col("date") < cutoff)
        & pl.col(LEVEL).is_not_null()
        & ((pl.col("date") - pl.lit(date(2000, 1, 3))).dt.total_days() % origins_every == 0)
    ).select("patient_id", origin=pl.col("date"))
    n = origins.height * horizons_per_origin
    if not n:
        return pl.DataFrame()
    picked = origins.select(pl.all().repeat_by(horizons_per_origin).explode()).with_columns(
        ahead=pl.Series(rng.integers(0, horizon, n))
    )
    picked = picked.select(
        "patient_id", "origin", target_date=pl.col("origin") + pl.duration(days=pl.col("ahead"))
    )
    wear = data.history.filter(pl.col("steps").is_not_null()).select(
        "patient_id", target_date="date", steps="steps"
    )
    rows = picked.filter(pl.col("target_date") < cutoff).join(
        wear, on=["patient_id", "target_date"]
    )
    out = _assemble(rows, data)
    return out.with_columns(target=pl.col("steps") - pl.col(LEVEL)).drop("steps")


def forecast_rows(data: ForecastInput, horizon: int) -> pl.DataFrame:
    """Rows for the forecast from ``data.origin``: each patient with a level at the origin and
    each of the ``horizon`` days."""
    origin = data.origin
    days = pl.date_range(origin, origin + timedelta(days=horizon - 1), "1d", eager=True)
    rows = (
        data.patients.select("patient_id")
        .join(days.alias("target_date").to_frame(), how="cross")
        .with_columns(origin=pl.lit(origin))
    )
    at_origin = data.features.filter(pl.col("date") == origin)
    state_known = ForecastInput(origin, data.history, data.patients, data.therapies, at_origin)
    return _assemble(
        rows.filter(pl.col("patient_id").is_in(at_origin["patient_id"].implode())), state_known
    ).filter(pl.col(LEVEL).is_not_null())
