"""Recent activity (wear, freshness, 30-day mean against the baseline) against a plain-Python
computation of the documented definitions."""

from __future__ import annotations

import random
from datetime import date, timedelta
from statistics import mean

import polars as pl
import pytest

from jobs.recent_activity import (
    ENOUGH_WEAR,
    NO_DATA_DAYS,
    RECENT_MIN_DAYS,
    WEAR_WINDOW_DAYS,
    as_of,
    recent_activity,
)
from lakehouse.feature_dictionary import BASELINE_MIN_DAYS

REFERENCE = date(2026, 12, 6)


def _random_daily(seed: int, patients: int) -> pl.DataFrame:
    rng = random.Random(seed)
    rows = []
    for index in range(patients):
        stop = REFERENCE - timedelta(days=rng.choice([-2, 0, 0, 1, 5, 6, 7, 8, 40, 300]))
        days = rng.randint(20, 400)
        wear_rate = rng.random()
        for back in range(days):
            day = stop - timedelta(days=back)
            if rng.random() < 0.1:
                continue  # no data at all that day
            worn = rng.random() < wear_rate
            rows.append((f"P{index:03d}", day, float(rng.randint(0, 12_000)), worn))
    return pl.DataFrame(
        rows,
        schema={
            "patient_id": pl.String,
            "date": pl.Date,
            "steps": pl.Float64,
            "is_wear_day": pl.Boolean,
        },
        orient="row",
    )


def _expected(daily: pl.DataFrame, patient: str) -> dict[str, object]:
    rows = [r for r in daily.iter_rows(named=True) if r["patient_id"] == patient]
    last = max(r["date"] for r in rows)
    without = max(0, (REFERENCE - last).days)

    def between(back_first: int, back_last: int) -> list[float]:
        return [
            r["steps"]
            for r in rows
            if r["is_wear_day"] and back_last <= (REFERENCE - r["date"]).days <= back_first
        ]

    worn = len(between(WEAR_WINDOW_DAYS - 1, 0))
    recent = between(29, 0)
    base = between(209, 30)
    recent_mean = mean(recent) if len(recent) >= RECENT_MIN_DAYS else None
    baseline = mean(base) if len(base) >= BASELINE_MIN_DAYS else None
    return {
        "last_day": last,
        "days_without_data": without,
        "worn_days": worn,
        "wear": worn / WEAR_WINDOW_DAYS,
        "recent_mean": recent_mean,
        "baseline": baseline,
        "change": None if recent_mean is None or not baseline else recent_mean / baseline - 1,
        "no_data": without >= NO_DATA_DAYS,
        "low_wear": worn / WEAR_WINDOW_DAYS < ENOUGH_WEAR,
    }


def test_recent_activity_matches_the_definitions_computed_independently() -> None:
    daily = _random_daily(7, 40)
    last_days = daily.group_by("patient_id").agg(last_day=pl.col("date").max())
    activity = recent_activity(daily, last_days, REFERENCE)
    assert activity.height == 40
    for row in activity.iter_rows(named=True):
        expected = _expected(daily, row["patient_id"])
        for key, value in expected.items():
            if isinstance(value, float):
                assert row[key] == pytest.approx(value), (row["patient_id"], key)
            else:
                assert row[key] == value, (row["patient_id"], key)
    # the random population covers every case the flags distinguish
    assert activity["no_data"].any() and not activity["no_data"].all()
    assert activity["low_wear"].any() and not activity["low_wear"].all()
    assert activity["change"].is_not_null().any() and activity["baseline"].is_null().any()


def test_a_patient_without_any_data_is_flagged_and_never_dropped() -> None:
    daily = _random_daily(3, 2)
    last_days = pl.concat(
        [
            daily.group_by("patient_id").agg(last_day=pl.col("date").max()),
            pl.DataFrame(
                {"patient_id": ["NEW"], "last_day": [None]}, schema_overrides={"last_day": pl.Date}
            ),
        ]
    )
    row = recent_activity(daily, last_days, REFERENCE).filter(pl.col("patient_id") == "NEW")
    assert row.height == 1
    assert row.row(0, named=True) | {} == {
        "patient_id": "NEW",
        "last_day": None,
        "days_without_data": None,
        "worn_days": 0,
        "wear": 0.0,
        "recent_mean": None,
        "baseline": None,
        "change": None,
        "no_data": True,
        "low_wear": True,
    }


def test_thresholds_are_inclusive_as_documented() -> None:
    """Exactly 7 days without data is flagged; exactly 70% wear (not reachable in 28 days) sits
    between 19 worn days (flagged) and 20 (not)."""
    days = [REFERENCE - timedelta(days=NO_DATA_DAYS + back) for back in range(28)]
    daily = pl.DataFrame({"patient_id": "A", "date": days, "steps": 1000.0, "is_wear_day": True})
    last_days = pl.DataFrame({"patient_id": ["A"], "last_day": [max(days)]})
    row = recent_activity(daily, last_days, REFERENCE).row(0, named=True)
    assert row["days_without_data"] == NO_DATA_DAYS and row["no_data"]
    for worn, low in ((19, True), (20, False)):
        days = [REFERENCE - timedelta(days=back) for back in range(worn)]
        daily = pl.DataFrame({"patient_id": "B", "date": days, "steps": 1.0, "is_wear_day": True})
        last = pl.DataFrame({"patient_id": ["B"], "last_day": [REFERENCE]})
        assert recent_activity(daily, last, REFERENCE)["low_wear"].item() is low


def test_the_reference_day_is_yesterday() -> None:
    assert as_of(date(2026, 3, 1)) == date(2026, 2, 28)
