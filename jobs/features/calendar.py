"""The patient-day calendar and the calendar features.

:func:`patient_days` turns silver/daily_steps rows into one row per patient and day, without gaps,
from the patient's first day with data to the day after the last one (the next forecast origin).
Days without data and non-wear days get missing steps, so no window ever counts them as zero.
"""

from __future__ import annotations

import math
from datetime import date
from functools import cache

import holidays
import polars as pl

from jobs.daily import wear_steps
from lakehouse.feature_dictionary import DAYS_PER_YEAR

PATIENT = "patient_id"


def patient_days(daily: pl.LazyFrame) -> pl.LazyFrame:
    """Every day of each patient's record with its steps and wear.

    Args:
        daily: rows of silver/daily_steps (``patient_id, date, steps, coverage_hours,
            is_wear_day`` at least).

    Returns:
        ``patient_id, date, steps, coverage_hours, worn`` sorted by patient and date; ``steps``
        is missing unless the day is a wear day, ``coverage_hours`` is 0 on days without data.
    """
    spans = (
        daily.group_by(PATIENT)
        .agg(first=pl.col("date").min(), last=pl.col("date").max())
        .select(
            PATIENT,
            date=pl.date_ranges("first", pl.col("last") + pl.duration(days=1), interval="1d"),
        )
        .explode("date")
    )
    recorded = daily.select(PATIENT, "date", "steps", "coverage_hours", "is_wear_day")
    return (
        spans.join(recorded, on=[PATIENT, "date"], how="left")
        .select(
            PATIENT,
            "date",
            steps=wear_steps(),
            coverage_hours=pl.col("coverage_hours").fill_null(0),
            worn=pl.col("is_wear_day").fill_null(False),
        )
        .sort(PATIENT, "date")
    )


@cache
def _country_holidays(country: str, year: int) -> tuple[date, ...]:
    try:
        calendar = holidays.country_holidays(country, years=year)
    except NotImplementedError:
        return ()
    return tuple(sorted(calendar))


def supported_country(country: str | None) -> bool:
    """Whether public holidays are known for this ISO 3166-1 alpha-2 country code."""
    return country is not None and country.upper() in holidays.list_supported_countries()


def public_holidays(countries: list[str], years: range) -> pl.DataFrame:
    """``country, date, is_holiday`` for the national public holidays of the supported
    countries in those years (country codes as given)."""
    rows = [
        (country, day)
        for country in sorted(set(countries))
        if supported_country(country)
        for year in years
        for day in _country_holidays(country.upper(), year)
    ]
    return pl.DataFrame(
        rows, schema={"country": pl.String, "date": pl.Date}, orient="row"
    ).with_columns(is_holiday=pl.lit(True))


def calendar_features(days: pl.LazyFrame, patients: pl.DataFrame, years: range) -> pl.LazyFrame:
    """Add day of week, weekend, month, day-of-year Fourier terms and public holidays.

    Args:
        days: ``patient_id, date`` at least.
        patients: bronze/patients rows (``patient_id, country``) of these patients.
        years: the calendar years the days fall in.
    """
    countries = patients.select(PATIENT, "country").filter(pl.col("country").is_not_null())
    known = countries.filter(
        pl.col("country").map_elements(supported_country, pl.Boolean, skip_nulls=True)
    )
    holiday_days = public_holidays(known["country"].to_list(), years)
    day_of_year = pl.col("date").dt.ordinal_day().cast(pl.Float64)
    fourier = {
        f"cal_doy_{fn}_{order}": getattr(day_of_year * (2 * math.pi * order / DAYS_PER_YEAR), fn)()
        for order in (1, 2)
        for fn in ("sin", "cos")
    }
    return (
        days.join(known.lazy(), on=PATIENT, how="left", maintain_order="left")
        .join(holiday_days.lazy(), on=["country", "date"], how="left", maintain_order="left")
        .with_columns(
            cal_day_of_week=pl.col("date").dt.weekday().cast(pl.Int8),
            cal_is_weekend=pl.col("date").dt.weekday() >= 6,
            cal_month=pl.col("date").dt.month().cast(pl.Int8),
            **fourier,
            cal_is_public_holiday=pl.when(pl.col("country").is_not_null()).then(
                pl.col("is_holiday").fill_null(False)
            ),
        )
        .drop("country", "is_holiday")
    )
