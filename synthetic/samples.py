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

Everything is vectorised over the patient's samples; the only Python loops are per patient. The
generator must produce millions of samples a second, so the per-sample work is kept to a few
passes over each array: per-day quantities are computed once per day and gathered, random draws
of the heavy-tailed and log-normal distributions come from quantile tables, sorted start times
come from exponential spacings instead of a sort, and UTC offsets are looked up per day except on
the few days near a clock change.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cache
from statistics import NormalDist
from typing import TypeVar

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
_CADENCE_SPREAD = 0.12  # sigma of the log-normal cadence of one bout around the patient's
_BOUT_SHARE_SHAPE = 0.6  # Gamma shape of the bouts' shares of a day: many short, a few long
_PHONE_MISSES = 0.15  # share of watch samples the phone does not see on phone + watch days
_MINUTE_GRID = np.arange(1_441) * 60.0
_TABLE_BITS = 12


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

    Genuine samples are sorted by source (PHONE first), then start.
    """

    start_us: NDArray[np.int64]
    end_us: NDArray[np.int64]
    utc_offset_minutes: NDArray[np.int16]
    steps: NDArray[np.float64]
    source: NDArray[np.int8]
    corrupt: NDArray[np.bool_]

    def __len__(self) -> int:
        return int(self.start_us.size)

    @property
    def genuine(self) -> int:
        """Number of genuine samples (the corrupt twins follow them)."""
        return len(self) - int(np.count_nonzero(self.corrupt))

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


# Draws of the bout shares and start spacings are integers (exact sums, and NumPy sums integers
# several times faster than floats): quantiles scaled by these factors.
_WEIGHT_SCALE = float(1 << 36)
_SPACING_SCALE = float(1 << 32)
_INVERSE_POINTS = 8_192  # points of the per-patient inverse diurnal CDF (error under 4 s)


@cache
def _quantile_tables() -> tuple[NDArray[np.int64], NDArray[np.float64], NDArray[np.int64]]:
    """Quantiles at 4,096 evenly spaced probabilities of the bout share weights (Gamma), the
    bout cadence factors (log-normal) and the spacings of sorted start times (exponential).

    A draw is then the entry at a random 12-bit index (16 random bits each, four from one 64-bit
    number): ten times faster than NumPy's Gamma sampler, and a table small enough for the
    processor's first-level cache.
    """
    probabilities = (np.arange(1 << _TABLE_BITS) + 0.5) / (1 << _TABLE_BITS)
    weights = _gamma_quantiles(_BOUT_SHARE_SHAPE, probabilities)
    normal = np.array([NormalDist().inv_cdf(p) for p in probabilities])
    cadence = np.exp(_CADENCE_SPREAD * normal)
    spacings = -np.log1p(-probabilities)
    return (
        np.rint(weights * _WEIGHT_SCALE).astype(np.int64),
        cadence,
        np.rint(spacings * _SPACING_SCALE).astype(np.int64),
    )


def _gamma_quantiles(shape: float, probabilities: NDArray[np.float64]) -> NDArray[np.float64]:
    """Quantiles of the Gamma(shape) distribution (relative error about 1e-5).

    The CDF from its power series on a fine logarithmic grid, inverted by interpolation: SciPy
    would take a third of a second to import in every worker, for 4,096 numbers.
    """
    x = np.geomspace(1e-16, 60.0, 20_000)
    term = np.ones_like(x)
    series = np.ones_like(x)
    for k in range(1, 200):
        term *= x / (shape + k)
        series += term
    cdf = np.exp(shape * np.log(x) - x - math.lgamma(shape + 1.0)) * series
    return np.asarray(np.interp(probabilities, cdf, x), dtype=np.float64)


_Table = TypeVar("_Table", np.int64, np.float64)


def _table_draws(rng: np.random.Generator, table: NDArray[_Table], size: int) -> NDArray[_Table]:
    """``size`` draws from the distribution whose quantiles ``table`` holds."""
    index = rng.bit_generator.random_raw(-(-size // 4)).view(np.uint16)[:size]
    index >>= 16 - _TABLE_BITS
    return table[index]


def _segment_starts(counts: NDArray[np.int64]) -> NDArray[np.int64]:
    """Index of each segment's first element in the concatenated array."""
    return np.asarray(np.cumsum(counts) - counts, dtype=np.int64)


def _split_steps(
    rng: np.random.Generator, steps_per_day: NDArray[np.int64], bouts_per_day: NDArray[np.int64]
) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """Split each day's steps over its bouts with heavy-tailed shares, summing exactly.

    Returns:
        Steps of each bout (some may be 0) and the day of each bout.
    """
    weights_table, _, _ = _quantile_tables()
    bout_day = np.repeat(np.arange(steps_per_day.size), bouts_per_day)
    weights = _table_draws(rng, weights_table, bout_day.size)
    cumulative = np.cumsum(weights)
    first = _segment_starts(bouts_per_day)
    last = first + bouts_per_day - 1
    before = cumulative[first] - weights[first]
    cumulative -= before[bout_day]
    scale = steps_per_day / cumulative[last]
    # Rounding cumulative totals (not single bouts) keeps every day's sum exact.
    running = np.rint(cumulative * scale[bout_day]).astype(np.int64)
    running[last] = steps_per_day
    steps = np.empty_like(running)
    np.subtract(running[1:], running[:-1], out=steps[1:])
    steps[first] = running[first]
    return steps, bout_day


def _inverse_diurnal(chronotype_hours: float) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """The inverse of the weekday diurnal CDF then of the weekend one, as local seconds at
    ``_INVERSE_POINTS + 1`` evenly spaced probabilities each, and the step to the next point."""
    probabilities = np.linspace(0.0, 1.0, _INVERSE_POINTS + 1)
    inverses = [
        np.interp(probabilities, diurnal_cdf(chronotype_hours, weekend=weekend), _MINUTE_GRID)
        for weekend in (False, True)
    ]
    inverse = np.concatenate(inverses)
    return inverse, np.append(np.diff(inverse), 0.0)


def _place_bouts(
    rng: np.random.Generator,
    bout_day: NDArray[np.int64],
    per_day: NDArray[np.int64],
    durations: NDArray[np.int64],
    window_start: NDArray[np.float64],
    window_end: NDArray[np.float64],
    weekend: NDArray[np.bool_],
    chronotype_hours: float,
) -> NDArray[np.int64]:
    """Start second (local, from midnight) of each bout: diurnal timing without overlaps.

    Bout starts are drawn from the diurnal profile on a compressed time axis (the window minus
    the walking time) in increasing order (uniform order statistics from exponential spacings,
    mapped through the inverse CDF), then each is pushed back by the walking time before it. The
    bouts therefore never overlap and all end inside the window.

    Args:
        bout_day: day of each bout (non-decreasing).
        per_day: number of bouts of each day, at least one.
        durations: whole seconds.
    """
    n_days = window_start.size
    first = _segment_starts(per_day)
    last = first + per_day - 1
    # Walking and gaps before each bout, from the start of the patient's data, then of its day.
    occupied = durations + int(_MIN_GAP_SECONDS)
    pushed = np.cumsum(occupied)
    pushed -= occupied
    day_pushed = pushed[first]
    width = window_end - window_start
    room = width - (pushed[last] + occupied[last] - day_pushed)
    squeeze = np.maximum(room, 0.0) / width

    # Sorted uniforms of a day with k bouts: partial sums of k + 1 exponential spacings, divided
    # by their total (the k bouts' spacings, then one more per day).
    _, _, spacings_table = _quantile_tables()
    spacings = _table_draws(rng, spacings_table, bout_day.size + n_days)
    partial = np.cumsum(spacings[: bout_day.size])
    before = partial[first] - spacings[first]
    total = partial[last] - before + spacings[bout_day.size :]

    # Position on the inverse CDF table: the day's share of the profile [low, high] scaled to the
    # table, the weekend table after the weekday one.
    inverse, step = _inverse_diurnal(chronotype_hours)
    low, high = _window_shares(chronotype_hours, weekend, window_start, window_end)
    slope = (high - low) * _INVERSE_POINTS / total
    offset = low * _INVERSE_POINTS + np.where(weekend, _INVERSE_POINTS + 1, 0) - before * slope
    position = partial * slope[bout_day]
    position += offset[bout_day]
    index = position.astype(np.intp)
    position -= index
    position *= step[index]
    drawn = inverse[index]
    drawn += position

    # start = window_start + (drawn - window_start) * squeeze, whole seconds, plus the walking
    # and gaps before the bout that day.
    drawn *= squeeze[bout_day]
    drawn += (window_start * (1.0 - squeeze))[bout_day]
    starts: NDArray[np.int64] = drawn.astype(np.int64)
    starts += pushed
    starts -= day_pushed[bout_day]
    return starts


def _window_shares(
    chronotype_hours: float,
    weekend: NDArray[np.bool_],
    window_start: NDArray[np.float64],
    window_end: NDArray[np.float64],
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """The diurnal CDF at the start and at the end of each day's window."""
    weekday_cdf = diurnal_cdf(chronotype_hours, weekend=False)
    weekend_cdf = diurnal_cdf(chronotype_hours, weekend=True)
    low = np.where(
        weekend,
        np.interp(window_start, _MINUTE_GRID, weekend_cdf),
        np.interp(window_start, _MINUTE_GRID, weekday_cdf),
    )
    high = np.where(
        weekend,
        np.interp(window_end, _MINUTE_GRID, weekend_cdf),
        np.interp(window_end, _MINUTE_GRID, weekday_cdf),
    )
    return low, high


def _fit_durations(
    per_day: NDArray[np.int64],
    bout_day: NDArray[np.int64],
    durations: NDArray[np.float64],
    width: NDArray[np.float64],
) -> NDArray[np.int64]:
    """Whole-second durations; bouts shortened (faster cadence) on the rare days whose walking
    would not fit the window."""
    seconds = np.rint(durations).astype(np.int64)
    walked = np.cumsum(seconds)
    last = np.cumsum(per_day) - 1
    walking = np.diff(walked[last], prepend=0)
    fits = 0.9 * width - per_day * _MIN_GAP_SECONDS
    tight = walking > fits
    if not tight.any():
        return seconds
    scale = np.where(tight, np.maximum(fits, 0.0) / np.maximum(walking, 1.0), 1.0)
    return np.maximum(1, np.floor(seconds * scale[bout_day]).astype(np.int64))


def _split_long(
    start: NDArray[np.int64], end: NDArray[np.int64], steps: NDArray[np.int64]
) -> tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.int64], NDArray[np.int64]]:
    """Cut bouts longer than ten minutes into consecutive samples, as the Health app stores them.

    A long bout keeps its place as its first piece; its other pieces are appended after all
    bouts (the samples are sorted by time at the end anyway).

    Returns:
        Start, end and steps of each sample, and the bout each sample came from.
    """
    length = end - start
    long = np.flatnonzero(length > MAX_SAMPLE_SECONDS)
    bout = np.arange(start.size)
    if long.size == 0:
        return start, end, steps, bout
    pieces = -(-length[long] // MAX_SAMPLE_SECONDS)
    owner = np.repeat(long, pieces)
    piece = np.arange(owner.size) - np.repeat(_segment_starts(pieces), pieces)
    count = np.repeat(pieces, pieces)
    cut_start = start[owner] + length[owner] * piece // count
    cut_end = start[owner] + length[owner] * (piece + 1) // count
    total = steps[owner]
    cut_steps = (total * (piece + 1)) // count - (total * piece) // count
    first = piece == 0
    start, end, steps = start.copy(), end.copy(), steps.copy()
    end[long], steps[long] = cut_end[first], cut_steps[first]
    rest = ~first
    return (
        np.concatenate([start, cut_start[rest]]),
        np.concatenate([end, cut_end[rest]]),
        np.concatenate([steps, cut_steps[rest]]),
        np.concatenate([bout, owner[rest]]),
    )


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
        The samples, genuine ones sorted by source (PHONE first) then start, corrupt twins last.
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
    bout_steps, bout_day = _split_steps(rng, day_steps, bouts)
    keep = bout_steps > 0
    per_day = bouts - np.bincount(bout_day[~keep], minlength=bouts.size)
    bout_steps, bout_day = bout_steps[keep], bout_day[keep]

    _, cadence_table, _ = _quantile_tables()
    cadence = _table_draws(rng, cadence_table, bout_day.size)
    cadence *= profile.cadence
    np.clip(cadence, *_CADENCE_RANGE, out=cadence)
    durations = bout_steps.astype(np.float64)
    durations *= 60.0
    durations /= cadence
    np.maximum(durations, _MIN_BOUT_SECONDS, out=durations)
    seconds = _fit_durations(per_day, bout_day, durations, window_end - window_start)
    start_s = _place_bouts(
        rng,
        bout_day,
        per_day,
        seconds,
        window_start,
        window_end,
        is_weekend(days[recorded_days]),
        profile.chronotype_hours,
    )
    end_s = start_s + seconds
    start_s, end_s, steps, bout = _split_long(start_s, end_s, bout_steps)
    sample_day = bout_day[bout]
    source = plan.primary[recorded_days][sample_day]

    # The other device's copy of the same walks on phone + watch days.
    duplicated = plan.duplicated[recorded_days]
    if duplicated.any():
        candidates = np.flatnonzero(duplicated[sample_day])
        copied = candidates[rng.random(candidates.size) >= _PHONE_MISSES]
        copy_steps = np.rint(steps[copied] * rng.uniform(0.85, 1.02, copied.size)).astype(np.int64)
        copy_length = end_s[copied] - start_s[copied]
        # Each device decides for itself when a walk starts and stops: a few seconds either way.
        trim = np.minimum(np.minimum(8.0, 0.03 * copy_length + 1.0), (copy_length - 1) / 2)
        copy_start = start_s[copied] + (rng.random(copied.size) * trim).astype(np.int64)
        copy_end = end_s[copied] - (rng.random(copied.size) * trim).astype(np.int64)
        visible = copy_steps > 0
        copied = copied[visible]
        start_s = np.concatenate([start_s, copy_start[visible]])
        end_s = np.concatenate([end_s, copy_end[visible]])
        steps = np.concatenate([steps, copy_steps[visible]])
        source = np.concatenate([source, 1 - source[copied]])
        sample_day = np.concatenate([sample_day, sample_day[copied]])

    utc_start, offsets = _to_utc(zone, days[recorded_days], sample_day, start_s)
    # Sorted by source, then start (the order bronze stores them in): a stable sort of the
    # combined key merges the sorted runs (bouts, cut pieces, copies). Starts fit in 34 bits.
    order = np.argsort((source.astype(np.int64) << 34) + utc_start, kind="stable")
    return _laid_out(rng, order, utc_start, end_s - start_s, offsets, steps, source)


def _laid_out(
    rng: np.random.Generator,
    order: NDArray[np.intp],
    utc_start: NDArray[np.int64],
    seconds: NDArray[np.int64],
    offsets: NDArray[np.int16],
    steps: NDArray[np.int64],
    source: NDArray[np.int8],
) -> SampleArrays:
    """The samples in ``order``, followed by corrupt twins of about one in 20,000 of them
    (device and sync glitches: negative steps, end before start, an absurd count)."""
    genuine = order.size
    count = int(rng.binomial(genuine, CORRUPT_RATE))
    size = genuine + count
    start_us = np.empty(size, dtype=np.int64)
    end_us = np.empty(size, dtype=np.int64)
    offset_minutes = np.empty(size, dtype=np.int16)
    step_counts = np.empty(size, dtype=np.float64)
    sources = np.empty(size, dtype=np.int8)
    start, end = start_us[:genuine], end_us[:genuine]
    np.take(utc_start, order, out=start, mode="clip")
    start *= 1_000_000
    np.take(seconds, order, out=end, mode="clip")
    end *= 1_000_000
    end += start
    np.take(offsets, order, out=offset_minutes[:genuine], mode="clip")
    step_counts[:genuine] = steps[order]
    np.take(source, order, out=sources[:genuine], mode="clip")
    corrupt = np.zeros(size, dtype=np.bool_)
    corrupt[genuine:] = True
    if count:
        picked = np.sort(rng.choice(genuine, size=count, replace=False))
        kind = rng.integers(0, 3, size=count)
        twin_start = start_us[picked]
        twin_end = end_us[picked]
        twin_steps = step_counts[picked]
        negative, reversed_, absurd = kind == 0, kind == 1, kind == 2
        twin_steps[negative] = -twin_steps[negative]
        twin_start[reversed_], twin_end[reversed_] = (
            twin_end[reversed_],
            start_us[picked][reversed_],
        )
        twin_end[absurd] = twin_start[absurd] + 60 * 1_000_000
        twin_steps[absurd] = np.rint(rng.uniform(20_000, 90_000, int(absurd.sum())))
        start_us[genuine:], end_us[genuine:], step_counts[genuine:] = (
            twin_start,
            twin_end,
            twin_steps,
        )
        offset_minutes[genuine:] = offset_minutes[picked]
        sources[genuine:] = sources[picked]
    return SampleArrays(start_us, end_us, offset_minutes, step_counts, sources, corrupt)


# Further than any UTC offset (at most 14 hours): a day this far from every clock change has one
# offset for all its samples, whether looked up by local or by UTC time.
_CLEAR_OF_CHANGES = 16 * 3600


def _to_utc(
    zone: ZoneOffsets,
    local_days: NDArray[np.int64],
    sample_day: NDArray[np.int64],
    local_seconds: NDArray[np.int64],
) -> tuple[NDArray[np.int64], NDArray[np.int16]]:
    """UTC start (seconds) and UTC offset (minutes) of samples given by day and local second.

    Offsets are looked up once per day, and per sample only on the days near a clock change
    (exactly as :meth:`ZoneOffsets.local_to_utc` does).
    """
    midnight = local_days * SECONDS_PER_DAY
    changes = zone.transitions
    near_change = np.searchsorted(changes, midnight - _CLEAR_OF_CHANGES, side="right") != (
        np.searchsorted(changes, midnight + SECONDS_PER_DAY + _CLEAR_OF_CHANGES, side="right")
    )
    offset = zone.at_utc(midnight)
    utc = (midnight - offset)[sample_day] + local_seconds
    minutes = (offset // 60).astype(np.int16)[sample_day]
    if near_change.any():
        exact = np.flatnonzero(near_change[sample_day])
        local = midnight[sample_day[exact]] + local_seconds[exact]
        utc[exact] = zone.local_to_utc(local)
        minutes[exact] = zone.at_utc(utc[exact]) // 60
    return utc, minutes
