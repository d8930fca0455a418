"""An independent, plain-Python computation of the model features (lakehouse/feature_dictionary.py).

Written day by day from the dictionary's definitions with ``datetime``, ``statistics`` and
``math``, nothing shared with ``jobs/features``, so that the two can be compared on the same rows.
It is slow on purpose (every feature of one patient-day recomputed from the raw rows) and meant for
samples of patient-days, not whole tables.
"""

from __future__ import annotations

import math
import statistics
from datetime import date, timedelta
from functools import lru_cache
from typing import Any

import holidays

from jobs.ingest.clinical import GROUP_CODES
from lakehouse.feature_dictionary import (
    BASELINE_DAYS,
    BASELINE_MIN_DAYS,
    DAYS_PER_YEAR,
    EWM_HALF_LIVES,
    EWM_RECENT_HALF_LIVES,
    FEATURE_NAMES,
    LAGS,
    NONWEAR_WINDOWS,
    OTHER_THERAPY,
    ROLLING_WINDOWS,
    SIDE_EFFECT_WINDOWS,
    THERAPIES,
    TREND_WINDOWS,
    WEEKDAY_MIN_DAYS,
    WEEKDAY_WEEKS,
    normalise_therapy,
    therapy_slug,
)

Rows = list[dict[str, Any]]
ONE_DAY = timedelta(days=1)


def reference_patient_days(daily_rows: Rows, patient_id: str) -> list[date]:
    """Every day a patient's feature rows cover: first daily_steps date .. last date + 1."""
    dates = [r["date"] for r in daily_rows if r["patient_id"] == patient_id]
    if not dates:
        return []
    first, last = min(dates), max(dates)
    return [first + timedelta(days=i) for i in range((last - first).days + 2)]


def reference_features(
    daily_rows: Rows,
    patients_rows: Rows,
    therapies_rows: Rows,
    side_effects_rows: Rows,
    diagnoses_rows: Rows,
    patient_id: str,
    day: date,
) -> dict[str, object]:
    """All features of one patient-day, keyed by feature name (the dictionary's order)."""
    own_daily = [r for r in daily_rows if r["patient_id"] == patient_id]
    patient = next((r for r in patients_rows if r["patient_id"] == patient_id), None)
    out: dict[str, object] = {}
    out.update(_history(own_daily, day))
    out.update(_calendar(patient, day))
    out.update(_coverage(own_daily, day))
    out.update(_therapies([r for r in therapies_rows if r["patient_id"] == patient_id], day))
    out.update(_side_effects([r for r in side_effects_rows if r["patient_id"] == patient_id], day))
    out.update(
        _diagnosis(patient, [r for r in diagnoses_rows if r["patient_id"] == patient_id], day)
    )
    missing = set(FEATURE_NAMES) - set(out)
    extra = set(out) - set(FEATURE_NAMES)
    if missing or extra:
        raise AssertionError(f"reference out of step with the dictionary: {missing=} {extra=}")
    return {name: out[name] for name in FEATURE_NAMES}


# --- steps history ---------------------------------------------------------------------------


def _wear_steps(own_daily: Rows) -> dict[date, float]:
    """date -> steps, for wear days only (every other day is missing)."""
    return {r["date"]: float(r["steps"]) for r in own_daily if r["is_wear_day"]}


def _window(steps: dict[date, float], day: date, first_back: int, last_back: int) -> list[float]:
    """Steps of the wear days among D-first_back .. D-last_back, oldest first."""
    values = []
    for back in range(first_back, last_back - 1, -1):
        d = day - timedelta(days=back)
        if d in steps:
            values.append(steps[d])
    return values


def _history(own_daily: Rows, day: date) -> dict[str, object]:
    steps = _wear_steps(own_daily)
    out: dict[str, object] = {}
    for k in LAGS:
        out[f"lag_{k}d"] = steps.get(day - timedelta(days=k))

    for days, minimum in ROLLING_WINDOWS.items():
        values = _window(steps, day, days, 1)
        enough = len(values) >= minimum
        out[f"roll_mean_{days}d"] = statistics.mean(values) if enough else None
        out[f"roll_std_{days}d"] = (
            statistics.stdev(values) if len(values) >= max(minimum, 2) else None
        )
        out[f"roll_min_{days}d"] = min(values) if enough else None
        out[f"roll_max_{days}d"] = max(values) if enough else None

    same_weekday = [
        steps[day - timedelta(weeks=w)]
        for w in range(1, WEEKDAY_WEEKS + 1)
        if day - timedelta(weeks=w) in steps
    ]
    out[f"roll_same_weekday_mean_{WEEKDAY_WEEKS}w"] = (
        statistics.mean(same_weekday) if len(same_weekday) >= WEEKDAY_MIN_DAYS else None
    )

    for half_life in EWM_HALF_LIVES:
        recent = half_life * EWM_RECENT_HALF_LIVES
        if not _window(steps, day, recent, 1):
            out[f"ewm_mean_{half_life}d"] = None
            continue
        weights, weighted = [], []
        for d, value in steps.items():
            if d < day:
                age = (day - ONE_DAY - d).days
                w = 0.5 ** (age / half_life)
                weights.append(w)
                weighted.append(w * value)
        out[f"ewm_mean_{half_life}d"] = math.fsum(weighted) / math.fsum(weights)

    for days, minimum in TREND_WINDOWS.items():
        xs, ys = [], []
        for back in range(days, 0, -1):
            d = day - timedelta(days=back)
            if d in steps:
                xs.append(float(d.toordinal()))
                ys.append(steps[d])
        out[f"trend_slope_{days}d"] = (
            statistics.linear_regression(xs, ys).slope if len(xs) >= minimum else None
        )

    base = _window(steps, day, BASELINE_DAYS, 1)
    ok = len(base) >= max(BASELINE_MIN_DAYS, 2)
    b_mean = statistics.mean(base) if ok else None
    b_std = statistics.stdev(base) if ok else None
    out[f"baseline_mean_{BASELINE_DAYS}d"] = b_mean
    out[f"baseline_std_{BASELINE_DAYS}d"] = b_std
    roll7 = _as_float(out["roll_mean_7d"])
    lag1 = _as_float(out["lag_1d"])
    deviation = None if roll7 is None or b_mean is None else roll7 - b_mean
    out["baseline_deviation_7d"] = deviation
    spread = b_std if b_std else None  # a spread of 0 cannot scale anything
    out["baseline_zscore_7d"] = (
        deviation / spread if deviation is not None and spread is not None else None
    )
    out["baseline_zscore_1d"] = (
        (lag1 - b_mean) / spread
        if lag1 is not None and b_mean is not None and spread is not None
        else None
    )
    return out


def _as_float(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) else None


# --- calendar --------------------------------------------------------------------------------


@lru_cache(maxsize=256)
def _holiday_dates(country: str, year: int) -> frozenset[date] | None:
    try:
        calendar = holidays.country_holidays(country, years=year)
    except NotImplementedError:
        return None
    return frozenset(calendar.keys())


def _calendar(patient: dict[str, Any] | None, day: date) -> dict[str, object]:
    iso_weekday = day.isoweekday()
    t = day.timetuple().tm_yday  # 1 January = 1
    out: dict[str, object] = {
        "cal_day_of_week": iso_weekday,
        "cal_is_weekend": iso_weekday in (6, 7),
        "cal_month": day.month,
    }
    for order in (1, 2):
        angle = 2 * math.pi * order * t / DAYS_PER_YEAR
        out[f"cal_doy_sin_{order}"] = math.sin(angle)
        out[f"cal_doy_cos_{order}"] = math.cos(angle)
    country = None if patient is None else patient.get("country")
    dates = None if not country else _holiday_dates(country, day.year)
    out["cal_is_public_holiday"] = None if dates is None else day in dates
    return out


# --- coverage --------------------------------------------------------------------------------


def _coverage(own_daily: Rows, day: date) -> dict[str, object]:
    by_date = {r["date"]: r for r in own_daily}
    first = min(by_date) if by_date else None
    out: dict[str, object] = {}
    yesterday = by_date.get(day - ONE_DAY)
    out["coverage_hours_1d"] = 0 if yesterday is None else int(yesterday["coverage_hours"])

    def past_days(n: int) -> list[date]:
        days = [day - timedelta(days=back) for back in range(1, n + 1)]
        return [d for d in days if first is not None and d >= first]

    week = past_days(7)
    hours = [int(by_date[d]["coverage_hours"]) if d in by_date else 0 for d in week]
    out["coverage_mean_hours_7d"] = statistics.mean(hours) if hours else None
    for n in NONWEAR_WINDOWS:
        span = past_days(n)
        not_worn = sum(1 for d in span if not (d in by_date and by_date[d]["is_wear_day"]))
        out[f"coverage_nonwear_share_{n}d"] = not_worn / len(span) if span else None
    wear_before = [d for d, r in by_date.items() if r["is_wear_day"] and d < day]
    out["coverage_days_since_wear"] = (day - max(wear_before)).days if wear_before else None
    return out


# --- clinical --------------------------------------------------------------------------------


def _therapies(courses: Rows, day: date) -> dict[str, object]:
    out: dict[str, object] = {}
    slugs = [t.slug for t in THERAPIES] + [OTHER_THERAPY]
    for slug in slugs:
        own = [c for c in courses if therapy_slug(c["therapy"]) == slug]
        active = any(
            c["start_date"] <= day and (c["end_date"] is None or day <= c["end_date"]) for c in own
        )
        starts = [c["start_date"] for c in own if c["start_date"] <= day]
        stops = [c["end_date"] for c in own if c["end_date"] is not None and c["end_date"] < day]
        out[f"therapy_{slug}_active"] = active
        out[f"therapy_{slug}_days_since_start"] = (day - max(starts)).days if starts else None
        out[f"therapy_{slug}_days_since_stop"] = (day - max(stops)).days if stops else None
    # a therapy is its column slug; therapies without columns count by their normalised name
    active_now = set()
    for c in courses:
        if c["start_date"] <= day and (c["end_date"] is None or day <= c["end_date"]):
            slug = therapy_slug(c["therapy"])
            active_now.add(slug if slug != OTHER_THERAPY else "?" + normalise_therapy(c["therapy"]))
    out["therapy_active_count"] = len(active_now)
    return out


def _side_effects(effects: Rows, day: date) -> dict[str, object]:
    out: dict[str, object] = {}
    for n in SIDE_EFFECT_WINDOWS:
        start = day - timedelta(days=n - 1)
        inside = [e for e in effects if start <= e["date"] <= day]
        out[f"side_effect_count_{n}d"] = len(inside)
        out[f"side_effect_worst_severity_{n}d"] = max(
            (int(e["severity"]) for e in inside), default=0
        )
    return out


def _diagnosis(patient: dict[str, Any] | None, diagnoses: Rows, day: date) -> dict[str, object]:
    group = None if patient is None else patient.get("disease_group")
    if group in GROUP_CODES:
        prefixes = GROUP_CODES[group]
        mine = [d for d in diagnoses if any(d["code"].startswith(p) for p in prefixes)]
    elif group is not None:
        mine = list(diagnoses)  # OTHER (any group without codes): any diagnosis counts
    else:
        mine = []
    dated = [d["diagnosed_on"] for d in mine if d["diagnosed_on"] <= day]
    years = (day - min(dated)).days / DAYS_PER_YEAR if dated else None
    return {"dx_disease_group": group, "dx_years_since_diagnosis": years}
