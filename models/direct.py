"""Direct multi-horizon rows: one row per (patient, forecast origin, target day), built only from
what is known at the origin.

A row holds the patient's state at the origin (their silver/features row dated the origin, which
reads only days before it), the horizon, the target day's calendar, the therapy state planned for
the target day against the origin (started or stopped since; the therapy plan is the recorded
courses, planned starts and ends included), and the weekday
offset: how the patient's last 8 weeks on the target's weekday differ from their last 8 weeks
overall (relative to the scale, like the target). Models learn the target as a deviation from
the patient's level at the origin
(``ewm_mean_28d``): shrinking that deviation toward zero is shrinking toward the patient's own
recent level.
"""

from __future__ import annotations

import math
from datetime import date

import numpy as np
import polars as pl

from jobs.features.calendar import calendar_features
from jobs.features.clinical import THERAPY_SLUGS
from lakehouse.feature_dictionary import FEATURE_BY_NAME, therapy_slug
from models.base import ForecastInput, target_days

LEVEL = "ewm_mean_28d"
# Deviations are learned relative to the level, in units of SCALE = max(level, MIN_SCALE) steps,
# so a seasonal or weekly swing of a given share weighs the same for an active and a sedentary
# patient (the patterns of the population are multiplicative); the floor keeps near-zero levels
# from blowing deviations up.
SCALE = "scale"
MIN_SCALE = 500.0
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
THERAPY_FEATURES: tuple[str, ...] = tuple(f"therapy_{slug}_change" for slug in THERAPY_SLUGS)
# The season at the origin: the level carries it, so the change to the target's season is
# learnable only with both.
ORIGIN_CALENDAR: tuple[str, ...] = (
    "cal_origin_doy_sin_1",
    "cal_origin_doy_cos_1",
    "cal_origin_doy_sin_2",
    "cal_origin_doy_cos_2",
)
HORIZON = "horizon_days"
WEEKDAY_OFFSET = "weekday_offset"
TARGET_FEATURES: tuple[str, ...] = (
    HORIZON,
    WEEKDAY_OFFSET,
    *CALENDAR_FEATURES,
    *ORIGIN_CALENDAR,
    *THERAPY_FEATURES,
)
FEATURE_COLUMNS: tuple[str, ...] = (*STATE_FEATURES, *TARGET_FEATURES)
# Labels of the model inputs that are not in the feature dictionary.
LABELS = {
    **{
        f"therapy_{slug}_change": f"{slug.replace('_', ' ').capitalize()} started (+1) or "
        "stopped (-1) since the forecast start"
        for slug in THERAPY_SLUGS
    },
    **{name: "Season at the forecast start" for name in ORIGIN_CALENDAR},
    HORIZON: "Days ahead",
    WEEKDAY_OFFSET: "Usual steps on this weekday vs the patient's average (last 8 weeks, share)",
}
WEEKS = 8


def _weekday_offsets(history: pl.DataFrame, pairs: pl.LazyFrame) -> pl.LazyFrame:
    """``patient_id, origin, weekday, weekday_offset`` for each origin and weekday: the mean of the
    wear days with that weekday among the 8 weeks before the origin, minus the mean of all wear
    days of those 8 weeks, as a share of that mean (missing when either is)."""
    window = (
        pairs.join(history.lazy().filter(pl.col("steps").is_not_null()), on="patient_id")
        .filter(
            (pl.col("date") < pl.col("origin"))
            & (pl.col("date") >= pl.col("origin") - pl.duration(days=7 * WEEKS))
        )
        .with_columns(weekday=pl.col("date").dt.weekday())
    )
    overall = window.group_by("patient_id", "origin").agg(mean=pl.col("steps").mean())
    by_day = window.group_by("patient_id", "origin", "weekday").agg(day=pl.col("steps").mean())
    return by_day.join(overall, on=["patient_id", "origin"]).select(
        "patient_id",
        "origin",
        "weekday",
        ((pl.col("day") - pl.col("mean")) / pl.max_horizontal("mean", MIN_SCALE)).alias(
            WEEKDAY_OFFSET
        ),
    )


def _planned_therapies(rows: pl.LazyFrame, therapies: pl.DataFrame) -> pl.LazyFrame:
    """``patient_id, origin, target_date, therapy_<slug>_change``: +1 when the therapy plan has
    a course of it active on the target day but not on the origin (started since), -1 the other
    way round (stopped since), 0 otherwise. The level at the origin already carries the effect of
    what is taken then, so only changes move the forecast. A course without end is ongoing."""
    courses = therapies.select(
        "patient_id",
        "start_date",
        "end_date",
        slug=pl.col("therapy").map_elements(therapy_slug, pl.String),
    )
    keys = ["patient_id", "origin", "target_date"]

    def active(day: str) -> pl.Expr:
        return (pl.col("start_date") <= pl.col(day)) & (
            pl.col("end_date").is_null() | (pl.col(day) <= pl.col("end_date"))
        )

    per_slug = (
        rows.select(keys)
        .join(courses.lazy(), on="patient_id")
        .group_by(*keys, "slug")
        .agg(
            change=active("target_date").any().cast(pl.Int8) - active("origin").any().cast(pl.Int8)
        )
    )
    wide = per_slug.group_by(keys).agg(
        pl.col("change").filter(pl.col("slug") == slug).sum().cast(pl.Int8).alias(name)
        for slug, name in zip(THERAPY_SLUGS, THERAPY_FEATURES, strict=True)
    )
    return (
        rows.select(keys)
        .join(wide, on=keys, how="left")
        .with_columns(pl.col(THERAPY_FEATURES).fill_null(0))
    )


def _assemble(rows: pl.DataFrame, data: ForecastInput) -> pl.DataFrame:
    """Add every model input to ``patient_id, origin, target_date`` rows (one query plan)."""
    keys = ["patient_id", "origin", "target_date"]
    state = data.features.lazy().select(
        "patient_id", pl.col("date").alias("origin"), LEVEL, *STATE_FEATURES
    )
    first, last = rows["target_date"].min(), rows["target_date"].max()
    years = (
        range(first.year, last.year + 1)
        if isinstance(first, date) and isinstance(last, date)
        else range(0)
    )
    origin_day = pl.col("origin").dt.ordinal_day().cast(pl.Float64) * (2 * math.pi / 365.25)
    base = (
        rows.lazy()
        .join(state, on=["patient_id", "origin"], how="inner")
        .with_columns(
            (pl.col("target_date") - pl.col("origin")).dt.total_days().add(1).alias(HORIZON),
            pl.max_horizontal(pl.col(LEVEL), pl.lit(MIN_SCALE)).alias(SCALE),
            origin_day.sin().alias("cal_origin_doy_sin_1"),
            origin_day.cos().alias("cal_origin_doy_cos_1"),
            (2 * origin_day).sin().alias("cal_origin_doy_sin_2"),
            (2 * origin_day).cos().alias("cal_origin_doy_cos_2"),
            weekday=pl.col("target_date").dt.weekday(),
        )
    )
    offsets = _weekday_offsets(data.history, base.select("patient_id", "origin").unique())
    calendar = (
        calendar_features(
            base.select("patient_id", pl.col("target_date").alias("date")).unique(),
            data.patients,
            years,
        )
        .rename({"date": "target_date"})
        .select("patient_id", "target_date", *CALENDAR_FEATURES)
    )
    planned = _planned_therapies(base.select(keys), data.therapies)
    return (
        base.join(offsets, on=["patient_id", "origin", "weekday"], how="left")
        .drop("weekday")
        .join(calendar, on=["patient_id", "target_date"], how="left")
        .join(planned, on=keys, how="left")
        .collect()
    )


def training_rows(
    data: ForecastInput,
    *,
    horizon: int,
    origins_every: int,
    horizons_per_origin: int,
    seed: int,
) -> pl.DataFrame:
    """Rows for learning: past origins every ``origins_every`` days with a level, a sample of
    horizons each, targets that are wear days before ``data.origin``; ``target`` = (steps minus
    the level at the origin) / scale."""
    rng = np.random.default_rng(seed)
    cutoff = data.origin
    origins = data.features.filter(
        (pl.col("date") < cutoff)
        & pl.col(LEVEL).is_not_null()
        & ((pl.col("date") - pl.lit(date(2000, 1, 3))).dt.total_days() % origins_every == 0)
    ).select("patient_id", origin=pl.col("date"))
    # The random horizons are drawn in (patient, origin) order, never in the order the features
    # were read (it varies with the table's files): the same data then gives the same rows, and
    # the EBMs trained on them the same models (docs/reliability.md).
    origins = origins.sort("patient_id", "origin")
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
    # In an order drawn from the seed, not the join's (which varies from run to run): the same
    # data gives the same rows in the same order, mixed across patients as before.
    out = (
        _assemble(rows, data)
        .sort("patient_id", "origin", "target_date")
        .sample(fraction=1.0, shuffle=True, seed=seed)
    )
    return out.with_columns(target=(pl.col("steps") - pl.col(LEVEL)) / pl.col(SCALE)).drop("steps")


def forecast_rows(data: ForecastInput, horizon: int) -> pl.DataFrame:
    """Rows for the forecast from ``data.origin``: each patient with a level at the origin and
    each of the ``horizon`` days (computed once per input and horizon)."""
    key = ("forecast_rows", horizon)
    if key not in data.derived:
        at_origin = data.features.filter(pl.col("date") == data.origin)
        rows = target_days(at_origin, data.origin, horizon).with_columns(origin=pl.lit(data.origin))
        known = ForecastInput(data.origin, data.history, data.patients, data.therapies, at_origin)
        data.derived[key] = _assemble(rows, known).filter(pl.col(LEVEL).is_not_null())
    return data.derived[key]


# Rows of gold/explanations that are not model inputs.
SPECIAL_LABELS = {
    "baseline": "Patient's usual level (median of worn days, last 13 weeks)",
    "recent_level": "Recent weeks against the usual level (28-day weighted mean)",
    "usual_weekday": "Usual steps on this weekday against the usual level",
    "intercept": "Typical change for patients like this",
    "other_features": "All other inputs together",
    "floor_at_zero": "Forecast raised to zero steps",
    "disease_group": "Disease group",
}


def feature_label(name: str) -> str:
    """The plain-language label of an explanation row's feature (the feature dictionary's for
    state and calendar inputs); a pair interaction of the EBM (``a & b``) reads "A × B"."""
    if " & " in name:
        return " × ".join(feature_label(part) for part in name.split(" & "))
    if name in SPECIAL_LABELS:
        return SPECIAL_LABELS[name]
    if name in LABELS:
        return LABELS[name]
    feature = FEATURE_BY_NAME.get(name)
    if feature is None:
        raise KeyError(f"no label for feature {name!r}")
    return feature.label
