"""Forecast errors against actual wear-day steps: MAE, RMSE, MASE and interval coverage.

Only wear days are scored: a non-wear day has no actual steps (not zero). Errors are summarised
for cumulative horizons (``horizon_days`` = H covers target days 1..H after the origin), so the
row with H = 365 is the whole year.
"""

from __future__ import annotations

from datetime import date

import polars as pl

HORIZONS: tuple[int, ...] = (7, 28, 91, 182, 365)


def naive_scale(history: pl.DataFrame) -> pl.DataFrame:
    """``patient_id, scale``: each patient's mean absolute change from the same weekday a week
    before, over the wear days of their history (the MASE denominator)."""
    wear = history.filter(pl.col("steps").is_not_null())
    week_before = wear.select(
        "patient_id", date=pl.col("date") + pl.duration(days=7), before=pl.col("steps")
    )
    return (
        wear.join(week_before, on=["patient_id", "date"])
        .group_by("patient_id")
        .agg(scale=(pl.col("steps") - pl.col("before")).abs().mean())
        .filter(pl.col("scale") > 0)
    )


def scored_days(
    forecasts: pl.DataFrame, actuals: pl.DataFrame, origin: date | None, scale: pl.DataFrame
) -> pl.DataFrame:
    """One row per forecast day with an actual wear day: ``patient_id, horizon, error,
    scaled_error, inside`` (error = forecast minus actual; ``origin`` None: the forecasts'
    own ``origin_date``, for rows of several origins)."""
    wear = actuals.filter(pl.col("steps").is_not_null()).select(
        "patient_id", target_date="date", actual="steps"
    )
    return (
        forecasts.join(wear, on=["patient_id", "target_date"])
        .join(scale, on="patient_id", how="left")
        .select(
            "patient_id",
            horizon=(
                pl.col("target_date")
                - (pl.col("origin_date") if origin is None else pl.lit(origin))
            ).dt.total_days()
            + 1,
            error=pl.col("yhat") - pl.col("actual"),
            scaled_error=(pl.col("yhat") - pl.col("actual")).abs() / pl.col("scale"),
            inside=(pl.col("actual") >= pl.col("yhat_lower"))
            & (pl.col("actual") <= pl.col("yhat_upper")),
        )
    )


def summarise(days: pl.DataFrame, horizons: tuple[int, ...] = HORIZONS) -> pl.DataFrame:
    """``horizon_days, mae, rmse, mase, coverage, patients, days`` over ``scored_days`` rows;
    rows with an interval ``width`` (and the model's own ``raw_inside``, ``raw_width``, as
    backtests have) also give the mean ``width``, ``raw_coverage`` and ``raw_width``."""
    extra = []
    if "width" in days.columns:
        extra.append(pl.col("width").mean())
    if "raw_inside" in days.columns:
        extra += [
            pl.col("raw_inside").cast(pl.Float64).mean().alias("raw_coverage"),
            pl.col("raw_width").mean(),
        ]
    rows = []
    for horizon in horizons:
        within = days.filter(pl.col("horizon") <= horizon)
        rows.append(
            within.select(
                *extra,
                horizon_days=pl.lit(horizon, pl.Int32),
                mae=pl.col("error").abs().mean(),
                rmse=(pl.col("error") ** 2).mean().sqrt(),
                mase=pl.col("scaled_error").mean(),
                coverage=pl.col("inside").cast(pl.Float64).mean(),
                patients=pl.col("patient_id").n_unique().cast(pl.Int32),
                days=pl.len().cast(pl.Int32),
            )
        )
    return pl.concat(rows)
