"""One synthetic patient's profile and clinical history: demographics, therapies, side effects and
diagnoses.

Pure simulation from a NumPy generator; the caller seeds it per patient so a patient never depends
on which batch or process simulates it. Walking-model parameters that are fixed per patient
(baseline steps, weekend factor, seasonal amplitude, ...) are drawn here too, because they are
population-level facts (PD patients walk less) that tests check without simulating any day.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Literal

import numpy as np

from synthetic import reference as ref

Devices = Literal["phone", "watch", "phone+watch"]
_DEVICES: tuple[Devices, ...] = ("phone", "phone+watch", "watch")
_DEVICE_SHARES = (0.50, 0.42, 0.08)

# Share of patients whose data covers the whole simulated period, and of patients with a short
# history (< 90 days) that forecasting must treat as "too little history".
_FULL_HISTORY_SHARE = 0.70
_SHORT_HISTORY_SHARE = 0.08
_SHORT_HISTORY_DAYS = 90

# Average walking bouts per fully worn day; with non-wear and phone+watch duplicates this gives
# about 26,700 samples per patient-year (Apple Health exports of active users look like that).
BOUTS_PER_WORN_DAY = 74.0


@dataclass(frozen=True)
class PatientProfile:
    """Who the patient is, and the fixed parameters of their walking.

    Args:
        patient_id: ``SYN{seed}-{index:06d}``.
        seed: population seed.
        index: 1-based patient number within the population.
        disease_group: MS, PD, RA or OTHER.
        sex: ``F`` or ``M``.
        birth_year: year of birth.
        country: ISO country code.
        timezone: IANA time zone of the patient's home.
        southern: home in the southern hemisphere (seasons flipped).
        tropical: home without a cold season (weak seasonality).
        enrolled_on: enrolment date, also the first day with device data.
        first_name: owner name used in device names.
        devices: which devices record steps.
        baseline_steps: weekly-mean daily steps at enrolment before season, trend and episodes.
        weekend_factor: Saturday steps relative to a weekday (Sunday a little lower still).
        season_amplitude: relative swing between summer and winter.
        trend_per_year: yearly relative decline (negative = improvement).
        noise_sd: standard deviation of the day-to-day log noise.
        bouts_per_day: mean walking bouts on a fully worn day.
        cadence: typical cadence in steps per minute.
        chronotype_hours: shift of the daily activity profile (positive = later).
    """

    patient_id: str
    seed: int
    index: int
    disease_group: str
    sex: str
    birth_year: int
    country: str
    timezone: str
    southern: bool
    tropical: bool
    enrolled_on: date
    first_name: str
    devices: Devices
    baseline_steps: float
    weekend_factor: float
    season_amplitude: float
    trend_per_year: float
    noise_sd: float
    bouts_per_day: float
    cadence: float
    chronotype_hours: float


@dataclass(frozen=True)
class TherapyCourse:
    """One course of a therapy with its true effect (the synthetic ground truth).

    The effect on daily steps ramps linearly from 0 on ``start_date`` to ``effect_steps`` on
    ``start_date + ramp_days`` and stays there through ``end_date`` (inclusive; None = ongoing).
    """

    therapy: str
    start_date: date
    end_date: date | None
    effect_steps: float
    ramp_days: int


@dataclass(frozen=True)
class SideEffectReport:
    """A reported side effect; ``severity`` is the CTCAE grade."""

    date: date
    effect: str
    severity: int


@dataclass(frozen=True)
class Diagnosis:
    """An ICD-10 diagnosis with the date it was made."""

    code: str
    diagnosed_on: date
    description: str


@dataclass(frozen=True)
class ClinicalHistory:
    """A patient's profile and clinical record."""

    profile: PatientProfile
    therapies: tuple[TherapyCourse, ...]
    side_effects: tuple[SideEffectReport, ...]
    diagnoses: tuple[Diagnosis, ...]


def patient_id(seed: int, index: int) -> str:
    """The synthetic patient's ID, ``SYN{seed}-{index:06d}``."""
    return f"SYN{seed}-{index:06d}"


def simulate_clinical(
    rng: np.random.Generator, *, seed: int, index: int, first_day: date, last_day: date
) -> ClinicalHistory:
    """Draw one patient's profile and clinical history.

    Args:
        rng: the patient's own generator (clinical stream).
        seed: population seed (goes into the patient ID).
        index: 1-based patient number.
        first_day: first day of the simulated period.
        last_day: last day of the simulated period (the export date's eve).

    Returns:
        The patient's history; device data runs from ``profile.enrolled_on`` to ``last_day``.
    """
    profile = _draw_profile(rng, seed=seed, index=index, first_day=first_day, last_day=last_day)
    therapies = _draw_therapies(rng, profile, last_day)
    side_effects = _draw_side_effects(rng, therapies, profile.enrolled_on, last_day)
    diagnoses = _draw_diagnoses(rng, profile, last_day)
    return ClinicalHistory(profile, therapies, side_effects, diagnoses)


def _draw_profile(
    rng: np.random.Generator, *, seed: int, index: int, first_day: date, last_day: date
) -> PatientProfile:
    group = str(rng.choice(ref.DISEASE_GROUPS, p=ref.DISEASE_SHARES))
    disease = ref.DISEASES[group]
    sex = "F" if rng.random() < disease.share_female else "M"
    drawn_age = float(rng.normal(disease.age_mean, disease.age_sd))
    age = round(min(max(drawn_age, ref.MIN_AGE), ref.MAX_AGE))
    weights = np.array([home.weight for home in ref.HOMES])
    home = ref.HOMES[int(rng.choice(len(ref.HOMES), p=weights / weights.sum()))]
    first_name = str(rng.choice(ref.FIRST_NAMES[sex][home.country]))
    devices = _DEVICES[int(rng.choice(len(_DEVICES), p=_DEVICE_SHARES))]

    period_days = (last_day - first_day).days + 1
    draw = rng.random()
    if draw < _FULL_HISTORY_SHARE or period_days <= _SHORT_HISTORY_DAYS:
        history_days = period_days
    elif draw < 1 - _SHORT_HISTORY_SHARE:
        history_days = int(rng.integers(_SHORT_HISTORY_DAYS, period_days + 1))
    else:
        history_days = int(rng.integers(14, _SHORT_HISTORY_DAYS))
    enrolled_on = last_day - timedelta(days=history_days - 1)

    # Older people walk less (about 1.2 % per year of age), men a little more than women.
    level = disease.median_steps * math.exp(-0.012 * (age - 50)) * (1.06 if sex == "M" else 1.0)
    baseline = float(np.clip(level * rng.lognormal(0.0, 0.38), 1_200.0, 18_000.0))
    # People in work walk less at weekends; retired people keep the same rhythm all week.
    weekend = rng.normal(0.97, 0.07) if age >= 66 else rng.normal(0.86, 0.10)
    amplitude = rng.uniform(0.04, 0.20) * (0.4 if home.tropical else 1.0)
    low, high = disease.trend_per_year
    noise_sd = rng.uniform(0.20, 0.34) + (0.06 if group == "PD" else 0.0)
    return PatientProfile(
        patient_id=patient_id(seed, index),
        seed=seed,
        index=index,
        disease_group=group,
        sex=sex,
        birth_year=last_day.year - age,
        country=home.country,
        timezone=home.timezone,
        southern=home.southern,
        tropical=home.tropical,
        enrolled_on=enrolled_on,
        first_name=first_name,
        devices=devices,
        baseline_steps=round(baseline, 1),
        weekend_factor=float(np.clip(weekend, 0.6, 1.2)),
        season_amplitude=float(amplitude),
        trend_per_year=float(rng.uniform(low, high)),
        noise_sd=float(noise_sd),
        bouts_per_day=float(BOUTS_PER_WORN_DAY * rng.lognormal(-0.03, 0.25)),
        cadence=float(np.clip(rng.normal(disease.cadence, 8.0), 65.0, 115.0)),
        chronotype_hours=float(np.clip(rng.normal(0.0, 0.8), -2.0, 2.0)),
    )


def _course(
    rng: np.random.Generator,
    profile: PatientProfile,
    therapy: str,
    start: date,
    end: date | None,
    last_day: date,
) -> TherapyCourse:
    spec = ref.THERAPIES[therapy]
    effect = rng.normal(spec.effect_mean, spec.effect_sd)
    # A minority of patients walk less on a usually helpful therapy (fatigue, low mood).
    if effect > 0 and rng.random() < 0.08:
        effect = -rng.uniform(100.0, 500.0)
    # A negative effect never takes more than a quarter of the baseline, so the daily model's
    # floor (a bed-bound minimum) stays exceptional and the additive truth holds.
    effect = float(np.clip(effect, -0.25 * profile.baseline_steps, 1_600.0))
    ramp = int(rng.integers(spec.ramp_days[0], spec.ramp_days[1] + 1))
    if end is not None and end >= last_day:
        end = None
    return TherapyCourse(therapy, start, end, float(round(effect)), ramp)


def _days(rng: np.random.Generator, low: int, high: int) -> timedelta:
    return timedelta(days=int(rng.integers(low, max(low, high) + 1)))


def _draw_therapies(
    rng: np.random.Generator, profile: PatientProfile, last_day: date
) -> tuple[TherapyCourse, ...]:
    group = profile.disease_group
    start_of_data = profile.enrolled_on
    span = (last_day - start_of_data).days
    courses: list[TherapyCourse] = []

    if rng.random() < ref.DRUG_SHARE[group]:
        drugs = [str(d) for d in rng.permutation(ref.GROUP_DRUGS[group])]
        # Some patients are already on their drug when they enrol, most start during follow-up.
        if rng.random() < 0.25 or span < 45:
            start = start_of_data - _days(rng, 30, 900)
        else:
            start = start_of_data + _days(rng, 14, span - 30)
        stopped = rng.random() < 0.35
        end = start + _days(rng, 120, 700) if stopped else None
        courses.append(_course(rng, profile, drugs[0], start, end, last_day))
        if end is not None and end < last_day and rng.random() < 0.7:
            switch = end + _days(rng, 7, 60)
            if switch <= last_day - timedelta(days=7):
                switch_end = switch + _days(rng, 120, 700) if rng.random() < 0.2 else None
                courses.append(_course(rng, profile, drugs[1], switch, switch_end, last_day))
        if group == "PD" and len(drugs) > 1 and len(courses) == 1 and rng.random() < 0.35:
            add_on = max(start, start_of_data) + _days(rng, 60, 500)
            if add_on <= last_day - timedelta(days=7):
                courses.append(_course(rng, profile, drugs[1], add_on, None, last_day))

    if rng.random() < (0.30 if group == "OTHER" else 0.35) and span > 30:
        options = ref.GROUP_COURSES[group]
        therapy = str(options[int(rng.integers(len(options)))])
        spec = ref.THERAPIES[therapy]
        assert spec.course_days is not None
        start = start_of_data + _days(rng, 0, span - 14)
        for _ in range(2):
            end = start + _days(rng, *spec.course_days)
            courses.append(_course(rng, profile, therapy, start, end, last_day))
            start = end + _days(rng, 30, 400)
            if start > last_day - timedelta(days=14) or rng.random() < 0.7:
                break
    return tuple(sorted(courses, key=lambda c: (c.start_date, c.therapy)))


def _severity(rng: np.random.Generator) -> int:
    return int(rng.choice(ref.SEVERITY_GRADES, p=ref.SEVERITY_SHARES))


def _draw_side_effects(
    rng: np.random.Generator, therapies: tuple[TherapyCourse, ...], first: date, last: date
) -> tuple[SideEffectReport, ...]:
    reports: dict[tuple[date, str], SideEffectReport] = {}

    def report(start: date, end: date, rate_per_year: float, effects: tuple[str, ...]) -> None:
        days = (end - start).days + 1
        if days <= 0:
            return
        for _ in range(int(rng.poisson(rate_per_year * days / 365.25))):
            when = start + timedelta(days=int(rng.integers(days)))
            effect = str(effects[int(rng.integers(len(effects)))])
            reports.setdefault((when, effect), SideEffectReport(when, effect, _severity(rng)))

    # Only reports made while enrolled exist in the clinical system.
    for course in therapies:
        spec = ref.THERAPIES[course.therapy]
        start = max(course.start_date, first)
        end = min(course.end_date or last, last)
        report(start, end, spec.side_effects_per_year, spec.side_effects)
    report(first, last, ref.BACKGROUND_SIDE_EFFECTS_PER_YEAR, ref.BACKGROUND_SIDE_EFFECTS)
    return tuple(sorted(reports.values(), key=lambda r: (r.date, r.effect)))


def _pick(rng: np.random.Generator, codes: tuple[ref.DiagnosisCode, ...]) -> ref.DiagnosisCode:
    weights = np.array([c.weight for c in codes])
    return codes[int(rng.choice(len(codes), p=weights / weights.sum()))]


def _draw_diagnoses(
    rng: np.random.Generator, profile: PatientProfile, last_day: date
) -> tuple[Diagnosis, ...]:
    adult = date(profile.birth_year + 18, 1, 1)
    latest = profile.enrolled_on - timedelta(days=1)

    def before_enrolment(years_low: float, years_high: float) -> date:
        back = timedelta(days=int(rng.uniform(years_low, years_high) * 365.25))
        return min(latest, max(adult, profile.enrolled_on - back))

    disease = ref.DISEASES[profile.disease_group]
    primary = _pick(rng, ref.PRIMARY_DIAGNOSES[profile.disease_group])
    found = {
        primary.code: Diagnosis(
            primary.code, before_enrolment(*disease.years_since_diagnosis), primary.description
        )
    }
    age = last_day.year - profile.birth_year
    candidates = tuple(
        c
        for c in ref.COMORBIDITIES
        if c.code not in found and (c.code != "M81.0" or (profile.sex == "F" and age >= 50))
    )
    wanted = int(rng.poisson(ref.COMORBIDITIES_AT_50 * math.exp(0.03 * (age - 50))))
    if wanted and candidates:
        weights = np.array([c.weight for c in candidates])
        chosen = rng.choice(
            len(candidates),
            size=min(wanted, len(candidates)),
            replace=False,
            p=weights / weights.sum(),
        )
        for i in sorted(int(i) for i in chosen):
            code = candidates[i]
            found[code.code] = Diagnosis(code.code, before_enrolment(0.1, 15.0), code.description)
    return tuple(sorted(found.values(), key=lambda d: (d.diagnosed_on, d.code)))
