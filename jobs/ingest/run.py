"""The ``ingest`` job: one device export (Apple Health, Fitbit Fitabase, Google Fit) into bronze.

Commit order and atomicity: every accepted sample of the file goes into bronze/step_samples in ONE
insert-only merge on the table's keys, fed by a stream that is parsed while Delta consumes it. A
file that turns out to be unreadable halfway raises inside that stream, so the commit never
happens and nothing of the file lands. Only after the samples are committed are the quarantine rows
(merged on ``source_file, record``) and, for a new person, the bronze/patients row written.

Idempotence: the merge inserts only samples whose ``patient_id, source, start_ts, end_ts`` are new,
so ingesting the same export again adds nothing and a newer export of the same person adds only the
samples that were not there yet.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import polars as pl
import pyarrow as pa

from jobs.ingest import apple_health, fitbit
from jobs.ingest.common import IngestSummary, ParseStats, SeenKeys, quarantine_rows
from jobs.runs import job_run
from lakehouse.catalog import PATIENTS, QUARANTINE, STEP_SAMPLES
from lakehouse.errors import InputError
from lakehouse.storage import Lake, conform

FORMATS = ("auto", "apple-health", "fitbit", "google-fit")
JOB = "ingest"
DEFAULT_DISEASE_GROUP = "OTHER"  # until clinical data says otherwise
_EXPORT_NAMES = ("export.xml", "export.zip")


@dataclass
class _Attempt:
    """State of one pass over the file (a commit retry starts a fresh pass)."""

    stats: ParseStats = field(default_factory=ParseStats)
    accepted: int = 0
    offsets: Counter[int] = field(default_factory=Counter)
    rejected: list[pl.DataFrame] = field(default_factory=list)
    seen: SeenKeys = field(default_factory=SeenKeys)
    patients: set[str] = field(default_factory=set)
    error: InputError | None = None


def patient_from_path(path: Path) -> str | None:
    """The patient of ``<...>/apple-health/<patient_id>/export.xml|zip``, else None."""
    if path.name in _EXPORT_NAMES and path.parent.parent.name == "apple-health":
        return path.parent.name or None
    return None


def timezone_from_offsets(offsets: Counter[int]) -> str:
    """An IANA zone for the most common UTC offset: ``Etc/GMT±N`` if whole hours, else UTC.

    ``Etc/GMT`` zones count the other way round (``Etc/GMT+4`` is UTC-4).
    """
    if not offsets:
        return "UTC"
    minutes = offsets.most_common(1)[0][0]
    if minutes % 60 or abs(minutes) > 14 * 60:
        return "UTC"
    hours = -minutes // 60
    return "Etc/GMT" if hours == 0 else f"Etc/GMT{hours:+d}"


def _check_timezone(timezone: str | None) -> None:
    if timezone is None:
        return
    try:
        ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError) as err:
        raise InputError(f"unknown time zone {timezone!r} (use an IANA name)") from err


Samples = Iterator[tuple[pl.DataFrame, pl.DataFrame]]


def _apple_samples(
    path: Path, kind: apple_health.Kind, patient: str, now: datetime
) -> Callable[[_Attempt], Samples]:
    def samples(state: _Attempt) -> Samples:
        with apple_health.raw_batches(path, kind, state.stats) as raw_batches:
            export_date: datetime | None = None
            for raw in raw_batches:
                # ExportDate precedes the records, so it is known by the first batch.
                if export_date is None and state.stats.export_date:
                    export_date = apple_health.parse_timestamp(state.stats.export_date)
                yield apple_health.to_samples(
                    raw, patient_id=patient, export_date=export_date, now=now, seen=state.seen
                )

    return samples


def _fitbit_samples(
    path: Path, kind: fitbit.Kind, patient: str | None, timezone: str, now: datetime
) -> Callable[[_Attempt], Samples]:
    def samples(state: _Attempt) -> Samples:
        times = fitbit.LocalTimes(fitbit.LAYOUTS[kind], timezone)
        with fitbit.raw_batches(path, kind, state.stats) as raw_batches:
            for raw in raw_batches:
                yield fitbit.to_samples(
                    raw,
                    kind,
                    patient_id=patient,
                    timezone=timezone,
                    now=now,
                    seen=state.seen,
                    times=times,
                )

    return samples


def run(
    lake: Lake,
    path: Path | str,
    *,
    format: str = "auto",
    patient_id: str | None = None,
    timezone: str | None = None,
) -> IngestSummary:
    """Ingest one device export.

    Args:
        lake: the lake.
        path: the export file.
        format: ``auto`` (from the file name and header), ``apple-health``, ``fitbit`` (Fitabase
            hourly, minute or daily CSV) or ``google-fit`` (Takeout daily activity metrics).
        patient_id: whose export it is; may be left out for the landing layout
            ``<...>/apple-health/<patient_id>/export.xml|zip``; must be left out for Fitabase
            files, which name the patient in their ``Id`` column.
        timezone: IANA zone recorded for a new patient (default: from the samples' offsets,
            UTC for Fitbit and Google Fit); for Fitbit and Google Fit also the zone of their
            naive timestamps.

    Returns:
        The counts of the run.

    Raises:
        InputError: a bad argument, or a file that cannot be read; then nothing of the file is
            committed.
    """
    source_file = str(path)
    path = Path(path)
    if format not in FORMATS:
        raise InputError(f"unknown format {format!r}: use one of {', '.join(FORMATS)}")
    _check_timezone(timezone)
    table_kind = fitbit.detect_kind(path) if path.is_file() and format != "apple-health" else None
    from_column = table_kind is not None and fitbit.LAYOUTS[table_kind].patient is not None
    if from_column and patient_id:
        raise InputError(f"{source_file}: --patient-id does not apply, the Id column names them")
    patient = None if from_column else patient_id or patient_from_path(path)
    if not patient and not from_column:
        raise InputError(f"{source_file}: --patient-id is required for this export")
    if not path.is_file():
        raise InputError(f"{source_file}: no such file")
    attempt = _Attempt()
    started = datetime.now(UTC)

    def batches(
        state: _Attempt, samples: Callable[[_Attempt], Samples]
    ) -> Iterator[pa.RecordBatch]:
        try:
            for valid, rejected in samples(state):
                state.accepted += valid.height
                state.offsets.update(dict(valid["utc_offset_minutes"].value_counts().iter_rows()))
                state.patients.update(valid["patient_id"].unique().to_list())
                if rejected.height:
                    state.rejected.append(rejected)
                yield from conform(STEP_SAMPLES, valid).to_batches()
        except InputError as err:
            # Delta sees only that the stream failed; keep the one-line reason for the user.
            state.error = err
            raise

    def open_batches(samples: Callable[[_Attempt], Samples]) -> pa.RecordBatchReader:
        nonlocal attempt
        attempt = _Attempt()
        return pa.RecordBatchReader.from_batches(STEP_SAMPLES.schema, batches(attempt, samples))

    with job_run(lake, JOB) as job:
        # Inside the run: a file of unknown content is a failed ingest worth recording.
        kind: str
        samples: Callable[[_Attempt], Samples]
        if format in ("fitbit", "google-fit") or (format == "auto" and table_kind is not None):
            if table_kind is None or (format != "auto" and not table_kind.startswith(format)):
                raise InputError(f"{source_file}: not a {format} file (unexpected header)")
            kind = table_kind
            samples = _fitbit_samples(path, table_kind, patient, timezone or "UTC", started)
        else:
            assert patient is not None
            apple_kind = apple_health.detect_kind(path)
            kind = apple_kind
            samples = _apple_samples(path, apple_kind, patient, started)
        try:
            new_samples = lake.insert_new(
                STEP_SAMPLES,
                lambda: open_batches(samples),
                metadata={"job": JOB, "source_file": source_file},
            )
        except Exception as err:
            if attempt.error is not None:
                raise attempt.error from err
            raise
        quarantine = quarantine_rows(attempt.rejected, source_file, started)
        if quarantine.height:
            lake.upsert(QUARANTINE, quarantine, metadata={"job": JOB})
        zone = timezone or ("UTC" if table_kind else timezone_from_offsets(attempt.offsets))
        patients = sorted(attempt.patients | ({patient} if patient else set()))
        _add_patients(lake, patients, zone)
        stats = attempt.stats
        summary = IngestSummary(
            source_file=source_file,
            patient_id=patient,
            records_read=stats.records_read,
            accepted=attempt.accepted,
            quarantined=quarantine.height,
            skipped=stats.skipped,
            new_samples=new_samples,
            patients=tuple(patients),
        )
        job.rows_in, job.rows_out = summary.records_read, summary.new_samples
        job.details = {**summary.__dict__, "format": kind}
    return summary


def _add_patients(lake: Lake, patients: list[str], timezone: str) -> None:
    """Write bronze/patients rows for people seen for the first time; never overwrite one."""
    if not patients:
        return
    known = set(
        lake.scan(PATIENTS)
        .filter(pl.col("patient_id").is_in(patients))
        .select("patient_id")
        .collect()["patient_id"]
        .to_list()
    )
    new = [p for p in patients if p not in known]
    if not new:
        return
    rows = pl.DataFrame(
        {
            "patient_id": new,
            "disease_group": [DEFAULT_DISEASE_GROUP] * len(new),
            "timezone": [timezone] * len(new),
        }
    ).with_columns(
        sex=pl.lit(None, dtype=pl.String),
        birth_year=pl.lit(None, dtype=pl.Int16),
        country=pl.lit(None, dtype=pl.String),
        enrolled_on=pl.lit(None, dtype=pl.Date),
    )
    lake.append(PATIENTS, rows, metadata={"job": JOB, "patients": ",".join(new)})
