"""The ``ingest`` job: one device export (Apple Health, Fitbit Fitabase, Google Fit) into bronze.

Commit order and atomicity: the file is first read to the end into a local staging Parquet file
of its valid samples (bounded memory, about 10 bytes per sample on disk). A file that turns out to
be unreadable halfway raises then, before anything is committed. Every staged sample then goes into
bronze/step_samples in ONE insert-only merge on the table's keys that reads only the table's rows
of the file's patients and months. Only after the samples are committed are the quarantine rows
(merged on ``source_file, record``) and, for a new person, the bronze/patients row written.

Idempotence: the merge inserts only samples whose ``patient_id, source, start_ts, end_ts`` are new,
so ingesting the same export again adds nothing and a newer export of the same person adds only the
samples that were not there yet.

Pseudonyms: readers see the identifiers as the file holds them; every staged batch, quarantined row
and recorded file name carries pseudonyms instead (:mod:`jobs.ingest.identity`), and the
pseudonyms made are added to the re-identification map before the samples are committed.
"""

from __future__ import annotations

import functools
import os
import stat
import tempfile
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import cast
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from jobs.ingest import apple_health, clinical, fitbit, generic, identity
from jobs.ingest.common import (
    LINK_REFUSED,
    FileId,
    IngestSummary,
    ParseStats,
    PatientZones,
    SeenKeys,
    checked_input,
    pinned,
    quarantine_rows,
    refusal,
    schema_details,
)
from jobs.runs import job_run
from lakehouse.catalog import PATIENTS, QUARANTINE, STEP_SAMPLES
from lakehouse.errors import InputError
from lakehouse.pseudonyms import Pseudonymizer, from_settings
from lakehouse.settings import get_settings
from lakehouse.storage import Lake, conform

FORMATS = (
    "auto",
    "apple-health",
    "fitbit",
    "google-fit",
    "generic",
    "clinical",
    *clinical.KINDS,
)
# Readers whose timestamps carry their own offsets: a new patient's zone comes from them.
_OWN_OFFSETS = frozenset({"xml", "zip", "csv", "generic"})
JOB = "ingest"
DEFAULT_DISEASE_GROUP = "OTHER"  # until clinical data says otherwise
_EXPORT_NAMES = ("export.xml", "export.zip")
_PERSONAL_FOLDERS = ("fitbit", "google-fit")
_STAGED_BATCH_ROWS = 65_536


@dataclass
class _Parse:
    """What the pass over the file found."""

    stats: ParseStats = field(default_factory=ParseStats)
    accepted: int = 0
    offsets: Counter[int] = field(default_factory=Counter)
    rejected: list[pl.DataFrame] = field(default_factory=list)
    seen: SeenKeys = field(default_factory=SeenKeys)
    patients: set[str] = field(default_factory=set)
    months: set[str] = field(default_factory=set)


def patient_from_path(path: Path) -> str | None:
    """The patient of a one-person file in the landing layout, else None.

    ``<...>/apple-health/<patient_id>/export.xml|zip``, ``<...>/fitbit/<patient_id>/<file>``
    (a personal export's ``steps-*.json``) and ``<...>/google-fit/<patient_id>/<file>``.
    """
    folder = path.parent.parent.name
    if folder == "apple-health" and path.name in _EXPORT_NAMES:
        return path.parent.name or None
    if folder in _PERSONAL_FOLDERS:
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
) -> Callable[[_Parse], Samples]:
    def samples(state: _Parse) -> Samples:
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
    path: Path, kind: fitbit.Kind, patient: str | None, zones: PatientZones, now: datetime
) -> Callable[[_Parse], Samples]:
    layout = fitbit.LAYOUTS[kind]

    def samples(state: _Parse) -> Samples:
        times: dict[str, fitbit.LocalTimes] = {}
        with fitbit.raw_batches(path, kind, state.stats) as raw_batches:
            for raw in raw_batches:
                # One person's file: one zone; a Fitabase file: each Id in its own zone.
                groups = zones.split(raw, "patient") if patient is None else [(zones.default, raw)]
                for zone, part in groups:
                    yield fitbit.to_samples(
                        part,
                        kind,
                        patient_id=patient,
                        timezone=zone,
                        now=now,
                        seen=state.seen,
                        times=times.setdefault(zone, fitbit.LocalTimes(layout, zone)),
                    )

    return samples


def _generic_samples(
    path: Path, options: generic.GenericOptions, zones: PatientZones | None, now: datetime
) -> Callable[[_Parse], Samples]:
    def samples(state: _Parse) -> Samples:
        yield from generic.read_samples(
            path, options, stats=state.stats, seen=state.seen, now=now, zones=zones
        )

    return samples


def _stored_zones(lake: Lake, patients: list[str]) -> dict[str, str]:
    """The time zone bronze/patients records for each of ``patients`` that it knows."""
    rows = (
        lake.scan(PATIENTS)
        .filter(pl.col("patient_id").is_in(patients))
        .select("patient_id", "timezone")
        .collect()
    )
    return dict(rows.iter_rows())


def detect_format(path: Path) -> str:
    """The format of ``path`` for ``--format auto``: clinical and device headers first.

    Raises:
        InputError: the file is none of the known formats.
    """
    if clinical.detect_kind(path) is not None:
        return "clinical"
    kind = fitbit.detect_kind(path)
    if kind is not None:
        return "google-fit" if kind == "google-fit" else "fitbit"
    if apple_health.sniff(path) is not None:
        return "apple-health"
    if generic.is_generic(path):
        return "generic"
    raise InputError(
        f"{path}: not a known format (Apple Health, Fitbit, Google Fit, clinical CSV, CSV or "
        "Parquet of step samples); name one with --format"
    )


def run(
    lake: Lake,
    path: Path | str,
    *,
    format: str = "auto",
    patient_id: str | None = None,
    timezone: str | None = None,
    columns: dict[str, str] | None = None,
    timestamp_format: str | None = None,
    period: str | None = None,
    source: str | None = None,
    pseudonyms: Pseudonymizer | None = None,
) -> IngestSummary:
    """Ingest one device export, step-sample file or clinical CSV.

    Source patient identifiers (``patient_id``, the landing folder's name, a patient column)
    are stored as pseudonyms (:mod:`lakehouse.pseudonyms`); the summary names the pseudonyms.

    Args:
        lake: the lake.
        path: the file.
        format: ``auto`` (from the file name and header), ``apple-health``, ``fitbit`` (Fitabase
            hourly, minute or daily CSV, personal ``steps-*.json``), ``google-fit`` (Takeout daily
            activity metrics), ``generic`` (any CSV or Parquet of step samples, see
            :mod:`jobs.ingest.generic`), or a clinical CSV: ``clinical`` (detected) or one of
            ``patients``, ``therapies``, ``side-effects``, ``diagnoses``.
        patient_id: whose export it is; may be left out for the landing layout
            ``<...>/apple-health/<patient_id>/export.xml|zip``; must be left out for files that
            name their patients in a column (Fitabase ``Id``, a generic patient column).
        timezone: IANA zone of naive timestamps (default: the patient's zone in bronze/patients,
            else UTC) and of a new patient (default: from the samples' offsets, else UTC).
        columns: generic files: role -> column name (``--column ROLE=NAME``).
        timestamp_format: generic files: ``strptime`` format of the timestamps (default: detect).
        period: generic files without an end column: ``day``, ``hour`` or ``minute``.
        source: generic files without a source column: the device or app of every sample.
        pseudonyms: the key's pseudonymizer (default: from ``MOBILITY_PSEUDONYM_KEY``, see
            :func:`lakehouse.pseudonyms.from_settings`).

    Returns:
        The counts of the run.

    Raises:
        InputError: a bad argument, no pseudonym key, or a file that cannot be read; then nothing
            of the file is committed.
    """
    source_file = str(path)
    path = Path(path)
    if format not in FORMATS:
        raise InputError(f"unknown format {format!r}: use one of {', '.join(FORMATS)}")
    _check_timezone(timezone)
    if pseudonyms is None:
        pseudonyms = from_settings(get_settings(), lake_uri=lake.uri)
    identity.check_key(lake, pseudonyms)
    # A link, FIFO or device is refused unopened; every open below reaches only this file.
    file_id = checked_input(path)
    with pinned(path, file_id):
        return _ingest(
            lake,
            path,
            source_file=source_file,
            format=format,
            patient_id=patient_id,
            timezone=timezone,
            columns=columns,
            timestamp_format=timestamp_format,
            period=period,
            source=source,
            pseudonyms=pseudonyms,
        )


def _ingest(
    lake: Lake,
    path: Path,
    *,
    source_file: str,
    format: str,
    patient_id: str | None,
    timezone: str | None,
    columns: dict[str, str] | None,
    timestamp_format: str | None,
    period: str | None,
    source: str | None,
    pseudonyms: Pseudonymizer,
) -> IngestSummary:
    """:func:`run` once its arguments and the file are checked."""
    chosen = format
    if format == "auto":
        try:
            chosen = detect_format(path)
        except InputError:
            with job_run(lake, JOB):  # a file of unknown content is a failed ingest worth recording
                raise
    generic_options = columns or timestamp_format or period or source
    if generic_options and chosen != "generic":
        raise InputError(
            f"{source_file}: --column, --timestamp-format, --period and --source apply to "
            f"generic files only, not {chosen}"
        )
    if period is not None and period not in generic.PERIODS:
        raise InputError(f"unknown period {period!r}: use one of {', '.join(generic.PERIODS)}")
    if chosen in clinical.KINDS or chosen == "clinical":
        if patient_id or timezone:
            raise InputError(f"{source_file}: --patient-id and --timezone do not apply to {chosen}")
        kind = None if chosen == "clinical" else cast(clinical.ClinicalKind, chosen)
        return clinical.run(lake, path, kind=kind, pseudonyms=pseudonyms)
    table_kind = fitbit.detect_kind(path) if chosen in ("fitbit", "google-fit") else None
    if chosen in ("fitbit", "google-fit") and (
        table_kind is None or not table_kind.startswith(chosen)
    ):
        raise InputError(f"{source_file}: not a {chosen} file (unexpected header)")
    # Fitabase files name their patients in a column; a generic file may (its reader checks).
    from_column = table_kind is not None and fitbit.LAYOUTS[table_kind].patient is not None
    if from_column and patient_id:
        raise InputError(f"{source_file}: --patient-id does not apply, the Id column names them")
    patient = None if from_column else patient_id or patient_from_path(path)
    if patient and not patient_id and path.parent.is_symlink():
        # the folder's name would put the files of the folder it points to on that patient
        raise InputError(f"{source_file}: its patient folder is {LINK_REFUSED}")
    if not patient and not from_column and chosen != "generic":
        raise InputError(f"{source_file}: --patient-id is required for this file")
    if patient is not None and not patient.strip():
        raise InputError(f"{source_file}: the patient id is blank")
    pseudonym = pseudonyms.of(patient) if patient else None
    # As recorded in the lake, a one-person file's path names the person by pseudonym.
    stored_file = source_file
    if patient and pseudonym:
        stored_file = identity.redact_text(source_file, {patient.strip(): pseudonym})
    stored_zones = functools.partial(_stored_zones, lake)
    known_zones = identity.zones_by_source(stored_zones, pseudonyms)
    naive_zone = timezone or (stored_zones([pseudonym]).get(pseudonym) if pseudonym else None)
    naive_zone = naive_zone or "UTC"
    started = datetime.now(UTC)
    found = _Parse()
    named = {patient.strip(): pseudonym} if patient and pseudonym else {}
    try:
        with (
            job_run(lake, JOB) as job,
            identity.redacted_errors(named),
            tempfile.TemporaryDirectory(prefix="mobility-ingest-") as tmp,
        ):
            # Inside the run: a file of unknown content is a failed ingest worth recording.
            kind_name: str
            samples: Callable[[_Parse], Samples]
            if table_kind is not None:
                kind_name = table_kind
                zones = PatientZones(known_zones, naive_zone)
                samples = _fitbit_samples(path, table_kind, patient, zones, started)
            elif chosen == "generic":
                kind_name = "generic"
                options = generic.GenericOptions(
                    columns=dict(columns or {}),
                    timestamp_format=timestamp_format,
                    timezone=naive_zone,
                    patient_id=patient,
                    source=source,
                    period=period,
                )
                # Without --timezone, each patient of a patient column in their own known zone.
                by_patient = None if timezone or patient else PatientZones(known_zones, "UTC")
                samples = _generic_samples(path, options, by_patient, started)
            else:
                assert patient is not None
                apple_kind = apple_health.detect_kind(path)
                kind_name = apple_kind
                samples = _apple_samples(path, apple_kind, patient, started)
            staged = Path(tmp) / "samples.parquet"
            _stage(samples(found), found, staged, pseudonyms)
            identity.record_pseudonyms(lake, pseudonyms, source_file=source_file, at=started)
            new_samples = _commit_new(lake, staged, found, stored_file)
            quarantine = quarantine_rows(found.rejected, stored_file, started)
            if quarantine.height:
                lake.upsert(QUARANTINE, quarantine, metadata={"job": JOB})
            zone = timezone or (
                timezone_from_offsets(found.offsets) if kind_name in _OWN_OFFSETS else naive_zone
            )
            patients = sorted(found.patients | ({pseudonym} if pseudonym else set()))
            _add_patients(lake, patients, zone)
            stats = found.stats
            summary = IngestSummary(
                source_file=source_file,
                patient_id=pseudonym,
                records_read=stats.records_read,
                accepted=found.accepted,
                quarantined=quarantine.height,
                skipped=stats.skipped,
                new_samples=new_samples,
                patients=tuple(patients),
            )
            job.rows_in, job.rows_out = summary.records_read, summary.new_samples
            job.details = {
                **summary.__dict__,
                "source_file": stored_file,
                "format": kind_name,
                **schema_details(path, mapped=(columns or {}).values()),
            }
    except identity.RedactedInputError as err:
        # recorded with the pseudonym; the user sees their own path
        raise err.original from None
    return summary


@dataclass(frozen=True)
class FolderResult:
    """One file of a folder ingest: its summary, or the one-line reason it failed or was left."""

    path: Path
    summary: IngestSummary | None = None
    error: str | None = None
    left: bool = False  # not a known format: left alone


def run_folder(
    lake: Lake,
    folder: Path | str,
    *,
    timezone: str | None = None,
    skip: tuple[str, ...] = (),
) -> Iterator[FolderResult]:
    """Ingest every known file under ``folder`` (a landing directory), one commit per file.

    Order: patients files first (their time zones then place naive timestamps), then device
    exports, then the other clinical files (which need their patients known). A file that fails
    is reported and the rest still go in; a file of unknown format is left alone and reported.
    Hidden files and ``*.partial`` files (still being written) are not read.

    Args:
        lake: the lake.
        folder: the directory, searched recursively.
        timezone: as for :func:`run`, for every file.
        skip: top-level subfolders not to read (the scheduler's ``processed``).

    Yields:
        One result per file, in the order ingested.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"{folder}: no such folder")
    _check_timezone(timezone)  # before any file: a bad option commits nothing
    files: list[tuple[Path, FileId]] = []
    for path, found in landing_files(folder, skip=skip):
        if isinstance(found, str):
            yield _refused(lake, path, found)
        else:
            files.append((path, found))

    def rank(path: Path, file_id: FileId) -> int:
        with pinned(path, file_id):
            kind = clinical.detect_kind(path)
        return 0 if kind == "patients" else 2 if kind is not None else 1

    ranked = sorted(files, key=lambda file: (rank(*file), str(file[0])))
    for path, file_id in ranked:
        with pinned(path, file_id):
            yield _ingest_landed(lake, path, timezone)


def _ingest_landed(lake: Lake, path: Path, timezone: str | None) -> FolderResult:
    """One file of a landing folder, pinned to the file the walk found."""
    try:
        chosen = detect_format(path)
    except InputError as err:
        return FolderResult(path, error=str(err), left=True)
    try:
        zone = None if chosen == "clinical" else timezone
        summary = run(lake, path, format=chosen, timezone=zone)
    except InputError as err:
        return FolderResult(path, error=str(err))
    except Exception as err:  # one broken file must not stop the rest of the folder
        # The message of a failure not foreseen may quote the file (docs/security.md): this
        # line goes to logs; ingesting the file alone shows it in full.
        return FolderResult(
            path, error=f"{path}: {type(err).__name__} (ingest this file alone to see more)"
        )
    return FolderResult(path, summary=summary)


def landing_files(
    folder: Path, *, skip: tuple[str, ...] = ()
) -> Iterator[tuple[Path, FileId | str]]:
    """Every entry under ``folder`` that ingest would read, never following a link: each
    regular file with its identity, each other entry (a symbolic link to a file or a folder, a
    FIFO, socket or device, a file with other hard links) with why it is refused.

    Walked through folder descriptors (``os.fwalk``) that do not follow links, so a folder
    swapped for a link during the walk is not entered. ``folder`` itself may be a link (the
    operator's choice of folder); nothing under it may. Hidden entries, ``*.partial`` files
    (still being written) and the top-level folders of ``skip`` are not looked at.

    Args:
        folder: the landing folder.
        skip: top-level entries not to read (the scheduler's ``processed``).

    Yields:
        ``(path, identity or reason)``; paths start with ``folder`` as given, in name order.
    """
    root = os.path.realpath(folder)
    for top, dirs, names, top_fd in os.fwalk(root, follow_symlinks=False):
        inner = Path(os.path.relpath(top, root))
        parts = inner.parts if top != root else ()
        entered: list[str] = []
        for name in sorted([*dirs, *names]):
            if name.startswith(".") or (not parts and name in skip):
                continue
            status = os.stat(name, dir_fd=top_fd, follow_symlinks=False)
            if stat.S_ISDIR(status.st_mode):
                entered.append(name)
                continue
            if name.endswith(".partial"):
                continue
            path = folder.joinpath(*parts, name)
            reason = refusal(status, landing=True)
            if reason is None and not Path(os.path.realpath(path)).is_relative_to(root):
                reason = "outside the landing folder: refused"  # defence in depth
            yield path, reason if reason is not None else FileId.of(status)
        dirs[:] = entered


def _refused(lake: Lake, path: Path, reason: str) -> FolderResult:
    """A landing entry ingest does not read: recorded as a failed ingest run (ops see it as they
    see a broken file), its patient folder named by pseudonym as every recorded path is."""
    message = f"{path}: {reason}"
    recorded = message
    patient = _patient_in_path(path)
    if patient:
        try:
            pseudonyms = from_settings(get_settings(), lake_uri=lake.uri)
        except InputError:
            pseudonyms = None
        if pseudonyms is None:
            return FolderResult(path, error=message)  # not recorded: no key to name it by
        recorded = identity.redact_text(message, {patient: pseudonyms.of(patient)})
    try:
        with job_run(lake, JOB):
            raise InputError(recorded)
    except InputError:
        pass
    return FolderResult(path, error=message)


def _patient_in_path(path: Path) -> str | None:
    """The source identifier a landing path names in its patient folder (an entry of, or in,
    ``apple-health/<id>``, ``fitbit/<id>`` or ``google-fit/<id>``), else None."""
    folders = ("apple-health", *_PERSONAL_FOLDERS)
    if path.parent.parent.name in folders:
        return path.parent.name.strip() or None
    # an entry right in such a folder: a patient's folder (a Fitabase file may lie there too)
    if path.parent.name == "apple-health" or (path.parent.name in folders and path.is_dir()):
        return path.name.strip() or None
    return None


def _stage(samples: Samples, found: _Parse, target: Path, pseudonyms: Pseudonymizer) -> None:
    """Read the whole file into a local Parquet file of valid samples (with pseudonyms), counting
    as it goes.

    Reading everything before the commit means a file that turns out unreadable halfway commits
    nothing, and the commit knows which patients and months it touches (so the merge reads only
    those parts of the table). The staged file is small (about 10 bytes per sample) and a commit
    retry reads it again instead of parsing the export again.
    """
    with pq.ParquetWriter(target, STEP_SAMPLES.schema, compression="zstd") as writer:
        for read, rejected in samples:
            valid = identity.pseudonymise_samples(read, pseudonyms)
            rejected = identity.pseudonymise_rejected(rejected, pseudonyms)
            found.accepted += valid.height
            found.offsets.update(dict(valid["utc_offset_minutes"].value_counts().iter_rows()))
            found.patients.update(valid["patient_id"].unique().to_list())
            found.months.update(valid["month"].unique().to_list())
            if rejected.height:
                found.rejected.append(rejected)
            writer.write_table(conform(STEP_SAMPLES, valid))


def _commit_new(lake: Lake, staged: Path, found: _Parse, source_file: str) -> int:
    """Insert the staged samples the table lacks; the number inserted.

    The samples already stored are first left out by an anti-join with the table's keys of the
    file's patients and months (a re-sent export then commits nothing at all, and a newer one
    only its new months). The insert-only merge on the keys stays the guarantee against a
    concurrent writer; it reads only the patients and months of the remaining samples.
    """
    if not found.accepted:
        return 0
    stored = (
        lake.scan(STEP_SAMPLES)
        .filter(
            pl.col("patient_id").is_in(sorted(found.patients))
            & pl.col("month").is_in(sorted(found.months))
        )
        .select(STEP_SAMPLES.keys)
    )
    fresh = staged.with_name("new-samples.parquet")
    pl.scan_parquet(staged).join(stored, on=list(STEP_SAMPLES.keys), how="anti").sink_parquet(
        fresh, compression="zstd"
    )
    months = pl.scan_parquet(fresh).select("patient_id", "month").unique().collect()
    if months.height == 0:
        return 0
    return lake.insert_new(
        STEP_SAMPLES,
        lambda: _read_staged(fresh),
        within={"patient_id": months["patient_id"], "month": months["month"]},
        metadata={"job": JOB, "source_file": source_file},
    )


def _read_staged(staged: Path) -> pa.RecordBatchReader:
    # Cast: Polars writes string views, and the reader must deliver exactly the declared schema
    # (delta-rs trusts it).
    batches = (
        batch.cast(STEP_SAMPLES.schema)
        for batch in pq.ParquetFile(staged).iter_batches(batch_size=_STAGED_BATCH_ROWS)
    )
    return pa.RecordBatchReader.from_batches(STEP_SAMPLES.schema, batches)


def _add_patients(lake: Lake, patients: list[str], timezone: str) -> None:
    """Write bronze/patients rows for people seen for the first time; never overwrite one."""
    if not patients:
        return
    known = _stored_zones(lake, patients)
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
