"""Streaming reader of Apple Health exports: ``export.xml``, ``export.zip`` and the CSV conversion.

Files are read as a stream of raw batches (at most ``batch_records`` step records each, every
attribute kept as text), so a 1 GB export never sits in memory. The XML is read with expat's
callbacks, building no tree, and hostile files (entity declarations, deep nesting, huge tags, zip
bombs) are refused with one line (docs/reliability.md).

Only ``StepCount`` records become rows; other record types are counted as skipped. Records nested
in a ``Correlation`` are not read: the Health app repeats them at the top level.

:func:`to_samples` turns a raw batch into bronze/step_samples rows and quarantine rows, with the
shared rules of :func:`jobs.validation.quarantine_reason` plus Apple-specific ones (unit, export
date, missing source).
"""

from __future__ import annotations

import csv
import io
import zipfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import IO, Literal
from xml.etree import ElementTree as ET
from xml.parsers import expat

import polars as pl

from jobs.ingest.common import (
    ParseStats,
    SeenKeys,
    bounded_lines,
    column_names,
    content_free,
    header_names,
    open_input,
    split_samples,
)
from lakehouse.errors import InputError

# The attributes of a Record (and columns of the CSV conversion) kept per raw row; the ``device``
# string is deliberately absent: it names the person's devices and must not travel further.
RAW_COLUMNS = (
    "type",
    "sourceName",
    "sourceVersion",
    "unit",
    "creationDate",
    "startDate",
    "endDate",
    "value",
)
CSV_COLUMNS = ("type", "startDate", "endDate", "value")  # required columns of the CSV conversion
STEP_TYPES = frozenset({"HKQuantityTypeIdentifierStepCount", "StepCount"})
ZIP_MEMBER = "apple_health_export/export.xml"
# Measured on a 216 MB export: 100k-record batches cost ~125 MB of Python strings, 20k ~30 MB,
# at the same speed.
BATCH_RECORDS = 5_000
STEP_UNIT = "count"
# Hostile exports (docs/reliability.md). An export nests three levels (HealthData, Record,
# MetadataEntry; Correlation and Workout a little deeper); its longest tags are a few KB.
MAX_DEPTH = 32
MAX_STRETCH_BYTES = 8 * 1024 * 1024
_XML_CHUNK_BYTES = 1024 * 1024
# A zip member this much larger than its compressed bytes is a zip bomb, not an export (XML
# exports compress about 10 to 25 times).
MAX_ZIP_RATIO = 200

Kind = Literal["xml", "zip", "csv"]

# ``2019-05-14 18:52:09 -0400`` and ``2021-08-30 13:40:34+05:30`` (ISO ``T`` accepted too).
_TIMESTAMP = (
    r"^\s*(?<day>\d{4}-\d{2}-\d{2})[ T](?<time>\d{2}:\d{2}:\d{2})(?:\.\d+)?"
    r"\s*(?<sign>[+-])(?<hh>\d{2}):?(?<mm>\d{2})\s*$"
)
_UTC = pl.Datetime("us", "UTC")


def sniff(path: Path) -> Kind | None:
    """Which Apple Health form ``path`` looks like, None when none: ``.xml`` / ``.zip`` names,
    else zip or XML first bytes, else a CSV header with the conversion's columns."""
    by_suffix: dict[str, Kind] = {".xml": "xml", ".zip": "zip"}
    if path.suffix.lower() in by_suffix:
        return by_suffix[path.suffix.lower()]
    try:
        with open_input(path) as handle:
            head = handle.read(512)
    except OSError:
        return None
    if head.startswith(b"PK\x03\x04"):
        return "zip"
    if head.lstrip().startswith(b"<"):
        return "xml"
    if set(CSV_COLUMNS) <= set(header_names(path) or []):
        return "csv"
    return None


def detect_kind(path: Path) -> Kind:
    """Which Apple Health form ``path`` is (:func:`sniff`; any ``.csv`` is read as the conversion).

    Raises:
        InputError: the file is none of the known forms.
    """
    kind = sniff(path) or ("csv" if path.suffix.lower() == ".csv" else None)
    if kind is None:
        raise InputError(
            f"{path}: not a known format (expected an Apple Health export.xml/zip/csv)"
        )
    return kind


class _Batcher:
    """Collects raw step records column by column and hands them out as frames."""

    def __init__(self, batch_records: int) -> None:
        self.batch_records = batch_records
        self._reset()

    def _reset(self) -> None:
        self.records: list[int] = []
        self.columns: dict[str, list[str | None]] = {c: [] for c in RAW_COLUMNS}

    def add(self, record: int, attrs: dict[str, str]) -> bool:
        """Add one record; True when the batch is full."""
        self.records.append(record)
        for name, values in self.columns.items():
            values.append(attrs.get(name))
        return len(self.records) >= self.batch_records

    def take(self) -> pl.DataFrame:
        """The collected records as a frame (``record`` plus RAW_COLUMNS as strings)."""
        frame = pl.DataFrame(
            {"record": self.records, **self.columns},
            schema={"record": pl.Int64, **dict.fromkeys(RAW_COLUMNS, pl.String)},
        )
        self._reset()
        return frame

    def __len__(self) -> int:
        return len(self.records)


class _Refused(Exception):
    """Raised inside the XML parser's callbacks: the export is refused (one-line reason)."""


def _xml_batches(
    stream: IO[bytes], stats: ParseStats, batch_records: int
) -> Iterator[pl.DataFrame]:
    """Step records of an export.xml, read with expat's callbacks: no tree is built, so memory
    holds one element's attributes and one batch, however the elements nest.

    Hostile files (docs/reliability.md) are refused with one line instead of being expanded:
    entity declarations (an export has none; they are how "billion laughs" and external entity
    attacks work, refused as defusedxml does), elements nested deeper than :data:`MAX_DEPTH`,
    and any stretch of :data:`MAX_STRETCH_BYTES` without a complete tag (a huge attribute or
    tag). Expat resolves no external entity or DTD.
    """
    batcher = _Batcher(batch_records)
    parser = expat.ParserCreate()
    parser.SetParamEntityParsing(expat.XML_PARAM_ENTITY_PARSING_NEVER)
    depth = 0
    last_event = 0  # byte offset of the latest tag
    ready: list[pl.DataFrame] = []

    def start(name: str, attrs: dict[str, str]) -> None:
        nonlocal depth, last_event
        depth += 1
        last_event = parser.CurrentByteIndex
        if depth > MAX_DEPTH:
            raise _Refused(f"elements nested deeper than {MAX_DEPTH} levels")
        if depth != 2:
            return  # the root, or nested (MetadataEntry, Records inside a Correlation)
        if name == "Record":
            stats.records_read += 1
            if attrs.get("type") in STEP_TYPES:
                if batcher.add(stats.records_read, attrs):
                    ready.append(batcher.take())
            else:
                stats.skipped += 1
        elif name == "ExportDate":
            stats.export_date = attrs.get("value")

    def end(name: str) -> None:
        nonlocal depth, last_event
        depth -= 1
        last_event = parser.CurrentByteIndex

    def entity(name: str, *_: object) -> None:
        # the entity's name is the file's text: not repeated (docs/security.md)
        raise _Refused("it declares an entity (entity expansion is refused)")

    def external(*_: object) -> int:
        raise _Refused("it refers to an external entity (refused)")

    parser.StartElementHandler = start
    parser.EndElementHandler = end
    parser.EntityDeclHandler = entity
    parser.ExternalEntityRefHandler = external
    fed = 0
    try:
        while chunk := stream.read(_XML_CHUNK_BYTES):
            parser.Parse(chunk, False)
            fed += len(chunk)
            if fed - last_event > MAX_STRETCH_BYTES:
                raise _Refused(f"no complete tag in {MAX_STRETCH_BYTES:,} bytes (a huge element)")
            yield from ready
            ready.clear()
        parser.Parse(b"", True)
    except _Refused as err:
        raise InputError(f"refused XML: {err}") from None
    except expat.ExpatError as err:
        raise ET.ParseError(str(err)) from err
    except LookupError as err:  # the XML declaration names an encoding Python does not know
        raise ET.ParseError("the XML declaration names an unknown encoding") from err
    yield from ready
    if len(batcher):
        yield batcher.take()


def _csv_batches(stream: IO[str], stats: ParseStats, batch_records: int) -> Iterator[pl.DataFrame]:
    reader = csv.reader(bounded_lines(stream))
    header = next(reader, None)
    if header is None:
        raise InputError("empty CSV file")
    names = column_names(header)
    missing = [c for c in CSV_COLUMNS if c not in names]
    if missing:
        raise InputError(f"not an Apple Health CSV: columns {missing} missing")
    batcher = _Batcher(batch_records)
    for row in reader:
        if not row:
            continue
        stats.records_read += 1
        attrs = dict(zip(names, row, strict=False))
        kind = attrs.get("type", "")
        if kind in STEP_TYPES:
            # The line number is the record: what a person opening the file would look for.
            if batcher.add(reader.line_num, attrs):
                yield batcher.take()
        else:
            stats.skipped += 1
    if len(batcher):
        yield batcher.take()


@contextmanager
def raw_batches(
    path: Path, kind: Kind, stats: ParseStats, *, batch_records: int = BATCH_RECORDS
) -> Iterator[Iterator[pl.DataFrame]]:
    """Open an export and yield an iterator of raw step-record batches.

    Args:
        path: the file.
        kind: its form (see :func:`detect_kind`).
        stats: filled in while the batches are read.
        batch_records: step records per batch.

    Raises:
        InputError: (also while iterating) the file cannot be read completely: truncated or
            malformed XML, a bad zip, a zip without the export, an undecodable CSV.
    """
    where = str(path)

    def guarded(batches: Iterator[pl.DataFrame]) -> Iterator[pl.DataFrame]:
        try:
            yield from batches
        except ET.ParseError as err:
            raise InputError(f"{where}: unreadable XML ({content_free(err)})") from err
        except (zipfile.BadZipFile, zlib.error, EOFError) as err:
            raise InputError(f"{where}: damaged zip ({content_free(err)})") from err
        except OSError as err:  # e.g. a damaged zip's offsets sending a seek before the start
            raise InputError(f"{where}: unreadable ({err.strerror or content_free(err)})") from err
        except (UnicodeDecodeError, csv.Error) as err:
            raise InputError(f"{where}: unreadable CSV ({content_free(err)})") from err
        except InputError as err:
            raise InputError(f"{where}: {err}") from err

    if kind == "zip":
        handle = open_input(path)
        try:
            archive = zipfile.ZipFile(handle)
        except (zipfile.BadZipFile, OSError) as err:
            handle.close()
            raise InputError(f"{where}: not a readable zip ({content_free(err)})") from err
        with handle, archive:
            names = archive.namelist()
            # The Health app's name first; localized exports name the folder differently.
            member = ZIP_MEMBER if ZIP_MEMBER in names else None
            member = member or next((n for n in names if n.endswith("/export.xml")), None)
            if member is None:
                raise InputError(f"{where}: zip holds no apple_health_export/export.xml")
            info = archive.getinfo(member)
            if info.file_size > MAX_ZIP_RATIO * max(info.compress_size, 1024 * 1024):
                raise InputError(
                    f"{where}: its export.xml would unpack {info.file_size:,} bytes from "
                    f"{info.compress_size:,} (refused: more than {MAX_ZIP_RATIO} times)"
                )
            try:
                stream = archive.open(member)
            except (zipfile.BadZipFile, NotImplementedError, RuntimeError, OSError) as err:
                # a damaged header, an unknown compression method, an encrypted member
                raise InputError(f"{where}: damaged zip ({content_free(err)})") from err
            with stream:
                yield guarded(_xml_batches(stream, stats, batch_records))
    elif kind == "xml":
        with open_input(path) as stream:
            yield guarded(_xml_batches(stream, stats, batch_records))
    else:
        with open_input(path) as raw, io.TextIOWrapper(raw, encoding="utf-8", newline="") as text:
            yield guarded(_csv_batches(text, stats, batch_records))


def _parsed(column: str) -> tuple[pl.Expr, pl.Expr]:
    """UTC timestamp and UTC offset (minutes) of a timestamp text column; null if unparsable."""
    parts = pl.col(column).str.extract_groups(_TIMESTAMP)
    local = pl.concat_str(parts.struct.field("day"), pl.lit(" "), parts.struct.field("time"))
    sign = pl.when(parts.struct.field("sign") == "-").then(-1).otherwise(1)
    offset = sign * (
        parts.struct.field("hh").cast(pl.Int32) * 60 + parts.struct.field("mm").cast(pl.Int32)
    )
    naive = local.str.to_datetime("%Y-%m-%d %H:%M:%S", time_unit="us", strict=False)
    utc = (naive - pl.duration(minutes=offset)).dt.replace_time_zone("UTC")
    return utc, offset


def parse_timestamp(text: str) -> datetime | None:
    """One Apple timestamp as an aware UTC datetime, None when it is not one."""
    utc, _ = _parsed("t")
    value = pl.DataFrame({"t": [text]}).select(utc).item()
    return value if isinstance(value, datetime) else None


def to_samples(
    raw: pl.DataFrame,
    *,
    patient_id: str,
    export_date: datetime | None,
    now: datetime,
    seen: SeenKeys | None = None,
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Split a raw batch into bronze/step_samples rows and rejected rows.

    Args:
        raw: a batch from :func:`raw_batches`.
        patient_id: the person the export belongs to.
        export_date: the export's date (UTC); samples that end after it are rejected.
        now: the ingestion instant (UTC); samples that end after it are rejected.
        seen: keys accepted from earlier batches of the same file; repeats are rejected.

    Returns:
        The valid rows with exactly the step_samples columns (sorted as the table is), and the
        rejected ones with ``record``, ``reason`` and ``raw`` (the attributes as JSON).
    """
    start_ts, offset = _parsed("startDate")
    end_ts, _ = _parsed("endDate")
    frame = raw.with_columns(
        patient_id=pl.lit(patient_id, dtype=pl.String),
        start_ts=start_ts,
        end_ts=end_ts,
        utc_offset_minutes=offset.cast(pl.Int16, strict=False),
        steps=pl.col("value").str.strip_chars().cast(pl.Float64, strict=False),
        source=pl.col("sourceName"),
    )
    apple = (
        pl.when(pl.col("source").is_null() | (pl.col("source").str.strip_chars() == ""))
        .then(pl.lit("missing source"))
        .when(pl.col("unit").is_null() | (pl.col("unit") != STEP_UNIT))
        .then(pl.lit(f"unit is not {STEP_UNIT!r}"))
    )
    if export_date is not None:
        apple = apple.when(pl.col("end_ts") > export_date).then(
            pl.lit("sample after the export date")
        )
    apple = apple.when(pl.col("end_ts") > now).then(pl.lit("sample in the future"))
    frame = frame.with_columns(raw=pl.struct(RAW_COLUMNS).struct.json_encode())
    return split_samples(frame, last=apple.otherwise(pl.lit(None, dtype=pl.String)), seen=seen)
