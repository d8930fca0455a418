"""The daily truth of one patient: expected steps per day and the steps actually walked.

The model is deliberately additive on top of a multiplicative baseline, so that the ground truth
of every therapy is exactly recoverable::

    expected[d] = max(floor,
                      baseline_steps * weekday[d] * season[d] * trend[d] * episodes[d] * drift[d]
                      + sum over therapy courses k of effect_k * ramp_k[d]
                      - sum over side effects j of dip_j[d])
    walked[d]   = round(expected[d] * noise[d])          with E[noise[d]] = 1

- ``weekday``: 1 on weekdays scaled so the week averages 1; Saturday is ``weekend_factor``, Sunday
  a little lower.
- ``season``: ``1 + amplitude * cos(2 pi (day_of_year - 200) / 365.25)``, peaking in July in the
  northern hemisphere and in January in the southern one (winter is lower).
- ``trend``: ``exp(-trend_per_year * years since enrolment)`` (PD declines a few % a year).
- ``episodes``: MS relapses (sudden drop for weeks, then partial recovery with a lasting residual)
  and RA flares (dips of days to weeks); 1 for PD and OTHER.
- ``drift``: slow, mean-one random fluctuation of fitness (AR(1) on the log scale, months long).
- ``ramp_k``: :func:`therapy_ramp`, 0 before the start, linear up to 1 after ``ramp_days``, 1 until
  the end date (inclusive), 0 afterwards.
- ``dip_j``: a severity-scaled share of ``baseline_steps`` on the day of the event, recovering
  linearly over a few days.
- ``floor``: 5 % of ``baseline_steps`` (even a bed-bound day has some steps); it binds only when
  a deep episode meets a negative therapy effect and a severe side effect.
- ``noise``: day-to-day log-normal AR(1) noise with patient-specific spread plus occasional
  stay-at-home days, normalised to mean one, so ``expected`` is the mean of ``walked``.

None of the random draws depends on the therapies or side effects, so simulating the same patient
with a therapy removed gives that therapy's exact counterfactual.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date

import numpy as np
from numpy.typing import NDArray

from synthetic import reference as ref
from synthetic.clinical import ClinicalHistory, PatientProfile, SideEffectReport, TherapyCourse

_EPOCH = date(1970, 1, 1)
_FLOOR_SHARE = 0.05
_SEASON_PEAK_DAY = 200  # about 19 July, the warmest weeks in the northern hemisphere
_SUNDAY_VS_SATURDAY = 0.95
_STAY_HOME_SHARE = 0.03  # days of illness, bad weather, visitors: far fewer steps than usual
_STAY_HOME_FACTOR = 0.35


@dataclass(frozen=True)
class DailyTruth:
    """One patient's simulated days, from enrolment to the last simulated day.

    Args:
        days: local calendar days as days since 1970-01-01.
        multiplicative: the multiplicative baseline model (everything but therapies and dips).
        therapy_effects: ramped effect of each therapy course, shape (courses, days), in the
            order of ``ClinicalHistory.therapies``.
        side_effect_dips: steps lost to side effects each day.
        expected_steps: the true expected daily steps (formula in the module docstring).
        walked_steps: the steps the patient actually walked (integers).
    """

    days: NDArray[np.int64]
    multiplicative: NDArray[np.float64]
    therapy_effects: NDArray[np.float64]
    side_effect_dips: NDArray[np.float64]
    expected_steps: NDArray[np.float64]
    walked_steps: NDArray[np.int64]


def day_number(day: date) -> int:
    """Days since 1970-01-01."""
    return (day - _EPOCH).days


def patient_days(enrolled_on: date, last_day: date) -> NDArray[np.int64]:
    """The days a patient has data for, as days since 1970-01-01."""
    return np.arange(day_number(enrolled_on), day_number(last_day) + 1, dtype=np.int64)


def therapy_ramp(
    days: NDArray[np.int64], start: date, end: date | None, ramp_days: int
) -> NDArray[np.float64]:
    """Share of a therapy's full effect on each day.

    Args:
        days: days since 1970-01-01.
        start: first day of the course (share 0).
        end: last day of the course (inclusive); None = ongoing.
        ramp_days: days from ``start`` until the full effect (share 1).

    Returns:
        ``clip((day - start) / ramp_days, 0, 1)`` while the course runs, 0 outside it.
    """
    since = (days - day_number(start)).astype(np.float64)
    share = np.clip(since / max(ramp_days, 1), 0.0, 1.0)
    if end is not None:
        share[days > day_number(end)] = 0.0
    return share


def therapy_contributions(
    days: NDArray[np.int64], courses: Sequence[TherapyCourse]
) -> NDArray[np.float64]:
    """Ramped additive effect of each course on each day, shape (courses, days)."""
    out = np.zeros((len(courses), days.size))
    for k, course in enumerate(courses):
        out[k] = course.effect_steps * therapy_ramp(
            days, course.start_date, course.end_date, course.ramp_days
        )
    return out


def side_effect_dips(
    days: NDArray[np.int64], reports: Sequence[SideEffectReport], baseline_steps: float
) -> NDArray[np.float64]:
    """Steps lost to side effects each day: deepest on the day reported, gone after a few days."""
    dips = np.zeros(days.size)
    for report in reports:
        depth = ref.SEVERITY_DIP_SHARE[report.severity] * baseline_steps
        length = ref.SEVERITY_DIP_DAYS[report.severity]
        since = days - day_number(report.date)
        active = (since >= 0) & (since < length)
        dips[active] += depth * (1.0 - since[active] / length)
    return dips


def _weekday_factor(days: NDArray[np.int64], weekend_factor: float) -> NDArray[np.float64]:
    weekday = (days + 3) % 7  # 1970-01-01 was a Thursday; 0 = Monday
    sunday = weekend_factor * _SUNDAY_VS_SATURDAY
    scale = 7.0 / (5.0 + weekend_factor + sunday)  # the week averages 1
    factor = np.full(days.size, scale)
    factor[weekday == 5] = scale * weekend_factor
    factor[weekday == 6] = scale * sunday
    return factor


def _season_factor(days: NDArray[np.int64], profile: PatientProfile) -> NDArray[np.float64]:
    dates = days.astype("datetime64[D]")
    day_of_year = (dates - dates.astype("datetime64[Y]")).astype(np.int64)
    phase = 2 * math.pi * (day_of_year - _SEASON_PEAK_DAY) / 365.25
    if profile.southern:
        phase = phase + math.pi
    return np.asarray(1.0 + profile.season_amplitude * np.cos(phase), dtype=np.float64)


def _ar1(rng: np.random.Generator, n: int, phi: float, sd: float) -> NDArray[np.float64]:
    """A stationary AR(1) series with marginal standard deviation ``sd``."""
    shocks = rng.normal(0.0, sd * math.sqrt(1 - phi * phi), n)
    start = rng.normal(0.0, sd)
    # Truncate the impulse response where it is negligible (phi**k < 1e-4).
    taps = min(n, math.ceil(math.log(1e-4) / math.log(phi)) + 1)
    series = np.convolve(shocks, phi ** np.arange(taps))[:n]
    return np.asarray(series + start * phi ** np.arange(1, n + 1), dtype=np.float64)


def _relapses(
    rng: np.random.Generator, days: NDArray[np.int64], span_years: float
) -> NDArray[np.float64]:
    """MS relapses: sudden drop, a plateau of weeks, then partial recovery."""
    factor = np.ones(days.size)
    rate = rng.uniform(0.2, 0.6)
    count = int(rng.poisson(rate * (span_years + 120 / 365.25)))
    for _ in range(count):
        onset = days[0] - 120 + int(rng.integers(0, days.size + 120))
        depth, hold = rng.uniform(0.2, 0.5), rng.uniform(7, 28)
        recovery_days, residual = rng.uniform(14, 42), rng.uniform(0.1, 0.4)
        since = (days - onset).astype(np.float64)
        after = np.clip(since - hold, 0.0, None)
        shape = np.where(since < 0, 0.0, residual + (1 - residual) * np.exp(-after / recovery_days))
        factor *= 1.0 - depth * shape
    return factor


def _flares(
    rng: np.random.Generator, days: NDArray[np.int64], span_years: float
) -> NDArray[np.float64]:
    """RA flares: smooth dips lasting days to weeks, with full recovery."""
    factor = np.ones(days.size)
    count = int(rng.poisson(rng.uniform(2.0, 6.0) * span_years))
    for _ in range(count):
        onset = days[0] + int(rng.integers(0, days.size))
        depth, length = rng.uniform(0.15, 0.4), rng.uniform(3, 21)
        since = (days - onset).astype(np.float64)
        active = (since >= 0) & (since < length)
        factor[active] *= 1.0 - depth * np.sin(np.pi * (since[active] + 0.5) / length)
    return factor


def multiplicative_baseline(
    rng: np.random.Generator, profile: PatientProfile, days: NDArray[np.int64]
) -> NDArray[np.float64]:
    """Baseline, weekday, season, trend, disease episodes and slow drift, multiplied."""
    span_years = days.size / 365.25
    years = (days - days[0]) / 365.25
    trend = np.exp(-profile.trend_per_year * years)
    if profile.disease_group == "MS":
        episodes = _relapses(rng, days, span_years)
    elif profile.disease_group == "RA":
        episodes = _flares(rng, days, span_years)
    else:
        episodes = np.ones(days.size)
    drift_sd = 0.06
    drift = np.exp(_ar1(rng, days.size, 0.985, drift_sd) - drift_sd**2 / 2)
    factors = (
        profile.baseline_steps
        * _weekday_factor(days, profile.weekend_factor)
        * _season_factor(days, profile)
        * trend
        * episodes
        * drift
    )
    return np.asarray(factors, dtype=np.float64)


def daily_noise(rng: np.random.Generator, n_days: int, noise_sd: float) -> NDArray[np.float64]:
    """Mean-one multiplicative day-to-day noise: correlated log-normal plus stay-at-home days."""
    log_noise = _ar1(rng, n_days, 0.35, noise_sd)
    stay_home = rng.random(n_days) < _STAY_HOME_SHARE
    mixture = np.where(stay_home, _STAY_HOME_FACTOR, 1.0)
    mixture_mean = 1 - _STAY_HOME_SHARE + _STAY_HOME_SHARE * _STAY_HOME_FACTOR
    return np.exp(log_noise - noise_sd**2 / 2) * mixture / mixture_mean


def simulate_daily(
    rng: np.random.Generator, history: ClinicalHistory, days: NDArray[np.int64]
) -> DailyTruth:
    """Simulate the expected and walked steps of each day.

    Args:
        rng: the patient's generator for the daily stream.
        history: profile, therapies and side effects of the patient.
        days: the days to simulate (days since 1970-01-01, consecutive).

    Returns:
        The daily truth; see the module docstring for the formula.
    """
    profile = history.profile
    multiplicative = multiplicative_baseline(rng, profile, days)
    noise = daily_noise(rng, days.size, profile.noise_sd)
    effects = therapy_contributions(days, history.therapies)
    dips = side_effect_dips(days, history.side_effects, profile.baseline_steps)
    expected = np.maximum(
        _FLOOR_SHARE * profile.baseline_steps, multiplicative + effects.sum(axis=0) - dips
    )
    walked = np.rint(expected * noise).astype(np.int64)
    return DailyTruth(days, multiplicative, effects, dips, expected, walked)
