"""The ``simulate`` job: a synthetic population that lives on one day at a time, through the same
landing folder, ingestion and daily pipeline as real patients, so monitoring sees real days.

``start`` simulates every patient from their history through ``days_ahead`` more days (the truth
is drawn once, so the days released later continue the same lives), writes what was known on
the start day as landing files (an Apple Health export per patient, the clinical CSVs), ingests
them and runs the pipeline with a forced training. ``advance`` then releases one day at a time:
the day's step samples of every patient as a device feed file (generic CSV, ``daily/<day>.csv``,
corrupt samples included), ingested by the scheduler's landing routine, followed by the daily
pipeline (aggregate, features, train when due, forecast, monitor).

Injections, each from the first day of the ``advance`` that asks for it, for the monitoring to
find:

- ``shift``: the mobility of a disease group (or everyone) changes by a factor from that day
  on, and stays changed (e.g. ``0.6``: 40% fewer steps);
- ``bad_rows``: a burst of broken rows in that day's file (negative steps, unreadable times);
- ``extra_column``: the feed gains a column from that day on (a schema change).

Clinical records are released as of the start day (therapies starting later and events after it
are left out; courses still running on it are open-ended); the days released later carry step
samples only. The simulation's state (seed, days, injections) is ``synthetic/simulation.json``
in the lake; a day is recorded there only after its pipeline ran, so an interrupted ``advance``
repeats that day (ingestion skips samples already in the lake).

``start`` and ``advance`` hold the lake's lease (docs/reliability.md) for everything they write:
the landing files and their ingestion, the state, the pipeline's stages (which re-enter it). A
scheduled pipeline or ``lake optimize`` waits for a simulation, and a simulation for them.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path

import numpy as np
import polars as pl

from jobs import pipeline
from jobs.schedule import ingest_landing
from lakehouse.errors import InputError, StorageError
from lakehouse.lock import Lease, lease
from lakehouse.storage import Lake
from synthetic.landing import local_text, write_apple_health_export, write_clinical_csvs
from synthetic.population import (
    DEFAULT_END_DATE,
    ClinicalFrames,
    SimulatedPatient,
    clinical_frames,
    simulate_patient,
)
from synthetic.samples import SampleArrays

STATE_PATH = "synthetic/simulation.json"
FEED_FOLDER = "daily"
MAX_PATIENTS = 5_000
_US_PER_DAY = 86_400_000_000
# The simulated pipeline runs on the morning after the day it released.
MORNING = time(6)


@dataclass(frozen=True)
class Shift:
    """From ``from_day`` on, the steps of ``groups`` (everyone when empty) times ``factor``."""

    from_day: date
    factor: float
    groups: tuple[str, ...] = ()


@dataclass(frozen=True)
class Simulation:
    """What a simulation is and how far it got.

    Args:
        seed: population seed (patient IDs ``SYN{seed}-...``).
        patients: number of patients.
        first_day: first day of the simulated lives.
        start_day: the last day known when the simulation started.
        today: the last day released so far.
        last_day: the last day drawn; ``advance`` cannot go beyond it.
        landing: the landing folder the files are written to.
        shifts: mobility shifts injected so far.
        extra_columns: columns the feed has gained.
        training: ``train`` options of the daily pipeline.
    """

    seed: int
    patients: int
    first_day: date
    start_day: date
    today: date
    last_day: date
    landing: str
    shifts: tuple[Shift, ...] = ()
    extra_columns: tuple[str, ...] = ()
    training: dict[str, float] = field(default_factory=dict)

    @property
    def years(self) -> float:
        """The ``years`` that make :func:`simulate_patient` draw ``first_day`` to ``last_day``."""
        return ((self.last_day - self.first_day).days + 1) / 365.25

    def to_json(self) -> bytes:
        """The state as stored in the lake."""
        return json.dumps(dataclasses.asdict(self), default=str, indent=2).encode()

    @classmethod
    def from_json(cls, data: bytes) -> Simulation:
        """The state stored by :meth:`to_json`."""
        raw = json.loads(data)
        days = ("first_day", "start_day", "today", "last_day")
        return cls(
            **{
                **raw,
                **{k: date.fromisoformat(raw[k]) for k in days},
                "shifts": tuple(
                    Shift(date.fromisoformat(s["from_day"]), float(s["factor"]), tuple(s["groups"]))
                    for s in raw["shifts"]
                ),
                "extra_columns": tuple(raw["extra_columns"]),
            }
        )


@dataclass(frozen=True)
class DayReport:
    """One released day: its file, what ingestion made of it, and what monitoring found."""

    day: date
    samples: int
    ingested: int
    failed_files: int
    trained: str
    alerts_raised: tuple[str, ...]
    alerts_resolved: tuple[str, ...]

    def describe(self) -> str:
        """One line (and one per alert) for the command line."""
        lines = [
            f"{self.day}: {self.samples:,} samples in the feed, {self.ingested} file(s) ingested"
            + (f", {self.failed_files} failed" if self.failed_files else "")
            + f"; training {self.trained}; {len(self.alerts_raised)} alert(s) raised, "
            f"{len(self.alerts_resolved)} resolved"
        ]
        lines += [f"  ALERT {subject}" for subject in self.alerts_raised]
        lines += [f"  resolved {subject}" for subject in self.alerts_resolved]
        return "\n".join(lines)


# ------------------------------------------------------------------------------------ the state


def load(lake: Lake) -> Simulation | None:
    """The lake's simulation, None when it has none."""
    try:
        return Simulation.from_json(lake.read_object(STATE_PATH))
    except StorageError:
        return None


def _save(lake: Lake, simulation: Simulation) -> None:
    lake.write_object(STATE_PATH, simulation.to_json())


# ---------------------------------------------------------------------------------------- start


def start(
    lake: Lake,
    *,
    patients: int,
    seed: int,
    landing: Path,
    years: float = 2.0,
    start_day: date = DEFAULT_END_DATE,
    days_ahead: int = 90,
    training: dict[str, float] | None = None,
    on_wait: Callable[[Lease], None] | None = None,
) -> Simulation:
    """Simulate ``patients`` lives through ``start_day + days_ahead``, ingest what was known on
    ``start_day`` and run the pipeline (training forced), under the lake's lease.

    ``on_wait`` is called once with the other holder's lease if the lease is taken.

    Raises:
        InputError: an argument out of range, or the lake already has a simulation.
        StorageError: the lease stayed taken past ``MOBILITY_LOCK_WAIT``.
    """
    if not 1 <= patients <= MAX_PATIENTS:
        raise InputError(f"--patients must be between 1 and {MAX_PATIENTS:,}, got {patients}")
    if not 0.5 <= years <= 10:
        raise InputError(f"--years must be between 0.5 and 10, got {years:g}")
    if not 1 <= days_ahead <= 730:
        raise InputError(f"--days-ahead must be between 1 and 730, got {days_ahead}")
    _refuse_second_simulation(lake)  # before waiting for the lease, possibly for hours
    first_day = start_day - timedelta(days=round(years * 365.25) - 1)
    simulation = Simulation(
        seed=seed,
        patients=patients,
        first_day=first_day,
        start_day=start_day,
        today=start_day,
        last_day=start_day + timedelta(days=days_ahead),
        landing=str(landing),
        training=dict(training or {}),
    )
    with lease(lake, purpose="simulate start", on_wait=on_wait):
        _refuse_second_simulation(lake)  # again: one may have started while this one waited
        lives = _lives(simulation)
        exports = landing / "apple-health"
        for life in lives:
            known_by_start = _local_days(life.samples) <= _day_number(start_day)
            known = _samples_where(life.samples, known_by_start)
            write_apple_health_export(dataclasses.replace(life, samples=known), exports)
        known_records = _known_on(clinical_frames(p.history for p in lives), start_day)
        write_clinical_csvs(known_records, landing)
        ingested, failed = ingest_landing(lake, landing)
        if failed or not ingested:
            raise InputError(f"{failed} of the start day's landing files failed to ingest")
        pipeline.run(lake, _pipeline_options(simulation, start_day, force_training=True))
        _save(lake, simulation)
    return simulation


def _refuse_second_simulation(lake: Lake) -> None:
    if load(lake) is not None:
        raise InputError(
            f"{lake.uri} already has a simulation: `mobility simulate advance` continues it"
        )


def _known_on(frames: ClinicalFrames, day: date) -> ClinicalFrames:
    """The clinical records as known at the end of ``day``."""
    return dataclasses.replace(
        frames,
        therapies=frames.therapies.filter(pl.col("start_date") <= day).with_columns(
            end_date=pl.when(pl.col("end_date") <= day).then(pl.col("end_date"))
        ),
        side_effects=frames.side_effects.filter(pl.col("date") <= day),
        diagnoses=frames.diagnoses.filter(pl.col("diagnosed_on") <= day),
    )


# -------------------------------------------------------------------------------------- advance


def advance(
    lake: Lake,
    *,
    days: int,
    shift: Shift | None = None,
    bad_rows: int = 0,
    extra_column: str | None = None,
    on_day: Callable[[DayReport], None] | None = None,
    on_wait: Callable[[Lease], None] | None = None,
) -> list[DayReport]:
    """Release ``days`` more days, one at a time, each followed by the daily pipeline, under the
    lake's lease.

    Args:
        lake: a lake with a simulation (:func:`start`).
        days: how many days.
        shift: a mobility shift from the first of these days on (its ``from_day`` is set here).
        bad_rows: broken rows added to the first of these days' file.
        extra_column: a column the feed carries from the first of these days on.
        on_day: called with each day's report as soon as it is done.
        on_wait: called once with the other holder's lease if the lease is taken.

    Raises:
        InputError: no simulation, bad arguments, or beyond the days drawn at the start.
        StorageError: the lease stayed taken past ``MOBILITY_LOCK_WAIT``.
    """
    # before the lease: a mistyped lake is not given a lock table, a bad request waits for nothing
    _simulation_of(lake)
    if days < 1:
        raise InputError(f"--days must be at least 1, got {days}")
    if bad_rows < 0:
        raise InputError(f"--bad-rows must be zero or more, got {bad_rows}")
    if extra_column is not None and not extra_column.strip():
        raise InputError("--extra-column needs a name")
    if shift is not None and shift.factor <= 0:
        raise InputError(f"--shift must be above 0 (a factor on steps), got {shift.factor:g}")
    with lease(lake, purpose="simulate advance", on_wait=on_wait):
        # read again under the lease: another advance may have released days meanwhile
        simulation = _simulation_of(lake)
        if simulation.today + timedelta(days=days) > simulation.last_day:
            left = (simulation.last_day - simulation.today).days
            raise InputError(
                f"the simulation was drawn through {simulation.last_day} ({left} day(s) left): "
                "start a new one with more --days-ahead"
            )
        first = simulation.today + timedelta(days=1)
        if shift is not None:
            simulation = dataclasses.replace(
                simulation, shifts=(*simulation.shifts, dataclasses.replace(shift, from_day=first))
            )
        if extra_column is not None and extra_column not in simulation.extra_columns:
            simulation = dataclasses.replace(
                simulation, extra_columns=(*simulation.extra_columns, extra_column.strip())
            )
        lives = _lives(simulation)
        landing = Path(simulation.landing)
        reports = []
        for offset in range(days):
            day = first + timedelta(days=offset)
            feed = _feed(lives, day, simulation, bad_rows=bad_rows if offset == 0 else 0)
            path = landing / FEED_FOLDER / f"{day.isoformat()}.csv"
            path.parent.mkdir(parents=True, exist_ok=True)
            partial = path.with_name(path.name + ".partial")
            feed.write_csv(partial)
            partial.replace(path)
            ingested, failed = ingest_landing(lake, landing)
            ran = pipeline.run(lake, _pipeline_options(simulation, day, force_training=False))
            assert ran.train is not None and ran.monitor is not None  # every stage ran
            simulation = dataclasses.replace(simulation, today=day)
            _save(lake, simulation)
            report = DayReport(
                day,
                feed.height,
                ingested,
                failed,
                ran.train.status,
                tuple(ran.monitor.raised),
                tuple(ran.monitor.resolved),
            )
            reports.append(report)
            if on_day is not None:
                on_day(report)
    return reports


def _simulation_of(lake: Lake) -> Simulation:
    simulation = load(lake)
    if simulation is None:
        raise InputError(f"{lake.uri} has no simulation: run `mobility simulate start` first")
    return simulation


def _feed(
    lives: Sequence[SimulatedPatient], day: date, simulation: Simulation, *, bad_rows: int
) -> pl.DataFrame:
    """The device feed of ``day``: every patient's samples that started that local day, as
    generic CSV columns (times with their UTC offset), shifts applied, extra columns added."""
    frames = []
    number = _day_number(day)
    for life in lives:
        samples = _samples_where(life.samples, _local_days(life.samples) == number)
        if not len(samples):
            continue
        factor = np.prod(
            [
                s.factor
                for s in simulation.shifts
                if s.from_day <= day and (not s.groups or life.profile.disease_group in s.groups)
            ]
        )
        utc = pl.Datetime("us", "UTC")
        offsets = pl.Series(samples.utc_offset_minutes.astype(np.int32))
        frames.append(
            pl.DataFrame(
                {
                    "start": pl.Series(samples.start_us).cast(utc),
                    "end": pl.Series(samples.end_us).cast(utc),
                    "offset": offsets,
                    "steps": np.round(samples.steps * factor),
                    "source": np.array(life.source_names)[samples.source],
                }
            ).select(
                patient_id=pl.lit(life.profile.patient_id),
                start=local_text(pl.col("start"), pl.col("offset")),
                end=local_text(pl.col("end"), pl.col("offset")),
                steps=pl.col("steps").cast(pl.Int64).cast(pl.String),
                source=pl.col("source"),
            )
        )
    columns = {"patient_id": pl.String, "start": pl.String, "end": pl.String}
    feed = (
        pl.concat(frames)
        if frames
        else pl.DataFrame(schema={**columns, "steps": pl.String, "source": pl.String})
    )
    if bad_rows:
        feed = pl.concat([feed, _broken_rows(feed, bad_rows, day)])
    return feed.with_columns(
        pl.lit(f"{name}-{day.isoformat()}").alias(name) for name in simulation.extra_columns
    )


def _broken_rows(feed: pl.DataFrame, count: int, day: date) -> pl.DataFrame:
    """``count`` rows a glitching exporter writes: every other one with negative steps, the rest
    with a time that is not a time."""
    rng = np.random.default_rng(day.toordinal())
    template = feed.sample(count, with_replacement=True, seed=int(rng.integers(2**31)))
    negative = np.arange(count) % 2 == 0
    return template.with_columns(
        steps=pl.when(pl.Series(negative)).then(pl.lit("-120")).otherwise(pl.col("steps")),
        start=pl.when(pl.Series(negative)).then(pl.col("start")).otherwise(pl.lit("not a time")),
    )


# ------------------------------------------------------------------------------------- pipeline


def _pipeline_options(
    simulation: Simulation, day: date, *, force_training: bool
) -> pipeline.Options:
    """The daily pipeline's options for the simulation's training (``Simulation.training``),
    run as on the morning after ``day``: training and monitoring take that as now (freshness and
    wear measured up to ``day``, the simulated yesterday; a model's age and an alert's time on
    the same clock), not the wall clock."""
    options = simulation.training
    prophet_workers = int(options.get("prophet_workers", 2))
    return pipeline.Options(
        training=pipeline.Training(
            force=force_training,
            patients_per_cluster=int(options.get("patients_per_cluster", 200)),
            origins=int(options.get("origins", 3)),
            tune_seconds=float(options.get("tune_seconds", 0.0)),
            prophet_workers=prophet_workers,
        ),
        forecast_workers=prophet_workers,
        now=datetime.combine(day + timedelta(days=1), MORNING, tzinfo=UTC),
    )


# ---------------------------------------------------------------------------------------- lives


def _lives(simulation: Simulation) -> list[SimulatedPatient]:
    """Every patient simulated from ``first_day`` through ``last_day`` (the same draws each
    time)."""
    return [
        simulate_patient(
            simulation.seed, index, years=simulation.years, end_date=simulation.last_day
        )
        for index in range(1, simulation.patients + 1)
    ]


def _day_number(day: date) -> int:
    return (day - date(1970, 1, 1)).days


def _local_days(samples: SampleArrays) -> np.ndarray:
    """Each sample's local calendar day (days since 1970-01-01) from its start and offset."""
    local = samples.start_us + samples.utc_offset_minutes.astype(np.int64) * 60_000_000
    days: np.ndarray = np.floor_divide(local, _US_PER_DAY)
    return days


def _samples_where(samples: SampleArrays, mask: np.ndarray) -> SampleArrays:
    return SampleArrays(
        **{f.name: getattr(samples, f.name)[mask] for f in dataclasses.fields(SampleArrays)}
    )
