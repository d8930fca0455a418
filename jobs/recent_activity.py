"""Each patient's recent activity against the calendar: when their data last arrived, how much of
the last four weeks they wore the device, and their last 30 days against their own baseline.

The one definition of wear and data freshness the product uses: the cohort worklist, the patient
summary, the printed report and monitoring all call :func:`recent_activity`.

Everything is measured up to a reference day, ``as_of``: by default yesterday (:func:`as_of`), the
last complete day, so a lake whose data stopped arriving looks stale however complete it is.

- **last day with data**: the patient's last day in silver/daily_steps (any samples, worn or not);
  **days without data**: ``as_of`` minus that day (0 when yesterday has data);
- **worn days**: wear days (``is_wear_day``: at least 8 hours of samples and some steps) among the
  :data:`WEAR_WINDOW_DAYS` days up to ``as_of``; days without any data count as not worn; the
  **wear** share is worn days over :data:`WEAR_WINDOW_DAYS`;
- **30-day mean**: mean steps of the wear days among the 30 days up to ``as_of`` (missing with
  fewer than 10 of them, as the ``roll_mean_30d`` feature);
- **baseline**: mean steps of the wear days among the 180 days before those 30 (missing with
  fewer than 60, as the ``baseline_mean_180d`` feature), so the change compares the last month
  with the half year before it rather than with a window that contains it;
- **change**: 30-day mean / baseline - 1.

Flags (each a reason a clinician looks at the patient today):

- ``no data``: no day with data for :data:`NO_DATA_DAYS` days or more (or none at all);
- ``low wear``: worn on fewer than :data:`ENOUGH_WEAR` of the last :data:`WEAR_WINDOW_DAYS` days.
"""

from __future__ import annotations

from datetime import date, timedelta

import polars as pl

from lakehouse.feature_dictionary import BASELINE_DAYS, BASELINE_MIN_DAYS, ROLLING_WINDOWS

WEAR_WINDOW_DAYS = 28
ENOUGH_WEAR = 0.7
NO_DATA_DAYS = 7
RECENT_DAYS = 30
RECENT_MIN_DAYS = ROLLING_WINDOWS[RECENT_DAYS]
# Daily rows older than this many days before the reference day are never needed (last days
# with data excepted: :func:`recent_activity` takes them separately).
LOOKBACK_DAYS = RECENT_DAYS + BASELINE_DAYS

NO_DATA = "no data"
LOW_WEAR = "low wear"

ACTIVITY_SCHEMA = pl.Schema(
    {
        "patient_id": pl.String,
        "last_day": pl.Date,
        "days_without_data": pl.Int32,
        "worn_days": pl.Int32,
        "wear": pl.Float64,
        "recent_mean": pl.Float64,
        "baseline": pl.Float64,
        "change": pl.Float64,
        "no_data": pl.Boolean,
        "low_wear": pl.Boolean,
    }
)


def as_of(today: date | None = None) -> date:
    """The reference day: the day before ``today`` (the wall clock's date when None)."""
    return (today or date.today()) - timedelta(days=1)


def window_start(reference: date) -> date:
    """The first day of daily steps :func:`recent_activity` reads for ``reference``."""
    return reference - timedelta(days=LOOKBACK_DAYS - 1)


def recent_activity(
    daily: pl.DataFrame | pl.LazyFrame,
    last_days: pl.DataFrame,
    reference: date,
) -> pl.DataFrame:
    """One row per patient of ``last_days`` in :data:`ACTIVITY_SCHEMA`.

    Args:
        daily: ``patient_id, date, steps, is_wear_day`` rows; at least those from
            :func:`window_start` to ``reference`` (others are ignored).
        last_days: ``patient_id, last_day``: every patient to report, with their last day with
            data however old (null when they have none).
        reference: the reference day (:func:`as_of`).
    """
    first = window_start(reference)
    recent_first = reference - timedelta(days=RECENT_DAYS - 1)
    wear_first = reference - timedelta(days=WEAR_WINDOW_DAYS - 1)
    day = pl.col("date")
    worn = pl.col("is_wear_day")

    def mean_of(start: date, end: date, least: int) -> pl.Expr:
        steps = pl.col("steps").filter(worn & day.is_between(start, end))
        return pl.when(steps.count() >= least).then(steps.mean())

    per_patient = (
        daily.lazy()
        .filter(day.is_between(first, reference))
        .group_by("patient_id")
        .agg(
            worn_days=(worn & day.is_between(wear_first, reference)).sum().cast(pl.Int32),
            recent_mean=mean_of(recent_first, reference, RECENT_MIN_DAYS),
            baseline=mean_of(first, recent_first - timedelta(days=1), BASELINE_MIN_DAYS),
        )
    )
    # a day after the reference day (today's first samples, a device clock ahead) is data too
    without = (pl.lit(reference) - pl.col("last_day")).dt.total_days().clip(lower_bound=0)
    return (
        last_days.lazy()
        .select("patient_id", pl.col("last_day").cast(pl.Date))
        .join(per_patient, on="patient_id", how="left")
        .with_columns(
            days_without_data=without.cast(pl.Int32),
            worn_days=pl.col("worn_days").fill_null(0),
        )
        .with_columns(
            wear=pl.col("worn_days") / WEAR_WINDOW_DAYS,
            change=pl.when(pl.col("baseline") > 0).then(
                pl.col("recent_mean") / pl.col("baseline") - 1
            ),
        )
        .with_columns(
            no_data=pl.col("days_without_data").fill_null(NO_DATA_DAYS) >= NO_DATA_DAYS,
            low_wear=pl.col("wear") < ENOUGH_WEAR,
        )
        .select(list(ACTIVITY_SCHEMA))
        .cast(ACTIVITY_SCHEMA)
        .sort("patient_id")
        .collect()
    )
