"""When and by which device a patient's walking is recorded.

Real device data has holes that must not be mistaken for immobility: single days without the
phone, weeks with the phone left at home or the watch on the charger, days recorded for only a
couple of hours. Patients with a phone and a watch have days on which both record the same walks.
This module decides, per day, which device recorded, over which hours, and how many of the walked
steps it saw; :mod:`synthetic.samples` then lays those steps out as samples.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from numpy.typing import NDArray

from synthetic.clinical import PatientProfile

PHONE, WATCH = 0, 1
NOT_WORN, WORN, LOW_COVERAGE = 0, 1, 2
SECONDS_PER_DAY = 86_400
_MINUTES = 1_440

# Activity peaks (hour of day, width in hours, weight): morning errands, lunch, afternoon, evening.
_PEAKS = ((8.5, 1.3, 0.9), (12.5, 1.0, 0.8), (16.5, 1.8, 1.0), (19.5, 1.3, 0.45))
_NIGHT_LEVEL = 0.01  # a little walking at night (bathroom, insomnia)
_WEEKEND_SHIFT_HOURS = 1.0
# On days both devices are around, how often each records.
_BOTH_DEVICE_DAYS = (0.55, 0.30, 0.15)  # both, phone only, watch only


@dataclass(frozen=True)
class WearPlan:
    """Per day: whether and how the patient's walking was recorded.

    Args:
        status: NOT_WORN (no samples at all), WORN or LOW_COVERAGE (only a window of hours).
        window_start: first local second of the day with recording (0 on worn days).
        window_end: end of the recorded window in local seconds (86,400 on worn days).
        primary: device whose samples add up to ``recorded_steps`` (PHONE or WATCH).
        duplicated: the other device recorded the same walks too (phone + watch day).
        recorded_steps: steps the primary device recorded.
    """

    status: NDArray[np.int8]
    window_start: NDArray[np.float64]
    window_end: NDArray[np.float64]
    primary: NDArray[np.int8]
    duplicated: NDArray[np.bool_]
    recorded_steps: NDArray[np.int64]


@lru_cache(maxsize=8)
def diurnal_cdf(chronotype_hours: float, *, weekend: bool) -> NDArray[np.float64]:
    """Cumulative share of a day's walking by local minute, 1,441 points from 00:00 to 24:00.

    Little happens at night; the peaks move later for late chronotypes and at weekends. Cached
    (read-only): the wear plan and the samples of a patient use the same two profiles.
    """
    shift = chronotype_hours + (_WEEKEND_SHIFT_HOURS if weekend else 0.0)
    hours = (np.arange(_MINUTES) + 0.5) / 60.0
    density = np.full(_MINUTES, _NIGHT_LEVEL)
    for centre, width, weight in _PEAKS:
        density += weight * np.exp(-0.5 * ((hours - centre - shift) / width) ** 2)
    cdf = np.concatenate([[0.0], np.cumsum(density)])
    cdf /= cdf[-1]
    cdf.setflags(write=False)
    return cdf


def is_weekend(days: NDArray[np.int64]) -> NDArray[np.bool_]:
    """Saturdays and Sundays (days since 1970-01-01, a Thursday)."""
    return np.asarray((days + 3) % 7 >= 5)


def share_in_window(
    cdf: NDArray[np.float64], start: NDArray[np.float64], end: NDArray[np.float64]
) -> NDArray[np.float64]:
    """Share of the day's walking between local seconds ``start`` and ``end``."""
    grid = np.arange(_MINUTES + 1) * 60.0
    return np.asarray(np.interp(end, grid, cdf) - np.interp(start, grid, cdf))


def plan_wear(
    rng: np.random.Generator,
    profile: PatientProfile,
    days: NDArray[np.int64],
    walked_steps: NDArray[np.int64],
) -> WearPlan:
    """Decide per day which device recorded how much of the walked steps.

    Args:
        rng: the patient's generator for the wear stream.
        profile: the patient (devices, chronotype).
        days: days since 1970-01-01.
        walked_steps: steps the patient walked each day.

    Returns:
        The wear plan.
    """
    n = days.size
    status = np.full(n, WORN, dtype=np.int8)
    status[rng.random(n) < rng.uniform(0.01, 0.06)] = NOT_WORN
    # Phone left at home, watch broken or on the charger: one to three weeks a few times a year.
    for _ in range(int(rng.poisson(rng.uniform(0.5, 3.0) * n / 365.25))):
        start = int(rng.integers(n))
        status[start : start + int(rng.integers(7, 22))] = NOT_WORN
    low = (status == WORN) & (rng.random(n) < rng.uniform(0.01, 0.05))
    status[low] = LOW_COVERAGE

    window_start = np.zeros(n)
    window_end = np.full(n, float(SECONDS_PER_DAY))
    hours = rng.integers(1, 4, size=n)
    opens = rng.uniform(7.0, 21.0 - hours) * 3600.0
    window_start[low] = np.floor(opens[low])
    window_end[low] = np.floor(opens[low] + hours[low] * 3600.0)

    weekend = is_weekend(days)
    weekend_cdf = diurnal_cdf(profile.chronotype_hours, weekend=True)
    weekday_cdf = diurnal_cdf(profile.chronotype_hours, weekend=False)
    share = np.where(
        weekend,
        share_in_window(weekend_cdf, window_start, window_end),
        share_in_window(weekday_cdf, window_start, window_end),
    )
    recorded = np.where(status == NOT_WORN, 0, np.rint(walked_steps * share)).astype(np.int64)

    primary = np.full(n, WATCH if profile.devices == "watch" else PHONE, dtype=np.int8)
    duplicated = np.zeros(n, dtype=np.bool_)
    if profile.devices == "phone+watch":
        kind = rng.choice(3, size=n, p=_BOTH_DEVICE_DAYS)
        # The watch sits on the wrist all day, so when both record it is the complete one.
        primary[(kind == 0) | (kind == 2)] = WATCH
        duplicated = kind == 0
    duplicated &= recorded > 0
    return WearPlan(status, window_start, window_end, primary, duplicated, recorded)
