"""Shared by every ingest reader: parse counts, repeat detection, the valid/rejected split."""

from __future__ import annotations

import csv
import errno
import io
import os
import re
import stat
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from pathlib import Path
from typing import IO, BinaryIO

import polars as pl

from jobs.sources import label_sources
from jobs.validation import quarantine_reason
from lakehouse.catalog import QUARANTINE, STEP_SAMPLES
from lakehouse.errors import InputError

# Hostile inputs (docs/reliability.md): no line of a real export comes near this many characters;
# a longer one is refused instead of being read into memory whole.
MAX_LINE_CHARS = 1 << 20


# --- the file being read: a regular file, the one that was checked (docs/security.md) --------

LINK_REFUSED = "a symbolic link: refused (ingest reads regular files only, never a link)"


@dataclass(frozen=True)
class FileId:
    """Which file a path named when it was checked: device and inode."""

    device: int
    inode: int

    @classmethod
    def of(cls, status: os.stat_result) -> FileId:
        return cls(status.st_dev, status.st_ino)


# The identity each input path had when it was checked (the landing walk, or the first open of
# a file given directly): every later open of that path must reach the same file.
_PINNED: ContextVar[dict[str, FileId] | None] = ContextVar("pinned_inputs", default=None)


def refusal(status: os.stat_result, *, landing: bool = False) -> str | None:
    """Why ingest will not read a file of this ``lstat``/``fstat``; None for a regular file.

    Args:
        status: the file's status, not following a final symbolic link.
        landing: the file was found in a landing folder, where a regular file with other hard
            links is refused too (a hard link is a second name of another file, as a symbolic
            link is, only harder to see).
    """
    mode = status.st_mode
    if stat.S_ISLNK(mode):
        return LINK_REFUSED
    if stat.S_ISREG(mode):
        if landing and status.st_nlink > 1:
            return "a file with other hard links: refused (landing files must be copied in)"
        return None
    kind = (
        "a folder"
        if stat.S_ISDIR(mode)
        else "a FIFO"
        if stat.S_ISFIFO(mode)
        else "a socket"
        if stat.S_ISSOCK(mode)
        else "a device"
        if stat.S_ISCHR(mode) or stat.S_ISBLK(mode)
        else "not a regular file"
    )
    return f"{kind}: refused (ingest reads regular files only)"


def _pin_key(path: Path | str) -> str:
    return os.path.abspath(path)


@contextmanager
def pinned(path: Path | str, file_id: FileId) -> Iterator[None]:
    """Inside, :func:`open_input` of ``path`` opens only the file ``file_id`` names: a path
    whose folders were swapped for links meanwhile (reaching another file) is refused."""
    known = dict(_PINNED.get() or {})
    known[_pin_key(path)] = file_id
    token = _PINNED.set(known)
    try:
        yield
    finally:
        _PINNED.reset(token)


def pinned_id(path: Path | str) -> FileId | None:
    """The identity ``path`` is pinned to (:func:`pinned`), None when it is not."""
    return (_PINNED.get() or {}).get(_pin_key(path))


def checked_input(path: Path | str, *, landing: bool = False) -> FileId:
    """The identity of the regular file ``path`` names, checked without opening it: a symbolic
    link (as the final name), a folder, FIFO, socket or device is refused, and under
    :func:`pinned` it must be the pinned file.

    Args:
        path: the file.
        landing: it was found in a landing folder (:func:`refusal`).

    Raises:
        InputError: no such file, or one that ingest refuses (one line naming the file).
    """
    try:
        status = os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):
        raise InputError(f"{path}: no such file") from None
    except OSError as err:
        raise InputError(f"{path}: cannot be read ({err.strerror or err})") from None
    reason = refusal(status, landing=landing)
    if reason == LINK_REFUSED and not landing:
        reason += "; give the path of the file itself"
    found = FileId.of(status)
    pin = pinned_id(path)
    if reason is None and pin is not None and pin != found:
        reason = "not the file that was checked (it was replaced meanwhile): refused"
    if reason is not None:
        raise InputError(f"{path}: {reason}")
    return found


def open_input(path: Path | str) -> BinaryIO:
    """Open an input file for reading, refusing anything but the regular file that was checked.

    The final name is opened with ``O_NOFOLLOW`` (a symbolic link fails instead of being
    followed) and ``O_NONBLOCK`` (a FIFO cannot hang the open), then the open descriptor itself is
    checked with ``fstat``: a regular file, and under :func:`pinned` the very file that was
    checked. Nothing is read before these checks pass, so a check and a read cannot see two
    different files.

    Raises:
        InputError: the path is a symbolic link, not a regular file, or not the pinned file.
        OSError: the file cannot be opened (missing, no permission).
    """
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
    try:
        descriptor = os.open(path, flags)
    except OSError as err:
        if err.errno == errno.ELOOP:
            raise InputError(f"{path}: {LINK_REFUSED}") from None
        raise
    try:
        status = os.fstat(descriptor)
        reason = refusal(status)
        if reason is None:
            pin = pinned_id(path)
            if pin is not None and FileId.of(status) != pin:
                reason = (
                    "not the file that was checked (it was replaced, or a folder on its path "
                    "became a link, while it was read): refused"
                )
        if reason is not None:
            raise InputError(f"{path}: {reason}")
        return os.fdopen(descriptor, "rb")
    except BaseException:
        os.close(descriptor)
        raise


# --- error texts: name the file, the line and the reason, never what the file holds ---------

# A quoted or bracketed span in a library's message: where libraries echo the text they choke on.
# (A quoted single character stays: a syntax character such as the ``','`` in "Expecting ','
# delimiter".)
_QUOTED = re.compile(r"b?'[^']{2,}'|b?'[^']*$|\"[^\"]{2,}\"|`[^`]*`|\[[^\]]*\]")


def content_free(err: BaseException) -> str:
    """Why a library could not read a file, without the file's content: a decoding error names
    no byte, and every quoted or bracketed span of other messages (where Python, zipfile and
    Arrow quote values, names and members) is left out."""
    if isinstance(err, UnicodeDecodeError):
        return f"not {err.encoding.upper().replace('-SIG', '')} text"
    text = " ".join(str(err).split())
    return _QUOTED.sub("…", text) or type(err).__name__


def bounded_lines(text: IO[str], *, limit: int = MAX_LINE_CHARS) -> Iterator[str]:
    """The lines of ``text`` (for ``csv.reader``), refusing one longer than ``limit`` characters.

    Raises:
        csv.Error: a line is longer than ``limit`` (every CSV reader turns it into its one-line
            "unreadable CSV" error).
    """
    number = 0
    while line := text.readline(limit + 1):
        number += 1
        if len(line) > limit:
            raise csv.Error(f"line {number} is longer than {limit:,} characters")
        yield line


def column_names(header: list[str]) -> list[str]:
    """Header cells as names: without surrounding spaces or a UTF-8 byte-order mark."""
    return [cell.strip().lstrip("\ufeff").strip() for cell in header]


# Data rows read to tell each column's kind of value (monitoring's schema change check).
SCHEMA_SAMPLE_ROWS = 200
_VALUE_KINDS = (
    ("integer", re.compile(r"[+-]?\d+")),
    ("number", re.compile(r"[+-]?(\d+[.,]\d*|[.,]\d+|\d+)([eE][+-]?\d+)?")),
    (
        "date/time",
        re.compile(r"(\d{1,4}[-/.]\d{1,2}[-/.]\d{1,4}|\d{1,2}-[A-Za-z]{3}-\d{4}).*"),
    ),
)


def delimiter_of(header: str) -> str:
    """The delimiter of a CSV file: the one of ``,``, ``;`` and tab its header holds most."""
    return max(",;\t", key=header.count)


def header_names(path: Path, *, limit: int = 65_536) -> list[str] | None:
    """The column names on the first line of a comma-separated file; None when it cannot be
    read as one."""
    try:
        with open_input(path) as handle:
            head = handle.readline(limit)
    except OSError:
        return None
    text = head.decode("utf-8-sig", errors="replace").rstrip("\r\n")
    try:
        return column_names(next(csv.reader([text]), []))
    except csv.Error:
        return None


def csv_schema(path: Path, *, mapped: Iterable[str] = ()) -> dict[str, str] | None:
    """The columns of a CSV-like file in order, by :func:`column_labels`, each with the kind of
    value its first :data:`SCHEMA_SAMPLE_ROWS` rows hold (``integer``, ``number``,
    ``date/time``, ``text``, or ``empty``); recorded with each ingest run for the monitoring's
    schema change check. None for other files (XML, JSON, zip, Parquet) and unreadable ones.

    Args:
        path: the file.
        mapped: column names the user gave (``--column ROLE=NAME``), recorded as such.
    """
    if path.suffix.lower() not in {".csv", ".tsv", ".txt"}:
        return None
    columns = _read_schema(path, rows=SCHEMA_SAMPLE_ROWS)
    if columns is None:
        return None
    labels = column_labels([name for name, _ in columns], mapped=mapped)
    return {label: kind for label, (_, kind) in zip(labels, columns, strict=True)}


def schema_details(path: Path, *, mapped: Iterable[str] = ()) -> dict[str, object]:
    """What an ingest run records about a file's layout: ``columns`` (labels in order, see
    :func:`column_labels`) and ``column_types`` (:func:`csv_schema`), both None for files other
    than CSV."""
    schema = csv_schema(path, mapped=mapped)
    return {
        "columns": None if schema is None else list(schema),
        "column_types": schema,
    }


@cache
def known_columns() -> frozenset[str]:
    """Every column name a reader of this product looks for: the generic roles, the Apple
    Health, Fitbit and Google Fit columns, the clinical files' columns."""
    from jobs.ingest import apple_health, clinical, fitbit, generic

    names = {*generic.ROLES, *apple_health.RAW_COLUMNS}
    for device in fitbit.LAYOUTS.values():
        names |= {device.time, device.steps, *([device.patient] if device.patient else [])}
    for layout in clinical.LAYOUTS.values():
        names |= set(layout.columns)
    return frozenset(names)


def column_labels(names: Sequence[str], *, mapped: Iterable[str] = ()) -> list[str]:
    """A file's column names as ingest records them (ops/job_runs, and from there the
    monitoring's schema checks and alerts): a name the product knows (:func:`known_columns`, in
    any case) or one the user mapped with ``--column`` as that name, any other as ``column N``
    (its 1-based position).

    A header is file content like any cell: a file without a header line has a data row there,
    and a hostile or careless export can put a patient's record number or name there, which no
    pattern of "safe" names can tell from a column name. The readers ignore columns they do not
    know, so their names matter to no one downstream; a new, missing or retyped one still shows
    by its position. Labelling again is a no-op."""
    given = {name.strip() for name in mapped if name.strip()}
    vocabulary = known_columns() | given
    folded: dict[str, str] = {}
    for name in sorted(vocabulary, key=lambda n: (n != n.lower(), n)):  # "steps" over "Steps"
        folded.setdefault(name.casefold(), name)
    return [
        name.strip()
        if name.strip() in vocabulary
        else folded.get(name.strip().casefold(), f"column {position}")
        for position, name in enumerate(names, start=1)
    ]


def _read_schema(path: Path, *, rows: int, limit: int = 65_536) -> list[tuple[str, str]] | None:
    """The header with the delimiter the generic reader uses, and the kinds of ``rows`` rows."""
    try:
        with open_input(path) as handle:
            lines = [handle.readline(limit) for _ in range(rows + 1)]
    except OSError:
        return None
    texts = [line.decode("utf-8-sig", errors="replace").rstrip("\r\n") for line in lines]
    texts = [texts[0]] + [t for t in texts[1:] if t]
    try:
        parsed = list(csv.reader(texts, delimiter=delimiter_of(texts[0])))
    except csv.Error:
        return None
    if not parsed:
        return None
    names = column_names(parsed[0])
    values: list[list[str]] = [[] for _ in names]
    for row in parsed[1:]:
        for i, cell in enumerate(row[: len(names)]):
            if cell.strip():
                values[i].append(cell.strip())
    return [(name, _kind(column)) for name, column in zip(names, values, strict=True)]


def _kind(values: list[str]) -> str:
    """The narrowest kind every value fits (integers are numbers too)."""
    if not values:
        return "empty"
    for kind, pattern in _VALUE_KINDS:
        if all(pattern.fullmatch(v) for v in values):
            return kind
    return "text"


def csv_line(row: list[str]) -> str:
    """A parsed CSV row as one line of text again (quoted only where a field needs it)."""
    text = ",".join(row)
    if text.count(",") == len(row) - 1 and not any(c in text for c in '"\r\n'):
        return text
    out = io.StringIO()
    csv.writer(out, lineterminator="").writerow(row)
    return out.getvalue()


@dataclass
class ParseStats:
    """Counts kept while a file is read.

    Args:
        records_read: records (XML elements or CSV data lines) read.
        skipped: records that carry no steps (other types, days without step data).
        export_date: the ``ExportDate`` value as written, None when the file has none.
    """

    records_read: int = 0
    skipped: int = 0
    export_date: str | None = None


@dataclass(frozen=True)
class IngestSummary:
    """What one ingest run read and wrote.

    Invariant: ``records_read == accepted + quarantined + skipped``.

    Args:
        source_file: the path as given.
        patient_id: whose export it was; None for a Fitabase file (one patient per ``Id``).
        records_read: records in the file (all types).
        accepted: valid step samples.
        quarantined: step records rejected into bronze/quarantine.
        skipped: records of other types (heart rate, distance...).
        new_samples: accepted samples not yet in the lake (the rest were already there).
        patients: the patients with accepted samples (or the one of ``patient_id``).
    """

    source_file: str
    patient_id: str | None
    records_read: int
    accepted: int
    quarantined: int
    skipped: int
    new_samples: int
    patients: tuple[str, ...] = ()

    def describe(self) -> str:
        """One line for the CLI."""
        count = len(self.patients)
        who = f"{count} patient{'' if count == 1 else 's'}"
        who = f"patient {self.patient_id}" if self.patient_id else who
        return (
            f"ingest {self.source_file} ({who}): "
            f"{self.records_read:,} records read, {self.accepted:,} accepted "
            f"({self.new_samples:,} new), {self.quarantined:,} quarantined, "
            f"{self.skipped:,} skipped"
        )


class SeenKeys:
    """Hashes of the step_samples keys accepted so far from one file.

    A file that repeats a sample (same patient, source and times) must not count its steps twice;
    the repeat is quarantined instead. 8 bytes per accepted sample, so a 1 GB export costs tens of
    MB. A 64-bit hash collision would quarantine a valid sample (kept, with its raw text), never
    drop it.
    """

    def __init__(self) -> None:
        self._hashes = pl.Series("hash", [], dtype=pl.UInt64)

    def repeats(self, hashes: pl.Series) -> pl.Series:
        """Which of ``hashes`` (null = row already rejected) repeat an earlier accepted key."""
        earlier = hashes.is_in(self._hashes.implode())
        repeated = (earlier | ~hashes.is_first_distinct()).fill_null(False) & hashes.is_not_null()
        # No rechunk: copying every earlier hash once per batch would be quadratic.
        self._hashes = pl.concat(
            [self._hashes, hashes.filter(~repeated).drop_nulls()], rechunk=False
        )
        return repeated


def split_samples(
    frame: pl.DataFrame,
    *,
    first: pl.Expr | None = None,
    last: pl.Expr | None = None,
    seen: SeenKeys | None = None,
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Split candidate rows into bronze/step_samples rows and rejected rows.

    Args:
        frame: the step_samples columns (but ``month``) plus ``record`` and ``raw``.
        first: reader-specific reasons checked before :func:`jobs.validation.quarantine_reason`
            (a string expression, null when the row is valid).
        last: reader-specific reasons checked after it.
        seen: keys accepted from earlier batches of the same file; repeats are rejected.

    Returns:
        The valid rows with exactly the step_samples columns (sorted as the table is), and the
        rejected ones with ``record``, ``reason``, ``raw`` and ``patient_id``.
    """
    reasons = [quarantine_reason()]
    if first is not None:
        reasons.insert(0, first)
    if last is not None:
        reasons.append(last)
    # Stored labels carry no owner names (jobs.sources); the quarantine keeps the raw text.
    frame = frame.with_columns(source=label_sources(frame["source"]), reason=pl.coalesce(reasons))
    if seen is not None:
        hashes = frame.select(
            pl.when(pl.col("reason").is_null()).then(pl.struct(STEP_SAMPLES.keys).hash(seed=0))
        ).to_series()
        frame = frame.with_columns(
            reason=pl.when(seen.repeats(hashes))
            .then(pl.lit("repeats an earlier sample of this file"))
            .otherwise(pl.col("reason"))
        )
    valid = (
        frame.filter(pl.col("reason").is_null())
        .with_columns(month=pl.col("start_ts").dt.strftime("%Y-%m"))
        .select(STEP_SAMPLES.columns)
        .sort(list(STEP_SAMPLES.sort_by))
    )
    rejected = (
        frame.filter(pl.col("reason").is_not_null())
        .select("record", "reason", "raw", "patient_id")
        .sort("record")
    )
    return valid, rejected


def quarantine_rows(rejected: list[pl.DataFrame], source_file: str, at: datetime) -> pl.DataFrame:
    """bronze/quarantine rows from rejected frames (``record, reason, raw, patient_id``)."""
    if not rejected:
        return pl.DataFrame(schema=pl.Schema(QUARANTINE.schema))
    return pl.concat(rejected).select(
        source_file=pl.lit(source_file, dtype=pl.String),
        record=pl.col("record"),
        reason=pl.col("reason"),
        raw=pl.col("raw"),
        patient_id=pl.col("patient_id"),
        quarantined_at=pl.lit(at, dtype=pl.Datetime("us", "UTC")),
    )


class PatientZones:
    """The time zone of each patient a file names in a column, for its naive timestamps.

    The zone bronze/patients records for the patient (a patients file ingested first), else
    ``default``. Looked up once per patient, as batches bring new ones.
    """

    def __init__(self, known: Callable[[list[str]], dict[str, str]], default: str) -> None:
        self._known = known
        self.default = default
        self._zones: dict[str, str] = {}

    def split(self, raw: pl.DataFrame, column: str) -> Iterator[tuple[str, pl.DataFrame]]:
        """The rows of ``raw`` grouped by their patient's zone (rows without a patient: default)."""
        patients = raw[column].drop_nulls().unique().to_list()
        unseen = [p for p in patients if p not in self._zones]
        if unseen:
            found = self._known(unseen)
            self._zones.update({p: found.get(p, self.default) for p in unseen})
        zones = raw[column].replace_strict(
            self._zones, default=self.default, return_dtype=pl.String
        )
        if zones.n_unique() == 1:
            yield zones[0] if zones.len() else self.default, raw
            return
        for zone in zones.unique(maintain_order=True).to_list():
            yield zone, raw.filter(zones == zone)
