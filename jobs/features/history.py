"""Step-history features: lags, rolling windows, weighted means, trends, baseline and wear.

Pure transforms over the patient-day calendar of :func:`jobs.features.calendar.patient_days`:
one row per patient and day with no gaps, sorted by patient and date, where ``steps`` is missing
on non-wear days. Because the calendar has no gaps, "the k-th row before" is "k days before", and
every window is a fixed number of rows. Each step feature is computed from ``steps`` shifted by one
day, so the row for D never sees D's own steps (no leakage); definitions are in
:mod:`lakehouse.feature_dictionary`.
"""

from __future__ import annotations

import polars as pl

from lakehouse.feature_dictionary import (
    BASELINE_DAYS,
    BASELINE_MIN_DAYS,
    EWM_HALF_LIVES,
    EWM_RECENT_HALF_LIVES,
    LAGS,
    NONWEAR_WINDOWS,
    ROLLING_WINDOWS,
    TREND_WINDOWS,
    WEEKDAY_MIN_DAYS,
    WEEKDAY_WEEKS,
)

PATIENT = "patient_id"


def _before(column: str | pl.Expr) -> pl.Expr:
    """The column's value on the day before (per patient)."""
    expr = pl.col(column) if isinstance(column, str) else column
    return expr.shift(1)


def _per_patient(expr: pl.Expr, name: str) -> pl.Expr:
    return expr.over(PATIENT).alias(name)


def _lags() -> list[pl.Expr]:
    return [_per_patient(pl.col("steps").shift(k), f"lag_{k}d") for k in LAGS]


def _rolling() -> list[pl.Expr]:
    steps = _before("steps")
    out = []
    for days, minimum in ROLLING_WINDOWS.items():
        out += [
            _per_patient(steps.rolling_mean(days, min_samples=minimum), f"roll_mean_{days}d"),
            _per_patient(steps.rolling_std(days, min_samples=max(minimum, 2)), f"roll_std_{days}d"),
            _per_patient(steps.rolling_min(days, min_samples=minimum), f"roll_min_{days}d"),
            _per_patient(steps.rolling_max(days, min_samples=minimum), f"roll_max_{days}d"),
        ]
    same_weekday = [pl.col("steps").shift(7 * week) for week in range(1, WEEKDAY_WEEKS + 1)]
    seen = pl.sum_horizontal(s.is_not_null().cast(pl.Int32) for s in same_weekday)
    out.append(
        _per_patient(
            pl.when(seen >= WEEKDAY_MIN_DAYS).then(pl.mean_horizontal(same_weekday)),
            f"roll_same_weekday_mean_{WEEKDAY_WEEKS}w",
        )
    )
    return out


def _weighted_means() -> list[pl.Expr]:
    out = []
    for half_life in EWM_HALF_LIVES:
        # With adjust=True and ignore_nulls=False, weights follow days, not wear days; on a
        # missing day the weighted mean equals the one of the last wear day (all weights shrink
        # alike), hence the forward fill before the shift.
        weighted = (
            pl.col("steps")
            .ewm_mean(half_life=half_life, adjust=True, ignore_nulls=False)
            .forward_fill()
            .shift(1)
        )
        recent = (
            pl.col("worn")
            .cast(pl.Int32)
            .shift(1)
            .rolling_sum(half_life * EWM_RECENT_HALF_LIVES, min_samples=1)
            > 0
        )
        out.append(_per_patient(pl.when(recent).then(weighted), f"ewm_mean_{half_life}d"))
    return out


def _trends() -> list[pl.Expr]:
    # Least squares over the wear days of the window from rolling sums. t counts days from the
    # patient's first row, so the sums stay small (no precision loss on long histories).
    t = pl.int_range(pl.len()).cast(pl.Float64)
    worn = pl.col("worn").cast(pl.Float64)
    y = pl.col("steps").fill_null(0.0)
    out = []
    for days, minimum in TREND_WINDOWS.items():

        def total(expr: pl.Expr, days: int = days) -> pl.Expr:
            return expr.shift(1).rolling_sum(days, min_samples=1)

        n, s_t, s_y = total(worn), total(t * worn), total(y)
        s_tt, s_ty = total(t * t * worn), total(t * y)
        slope = (n * s_ty - s_t * s_y) / (n * s_tt - s_t * s_t)
        out.append(_per_patient(pl.when(n >= minimum).then(slope), f"trend_slope_{days}d"))
    return out


def _baseline_window() -> list[pl.Expr]:
    steps = _before("steps")
    return [
        _per_patient(
            steps.rolling_mean(BASELINE_DAYS, min_samples=BASELINE_MIN_DAYS),
            f"baseline_mean_{BASELINE_DAYS}d",
        ),
        _per_patient(
            steps.rolling_std(BASELINE_DAYS, min_samples=BASELINE_MIN_DAYS),
            f"baseline_std_{BASELINE_DAYS}d",
        ),
    ]


def _baseline_offsets() -> list[pl.Expr]:
    mean = pl.col(f"baseline_mean_{BASELINE_DAYS}d")
    std = pl.col(f"baseline_std_{BASELINE_DAYS}d")
    usable = std > 0
    deviation = pl.col("roll_mean_7d") - mean
    return [
        deviation.alias("baseline_deviation_7d"),
        pl.when(usable).then(deviation / std).alias("baseline_zscore_7d"),
        pl.when(usable).then((pl.col("lag_1d") - mean) / std).alias("baseline_zscore_1d"),
    ]


def _wear() -> list[pl.Expr]:
    not_worn = (~pl.col("worn")).cast(pl.Float64)
    last_wear = pl.when(pl.col("worn")).then(pl.col("date")).forward_fill().shift(1)
    out = [
        _per_patient(_before("coverage_hours").fill_null(0), "coverage_hours_1d"),
        _per_patient(
            _before(pl.col("coverage_hours").cast(pl.Float64)).rolling_mean(7, min_samples=1),
            "coverage_mean_hours_7d",
        ),
    ]
    out += [
        _per_patient(
            _before(not_worn).rolling_mean(days, min_samples=1), f"coverage_nonwear_share_{days}d"
        )
        for days in NONWEAR_WINDOWS
    ]
    out.append(
        _per_patient((pl.col("date") - last_wear).dt.total_days(), "coverage_days_since_wear")
    )
    return out


def history_features(days: pl.LazyFrame) -> pl.LazyFrame:
    """Add the lag, roll, ewm, trend, baseline and coverage features.

    Args:
        days: ``patient_id, date, steps, coverage_hours, worn``: every day of each patient's
            record, sorted by patient and date; ``steps`` missing where ``worn`` is false,
            ``coverage_hours`` 0 on days without data.
    """
    return days.with_columns(
        *_lags(), *_rolling(), *_weighted_means(), *_trends(), *_baseline_window(), *_wear()
    ).with_columns(*_baseline_offsets())
