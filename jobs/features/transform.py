"""The whole feature transform: silver/daily_steps + clinical bronze -> silver/features rows.

Pure (no storage), shared by every engine. The clinical frames are the rows of the same patients.
"""

from __future__ import annotations

import polars as pl

from jobs.features.calendar import calendar_features, patient_days
from jobs.features.clinical import diagnosis_features, side_effect_features, therapy_features
from jobs.features.history import history_features
from lakehouse.catalog import FEATURES

_SCHEMA = pl.DataFrame(FEATURES.schema.empty_table()).schema


def features(
    daily: pl.LazyFrame,
    *,
    patients: pl.DataFrame,
    therapies: pl.DataFrame,
    side_effects: pl.DataFrame,
    diagnoses: pl.DataFrame,
) -> pl.LazyFrame:
    """Feature rows for every day of each patient's record (see :mod:`jobs.features.calendar`).

    Args:
        daily: silver/daily_steps rows: the patients' whole history, as windows reach back to
            their first day.
        patients, therapies, side_effects, diagnoses: bronze rows of the same patients.

    Returns:
        Exactly the columns and types of silver/features, sorted by patient and date.
    """
    span = daily.select(first=pl.col("date").min(), last=pl.col("date").max()).collect()
    first, last = span["first"][0], span["last"][0]
    # the rows end on the day after the last day, which may open the next year
    years = range(first.year, last.year + 2) if first is not None else range(0)
    days = patient_days(daily)
    days = history_features(days)
    days = calendar_features(days, patients, years)
    days = therapy_features(days, therapies)
    days = side_effect_features(days, side_effects)
    days = diagnosis_features(days, patients, diagnoses)
    return (
        days.with_columns(month=pl.col("date").dt.strftime("%Y-%m"))
        .select(FEATURES.columns)
        .cast(_SCHEMA)
    )
