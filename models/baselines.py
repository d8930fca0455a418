"""Baseline models: what any smarter model has to beat on backtests.

Each predicts a value per patient and weekday from the recent wear days before the origin, the
same for every week of the horizon. Its 80% interval comes from its own errors on the recent
history (the 10th and 90th percentiles of actual minus fitted over the last 8 weeks), widened to
include the forecast itself and cut at zero steps.

- :class:`SeasonalNaive`: the steps of the most recent wear day with the same weekday.
- :class:`TrailingMean`: the mean of the wear days of the last 28 days.
- :class:`WeekdayProfile`: the mean of each weekday over the last 8 weeks.
- :class:`UsualLevel`: the patient's usual day, robustly: the median of the worn days of the last
  13 weeks times each weekday's usual share of it over the last year. The anchor every other
  model's forecast is shrunk toward (:mod:`models.guard`): a median, because the error that
  counts (the mean absolute error) is smallest at the median and walking days are skewed; 13
  weeks, because a level a year ahead is better estimated from a season than from a month (on
  the real multi-year series a median ratio of 0.98 to the better of the 28-day mean and the
  weekday profile, against 1.05 for a 28-day median: docs/forecasting.md); weekday shares shrunk
  toward 1 by the weeks behind them.

A patient needs at least one wear day in the history; with none, :meth:`Forecaster.predict`
raises (the forecast job gives such patients a cluster-level forecast instead).
"""

from __future__ import annotations

from datetime import timedelta

import polars as pl

from models.base import (
    LOWER_QUANTILE,
    UPPER_QUANTILE,
    Forecaster,
    ForecastError,
    ForecastInput,
    target_days,
)

# Days of history behind the residuals that set the interval width.
RESIDUAL_DAYS = 56
_WEEKDAY = pl.col("date").dt.weekday().alias("weekday")


def _recent(data: ForecastInput, days: int, *, least: int | None = None) -> pl.DataFrame:
    """Wear days of the last ``days`` calendar days; a patient with fewer than ``least`` (default
    a week's worth) there gets their last ``days`` wear days instead (a recent gap in wearing)."""
    wear = data.wear_days()
    since = data.origin - timedelta(days=days)
    window = wear.filter(pl.col("date") >= since)
    least = min(7, days) if least is None else least
    enough = window.group_by("patient_id").len().filter(pl.col("len") >= least)
    fallback = (
        wear.join(enough, on="patient_id", how="anti")
        .sort("date")
        .group_by("patient_id")
        .tail(days)
    )
    return pl.concat([window.join(enough.select("patient_id"), on="patient_id"), fallback])


def _forecast(
    data: ForecastInput, horizon: int, by_weekday: pl.DataFrame, residuals: pl.DataFrame
) -> pl.DataFrame:
    """Spread ``patient_id, weekday, yhat`` over the horizon with intervals from ``residuals``."""
    missing = data.patients.join(by_weekday, on="patient_id", how="anti")
    if missing.height:
        raise ForecastError(
            f"{missing.height} patient(s) without any wear day before {data.origin}, "
            f"e.g. {missing['patient_id'][0]!r}"
        )
    spread = residuals.group_by("patient_id").agg(
        low=pl.col("residual").quantile(LOWER_QUANTILE, "linear"),
        high=pl.col("residual").quantile(UPPER_QUANTILE, "linear"),
    )
    yhat = pl.col("yhat").clip(lower_bound=0)
    return (
        target_days(data.patients, data.origin, horizon)
        .with_columns(weekday=pl.col("target_date").dt.weekday())
        .join(by_weekday, on=["patient_id", "weekday"], how="left")
        .join(spread, on="patient_id", how="left")
        .with_columns(pl.col("low", "high").fill_null(0.0))
        .select(
            "patient_id",
            "target_date",
            yhat.alias("yhat"),
            (yhat + pl.min_horizontal(pl.col("low"), 0.0)).clip(lower_bound=0).alias("yhat_lower"),
            (yhat + pl.max_horizontal(pl.col("high"), 0.0)).alias("yhat_upper"),
        )
    )


def _every_weekday(levels: pl.DataFrame) -> pl.DataFrame:
    """``patient_id, level`` repeated for the seven weekdays."""
    weekdays = pl.DataFrame({"weekday": list(range(1, 8))}, schema={"weekday": pl.Int8})
    return levels.join(weekdays, how="cross").select(
        "patient_id", "weekday", pl.col("level").alias("yhat")
    )


class TrailingMean(Forecaster):
    """The mean of the wear days of the last 28 days, flat over the horizon."""

    name = "trailing_mean_28d"
    days = 28

    def _predict(self, data: ForecastInput, horizon: int) -> pl.DataFrame:
        recent = _recent(data, self.days)
        levels = recent.group_by("patient_id").agg(level=pl.col("steps").mean())
        residuals = (
            _recent(data, RESIDUAL_DAYS)
            .join(levels, on="patient_id")
            .select("patient_id", residual=pl.col("steps") - pl.col("level"))
        )
        return _forecast(data, horizon, _every_weekday(levels), residuals)


class WeekdayProfile(Forecaster):
    """The mean of each weekday over the last 8 weeks (a weekday never worn there: the mean of
    all its days)."""

    name = "weekday_profile_8w"
    days = 56

    def _predict(self, data: ForecastInput, horizon: int) -> pl.DataFrame:
        recent = _recent(data, self.days).with_columns(_WEEKDAY.cast(pl.Int8))
        levels = recent.group_by("patient_id").agg(level=pl.col("steps").mean())
        profile = recent.group_by("patient_id", "weekday").agg(day_mean=pl.col("steps").mean())
        by_weekday = (
            _every_weekday(levels)
            .join(profile, on=["patient_id", "weekday"], how="left")
            .select("patient_id", "weekday", pl.coalesce("day_mean", "yhat").alias("yhat"))
        )
        residuals = recent.join(by_weekday, on=["patient_id", "weekday"]).select(
            "patient_id", residual=pl.col("steps") - pl.col("yhat")
        )
        return _forecast(data, horizon, by_weekday, residuals)


class SeasonalNaive(Forecaster):
    """The steps of the most recent wear day with the same weekday (last week's, unless that
    day was not worn)."""

    name = "seasonal_naive_7d"

    def _predict(self, data: ForecastInput, horizon: int) -> pl.DataFrame:
        wear = data.wear_days().with_columns(_WEEKDAY.cast(pl.Int8))
        latest = (
            wear.sort("date").group_by("patient_id", "weekday").agg(yhat=pl.col("steps").last())
        )
        levels = wear.sort("date").group_by("patient_id").agg(level=pl.col("steps").last())
        by_weekday = (
            _every_weekday(levels)
            .join(latest, on=["patient_id", "weekday"], how="left", suffix="_day")
            .select("patient_id", "weekday", pl.coalesce("yhat_day", "yhat").alias("yhat"))
        )
        # its own errors: each recent wear day against the same weekday a week before
        recent = _recent(data, RESIDUAL_DAYS)
        week_before = recent.select(
            "patient_id", date=pl.col("date") + pl.duration(days=7), before=pl.col("steps")
        )
        residuals = recent.join(week_before, on=["patient_id", "date"]).select(
            "patient_id", residual=pl.col("steps") - pl.col("before")
        )
        return _forecast(data, horizon, by_weekday, residuals)


class UsualLevel(Forecaster):
    """The median of the worn days of the last 13 weeks (the last 91 worn days when fewer than
    14 lie there), times each weekday's share of the patient's median over the last 52 weeks,
    shrunk toward 1: ``1 + (share - 1) * n / (n + WEEKDAY_PRIOR_WEEKS)`` for a weekday worn on
    ``n`` of those weeks (fewer than 3: 1)."""

    name = "usual_level"
    days = 91
    weekday_days = 364
    min_days = 14

    def _predict(self, data: ForecastInput, horizon: int) -> pl.DataFrame:
        by_weekday = usual_days(data)
        residuals = (
            _recent(data, RESIDUAL_DAYS)
            .with_columns(_WEEKDAY.cast(pl.Int8))
            .join(by_weekday, on=["patient_id", "weekday"])
            .select("patient_id", residual=pl.col("steps") - pl.col("yhat"))
        )
        return _forecast(data, horizon, by_weekday, residuals)


# A weekday's share counts half when this many weeks of it lie behind it.
WEEKDAY_PRIOR_WEEKS = 10


def usual_days(data: ForecastInput) -> pl.DataFrame:
    """``patient_id, weekday, level, share, yhat`` of :class:`UsualLevel`: the patient's usual
    level, each weekday's shrunk share of it and their product (steps on that weekday)."""
    recent = _recent(data, UsualLevel.days, least=UsualLevel.min_days)
    levels = recent.group_by("patient_id").agg(level=pl.col("steps").median())
    wear = data.wear_days()
    year = wear.filter(
        pl.col("date") >= data.origin - timedelta(days=UsualLevel.weekday_days)
    ).with_columns(_WEEKDAY.cast(pl.Int8))
    overall = year.group_by("patient_id").agg(overall=pl.col("steps").median())
    shares = (
        year.group_by("patient_id", "weekday")
        .agg(day=pl.col("steps").median(), weeks=pl.len())
        .join(overall, on="patient_id")
        .select(
            "patient_id",
            "weekday",
            share=pl.when((pl.col("weeks") >= 3) & (pl.col("overall") > 0))
            .then(
                1
                + (pl.col("day") / pl.col("overall") - 1)
                * pl.col("weeks")
                / (pl.col("weeks") + WEEKDAY_PRIOR_WEEKS)
            )
            .otherwise(1.0),
        )
    )
    return (
        _every_weekday(levels)
        .join(levels, on="patient_id")
        .join(shares, on=["patient_id", "weekday"], how="left")
        .with_columns(pl.col("share").fill_null(1.0))
        .select("patient_id", "weekday", "level", "share", yhat=pl.col("level") * pl.col("share"))
    )


BASELINES: tuple[type[Forecaster], ...] = (SeasonalNaive, TrailingMean, WeekdayProfile, UsualLevel)
