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

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, fields
from datetime import date, timedelta
from enum import IntEnum
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa
from numpy.typing import NDArray

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
from synthetic.wear import PHONE, WearPlan, plan_wear
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
    "SampleBatch",
    "SimulatedBatch",
    "SimulatedPatient",
    "Stream",
    "clinical_frames",
    "daily_frame",
    "id_prefix",
    "patient_id",
    "patient_rng",
    "samples_frame",
    "simulate_batch",
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

    @classmethod
    def concat(cls, parts: Sequence[ClinicalFrames]) -> ClinicalFrames:
        """The tables of several groups of patients, one after the other."""
        if not parts:
            return clinical_frames([])
        return cls(**{f.name: pl.concat([getattr(p, f.name) for p in parts]) for f in fields(cls)})

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
    owner = np.repeat(np.arange(len(patients), dtype=np.uint32), counts)

    def column(name: str) -> np.ndarray:
        parts = [getattr(p.samples, name) for p in patients]
        return np.concatenate(parts) if parts else np.empty(0)

    start_us = column("start_us").astype(np.int64, copy=False)
    source = column("source").astype(np.uint32)
    position = np.arange(owner.size) - np.repeat(np.cumsum(counts) - counts, counts)
    indices = np.array([p.profile.index for p in patients], dtype=np.int64)
    names = [name for p in patients for name in p.source_names]
    month, month_names = _months(start_us)
    utc = pl.Datetime("us", "UTC")
    return pl.DataFrame(
        {
            "patient_id": _strings([p.profile.patient_id for p in patients], owner),
            "start_ts": pl.Series(start_us).cast(utc),
            "end_ts": pl.Series(column("end_us").astype(np.int64, copy=False)).cast(utc),
            "utc_offset_minutes": pl.Series(
                column("utc_offset_minutes").astype(np.int16, copy=False)
            ),
            "steps": pl.Series(column("steps").astype(np.float64, copy=False)),
            "source": _strings(names, owner * 2 + source),
            "month": _strings(month_names, month),
            "record": pl.Series(indices[owner] * RECORD_STRIDE + position),
            "corrupt": pl.Series(column("corrupt").astype(np.bool_, copy=False)),
        }
    ).select(*STEP_SAMPLES.columns, "record", "corrupt")


def _strings(values: Sequence[str], index: NDArray[np.uint32]) -> pl.Series:
    """``values[index]`` as a String column, without a Python object per row."""
    return pl.Series(values, dtype=pl.String).gather(pl.Series(index, dtype=pl.UInt32))


def _months(start_us: NDArray[np.int64]) -> tuple[NDArray[np.uint32], list[str]]:
    """Month of each start as an index into the "YYYY-MM" names of the months spanned."""
    if start_us.size == 0:
        return np.zeros(0, dtype=np.uint32), []
    first = np.datetime64(int(start_us.min()), "us").astype("datetime64[M]")
    last = np.datetime64(int(start_us.max()), "us").astype("datetime64[M]")
    months = np.arange(first, last + 1)
    bounds = months.astype("datetime64[us]").astype(np.int64)
    index = np.searchsorted(bounds, start_us, side="right") - 1
    return index.astype(np.uint32), [str(m) for m in months]


_EPOCH_MONTH = np.datetime64("1970-01", "M")
# Returns an empty array of the given size and dtype.
Allocator = Callable[[int, np.dtype[Any]], NDArray[Any]]


def _allocate(size: int, dtype: np.dtype[Any]) -> NDArray[Any]:
    return np.empty(size, dtype=dtype)


def _month_runs(start_us: NDArray[np.int64]) -> tuple[int, NDArray[np.int64]]:
    """UTC months of sorted starts: the first (months since 1970-01) and the number of starts
    in it and each following month (one search per month, not per sample)."""
    if start_us.size == 0:
        return 0, np.zeros(0, dtype=np.int64)
    first = np.datetime64(int(start_us[0]), "us").astype("datetime64[M]")
    last = np.datetime64(int(start_us[-1]), "us").astype("datetime64[M]")
    bounds = np.arange(first + 1, last + 1).astype("datetime64[us]").astype(np.int64)
    ends = np.append(np.searchsorted(start_us, bounds, side="left"), start_us.size)
    return int((first - _EPOCH_MONTH).astype(np.int64)), np.diff(ends, prepend=0)


@dataclass(frozen=True)
class SampleBatch:
    """The samples of consecutive patients as flat columns: what direct mode writes to bronze.

    The genuine samples of all patients come first, month by month (the table's partitions) and
    in each month ordered by patient, source name and start (the table's sort order), then the
    corrupt twins of all patients. The string
    columns are Arrow string views (16 bytes a row; strings longer than 12 bytes point into
    ``string_data``), so that a frame is made of the arrays as they are, in whichever process.

    Args:
        patient_ids: the patients' IDs, in order.
        genuine: genuine samples per patient.
        corrupt: corrupt twins per patient.
        start_us: start, microseconds since the epoch (UTC).
        end_us: end, microseconds since the epoch (UTC).
        utc_offset_minutes: the zone's offset at the start instant.
        steps: steps in the sample.
        patient_id: the patient ID of each sample, as string views.
        source: the stored source name of each sample, as string views.
        month: the UTC month ("YYYY-MM") of each start, as string views.
        string_data: the bytes the string views of longer strings point into.
        corrupt_records: ``record`` of each corrupt twin (see :func:`samples_frame`).
    """

    patient_ids: tuple[str, ...]
    genuine: NDArray[np.int64]
    corrupt: NDArray[np.int64]
    start_us: NDArray[np.int64]
    end_us: NDArray[np.int64]
    utc_offset_minutes: NDArray[np.int16]
    steps: NDArray[np.float64]
    patient_id: NDArray[np.void]
    source: NDArray[np.void]
    month: NDArray[np.void]
    string_data: bytes
    corrupt_records: NDArray[np.int64]

    @classmethod
    def of(
        cls,
        patients: Sequence[SimulatedPatient],
        label: Callable[[str], str] | None = None,
        allocate: Allocator | None = None,
    ) -> SampleBatch:
        """The samples of ``patients``.

        Args:
            patients: simulated patients.
            label: maps a device name to the stored source name (default: kept as it is).
            allocate: returns the empty array ``(size, dtype)`` a column is written into
                (default: ``np.empty``; shared memory lets another process take the batch
                without a copy).
        """
        allocate = allocate or _allocate
        strings = _StringViews()
        # Rows of each (patient, source) run of genuine samples, then of each patient's twins.
        runs: list[tuple[SampleArrays, slice]] = []
        twins: list[tuple[SampleArrays, slice]] = []
        run_strings: list[tuple[np.void, np.void]] = []  # patient ID and source of each run
        names: list[np.void] = []  # views of each patient's phone and watch names
        for patient in patients:
            samples = patient.samples
            who = strings.view(patient.profile.patient_id)
            phone, watch = (strings.view(label(n) if label else n) for n in patient.source_names)
            names += (phone, watch)
            # Genuine samples are sorted by source (PHONE first), then start.
            count = samples.genuine
            phones = int(np.count_nonzero(samples.source[:count] == PHONE))
            by_source = [(slice(0, phones), phone), (slice(phones, count), watch)]
            if strings.text(watch) < strings.text(phone):
                by_source.reverse()
            runs += ((samples, rows) for rows, _ in by_source)
            run_strings += ((who, name) for _, name in by_source)
            twins.append((samples, slice(count, len(samples))))

        # Genuine rows month by month (bronze is partitioned by month: a month's rows are then
        # one slice for the writer), each month's in bronze order; the twins after them.
        blocks: list[tuple[int, int, int, int]] = []  # (month, run, first row, rows)
        for run, (samples, rows) in enumerate(runs):
            first_month, counts = _month_runs(samples.start_us[rows])
            starts = rows.start + np.cumsum(counts) - counts
            blocks += zip(
                range(first_month, first_month + counts.size),
                [run] * counts.size,
                starts.tolist(),
                counts.tolist(),
                strict=True,
            )
        blocks.sort()
        genuine = sum(count for *_, count in blocks)
        size = genuine + sum(rows.stop - rows.start for _, rows in twins)

        def column(name: str) -> NDArray[Any]:
            dtype = getattr(SampleArrays.empty(), name).dtype
            out = allocate(size, dtype)
            at = 0
            for _, run, first, count in blocks:
                out[at : at + count] = getattr(runs[run][0], name)[first : first + count]
                at += count
            if twins:
                np.concatenate([getattr(s, name)[rows] for s, rows in twins], out=out[genuine:])
            return out

        start_us = column("start_us")
        patient_id = allocate(size, _VIEW)
        source = allocate(size, _VIEW)
        month = allocate(size, _VIEW)
        at = 0
        for month_number, run, _, count in blocks:
            following = at + count
            who, name = run_strings[run]
            patient_id[at:following] = who
            source[at:following] = name
            month[at:following] = strings.months(month_number, 1)[0]
            at = following
        # The few twins: looked up row by row.
        twin_counts = np.array([rows.stop - rows.start for _, rows in twins], dtype=np.int64)
        owner = np.repeat(np.arange(len(patients)), twin_counts)
        if owner.size:
            twin_source = np.concatenate([s.source[rows] for s, rows in twins]).astype(np.int64)
            who_views = np.array([strings.view(p.profile.patient_id) for p in patients])
            patient_id[genuine:] = who_views[owner]
            source[genuine:] = np.array(names, dtype=_VIEW)[owner * 2 + twin_source]
            number = (
                start_us[genuine:].astype("datetime64[us]").astype("datetime64[M]") - _EPOCH_MONTH
            ).astype(np.int64)
            first = int(number.min())
            month[genuine:] = strings.months(first, int(number.max()) - first + 1)[number - first]
        genuine_counts = np.array([p.samples.genuine for p in patients], dtype=np.int64)
        # A twin's record: its position among its patient's samples (after the genuine ones).
        first_twin = np.repeat(np.cumsum(twin_counts) - twin_counts, twin_counts)
        position = np.repeat(genuine_counts, twin_counts) + np.arange(owner.size) - first_twin
        index = np.array([p.profile.index for p in patients], dtype=np.int64)
        return cls(
            patient_ids=tuple(p.profile.patient_id for p in patients),
            genuine=genuine_counts,
            corrupt=twin_counts,
            start_us=start_us,
            end_us=column("end_us"),
            utc_offset_minutes=column("utc_offset_minutes"),
            steps=column("steps"),
            patient_id=patient_id,
            source=source,
            month=month,
            string_data=strings.data(),
            corrupt_records=np.repeat(index, twin_counts) * RECORD_STRIDE + position,
        )

    def __len__(self) -> int:
        return int(self.start_us.size)

    def frames(self) -> tuple[pl.DataFrame, pl.DataFrame]:
        """The genuine samples with the bronze/step_samples columns, and the corrupt twins with
        those columns plus ``record``."""
        utc = pl.Datetime("us", "UTC")
        frame = pl.DataFrame(
            {
                "patient_id": self._strings(self.patient_id),
                "start_ts": pl.Series(self.start_us).cast(utc),
                "end_ts": pl.Series(self.end_us).cast(utc),
                "utc_offset_minutes": pl.Series(self.utc_offset_minutes),
                "steps": pl.Series(self.steps),
                "source": self._strings(self.source),
                "month": self._strings(self.month),
            }
        )
        genuine = int(self.genuine.sum())
        corrupt = frame.slice(genuine).with_columns(record=pl.Series(self.corrupt_records))
        return frame.slice(0, genuine), corrupt

    def _strings(self, views: NDArray[np.void]) -> pl.Series:
        buffers = [None, pa.py_buffer(views), pa.py_buffer(self.string_data)]
        column = pl.from_arrow(pa.Array.from_buffers(pa.string_view(), views.size, buffers))
        assert isinstance(column, pl.Series)
        return column


# An Arrow string view: the length (4 bytes), then the string if it fits in 12 bytes, else its
# first 4 bytes, the number of the data buffer (0: there is one) and the offset in it.
_VIEW = np.dtype((np.void, 16))


class _StringViews:
    """The string views of a batch's few distinct strings, and the data of the longer ones."""

    def __init__(self) -> None:
        self._views: dict[str, np.void] = {}
        self._texts: dict[bytes, str] = {}
        self._data = bytearray()
        self._months: dict[tuple[int, int], NDArray[np.void]] = {}

    def view(self, text: str) -> np.void:
        """The view of ``text``."""
        found = self._views.get(text)
        if found is None:
            raw = text.encode()
            head = len(raw).to_bytes(4, "little")
            if len(raw) <= 12:
                view = head + raw.ljust(12, b"\0")
            else:
                view = head + raw[:4] + bytes(4) + len(self._data).to_bytes(4, "little")
                self._data += raw
            found = self._views[text] = np.frombuffer(view, dtype=_VIEW)[0]
            self._texts[view] = text
        return found

    def text(self, view: np.void) -> str:
        """The string of a view made by :meth:`view`."""
        return self._texts[view.tobytes()]

    def months(self, first: int, count: int) -> NDArray[np.void]:
        """Views of ``count`` consecutive "YYYY-MM" months from months since 1970-01 ``first``."""
        key = (first, count)
        if key not in self._months:
            self._months[key] = np.array(
                [self.view(str(_EPOCH_MONTH + first + m)) for m in range(count)], dtype=_VIEW
            )
        return self._months[key]

    def data(self) -> bytes:
        """The bytes the views of longer strings point into."""
        return bytes(self._data)


@dataclass(frozen=True)
class SimulatedBatch:
    """Consecutive patients simulated for direct mode: their clinical tables and samples."""

    clinical: ClinicalFrames
    samples: SampleBatch


def simulate_batch(
    seed: int,
    first: int,
    last: int,
    *,
    years: float = 3.0,
    end_date: date = DEFAULT_END_DATE,
    label: Callable[[str], str] | None = None,
    allocate: Allocator | None = None,
) -> SimulatedBatch:
    """Simulate patients ``first`` to ``last`` (inclusive) as compact tables.

    A batch holds no Python object per sample or per patient record, so it is cheap to keep and
    to send between processes; each patient is the same as :func:`simulate_patient` gives.

    Args:
        seed: population seed.
        first: 1-based number of the first patient.
        last: number of the last patient.
        years: length of the simulated period.
        end_date: last simulated day.
        label: maps a device name to the stored source name.
        allocate: where the samples' columns are written (see :meth:`SampleBatch.of`).
    """
    patients = [
        simulate_patient(seed, index, years=years, end_date=end_date)
        for index in range(first, last + 1)
    ]
    return SimulatedBatch(
        clinical=clinical_frames(p.history for p in patients),
        samples=SampleBatch.of(patients, label, allocate),
    )


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
