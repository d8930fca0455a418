"""Reader of the four clinical CSVs: patients, therapies, side effects and diagnoses, into bronze.

Files and columns (UTF-8, a BOM and CRLF line ends are fine; column names are matched
case-insensitively after stripping spaces; columns not listed here are ignored and never stored):

=================  ======================================================  ======================
file               required columns                                        optional columns
=================  ======================================================  ======================
patients.csv       ``patient_id, disease_group, timezone``                 ``sex, birth_year,
                                                                           country, enrolled_on``
therapies.csv      ``patient_id, therapy, start_date, end_date``           -
side_effects.csv   ``patient_id, date, effect, severity``                  -
diagnoses.csv      ``patient_id, code, diagnosed_on``                      ``description``
=================  ======================================================  ======================

- The kind of a file comes from its header (:func:`detect_kind`): ``patient_id`` plus
  ``disease_group`` (patients), ``therapy`` (therapies), ``effect`` (side effects) or ``code``
  (diagnoses). A file missing a required column is refused with one line naming the missing
  columns (by the names expected; the header's own names are never repeated).
- Values are stripped; an empty value is missing. Dates are ISO ``YYYY-MM-DD``. ``disease_group``
  is ``MS``, ``PD``, ``RA`` or ``OTHER`` (any case); ``timezone`` an IANA name
  (``Europe/Berlin``); ``end_date`` empty = ongoing; ``severity`` the CTCAE grade, an integer 1-5;
  ``code`` an ICD-10 code (``G35``, ``M06.9``; upper-cased, and ``G350`` is stored as ``G35.0``).
  ``sex``, ``country``, therapy and effect names are kept as written.

Every data row is either accepted or quarantined into bronze/quarantine with its CSV line number
(``record``, the last line of a quoted multi-line row), its text as written (``raw``) and one
reason. Lines that are empty (or hold only commas) are skipped and counted. Hence
``records_read == accepted + quarantined + skipped``. Reasons, first match wins:

- ``has N fields, the header M``: a row with fewer fields, or more non-empty ones, than the header
  (an unquoted comma would shift every later value into the wrong column);
- ``missing patient id``, ``missing <column>`` for any other required value;
- ``unknown disease group (MS, PD, RA, OTHER)``, ``unknown time zone`` (a reason never quotes a
  value of the file: the row's text is in ``raw``, docs/security.md);
- ``unreadable date``, ``date before 1900``, ``date in the future`` (after tomorrow in UTC, so
  that a patient east of UTC can report today; a therapy's ``end_date`` may lie in the future, it
  is the planned end of a course, and its ``start_date`` up to a year ahead, a planned course that
  forecasts take into account), ``end_date before start_date``;
- ``unreadable birth_year``, ``birth_year out of range`` (1900 to this year);
- ``severity must be an integer 1-5``, ``not an ICD-10 code``;
- ``patient not known (ingest patients.csv first)``: a therapy, side effect or diagnosis of a
  patient missing from bronze/patients (patients enter from patients.csv or a device export);
- ``repeats an earlier row of this file``: a second row with the same key (the table keys:
  ``patient_id``; ``patient_id, therapy, start_date``; ``patient_id, date, effect``;
  ``patient_id, code``). The first valid row wins.

Writes are merges on the table keys (:meth:`lakehouse.storage.Lake.upsert`) of only the rows that
are new or differ from the stored row, so ingesting the same file again commits nothing, and a
corrected file updates rows (a therapy's ``end_date`` filled in later). A file is a snapshot of
what it lists, it never deletes rows it does not list. The patients file is authoritative: it
overwrites the stored row, also one created by a device ingest with ``OTHER`` and a guessed time
zone. An optional column absent from the header keeps the stored values; present but empty sets
them to null.

Disease group from diagnoses: a patient stored as ``OTHER`` who has a diagnosis ``G35*`` (MS),
``G20*`` (PD), ``M05*`` or ``M06*`` (RA) in bronze/diagnoses gets that group; when several
groups match, the earliest ``diagnosed_on`` wins (then the smaller code). This is applied after
every diagnoses ingest, and to the ``OTHER`` rows of a patients file too, so the result does not
depend on which file came first. A patient whose group is MS, PD or RA is never regrouped. The
summary and the ``ops/job_runs`` details report how many patients were regrouped.

Commit order: the accepted rows, then the regrouped patients, then the quarantine rows. The
quarantine rows of a source file are replaced as a whole by those of its latest ingest (so a
corrected row leaves the quarantine), and only when they changed. A file that cannot be read
(missing file, not UTF-8, broken CSV quoting, missing columns) raises :class:`InputError` before
anything is written; only the failed run is recorded in ``ops/job_runs``.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from functools import cache
from pathlib import Path
from typing import Literal, TextIO, get_args
from zoneinfo import available_timezones

import polars as pl

from jobs.ingest import identity
from jobs.ingest.common import (
    IngestSummary,
    bounded_lines,
    content_free,
    header_names,
    open_input,
    quarantine_rows,
    schema_details,
)
from jobs.runs import job_run
from lakehouse.catalog import DIAGNOSES, PATIENTS, QUARANTINE, SIDE_EFFECTS, THERAPIES, TableSpec
from lakehouse.errors import InputError
from lakehouse.pseudonyms import Pseudonymizer, from_settings
from lakehouse.settings import get_settings
from lakehouse.storage import Lake, empty_frame, sql_literal

ClinicalKind = Literal["patients", "therapies", "side-effects", "diagnoses"]
KINDS: tuple[ClinicalKind, ...] = get_args(ClinicalKind)
JOB = "ingest"
DISEASE_GROUPS = ("MS", "PD", "RA", "OTHER")
# How far ahead a therapy course may be planned to start.
PLANNED_START = timedelta(days=366)
UNSPECIFIED_GROUP = "OTHER"
# ICD-10 category prefixes that place a patient in a disease group.
GROUP_CODES: dict[str, tuple[str, ...]] = {"MS": ("G35",), "PD": ("G20",), "RA": ("M05", "M06")}
EARLIEST_DATE = date(1900, 1, 1)
_ICD10 = r"^[A-Z][0-9][0-9A-Z](\.[0-9A-Z]{1,4})?$"
_ICD10_UNDOTTED = r"^([A-Z][0-9][0-9A-Z])([0-9A-Z]{1,4})$"
_NOT_ZONES = frozenset({"Factory", "localtime", "posixrules"})
_NONE = pl.lit(None, dtype=pl.String)


@dataclass(frozen=True)
class _Layout:
    """The columns of one kind of clinical file."""

    table: TableSpec
    signature: str
    required: tuple[str, ...]
    optional: tuple[str, ...] = ()

    @property
    def columns(self) -> tuple[str, ...]:
        return (*self.required, *self.optional)


LAYOUTS: dict[ClinicalKind, _Layout] = {
    "patients": _Layout(
        PATIENTS,
        "disease_group",
        ("patient_id", "disease_group", "timezone"),
        ("sex", "birth_year", "country", "enrolled_on"),
    ),
    "therapies": _Layout(THERAPIES, "therapy", ("patient_id", "therapy", "start_date", "end_date")),
    "side-effects": _Layout(SIDE_EFFECTS, "effect", ("patient_id", "date", "effect", "severity")),
    "diagnoses": _Layout(
        DIAGNOSES, "code", ("patient_id", "code", "diagnosed_on"), ("description",)
    ),
}


@dataclass(frozen=True)
class ClinicalSummary(IngestSummary):
    """What one clinical ingest read and wrote; ``new_samples`` counts rows new to the table.

    Invariants: ``records_read == accepted + quarantined + skipped`` and
    ``accepted == new_samples + updated + unchanged``.

    Args:
        kind: which clinical file it was.
        updated: accepted rows that changed a stored row.
        unchanged: accepted rows already stored as they are.
        regrouped: patients whose disease group OTHER was replaced by the group of a diagnosis.
    """

    kind: str = ""
    updated: int = 0
    unchanged: int = 0
    regrouped: int = 0

    def describe(self) -> str:
        """One line for the CLI."""
        count = len(self.patients)
        line = (
            f"ingest {self.source_file} ({self.kind}, {count} patient{'' if count == 1 else 's'}): "
            f"{self.records_read:,} records read, {self.accepted:,} accepted "
            f"({self.new_samples:,} new, {self.updated:,} updated), "
            f"{self.quarantined:,} quarantined, {self.skipped:,} skipped"
        )
        if self.regrouped:
            line += f"; {self.regrouped:,} patients regrouped by diagnosis"
        return line


def _column_name(text: str) -> str:
    return text.strip().lstrip("\ufeff").strip().lower()


def _kind_of(names: set[str]) -> ClinicalKind | None:
    if "patient_id" not in names:
        return None
    kinds = [kind for kind, layout in LAYOUTS.items() if layout.signature in names]
    if len(kinds) > 1:
        # A header with columns of several kinds: the one whose required columns are all there.
        kinds = [kind for kind in kinds if set(LAYOUTS[kind].required) <= names]
    return kinds[0] if len(kinds) == 1 else None


def detect_kind(path: Path) -> ClinicalKind | None:
    """The kind of clinical CSV ``path`` is, from its header line; None when it is none of them.

    Args:
        path: the file. A UTF-8 BOM, CRLF line ends and any case of the column names are fine.
    """
    header = header_names(path)
    if header is None:
        return None
    names = {_column_name(n) for n in header}
    return _kind_of(names)


class _RecordedLines:
    """The lines of a text file, remembering those handed out since the last :meth:`take`.

    ``csv.reader`` pulls exactly the lines of one row before yielding it, so what was handed out
    in between is the row's text as written, quoted line breaks included.
    """

    def __init__(self, text: TextIO) -> None:
        self._text = text
        self._taken: list[str] = []

    def __iter__(self) -> Iterator[str]:
        # bounded: a line of megabytes is refused, not read into memory (docs/reliability.md)
        for line in bounded_lines(self._text):
            self._taken.append(line)
            yield line

    def take(self) -> str:
        raw = "".join(self._taken)
        self._taken.clear()
        return raw.removesuffix("\n").removesuffix("\r")


@dataclass
class _Read:
    """The data rows of a file as text (null when empty), with record, raw and a shape reason."""

    rows: pl.DataFrame
    records_read: int = 0
    blank: int = 0
    header: tuple[str, ...] = field(default_factory=tuple)


def _read(path: Path, kind: ClinicalKind, where: str) -> _Read:
    """Read the whole file (clinical files are small next to step exports).

    Raises:
        InputError: the file cannot be read, is not UTF-8 CSV, or lacks a required column.
    """
    layout = LAYOUTS[kind]
    values: dict[str, list[str | None]] = {c: [] for c in layout.columns}
    records: list[int] = []
    raws: list[str] = []
    shapes: list[str | None] = []
    read = _Read(pl.DataFrame())
    try:
        with (
            open_input(path) as binary,
            io.TextIOWrapper(binary, encoding="utf-8-sig", newline="") as text,
        ):
            lines = _RecordedLines(text)
            reader = csv.reader(lines)
            header = next(reader, None)
            lines.take()
            if header is None:
                raise InputError(f"{where}: empty file, expected a {kind} header line")
            names = [_column_name(n) for n in header]
            read.header = tuple(names)
            # Columns are named by position, never by the names the header gives them (a
            # header is file content, docs/security.md); the expected names are the product's.
            repeated = next((n for n in names if n and names.count(n) > 1), None)
            if repeated is not None:
                same = [str(i) for i, n in enumerate(names, start=1) if n == repeated]
                raise InputError(
                    f"{where}: columns {' and '.join(same)} of the header have the same name"
                )
            missing = [c for c in layout.required if c not in names]
            if missing:
                optional = f", optionally {', '.join(layout.optional)}" if layout.optional else ""
                raise InputError(
                    f"{where}: missing column{'s' if len(missing) > 1 else ''} "
                    f"{', '.join(missing)} for a {kind} file (its header has {len(names)} "
                    f"column{'' if len(names) == 1 else 's'}; a {kind} file has "
                    f"{', '.join(layout.required)}{optional})"
                )
            at = {c: names.index(c) for c in layout.columns if c in names}
            width = len(names)
            for row in reader:
                raw = lines.take()
                read.records_read += 1
                if not any(cell.strip() for cell in row):
                    read.blank += 1
                    continue
                records.append(reader.line_num)
                raws.append(raw)
                extra = any(cell.strip() for cell in row[width:])
                bad_shape = len(row) < width or extra
                shapes.append(f"has {len(row)} fields, the header {width}" if bad_shape else None)
                for column, index in at.items():
                    cell = row[index].strip() if index < len(row) else ""
                    values[column].append(cell or None)
    except (UnicodeDecodeError, csv.Error) as err:
        raise InputError(f"{where}: unreadable CSV ({content_free(err)})") from err
    except OSError as err:
        raise InputError(f"{where}: cannot be read ({err.strerror or err})") from err
    read.rows = pl.DataFrame(
        {
            "record": records,
            "raw": raws,
            "shape": shapes,
            **{c: values[c] if c in at else [None] * len(records) for c in layout.columns},
        },
        schema={
            "record": pl.Int64,
            "raw": pl.String,
            "shape": pl.String,
            **dict.fromkeys(layout.columns, pl.String),
        },
    )
    return read


# ------------------------------------------------------------------ row rules (pure transforms)


def _reason(checks: list[tuple[pl.Expr, pl.Expr]]) -> pl.Expr:
    """The message of the first check that holds, else null."""
    return pl.coalesce([pl.when(condition).then(message) for condition, message in checks])


def _missing(column: str) -> tuple[pl.Expr, pl.Expr]:
    label = "patient id" if column == "patient_id" else column
    return pl.col(column).is_null(), pl.lit(f"missing {label}")


def _as_date(column: str) -> pl.Expr:
    return pl.col(column).str.to_date("%Y-%m-%d", strict=False)


def _date_checks(column: str, parsed: str, latest: date | None) -> list[tuple[pl.Expr, pl.Expr]]:
    """Unreadable, too early, and (when ``latest`` is given) future dates of a text column."""
    checks = [
        (pl.col(column).is_not_null() & pl.col(parsed).is_null(), pl.lit("unreadable date")),
        (pl.col(parsed) < EARLIEST_DATE, pl.lit(f"date before {EARLIEST_DATE.year}")),
    ]
    if latest is not None:
        checks.append((pl.col(parsed) > latest, pl.lit("date in the future")))
    return checks


@cache
def _zones() -> frozenset[str]:
    return frozenset(available_timezones()) - _NOT_ZONES


def _patients(rows: pl.DataFrame, today: date) -> pl.DataFrame:
    latest = today + timedelta(days=1)
    typed = rows.with_columns(
        group=pl.col("disease_group").str.to_uppercase(),
        year=pl.col("birth_year").cast(pl.Int16, strict=False),
        day=_as_date("enrolled_on"),
    )
    groups = ", ".join(DISEASE_GROUPS)
    reason = _reason(
        [
            _missing("patient_id"),
            _missing("disease_group"),
            (~pl.col("group").is_in(DISEASE_GROUPS), pl.lit(f"unknown disease group ({groups})")),
            _missing("timezone"),
            (~pl.col("timezone").is_in(sorted(_zones())), pl.lit("unknown time zone")),
            (
                pl.col("birth_year").is_not_null() & pl.col("year").is_null(),
                pl.lit("unreadable birth_year"),
            ),
            (
                (pl.col("year") < EARLIEST_DATE.year) | (pl.col("year") > today.year),
                pl.lit("birth_year out of range"),
            ),
            *_date_checks("enrolled_on", "day", latest),
        ]
    )
    return typed.with_columns(
        reason=reason,
        disease_group=pl.col("group"),
        birth_year=pl.col("year"),
        enrolled_on=pl.col("day"),
    )


def _therapies(rows: pl.DataFrame, today: date) -> pl.DataFrame:
    latest = today + PLANNED_START
    typed = rows.with_columns(start=_as_date("start_date"), end=_as_date("end_date"))
    reason = _reason(
        [
            _missing("patient_id"),
            _missing("therapy"),
            _missing("start_date"),
            *_date_checks("start_date", "start", latest),
            *_date_checks("end_date", "end", None),
            (pl.col("end") < pl.col("start"), pl.lit("end_date before start_date")),
        ]
    )
    return typed.with_columns(reason=reason, start_date=pl.col("start"), end_date=pl.col("end"))


def _side_effects(rows: pl.DataFrame, today: date) -> pl.DataFrame:
    latest = today + timedelta(days=1)
    grade = pl.when(pl.col("severity").str.contains(r"^\d{1,2}$")).then(
        pl.col("severity").cast(pl.Int16, strict=False)
    )
    typed = rows.with_columns(day=_as_date("date"), grade=grade)
    reason = _reason(
        [
            _missing("patient_id"),
            _missing("date"),
            *_date_checks("date", "day", latest),
            _missing("effect"),
            (
                pl.col("grade").is_null() | ~pl.col("grade").is_between(1, 5),
                pl.lit("severity must be an integer 1-5"),
            ),
        ]
    )
    return typed.with_columns(reason=reason, date=pl.col("day"), severity=pl.col("grade"))


def _diagnoses(rows: pl.DataFrame, today: date) -> pl.DataFrame:
    latest = today + timedelta(days=1)
    upper = pl.col("code").str.to_uppercase()
    typed = rows.with_columns(
        icd=upper.str.replace(_ICD10_UNDOTTED, "$1.$2"), day=_as_date("diagnosed_on")
    )
    reason = _reason(
        [
            _missing("patient_id"),
            _missing("code"),
            (~pl.col("icd").str.contains(_ICD10), pl.lit("not an ICD-10 code")),
            _missing("diagnosed_on"),
            *_date_checks("diagnosed_on", "day", latest),
        ]
    )
    return typed.with_columns(reason=reason, code=pl.col("icd"), diagnosed_on=pl.col("day"))


_RULES = {
    "patients": _patients,
    "therapies": _therapies,
    "side-effects": _side_effects,
    "diagnoses": _diagnoses,
}


def _split_rows(
    kind: ClinicalKind, rows: pl.DataFrame, *, today: date, known: pl.Series | None
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Split the text rows of a clinical file into table rows and rejected rows.

    Args:
        kind: the kind of file.
        rows: ``record``, ``raw``, ``shape`` (a reason or null) and the layout's columns as text.
        today: the ingestion day (UTC); later dates are in the future.
        known: the patient ids of bronze/patients, for every kind but ``patients``.

    Returns:
        The accepted rows with exactly the table's columns (optional columns absent from the file
        are null), and the rejected ones with ``record``, ``reason``, ``raw`` and ``patient_id``.
    """
    table = LAYOUTS[kind].table
    checked = _RULES[kind](rows, today)
    reason = pl.coalesce(pl.col("shape"), pl.col("reason"))
    if known is not None:
        unknown = ~pl.col("patient_id").is_in(known.implode())
        reason = pl.coalesce(
            reason,
            pl.when(unknown).then(pl.lit("patient not known (ingest patients.csv first)")),
        )
    checked = checked.with_columns(reason=reason)
    repeat = ~pl.struct(table.keys).is_first_distinct().over(pl.col("reason").is_null())
    checked = checked.with_columns(
        reason=pl.when(pl.col("reason").is_null() & repeat)
        .then(pl.lit("repeats an earlier row of this file"))
        .otherwise(pl.col("reason"))
    )
    schema = empty_frame(table).schema
    valid = checked.filter(pl.col("reason").is_null()).select(
        pl.col(c).cast(dtype) for c, dtype in schema.items()
    )
    rejected = checked.filter(pl.col("reason").is_not_null()).select(
        "record", "reason", "raw", "patient_id"
    )
    return valid, rejected


def _groups_by_diagnosis(diagnoses: pl.LazyFrame) -> pl.LazyFrame:
    """``patient_id, disease_group`` for patients with a diagnosis that names a group.

    The earliest ``diagnosed_on`` (then the smaller code) decides between several groups.
    """
    group = _NONE
    for name, prefixes in reversed(GROUP_CODES.items()):
        matches = pl.any_horizontal(pl.col("code").str.starts_with(p) for p in prefixes)
        group = pl.when(matches).then(pl.lit(name)).otherwise(group)
    return (
        diagnoses.select("patient_id", "code", "diagnosed_on", disease_group=group)
        .filter(pl.col("disease_group").is_not_null())
        .group_by("patient_id")
        .agg(pl.col("disease_group").sort_by("diagnosed_on", "code").first())
    )


def _changes(
    rows: pl.DataFrame, stored: pl.DataFrame, table: TableSpec, keep: tuple[str, ...]
) -> tuple[pl.DataFrame, int, int]:
    """The rows that are new or differ from the stored ones, and how many of each.

    Args:
        rows: accepted rows of the file.
        stored: the table's rows of the same patients.
        table: the table.
        keep: columns the file does not have: stored values are kept, null for new rows.
    """
    keys = list(table.keys)
    values = [c for c in table.columns if c not in table.keys]
    old = stored.select(
        *keys, *(pl.col(c).alias(f"{c}__stored") for c in values), __stored=pl.lit(True)
    )
    joined = rows.join(old, on=keys, how="left").with_columns(
        pl.col(f"{c}__stored").alias(c) for c in keep
    )
    is_new = pl.col("__stored").is_null()
    differs = pl.any_horizontal(pl.col(c).ne_missing(pl.col(f"{c}__stored")) for c in values)
    flagged = joined.with_columns(new=is_new, write=is_new | differs)
    write = flagged.filter(pl.col("write")).select(table.columns)
    new = int(flagged["new"].sum())
    return write, new, write.height - new


# ------------------------------------------------------------------ the job


def _today() -> date:
    return datetime.now(UTC).date()


def _patient_list(frame: pl.DataFrame) -> list[str]:
    return frame["patient_id"].unique().sort().to_list()


def _stored(lake: Lake, table: TableSpec, patients: list[str]) -> pl.DataFrame:
    return lake.scan(table).filter(pl.col("patient_id").is_in(patients)).collect()


def _regroup_file_rows(lake: Lake, rows: pl.DataFrame) -> tuple[pl.DataFrame, list[str]]:
    """Patients rows of a file with OTHER replaced by the group of their stored diagnoses.

    Returns:
        The rows, and the patients given a group.
    """
    others = rows.filter(pl.col("disease_group") == UNSPECIFIED_GROUP)["patient_id"].to_list()
    if not others or not lake.exists(DIAGNOSES):
        return rows, []
    found = _groups_by_diagnosis(
        lake.scan(DIAGNOSES).filter(pl.col("patient_id").is_in(others))
    ).collect()
    if not found.height:
        return rows, []
    regrouped = rows.join(found, on="patient_id", how="left", suffix="__dx").with_columns(
        disease_group=pl.when(pl.col("disease_group") == UNSPECIFIED_GROUP)
        .then(pl.coalesce("disease_group__dx", "disease_group"))
        .otherwise(pl.col("disease_group"))
    )
    return regrouped.select(rows.columns), found["patient_id"].to_list()


def _regroup_stored(lake: Lake, metadata: dict[str, str]) -> int:
    """Give stored OTHER patients the group of their diagnoses; returns how many changed."""
    others = lake.scan(PATIENTS).filter(pl.col("disease_group") == UNSPECIFIED_GROUP)
    found = _groups_by_diagnosis(lake.scan(DIAGNOSES).join(others, on="patient_id", how="semi"))
    changed = (
        others.join(found, on="patient_id", how="inner", suffix="__dx")
        .with_columns(disease_group=pl.col("disease_group__dx"))
        .select(PATIENTS.columns)
        .collect()
    )
    if changed.height:
        lake.upsert(PATIENTS, changed, metadata={**metadata, "regrouped": str(changed.height)})
    return changed.height


def _redacted(
    rejected: pl.DataFrame, sources: pl.DataFrame, pseudonyms: Pseudonymizer
) -> pl.DataFrame:
    """Rejected rows (already with pseudonyms in ``patient_id``) with each row's own source
    identifier (``sources``: ``record, source``) replaced in its raw text. Only rejected rows keep
    their text, so only they are rewritten."""
    if rejected.is_empty():
        return rejected
    own = rejected.join(sources, on="record", how="left")
    raws = [
        raw
        if raw is None or not source
        else identity.redact_raw(raw, source, pseudonyms.of(source))
        for raw, source in zip(own["raw"].to_list(), own["source"].to_list(), strict=True)
    ]
    return rejected.with_columns(pl.Series("raw", raws, dtype=pl.String))


def _replace_quarantine(lake: Lake, rejected: pl.DataFrame, source_file: str, at: datetime) -> None:
    """Make the file's quarantine rows those of this ingest; no commit when they are the same."""
    compared = ["record", "reason", "raw", "patient_id"]
    stored = (
        lake.scan(QUARANTINE).filter(pl.col("source_file") == source_file).select(compared)
    ).collect()
    if stored.sort("record").equals(rejected.select(compared).sort("record")):
        return
    predicate = f"source_file = {sql_literal(source_file)}"
    if rejected.height:
        rows = quarantine_rows([rejected], source_file, at)
        lake.replace(QUARANTINE, rows, predicate=predicate, metadata={"job": JOB})
    else:
        lake.delete(QUARANTINE, predicate)


def run(
    lake: Lake,
    path: Path | str,
    *,
    kind: ClinicalKind | None = None,
    pseudonyms: Pseudonymizer | None = None,
) -> IngestSummary:
    """Ingest one clinical CSV (rules in the module docstring).

    The ``patient_id`` column holds source identifiers: rows are stored with their pseudonyms
    (:mod:`jobs.ingest.identity`), quarantined rows with the identifier in their raw text
    replaced too.

    Args:
        lake: the lake.
        path: the CSV file.
        kind: ``patients``, ``therapies``, ``side-effects`` or ``diagnoses``; None = from the
            header (:func:`detect_kind`).
        pseudonyms: the key's pseudonymizer (default: from ``MOBILITY_PSEUDONYM_KEY``).

    Returns:
        A :class:`ClinicalSummary` of the run.

    Raises:
        InputError: an unknown kind, or a file that cannot be read or lacks required columns;
            then nothing of the file is committed.
    """
    source_file = str(path)
    path = Path(path)
    if kind is not None and kind not in KINDS:
        raise InputError(f"unknown clinical file kind {kind!r}: use one of {', '.join(KINDS)}")
    if pseudonyms is None:
        pseudonyms = from_settings(get_settings(), lake_uri=lake.uri)
    identity.check_key(lake, pseudonyms)
    if not path.is_file():
        raise InputError(f"{source_file}: no such file")
    started = datetime.now(UTC)
    with job_run(lake, JOB) as job:
        found = kind or detect_kind(path)
        if found is None:
            raise InputError(
                f"{source_file}: not a clinical CSV (the header needs patient_id and one of "
                f"{', '.join(layout.signature for layout in LAYOUTS.values())})"
            )
        layout = LAYOUTS[found]
        table = layout.table
        read = _read(path, found, source_file)
        sources = read.rows.select("record", source=pl.col("patient_id").str.strip_chars())
        read.rows = read.rows.with_columns(pseudonyms.series(read.rows["patient_id"]))
        identity.record_pseudonyms(lake, pseudonyms, source_file=source_file, at=started)
        known = None
        if found != "patients":
            known = lake.scan(PATIENTS).select("patient_id").collect()["patient_id"]
        valid, rejected = _split_rows(found, read.rows, today=_today(), known=known)
        rejected = _redacted(rejected, sources, pseudonyms)
        patients = _patient_list(valid)
        metadata = {"job": JOB, "source_file": source_file, "format": found}
        regrouped = 0
        regrouped_ids: list[str] = []
        if found == "patients":
            valid, regrouped_ids = _regroup_file_rows(lake, valid)
        keep = tuple(c for c in layout.optional if c not in read.header)
        write, new, updated = _changes(valid, _stored(lake, table, patients), table, keep)
        if write.height:
            lake.upsert(table, write, metadata=metadata)
        if found == "patients":
            regrouped = write.filter(pl.col("patient_id").is_in(regrouped_ids)).height
        elif found == "diagnoses":
            regrouped = _regroup_stored(lake, metadata)
        _replace_quarantine(lake, rejected, source_file, started)
        summary = ClinicalSummary(
            source_file=source_file,
            patient_id=None,
            records_read=read.records_read,
            accepted=valid.height,
            quarantined=rejected.height,
            skipped=read.blank,
            new_samples=new,
            patients=tuple(patients),
            kind=found,
            updated=updated,
            unchanged=valid.height - new - updated,
            regrouped=regrouped,
        )
        job.rows_in, job.rows_out = summary.records_read, write.height
        details = {k: v for k, v in summary.__dict__.items() if k != "patients"}
        job.details = {
            **details,
            "patients": len(patients),
            "format": found,
            **schema_details(Path(path)),
        }
    return summary
