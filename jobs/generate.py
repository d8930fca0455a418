"""The ``generate`` job: a synthetic patient population for development, demos and scale tests.

Direct mode writes the bronze tables (step_samples, patients, therapies, side_effects, diagnoses,
quarantine) plus ``synthetic/ground_truth``. Landing mode writes the files ingestion reads (see
:mod:`synthetic.landing`) and only ``synthetic/ground_truth`` into the lake.

Both are idempotent per seed: every row a population writes is identified by the seed's patient-ID
prefix (``SYN{seed}-``) or, in bronze/quarantine, by ``source_file = 'synthetic:seed={seed}'``. A
run first removes the seed's step samples, then appends them in one commit, batch by batch of
patients (memory stays flat however many patients; files per month, not per batch:
:mod:`lakehouse.bulk`), then replaces the seed's rows of the small tables. Re-running with
the same arguments leaves the same table content. Other seeds' and real patients' rows are never
touched.

The simulated period ends yesterday by default (a new demo is current, not weeks old); a seed and
an end date always give the same data, so reproducible runs (tests, benchmarks) name the end date.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Literal

import polars as pl

from jobs.recent_activity import as_of
from jobs.runs import job_run
from jobs.simulation_workers import BatchRequest, simulate, simulated_batches
from jobs.validation import quarantine_reason
from lakehouse.bulk import BulkAppend
from lakehouse.catalog import GROUND_TRUTH, QUARANTINE, STEP_SAMPLES
from lakehouse.errors import InputError
from lakehouse.storage import Lake, sql_literal
from synthetic.clinical import ClinicalHistory
from synthetic.landing import write_apple_health_export, write_clinical_csvs
from synthetic.population import ClinicalFrames, clinical_frames, id_prefix, simulate_patient

# Samples per batch: large enough for few, big Parquet files, small enough for flat memory.
BATCH_SAMPLES = 3_000_000
_SAMPLES_PER_PATIENT_YEAR = 26_700
MAX_PATIENTS = 999_999  # IDs have six digits
# Processes simulating batches while this one writes (jobs.simulation_workers); runs of fewer
# batches simulate in this process (starting a worker costs about a second).
WORKERS = 2
_MIN_BATCHES_FOR_WORKERS = 4


@dataclass(frozen=True)
class GenerateSummary:
    """What a generate run produced.

    Args:
        mode: ``direct`` (bronze tables) or ``landing`` (files).
        patients: patients simulated.
        samples: step samples written (to bronze/step_samples, or as StepCount records).
        quarantined: corrupt samples (in bronze/quarantine, or written into the exports).
        therapies: therapy courses (= ground-truth rows).
        side_effects: side-effect reports.
        diagnoses: diagnoses.
        landing_files: files written in landing mode.
        seconds: wall time of the run.
    """

    mode: Literal["direct", "landing"]
    patients: int
    samples: int
    quarantined: int
    therapies: int
    side_effects: int
    diagnoses: int
    landing_files: int
    seconds: float

    @property
    def samples_per_second(self) -> float:
        """Generation and write throughput."""
        return self.samples / self.seconds if self.seconds > 0 else 0.0

    def describe(self) -> str:
        """One line for the CLI."""
        if self.mode == "landing":
            where = f"{self.landing_files:,} landing files"
            corrupt = f"{self.quarantined:,} corrupt left for ingest to quarantine"
        else:
            where, corrupt = "bronze tables", f"{self.quarantined:,} corrupt quarantined"
        return (
            f"generate: {self.patients:,} patients, {self.samples:,} samples ({corrupt}), "
            f"{self.therapies:,} therapy courses, "
            f"{self.side_effects:,} side effects, {self.diagnoses:,} diagnoses -> {where} "
            f"in {self.seconds:.1f} s ({self.samples_per_second:,.0f} samples/s)"
        )


def seed_predicate(seed: int) -> str:
    """Delta predicate matching the rows of one population: IDs starting with ``SYN{seed}-``.

    A range rather than LIKE so that file statistics prune files of other seeds and patients.
    """
    prefix = id_prefix(seed)
    upper = prefix[:-1] + chr(ord(prefix[-1]) + 1)
    return f"patient_id >= {sql_literal(prefix)} AND patient_id < {sql_literal(upper)}"


def quarantine_source(seed: int) -> str:
    """``source_file`` of a population's quarantined samples."""
    return f"synthetic:seed={seed}"


def quarantine_time(end_date: date) -> datetime:
    """The simulated ingestion instant stamped on quarantined rows.

    The day after the simulated period rather than the wall clock, so re-runs are identical.
    """
    return datetime.combine(end_date + timedelta(days=1), datetime.min.time(), tzinfo=UTC)


def split_quarantine(
    samples: pl.DataFrame, *, source_file: str, quarantined_at: datetime
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Split samples into valid bronze/step_samples rows and bronze/quarantine rows.

    Args:
        samples: step_samples columns plus ``record``.
        source_file: ``source_file`` of the quarantine rows.
        quarantined_at: ``quarantined_at`` of the quarantine rows.

    Returns:
        The valid samples with exactly the step_samples columns, and the rejected ones with the
        quarantine columns (``raw`` is the row as JSON).
    """
    reasons = samples.select(quarantine_reason()).to_series()
    bad = reasons.is_not_null()
    # Corrupt rows are rare: keep the big frame's buffers unless some row must go.
    valid = samples.select(STEP_SAMPLES.columns)
    if bad.any():
        valid = valid.filter(~bad)
    raw_columns = [c for c in STEP_SAMPLES.columns if c != "month"]
    rejected = (
        samples.filter(bad)
        .with_columns(reason=reasons.filter(bad))
        .select(
            source_file=pl.lit(source_file),
            record=pl.col("record"),
            reason=pl.col("reason"),
            raw=pl.struct(raw_columns).struct.json_encode(),
            patient_id=pl.col("patient_id"),
            quarantined_at=pl.lit(quarantined_at, dtype=pl.Datetime("us", "UTC")),
        )
    )
    # Filtered string columns can still point into the whole batch's buffers; copy the few
    # rejected rows out so that keeping them does not keep every batch alive.
    return valid, pl.DataFrame(rejected.to_dicts(), schema=rejected.schema)


def batch_size(years: float) -> int:
    """Patients per batch so that a batch holds about BATCH_SAMPLES samples."""
    return max(1, int(BATCH_SAMPLES / (_SAMPLES_PER_PATIENT_YEAR * max(years, 0.01))))


def _batch_requests(patients: int, seed: int, years: float, end_date: date) -> list[BatchRequest]:
    size = batch_size(years)
    return [
        BatchRequest(seed, first, min(patients, first + size - 1), years, end_date)
        for first in range(1, patients + 1, size)
    ]


def _default_workers(patients: int, years: float) -> int:
    if patients < _MIN_BATCHES_FOR_WORKERS * batch_size(years):
        return 0
    return max(1, min(WORKERS, os.cpu_count() or 1))


def _validate(patients: int, seed: int, years: float) -> None:
    if not 1 <= patients <= MAX_PATIENTS:
        raise InputError(f"--patients must be between 1 and {MAX_PATIENTS}, got {patients}")
    if seed < 0:
        raise InputError(f"--seed must be zero or positive, got {seed}")
    if not 0 < years <= 30:
        raise InputError(f"--years must be above 0 and at most 30, got {years:g}")


def run(
    lake: Lake,
    *,
    patients: int,
    seed: int,
    years: float = 3.0,
    landing: Path | None = None,
    end_date: date | None = None,
    watch_detail: bool = False,
    progress: Callable[[int], None] | None = None,
    workers: int | None = None,
) -> GenerateSummary:
    """Generate a synthetic population and write it to the lake or as landing files.

    Args:
        lake: the lake (bronze tables in direct mode; ground truth and job runs always).
        patients: number of patients (IDs ``SYN{seed}-000001`` ...).
        seed: population seed; the same arguments always give the same data.
        years: length of the simulated period, ending on ``end_date``.
        landing: write landing files into this directory instead of bronze tables.
        end_date: last simulated day (default: yesterday by the wall clock, so a new demo is
            current; the same seed and end date always give the same data).
        watch_detail: landing mode: Apple exports also hold the heart-rate and energy records
            a watch writes beside its steps (exports of realistic size for benchmarks).
        progress: called after each batch with the number of patients finished so far.
        workers: direct mode: processes simulating while this one writes (0: simulate in this
            process; default: two when the run has a few batches, else 0). The data are the
            same whatever the number.

    Returns:
        Counts of what was written.

    Raises:
        InputError: when an argument is out of range.
    """
    _validate(patients, seed, years)
    if watch_detail and landing is None:
        raise InputError("--watch-detail applies to landing files only: add --landing DIR")
    end = end_date or as_of()
    started = time.perf_counter()
    with job_run(lake, "generate") as job:
        if landing is None:
            if workers is None:
                workers = _default_workers(patients, years)
            summary = _run_direct(lake, patients, seed, years, end, progress, workers)
        else:
            summary = _run_landing(
                lake, patients, seed, years, end, landing, watch_detail, progress
            )
        summary = dataclasses.replace(summary, seconds=time.perf_counter() - started)
        job.rows_out = summary.samples
        job.details = {
            **asdict(summary),
            "seed": seed,
            "years": years,
            "end_date": end.isoformat(),
            "landing": str(landing) if landing else None,
            "watch_detail": watch_detail,
        }
    return summary


def _run_direct(
    lake: Lake,
    patients: int,
    seed: int,
    years: float,
    end: date,
    progress: Callable[[int], None] | None,
    workers: int = 0,
) -> GenerateSummary:
    source_file = quarantine_source(seed)
    quarantined_at = quarantine_time(end)
    metadata = {"job": "generate", "seed": str(seed)}
    requests = _batch_requests(patients, seed, years, end)
    # Each patient draws from its own generators: the data do not depend on the process.
    batches = simulated_batches(requests, workers) if workers > 0 else map(simulate, requests)
    lake.delete(STEP_SAMPLES, seed_predicate(seed))
    clinical: list[ClinicalFrames] = []
    rejected: list[pl.DataFrame] = []
    written = finished = 0
    # All samples in one commit, written by a bulk load (lakehouse/bulk.py): one open file per
    # month across batches, each batch's rows added while worker processes simulate the next
    # ones; a failure part-way commits nothing and removes the files written.
    with BulkAppend(lake, STEP_SAMPLES, metadata=metadata) as load:
        for batch in batches:
            clinical.append(batch.clinical)
            finished += len(batch.samples.patient_ids)
            valid, twins = batch.samples.frames()
            del batch
            # Genuine samples pass the quarantine rules by construction (the population tests
            # check it), so only the corrupt twins need them.
            valid_twins, bad = split_quarantine(
                twins, source_file=source_file, quarantined_at=quarantined_at
            )
            rejected.append(bad)
            load.add(valid, valid_twins)
            written += valid.height + valid_twins.height
            del valid, valid_twins
            if progress is not None:
                progress(finished)
    quarantine = pl.concat(rejected)
    lake.replace(QUARANTINE, quarantine, predicate=f"source_file = {sql_literal(source_file)}")
    frames = ClinicalFrames.concat(clinical)
    for table, frame in frames.by_table().items():
        lake.replace(table, frame, predicate=seed_predicate(seed))
    return GenerateSummary(
        mode="direct",
        patients=patients,
        samples=written,
        quarantined=quarantine.height,
        therapies=frames.therapies.height,
        side_effects=frames.side_effects.height,
        diagnoses=frames.diagnoses.height,
        landing_files=0,
        seconds=0.0,
    )


def _run_landing(
    lake: Lake,
    patients: int,
    seed: int,
    years: float,
    end: date,
    landing: Path,
    watch_detail: bool,
    progress: Callable[[int], None] | None,
) -> GenerateSummary:
    exports = landing / "apple-health"
    histories: list[ClinicalHistory] = []
    files = samples = corrupt = 0
    # One patient at a time: an export is streamed to disk, so nothing needs batching here.
    for index in range(1, patients + 1):
        patient = simulate_patient(seed, index, years=years, end_date=end)
        write_apple_health_export(patient, exports, watch_detail=watch_detail)
        files += 1
        samples += len(patient.samples)
        corrupt += int(patient.samples.corrupt.sum())
        histories.append(patient.history)
        if progress is not None:
            progress(index)
    frames = clinical_frames(histories)
    files += len(write_clinical_csvs(frames, landing))
    lake.replace(GROUND_TRUTH, frames.ground_truth, predicate=seed_predicate(seed))
    return GenerateSummary(
        mode="landing",
        patients=patients,
        samples=samples - corrupt,
        quarantined=corrupt,
        therapies=frames.therapies.height,
        side_effects=frames.side_effects.height,
        diagnoses=frames.diagnoses.height,
        landing_files=files,
        seconds=0.0,
    )
