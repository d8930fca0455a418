"""Intraday step samples that look like an Apple Health export.

A day's recorded steps are split into walking bouts (a few seconds to a long walk), each with its
own cadence (60-120 steps per minute), placed without overlap according to the patient's diurnal
profile inside the day's recorded window, and cut into samples of at most ten minutes as the
Health app does. The samples of the primary device add up exactly to the day's recorded steps.

On phone + watch days the phone records a copy of the watch's walks: some samples missed (phone
on the desk), the rest with boundaries a few seconds narrower and a few percent fewer steps, so that
de-duplicating per hour (take the source with most steps) recovers the watch's count.

About one sample in 20,000 gets a corrupt twin (negative steps, end before start, or an absurd
count) appended after the genuine samples, for quarantine handling downstream.

Everything is vectorised over the patient's samples; the only Python loops are per patient.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from synthetic.clinical import PatientProfile
from synthetic.wear import SECONDS_PER_DAY, WearPlan, diurnal_cdf, is_weekend
from synthetic.zones import ZoneOffsets

MAX_SAMPLE_SECONDS = 600
CORRUPT_RATE = 1 / 20_000
_MIN_GAP_SECONDS = 2.0
_MIN_BOUT_SECONDS = 3.0
_CADENCE_RANGE = (60.0, 120.0)
_PHONE_MISSES = 0.15  # share of watch samples the phone does not see on phone + watch days
_MINUTE_GRID = np.arange(1_441) * 60.0


@dataclass(frozen=True)
class SampleArrays:
    """One patient's step samples, column by column.

    Args:
        start_us: start, microseconds since the epoch (UTC).
        end_us: end, microseconds since the epoch (UTC).
        utc_offset_minutes: the zone's offset at the start instant.
        steps: steps in the sample (integer-valued).
        source: PHONE or WATCH.
        corrupt: True for the deliberately corrupt rows (they come last).
    """

    start_us: NDArray[np.int64]
    end_us: NDArray[np.int64]
    utc_offset_minutes: NDArray[np.int16]
    steps: NDArray[np.float64]
    source: NDArray[np.int8]
    corrupt: NDArray[np.bool_]

    def __len__(self) -> int:
        return int(self.start_us.size)

    @classmethod
    def empty(cls) -> SampleArrays:
        """No samples."""
        return cls(
            np.empty(0, np.int64),
            np.empty(0, np.int64),
            np.empty(0, np.int16),
            np.empty(0, np.float64),
            np.empty(0, np.int8),
            np.empty(0, np.bool_),
        )


def _segment_starts(counts: NDArray[np.int64]) -> NDArray[np.int64]:
    """Index of each segment's first element in the concatenated array."""
    return np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)


def _split_steps(
    rng: np.random.Generator, steps_per_day: NDArray[np.int64], bouts_per_day: NDArray[np.int64]
) -> NDArray[np.int64]:
    """Split each day's steps over its bouts with heavy-tailed shares, summing exactly."""
    bout_day = np.repeat(np.arange(steps_per_day.size), bouts_per_day)
    weights = rng.gamma(0.6, 1.0, size=bout_day.size)
    cumulative = np.cumsum(weights)
    first = _segment_starts(bouts_per_day)
    last = first + bouts_per_day - 1
    before = cumulative[first] - weights[first]
    share = (cumulative - before[bout_day]) / (cumulative[last] - before)[bout_day]
    # Rounding cumulative totals (not single bouts) keeps every day's sum exact.
    running = np.rint(share * steps_per_day[bout_day]).astype(np.int64)
    running[last] = steps_per_day
    previous = np.concatenate([[0], running[:-1]])
    previous[first] = 0
    return np.asarray(running - previous, dtype=np.int64)


def _place_bouts(
    rng: np.random.Generator,
    bout_day: NDArray[np.int64],
    durations: NDArray[np.float64],
    window_start: NDArray[np.float64],
    window_end: NDArray[np.float64],
    weekend: NDArray[np.bool_],
    chronotype_hours: float,
) -> NDArray[np.float64]:
    """Start second (local, from midnight) of each bout: diurnal timing without overlaps.

    Bout starts are drawn from the diurnal profile on a compressed time axis (the window minus
    the walking time), sorted, then each is pushed back by the walking time before it. The bouts
    therefore never overlap and all end inside the window.
    """
    n_days = window_start.size
    per_day = np.bincount(bout_day, minlength=n_days).astype(np.int64)
    walking = np.bincount(bout_day, weights=durations, minlength=n_days)
    width = window_end - window_start
    room = width - walking - per_day * _MIN_GAP_SECONDS

    quantiles = rng.random(bout_day.size)
    drawn = np.empty(bout_day.size)
    for is_weekend_profile in (False, True):
        cdf = diurnal_cdf(chronotype_hours, weekend=is_weekend_profile)
        days = weekend == is_weekend_profile
        low = np.interp(window_start, _MINUTE_GRID, cdf)
        high = np.interp(window_end, _MINUTE_GRID, cdf)
        pick = days[bout_day]
        target = low[bout_day[pick]] + (high - low)[bout_day[pick]] * quantiles[pick]
        drawn[pick] = np.interp(target, cdf, _MINUTE_GRID)
    # bout_day is non-decreasing, so this sorts the draws within each day.
    drawn = drawn[np.lexsort((drawn, bout_day))]

    first = _segment_starts(per_day)
    rank = np.arange(bout_day.size) - first[bout_day]
    walked_before = np.cumsum(durations) - durations
    walked_before -= walked_before[first][bout_day]
    offset = window_start[bout_day]
    squeezed = (drawn - offset) * (room / width)[bout_day]
    return np.asarray(offset + squeezed + walked_before + rank * _MIN_GAP_SECONDS)


def _fit_durations(
    bout_day: NDArray[np.int64],
    durations: NDArray[np.float64],
    width: NDArray[np.float64],
) -> NDArray[np.float64]:
    """Shorten bouts (faster cadence) on the rare days whose walking would not fit the window."""
    n_days = width.size
    walking = np.bincount(bout_day, weights=durations, minlength=n_days)
    gaps = np.bincount(bout_day, minlength=n_days) * _MIN_GAP_SECONDS
    fits = 0.9 * width - gaps
    scale = np.where(walking > fits, np.maximum(fits, 0.0) / np.maximum(walking, 1.0), 1.0)
    return np.asarray(durations * scale[bout_day])


def _split_long(
    start: NDArray[np.int64], end: NDArray[np.int64], steps: NDArray[np.int64]
) -> tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.int64], NDArray[np.int64]]:
    """Cut bouts longer than ten minutes into consecutive samples, as the Health app stores them.

    Returns:
        Start, end and steps of each sample, and the bout each sample came from.
    """
    length = end - start
    pieces = np.maximum(1, -(-length // MAX_SAMPLE_SECONDS))
    bout = np.repeat(np.arange(start.size), pieces)
    piece = np.arange(bout.size) - _segment_starts(pieces)[bout]
    count = pieces[bout]
    cut_start = start[bout] + length[bout] * piece // count
    cut_end = start[bout] + length[bout] * (piece + 1) // count
    total = steps[bout]
    cut_steps = (total * (piece + 1)) // count - (total * piece) // count
    return cut_start, cut_end, cut_steps, bout


def simulate_samples(
    rng: np.random.Generator,
    profile: PatientProfile,
    days: NDArray[np.int64],
    plan: WearPlan,
    zone: ZoneOffsets,
) -> SampleArrays:
    """Lay out each day's recorded steps as samples of the devices that recorded them.

    Args:
        rng: the patient's generator for the samples stream.
        profile: the patient (bout rate, cadence, chronotype).
        days: local days, days since 1970-01-01.
        plan: the wear plan of those days.
        zone: UTC offsets of the patient's time zone.

    Returns:
        The samples, genuine ones sorted by start then source, corrupt twins last.
    """
    recorded_days = np.flatnonzero(plan.recorded_steps > 0)
    if recorded_days.size == 0:
        return SampleArrays.empty()
    day_steps = plan.recorded_steps[recorded_days]
    window_start = plan.window_start[recorded_days]
    window_end = plan.window_end[recorded_days]

    # More steps come as more walks, not only as longer ones.
    rate = profile.bouts_per_day * (day_steps / profile.baseline_steps) ** 0.6
    bouts = np.minimum(np.maximum(rng.poisson(rate), 1), day_steps).astype(np.int64)
    bout_steps = _split_steps(rng, day_steps, bouts)
    bout_day = np.repeat(np.arange(recorded_days.size), bouts)
    keep = bout_steps > 0
    bout_steps, bout_day = bout_steps[keep], bout_day[keep]

    cadence = np.clip(profile.cadence * rng.lognormal(0.0, 0.12, bout_day.size), *_CADENCE_RANGE)
    durations = np.maximum(bout_steps / cadence * 60.0, _MIN_BOUT_SECONDS)
    durations = _fit_durations(bout_day, durations, window_end - window_start)
    starts = _place_bouts(
        rng,
        bout_day,
        durations,
        window_start,
        window_end,
        is_weekend(days[recorded_days]),
        profile.chronotype_hours,
    )
    start_s = np.floor(starts).astype(np.int64)
    end_s = start_s + np.maximum(1, np.rint(durations)).astype(np.int64)
    start_s, end_s, steps, bout = _split_long(start_s, end_s, bout_steps)
    sample_day = bout_day[bout]
    source = plan.primary[recorded_days][sample_day]

    # The other device's copy of the same walks on phone + watch days.
    copied = plan.duplicated[recorded_days][sample_day] & (rng.random(steps.size) >= _PHONE_MISSES)
    copy_steps = np.rint(steps[copied] * rng.uniform(0.85, 1.02, int(copied.sum()))).astype(
        np.int64
    )
    copy_length = end_s[copied] - start_s[copied]
    # Each device decides for itself when a walk starts and stops: a few seconds either way.
    trim = np.minimum(np.minimum(8.0, 0.03 * copy_length + 1.0), (copy_length - 1) / 2)
    copy_start = start_s[copied] + np.floor(rng.random(copy_length.size) * trim).astype(np.int64)
    copy_end = end_s[copied] - np.floor(rng.random(copy_length.size) * trim).astype(np.int64)
    visible = copy_steps > 0
    start_s = np.concatenate([start_s, copy_start[visible]])
    end_s = np.concatenate([end_s, copy_end[visible]])
    steps = np.concatenate([steps, copy_steps[visible]])
    source = np.concatenate([source, (1 - source[copied])[visible]]).astype(np.int8)
    sample_day = np.concatenate([sample_day, sample_day[copied][visible]])

    day_seconds = days[recorded_days][sample_day] * SECONDS_PER_DAY
    utc_start = zone.local_to_utc(day_seconds + start_s)
    utc_end = utc_start + (end_s - start_s)
    offsets = zone.at_utc(utc_start) // 60
    order = np.lexsort((source, utc_start))
    genuine = SampleArrays(
        start_us=utc_start[order] * 1_000_000,
        end_us=utc_end[order] * 1_000_000,
        utc_offset_minutes=offsets[order].astype(np.int16),
        steps=steps[order].astype(np.float64),
        source=source[order],
        corrupt=np.zeros(order.size, dtype=np.bool_),
    )
    return _with_corrupt_twins(rng, genuine)


def _with_corrupt_twins(rng: np.random.Generator, samples: SampleArrays) -> SampleArrays:
    """Append corrupt copies of about one sample in 20,000 (device and sync glitches)."""
    count = int(rng.binomial(len(samples), CORRUPT_RATE))
    if count == 0:
        return samples
    picked = np.sort(rng.choice(len(samples), size=count, replace=False))
    kind = rng.integers(0, 3, size=count)
    start = samples.start_us[picked].copy()
    end = samples.end_us[picked].copy()
    steps = samples.steps[picked].copy()
    negative, reversed_, absurd = kind == 0, kind == 1, kind == 2
    steps[negative] = -steps[negative]
    start[reversed_], end[reversed_] = end[reversed_], samples.start_us[picked][reversed_]
    end[absurd] = start[absurd] + 60 * 1_000_000
    steps[absurd] = np.rint(rng.uniform(20_000, 90_000, int(absurd.sum())))
    return SampleArrays(
        start_us=np.concatenate([samples.start_us, start]),
        end_us=np.concatenate([samples.end_us, end]),
        utc_offset_minutes=np.concatenate(
            [samples.utc_offset_minutes, samples.utc_offset_minutes[picked]]
        ),
        steps=np.concatenate([samples.steps, steps]),
        source=np.concatenate([samples.source, samples.source[picked]]),
        corrupt=np.concatenate([samples.corrupt, np.ones(count, dtype=np.bool_)]),
    )
