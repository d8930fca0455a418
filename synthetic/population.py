"""The synthetic patient population: simulate patients and lay them out as table frames.

Pure simulation, no I/O. Each patient draws from its own NumPy generators seeded with
``(seed, patient index, stream)``, so a patient's data never depends on batch size, process or
which other patients are simulated, and the clinical record can be drawn without simulating any
day. The parts live in their own modules:

- :mod:`synthetic.clinical`: demographics, therapies with their true effects, side effects,
  diagnoses.
- :mod:`synthetic.daily`: expected and walked steps per day (the additive therapy structure).
- :mod:`synthetic.wear`: which device recorded which days and hours.
- :mod:`synthetic.samples`: intraday samples adding up to each day's recorded steps.

Frames returned here match the table declarations in :mod:`lakehouse.catalog` column for column.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from enum import IntEnum

import numpy as np
import polars as pl

from lakehouse.catalog import (
    DIAGNOSES,
    GROUND_TRUTH,
    PATIENTS,
    SIDE_EFFECTS,
    STEP_SAMPLES,
    THERAPIES,
    TableSpec,
)
from synthetic.clinical import ClinicalHistory, PatientProfile, patient_id, simulate_clinical
from synthetic.daily import DailyTruth, patient_days, simulate_daily
from synthetic.samples import SampleArrays, simulate_samples
from synthetic.wear import WearPlan, plan_wear
from synthetic.zones import zone_offsets

# A fixed default so that the same arguments always give the same tables (never "today"):
# tests and benchmarks pass it to ``mobility generate``, whose own default is yesterday.
DEFAULT_END_DATE = date(2026, 10, 31)
# ``record`` of a sample = patient index * this + position of the sample in the patient's data.
RECORD_STRIDE = 100_000_000

__all__ = [
    "DEFAULT_END_DATE",
    "RECORD_STRIDE",
    "ClinicalFrames",
    "SimulatedPatient",
    "Stream",
    "clinical_frames",
    "daily_frame",
    "id_prefix",
    "patient_id",
    "patient_rng",
    "samples_frame",
    "simulate_history",
    "simulate_patient",
    "simulation_period",
]


class Stream(IntEnum):
    """Independent random streams of one patient."""

    CLINICAL = 0
    DAILY = 1
    WEAR = 2
    SAMPLES = 3
    LANDING = 4


def patient_rng(seed: int, index: int, stream: Stream) -> np.random.Generator:
    """The generator of one patient's stream."""
    return np.random.default_rng([seed, index, int(stream)])


def id_prefix(seed: int) -> str:
    """Prefix shared by all patient IDs of a population, ``SYN{seed}-``."""
    return f"SYN{seed}-"


def simulation_period(years: float, end_date: date) -> tuple[date, date]:
    """First and last day of a simulated period of ``years`` ending on ``end_date``."""
    days = max(1, round(years * 365.25))
    return end_date - timedelta(days=days - 1), end_date


@dataclass(frozen=True)
class SimulatedPatient:
    """Everything simulated for one patient.

    Args:
        history: profile and clinical record.
        daily: expected and walked steps per day.
        wear: per-day recording plan (which device, how much it saw).
        samples: the intraday samples.
    """

    history: ClinicalHistory
    daily: DailyTruth
    wear: WearPlan
    samples: SampleArrays

    @property
    def profile(self) -> PatientProfile:
        """The patient's profile."""
        return self.history.profile

    @property
    def source_names(self) -> tuple[str, str]:
        """Source names of the phone and the watch, indexed by PHONE / WATCH."""
        return f"{self.profile.first_name}'s iPhone", "Apple Watch"


def simulate_history(
    seed: int, index: int, *, years: float = 3.0, end_date: date = DEFAULT_END_DATE
) -> ClinicalHistory:
    """A patient's profile and clinical record, without simulating any day.

    Args:
        seed: population seed.
        index: 1-based patient number.
        years: length of the simulated period.
        end_date: last simulated day.
    """
    first, last = simulation_period(years, end_date)
    rng = patient_rng(seed, index, Stream.CLINICAL)
    return simulate_clinical(rng, seed=seed, index=index, first_day=first, last_day=last)


def simulate_patient(
    seed: int, index: int, *, years: float = 3.0, end_date: date = DEFAULT_END_DATE
) -> SimulatedPatient:
    """Simulate one patient completely: clinical record, days and intraday samples.

    Args:
        seed: population seed.
        index: 1-based patient number.
        years: length of the simulated period.
        end_date: last simulated day.
    """
    first, last = simulation_period(years, end_date)
    history = simulate_history(seed, index, years=years, end_date=end_date)
    profile = history.profile
    days = patient_days(profile.enrolled_on, last)
    daily = simulate_daily(patient_rng(seed, index, Stream.DAILY), history, days)
    wear = plan_wear(patient_rng(seed, index, Stream.WEAR), profile, days, daily.walked_steps)
    # One cached zone table per period, shared by all patients of the zone.
    zone = zone_offsets(profile.timezone, first.year, last.year)
    samples = simulate_samples(patient_rng(seed, index, Stream.SAMPLES), profile, days, wear, zone)
    return SimulatedPatient(history, daily, wear, samples)


def _polars_schema(table: TableSpec) -> pl.Schema:
    empty = pl.from_arrow(table.schema.empty_table())
    assert isinstance(empty, pl.DataFrame)
    return empty.schema


def _frame(table: TableSpec, rows: list[dict[str, object]]) -> pl.DataFrame:
    return pl.DataFrame(rows, schema=_polars_schema(table), orient="row")


@dataclass(frozen=True)
class ClinicalFrames:
    """The clinical tables of a set of patients, one frame per table."""

    patients: pl.DataFrame
    therapies: pl.DataFrame
    side_effects: pl.DataFrame
    diagnoses: pl.DataFrame
    ground_truth: pl.DataFrame

    def by_table(self) -> dict[TableSpec, pl.DataFrame]:
        """The frames keyed by the table each belongs to."""
        return {
            PATIENTS: self.patients,
            THERAPIES: self.therapies,
            SIDE_EFFECTS: self.side_effects,
            DIAGNOSES: self.diagnoses,
            GROUND_TRUTH: self.ground_truth,
        }


def clinical_frames(histories: Iterable[ClinicalHistory]) -> ClinicalFrames:
    """Rows of bronze/patients, therapies, side_effects, diagnoses and synthetic/ground_truth."""
    patients: list[dict[str, object]] = []
    therapies: list[dict[str, object]] = []
    side_effects: list[dict[str, object]] = []
    diagnoses: list[dict[str, object]] = []
    truth: list[dict[str, object]] = []
    for history in histories:
        p = history.profile
        patients.append(
            {
                "patient_id": p.patient_id,
                "disease_group": p.disease_group,
                "timezone": p.timezone,
                "sex": p.sex,
                "birth_year": p.birth_year,
                "country": p.country,
                "enrolled_on": p.enrolled_on,
            }
        )
        for c in history.therapies:
            course = {
                "patient_id": p.patient_id,
                "therapy": c.therapy,
                "start_date": c.start_date,
                "end_date": c.end_date,
            }
            therapies.append(course)
            truth.append({**course, "effect_steps": c.effect_steps, "ramp_days": c.ramp_days})
        side_effects.extend(
            {"patient_id": p.patient_id, "date": r.date, "effect": r.effect, "severity": r.severity}
            for r in history.side_effects
        )
        diagnoses.extend(
            {
                "patient_id": p.patient_id,
                "code": d.code,
                "diagnosed_on": d.diagnosed_on,
                "description": d.description,
            }
            for d in history.diagnoses
        )
    return ClinicalFrames(
        patients=_frame(PATIENTS, patients),
        therapies=_frame(THERAPIES, therapies),
        side_effects=_frame(SIDE_EFFECTS, side_effects),
        diagnoses=_frame(DIAGNOSES, diagnoses),
        ground_truth=_frame(GROUND_TRUTH, truth),
    )


def samples_frame(patients: Sequence[SimulatedPatient]) -> pl.DataFrame:
    """The samples of ``patients`` with the bronze/step_samples columns plus two more.

    Extra columns: ``record`` (stable sample number: patient index * RECORD_STRIDE + position)
    and ``corrupt`` (the deliberately corrupt rows). Corrupt rows still need the quarantine rules
    applied; ``corrupt`` only documents the intent for tests.
    """
    counts = np.array([len(p.samples) for p in patients], dtype=np.int64)
    owner = np.repeat(np.arange(len(patients)), counts)

    def column(name: str) -> np.ndarray:
        parts = [getattr(p.samples, name) for p in patients]
        return np.concatenate(parts) if parts else np.empty(0)

    start_us = column("start_us").astype(np.int64, copy=False)
    source = column("source").astype(np.int64)
    position = np.arange(owner.size) - np.repeat(np.cumsum(counts) - counts, counts)
    indices = np.array([p.profile.index for p in patients], dtype=np.int64)
    names = [name for p in patients for name in p.source_names]
    # Months as "YYYY-MM" strings, formatted once per month rather than per sample: look each
    # start up among the few month boundaries of the batch.
    month_of = np.zeros(start_us.size, dtype=np.int64)
    month_names = ["1970-01"]
    if start_us.size:
        first = np.datetime64(int(start_us.min()), "us").astype("datetime64[M]")
        last = np.datetime64(int(start_us.max()), "us").astype("datetime64[M]")
        months = np.arange(first, last + 1)
        bounds = months.astype("datetime64[us]").astype(np.int64)
        month_of = np.searchsorted(bounds, start_us, side="right") - 1
        month_names = [str(m) for m in months]
    utc = pl.Datetime("us", "UTC")
    return pl.DataFrame(
        {
            "patient_id": pl.Series([p.profile.patient_id for p in patients], dtype=pl.String)[
                owner
            ],
            "start_ts": pl.Series(start_us).cast(utc),
            "end_ts": pl.Series(column("end_us").astype(np.int64, copy=False)).cast(utc),
            "utc_offset_minutes": pl.Series(
                column("utc_offset_minutes").astype(np.int16, copy=False)
            ),
            "steps": pl.Series(column("steps").astype(np.float64, copy=False)),
            "source": pl.Series(names, dtype=pl.String)[owner * 2 + source],
            "month": pl.Series(month_names, dtype=pl.String)[month_of],
            "record": pl.Series(indices[owner] * RECORD_STRIDE + position),
            "corrupt": pl.Series(column("corrupt").astype(np.bool_, copy=False)),
        }
    ).select(*STEP_SAMPLES.columns, "record", "corrupt")


def daily_frame(patients: Sequence[SimulatedPatient]) -> pl.DataFrame:
    """Per patient and local day: the simulated truth, for evaluation and tests.

    Columns: patient_id, date, expected_steps, walked_steps, recorded_steps (by the primary
    device), wear (``not_worn``, ``worn``, ``low_coverage``), primary_source, duplicated
    (the other device recorded too), therapy_steps (sum of ramped effects), side_effect_dips.
    """
    frames = []
    wear_names = np.array(["not_worn", "worn", "low_coverage"])
    for p in patients:
        names = np.array(p.source_names)
        frames.append(
            pl.DataFrame(
                {
                    "patient_id": [p.profile.patient_id] * p.daily.days.size,
                    "date": p.daily.days.astype("datetime64[D]"),
                    "expected_steps": p.daily.expected_steps,
                    "walked_steps": p.daily.walked_steps,
                    "recorded_steps": p.wear.recorded_steps,
                    "wear": wear_names[p.wear.status],
                    "primary_source": names[p.wear.primary],
                    "duplicated": p.wear.duplicated,
                    "therapy_steps": p.daily.therapy_effects.sum(axis=0),
                    "side_effect_dips": p.daily.side_effect_dips,
                }
            )
        )
    return pl.concat(frames) if frames else pl.DataFrame()
