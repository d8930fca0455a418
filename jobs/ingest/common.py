"""Shared by every ingest reader: parse counts, repeat detection, the valid/rejected split."""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import IO

import polars as pl

from jobs.sources import label_sources
from jobs.validation import quarantine_reason
from lakehouse.catalog import QUARANTINE, STEP_SAMPLES

# Hostile inputs (docs/reliability.md): no line of a real export comes near this many characters;
# a longer one is refused instead of being read into memory whole.
MAX_LINE_CHARS = 1 << 20


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
        with path.open("rb") as handle:
            head = handle.readline(limit)
    except OSError:
        return None
    text = head.decode("utf-8-sig", errors="replace").rstrip("\r\n")
    try:
        return column_names(next(csv.reader([text]), []))
    except csv.Error:
        return None


def csv_schema(path: Path) -> dict[str, str] | None:
    """The columns of a CSV-like file in order, each with the kind of value its first
    :data:`SCHEMA_SAMPLE_ROWS` rows hold (``integer``, ``number``, ``date/time``, ``text``, or
    ``empty``); recorded with each ingest run for the monitoring's schema change check. None for
    other files (XML, JSON, zip, Parquet) and unreadable ones."""
    if path.suffix.lower() not in {".csv", ".tsv", ".txt"}:
        return None
    return _read_schema(path, rows=SCHEMA_SAMPLE_ROWS)


def schema_details(path: Path) -> dict[str, object]:
    """What an ingest run records about a file's layout: ``columns`` (names in order) and
    ``column_types`` (:func:`csv_schema`), both None for files other than CSV."""
    schema = csv_schema(path)
    return {
        "columns": None if schema is None else list(schema),
        "column_types": schema,
    }


def _read_schema(path: Path, *, rows: int, limit: int = 65_536) -> dict[str, str] | None:
    """The header with the delimiter the generic reader uses, and the kinds of ``rows`` rows."""
    try:
        with path.open("rb") as handle:
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
    return {name: _kind(column) for name, column in zip(names, values, strict=True)}


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
