"""The cluster-level forecast for patients with too little history of their own.

A patient with fewer than :data:`models.backtest.MIN_HISTORY_WEAR_DAYS` wear days (or no recent
level) gets, per weekday, the median of their disease cluster's recent wear days (the last 8
weeks of every patient of the cluster), with the cluster's 10th and 90th percentiles as the
interval (every patient of the cohort when nobody of the group was recently seen). The forecast
rows say so: their model is ``cluster_level``.
"""

from __future__ import annotations

from datetime import timedelta

import polars as pl

from models.base import (
    LOWER_QUANTILE,
    UPPER_QUANTILE,
    ForecastError,
    ForecastInput,
    target_days,
)

NAME = "cluster_level"
WEEKS = 8


def cluster_level_forecast(
    cohort: ForecastInput, patients: pl.DataFrame, *, horizon: int
) -> pl.DataFrame:
    """Forecast rows for ``patients`` (``patient_id, disease_group``) from the recent wear days of
    ``cohort`` (patients' history before the same origin, however short).

    Raises:
        ForecastError: the cohort has no wear day at all before the origin.
    """
    since = cohort.origin - timedelta(days=7 * WEEKS)
    recent = (
        cohort.wear_days()
        .filter(pl.col("date") >= since)
        .join(cohort.patients.select("patient_id", "disease_group"), on="patient_id")
        .with_columns(weekday=pl.col("date").dt.weekday())
    )
    stats = {
        "yhat": pl.col("steps").median(),
        "yhat_lower": pl.col("steps").quantile(LOWER_QUANTILE, "linear"),
        "yhat_upper": pl.col("steps").quantile(UPPER_QUANTILE, "linear"),
    }
    profile = recent.group_by("disease_group", "weekday").agg(**stats)
    # a group (or weekday) nobody of the cohort represents recently: every patient of the
    # cohort, then any weekday, then their whole history before the origin
    everyone = recent.group_by("weekday").agg(**stats)
    any_day = recent.select(**stats)
    ever = cohort.wear_days().select(**stats)
    rows = (
        target_days(patients, cohort.origin, horizon)
        .join(patients.select("patient_id", "disease_group"), on="patient_id")
        .with_columns(weekday=pl.col("target_date").dt.weekday())
        .join(profile, on=["disease_group", "weekday"], how="left")
        .join(everyone, on="weekday", how="left", suffix="_all")
        .join(any_day.rename({n: f"{n}_any" for n in stats}), how="cross")
        .join(ever.rename({n: f"{n}_ever" for n in stats}), how="cross")
        .with_columns(
            pl.coalesce(name, f"{name}_all", f"{name}_any", f"{name}_ever").alias(name)
            for name in stats
        )
    )
    if rows["yhat"].null_count():
        raise ForecastError(f"no wear day before {cohort.origin} to forecast from")
    return rows.select(
        "patient_id",
        "target_date",
        "yhat",
        pl.min_horizontal("yhat_lower", "yhat").alias("yhat_lower"),
        pl.max_horizontal("yhat_upper", "yhat").alias("yhat_upper"),
    )
