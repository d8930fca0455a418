"""Reader of a generic CSV or Parquet file of step samples (``mobility ingest --format generic``).

One row is one step sample. Columns are found by *role*:

============  =====================================================================================
role          meaning
============  =====================================================================================
patient_id    who walked (text; whole numbers are kept without ``.0``). Leave the column out and
              give ``--patient-id`` for a file of one person; giving both is an error.
start         when the sample starts (required).
end           when it ends. Without an end column each sample lasts one *period* (below).
steps         the step count (required).
source        the device or app. Without a source column every sample gets the source given by
              the caller, else ``Imported file``; an empty cell gets the same. The one default for
              CSV and Parquet means the same samples ingested from either form are the same samples.
============  =====================================================================================

A role not mapped with ``--column ROLE=NAME`` is read from a column named like the role, ignoring
case (``Start``, ``STEPS``). Columns of other names are ignored (but kept in quarantine ``raw``).

**Files.** Parquet is recognised by its magic bytes (``PAR1``), anything else is read as CSV:
UTF-8 (a byte-order mark is fine), a header line, and the delimiter that occurs most in the header
among ``,``, ``;`` and tab. Both are streamed in batches, so memory stays bounded.

**Timestamps.** With ``--timestamp-format`` every value is read with that ``strptime`` format
(``%z`` allowed). Otherwise the format is detected from up to 1,000 distinct values of the first
batch (start and end together) among these families, each value trying its family's forms in turn:

- ISO 8601: ``2021-08-30T13:40:34+05:30``, ``...Z``, a space instead of ``T``, fractional seconds,
  naive ``2021-08-30 13:40``, date only ``2021-08-30``, Apple's ``2019-05-14 18:52:09 -0400``,
  and ``2021/08/30 13:40``;
- epoch seconds or milliseconds (whole numbers between 2000 and 2100);
- ``11-Nov-2014 00:00`` (also with seconds, or the date alone);
- month first (US): ``3/12/2016 1:00:00 AM``, ``4/12/2016 0:00``, ``3/12/2016``;
- day first: ``30/08/2021 13:40``, ``30.08.2021 13:40:00``, ``30/08/2021``.

The family reading the most sampled values wins; it must read more than half of them, else the
file is refused. When month-first and day-first read the same values (every day is 12 or less),
the order is ambiguous and the file is refused until ``--timestamp-format`` says which. Values
the chosen format cannot read are quarantined as ``unreadable timestamp``.

Parquet timestamp columns need no format: naive timestamps and dates are local times; tz-aware
ones are instants (below). String columns are read as text, integer columns as epoch values.

**UTC offsets.** A timestamp written with its own offset (``+05:30``, ``-0400``) keeps it, as does a
Parquet column in a named zone (the offset of that zone at the instant). UTC instants (``Z``,
``+00:00``, epoch values, UTC Parquet columns) get the offset of ``--timezone`` at that instant.
Naive times are local times in ``--timezone``:

- a wall-clock time that does not exist (skipped when clocks spring forward) is quarantined as
  ``local time skipped by the DST change in <zone>``;
- a time that exists twice (clocks fall back) is read as the first occurrence; an end time read
  that way before its start is read as the second occurrence.

**End without an end column.** Each sample lasts one period, ``day``, ``hour`` or ``minute``
(``--period``), else detected from the first batch: all start times at midnight (or dates only)
is ``day``, all on whole hours ``hour``, all on whole minutes ``minute``; anything else is refused
("give --column end=... or --period"). Later rows off that grid are quarantined (e.g. ``start is
not on a whole hour (hourly samples, no end column)``). A day sample lasts 24 hours from local
midnight, with the offset of that midnight, as for Fitbit daily files: the aggregation places a
sample by its own offset, so on 23- and 25-hour DST days all its steps still land on its date.

**Rows.** ``record`` is the CSV line number (the header is line 1) or the 1-based Parquet row
number; ``raw`` is the row as CSV text, or for Parquet a compact JSON object of the row's scalar
values. Counted as *skipped* (read but carrying no step data): blank lines, rows whose cells are
all empty, and rows whose steps cell is empty (Parquet: null), as for Google Fit days without step
data. Quarantined, with the reason: ``missing patient id``, ``unreadable timestamp``, the skipped
DST hour, off-grid starts, the shared rules of :func:`jobs.validation.quarantine_reason` (``steps is
not a number``, ``negative steps``, ``missing timestamp`` ...), ``sample in the future`` and
``repeats an earlier sample of this file``.

File-level problems (no such column, undetectable or ambiguous timestamps, no end and no period,
an unreadable file) raise :class:`lakehouse.errors.InputError` with one line, while the batches
are read: nothing of the file is committed.
"""

from __future__ import annotations

import csv
import io
import itertools
import re
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import BinaryIO

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from jobs.ingest.common import (
    ParseStats,
    PatientZones,
    SeenKeys,
    bounded_lines,
    column_names,
    content_free,
    csv_line,
    delimiter_of,
    open_input,
    split_samples,
)
from lakehouse.errors import InputError

ROLES = ("patient_id", "start", "end", "steps", "source")
PERIODS = ("day", "hour", "minute")
DEFAULT_SOURCE = "Imported file"
BATCH_RECORDS = 20_000
SAMPLE_VALUES = 1_000  # distinct timestamps of the first batch that decide the format
_CACHE_LIMIT = 50_000  # parsed timestamp texts kept between batches before starting afresh
_PARQUET_MAGIC = b"PAR1"
_SUFFIXES = (".csv", ".parquet", ".pq")
_UTC_ZONES = frozenset({"UTC", "Etc/UTC", "Etc/GMT", "GMT", "Z", "+00:00", "UCT", "Zulu"})
_WALL = pl.Datetime("us")
_EPOCH_SECONDS = (946_684_800, 4_102_444_800)  # 2000-01-01 .. 2100-01-01
_YEAR_FIRST = re.compile(r"^\d{4}[-/]")
_ON_GRID = {"day": "1d", "hour": "1h", "minute": "1m"}
_LENGTH = {"day": timedelta(days=1), "hour": timedelta(hours=1), "minute": timedelta(minutes=1)}
_OFF_GRID = {
    "day": "start has a time of day (daily samples, no end column)",
    "hour": "start is not on a whole hour (hourly samples, no end column)",
    "minute": "start is not on a whole minute (minute samples, no end column)",
}

Parse = Callable[[str], datetime | None]


def parse_columns(pairs: list[str]) -> dict[str, str]:
    """``["steps=StepTotal", ...]`` (the ``--column`` options) as ``{"steps": "StepTotal"}``.

    Raises:
        InputError: a pair is not ``ROLE=NAME``, names an unknown role, repeats a role, or maps
            one column to two roles.
    """
    columns: dict[str, str] = {}
    for pair in pairs:
        role, equals, name = pair.partition("=")
        role, name = role.strip(), name.strip()
        if not equals or not role or not name:
            raise InputError(f"--column {pair!r}: write ROLE=NAME, e.g. steps=StepTotal")
        if role not in ROLES:
            raise InputError(f"--column {pair!r}: unknown role {role!r} (use {', '.join(ROLES)})")
        if role in columns:
            raise InputError(f"--column {role}=... is given twice")
        columns[role] = name
    twice = [name for name, count in Counter(columns.values()).items() if count > 1]
    if twice:
        raise InputError(f"--column: column {twice[0]!r} is mapped to more than one role")
    return columns


@dataclass(frozen=True)
class GenericOptions:
    """How to read a generic file.

    Args:
        columns: role -> column name; a role not given is read from a column named like the
            role, ignoring case.
        timestamp_format: ``strptime`` format of text timestamps; None detects it.
        timezone: IANA zone of naive timestamps (validated by the caller).
        patient_id: the person, for a file without a patient column.
        source: the source of every sample, for a file without a source column (default
            ``Imported file``).
        period: ``day``, ``hour`` or ``minute``: the length of a sample when there is no end
            column; None detects it from the start times.
    """

    columns: dict[str, str] = field(default_factory=dict)
    timestamp_format: str | None = None
    timezone: str = "UTC"
    patient_id: str | None = None
    source: str | None = None
    period: str | None = None


def is_generic(path: Path) -> bool:
    """Whether ``path`` looks like a generic file: ``.csv``, ``.parquet``, ``.pq`` or Parquet bytes.

    For ``--format auto``, asked only after the device-specific detectors found nothing.
    """
    return path.suffix.lower() in _SUFFIXES or _is_parquet(path)


def _is_parquet(path: Path) -> bool:
    try:
        with open_input(path) as handle:
            return handle.read(4) == _PARQUET_MAGIC
    except OSError:
        return False


def read_samples(
    path: Path,
    options: GenericOptions,
    *,
    stats: ParseStats,
    seen: SeenKeys,
    now: datetime,
    batch_records: int = BATCH_RECORDS,
    zones: PatientZones | None = None,
) -> Iterator[tuple[pl.DataFrame, pl.DataFrame]]:
    """Stream a generic file as bronze/step_samples rows and rejected rows, batch by batch.

    Args:
        path: a CSV or Parquet file (told apart by its first bytes).
        options: columns, timestamp format, zone, patient, source and period.
        stats: counts of rows read and skipped, updated as batches are read.
        seen: keys accepted from earlier batches of the same file; repeats are rejected.
        now: the ingestion instant (UTC); samples that end after it are rejected.
        batch_records: rows per batch at most.
        zones: for a file with a patient column, each patient's zone for naive timestamps
            (instead of ``options.timezone``).

    Yields:
        As :func:`jobs.ingest.common.split_samples`: valid rows and rejected rows of one batch.

    Raises:
        InputError: (while iterating) the file or the options do not fit; see the module docs.
    """
    where = str(path)
    parquet = _is_parquet(path)
    reader = _Reader(options, where, now=now, seen=seen, unit="row" if parquet else "line")
    if parquet:
        batches = _parquet_batches(path, options, where, stats, batch_records)
    else:
        batches = _csv_batches(path, options, where, stats, batch_records)
    for raw in batches:
        if zones is None or "patient_id" not in raw.columns:
            yield reader.samples(raw, options.timezone)
            continue
        for zone, part in zones.split(raw, "patient_id"):
            yield reader.samples(part, zone)


# --- columns ---------------------------------------------------------------------------------


def _resolve(names: list[str], options: GenericOptions, where: str) -> dict[str, str]:
    """Role -> the file's column name, for the roles the file has.

    Errors name columns by their position, never by the names the file gives them (a header is
    file content: it may hold a record number or a name, docs/security.md); names the user gave
    with ``--column`` and the roles are named.
    """
    count = f"{len(names)} column{'' if len(names) == 1 else 's'}"
    unknown = sorted(set(options.columns) - set(ROLES))
    if unknown:
        raise InputError(f"unknown column role {unknown[0]!r} (use {', '.join(ROLES)})")

    def position(name: str) -> int:
        return names.index(name) + 1

    def find(wanted: str) -> str | None:
        if wanted in names:
            return wanted
        folded = [n for n in names if n.casefold() == wanted.casefold()]
        if len(folded) > 1:
            at = ", ".join(str(i + 1) for i, n in enumerate(names) if n in folded)
            raise InputError(
                f"{where}: columns {at} of the header are all named {wanted!r} (ignoring case); "
                "give --column with the exact name"
            )
        return folded[0] if folded else None

    found: dict[str, str] = {}
    for role in ROLES:
        wanted = options.columns.get(role)
        name = find(wanted or role)
        if wanted and name is None:
            raise InputError(f"{where}: no column {wanted!r} (for {role}) among the {count}")
        if name is not None:
            found[role] = name
    for role in ("start", "steps"):
        if role not in found:
            raise InputError(
                f"{where}: no {role} column (none of its {count} is named {role}); "
                f"give --column {role}=NAME"
            )
    if options.patient_id and "patient_id" in found:
        raise InputError(
            f"{where}: --patient-id does not apply, column {position(found['patient_id'])} "
            "names the patients"
        )
    if not options.patient_id and "patient_id" not in found:
        raise InputError(
            f"{where}: no patient column (none of its {count} is named patient_id); give "
            "--patient-id or --column patient_id=NAME"
        )
    if options.source and "source" in found:
        raise InputError(
            f"{where}: a source was given but column {position(found['source'])} names them"
        )
    if options.period and "end" in found:
        raise InputError(
            f"{where}: --period does not apply, column {position(found['end'])} ends samples"
        )
    shared = [n for n, count in Counter(found.values()).items() if count > 1]
    if shared:
        raise InputError(f"{where}: column {position(shared[0])} is given more than one role")
    return found


# --- raw batches: record, raw and one column per role the file has ---------------------------


def _csv_batches(
    path: Path, options: GenericOptions, where: str, stats: ParseStats, batch_records: int
) -> Iterator[pl.DataFrame]:
    try:
        with (
            open_input(path) as binary,
            io.TextIOWrapper(binary, encoding="utf-8-sig", newline="") as text,
        ):
            lines = bounded_lines(text)
            header = next(lines, "")
            if not header.strip():
                raise InputError(f"{where}: empty file (no header line)")
            delimiter = delimiter_of(header)
            reader = csv.reader(itertools.chain([header], lines), delimiter=delimiter)
            names = column_names(next(reader))
            at = {role: names.index(name) for role, name in _resolve(names, options, where).items()}
            steps_at = at["steps"]
            batch: dict[str, list[object]] = {k: [] for k in ("record", *at, "raw")}
            for row in reader:
                stats.records_read += 1
                steps = row[steps_at].strip() if steps_at < len(row) else ""
                if not steps:
                    stats.skipped += 1  # blank line, empty row or no step data (module docs)
                    continue
                batch["record"].append(reader.line_num)
                for role, index in at.items():
                    batch[role].append((row[index].strip() or None) if index < len(row) else None)
                batch["raw"].append(csv_line(row))
                if len(batch["record"]) >= batch_records:
                    yield _text_frame(batch)
                    batch = {k: [] for k in batch}
            if batch["record"]:
                yield _text_frame(batch)
    except (UnicodeDecodeError, csv.Error) as err:
        raise InputError(f"{where}: unreadable CSV ({content_free(err)})") from err
    except OSError as err:
        raise InputError(f"{where}: cannot read the file ({err.strerror or err})") from err


def _text_frame(batch: dict[str, list[object]]) -> pl.DataFrame:
    schema = {k: pl.Int64 if k == "record" else pl.String for k in batch}
    return pl.DataFrame(batch, schema=schema)


def _parquet_batches(
    path: Path, options: GenericOptions, where: str, stats: ParseStats, batch_records: int
) -> Iterator[pl.DataFrame]:
    try:
        with open_input(path) as handle:
            yield from _parquet_frames(handle, options, where, stats, batch_records)
    except (pa.ArrowException, OSError, UnicodeDecodeError) as err:
        raise InputError(f"{where}: unreadable Parquet ({content_free(err)})") from err


def _without_metadata(batch: pa.RecordBatch) -> pa.RecordBatch:
    """The batch without the file's key-value metadata (of the schema and of each column):
    ingestion reads none of it, and Polars panics on metadata that is not UTF-8."""
    schema = pa.schema([field.remove_metadata() for field in batch.schema])
    return pa.RecordBatch.from_arrays(batch.columns, schema=schema)


def _parquet_frames(
    handle: BinaryIO, options: GenericOptions, where: str, stats: ParseStats, batch_records: int
) -> Iterator[pl.DataFrame]:
    parquet = pq.ParquetFile(handle)
    names = list(parquet.schema_arrow.names)
    if not all(_is_utf8(name) for name in names):
        raise pa.ArrowInvalid("a column name is not UTF-8 text")
    roles = _resolve(names, options, where)
    first = 1
    for record_batch in parquet.iter_batches(batch_size=batch_records):
        # a damaged file can hold strings that are not UTF-8, which Polars would take and
        # then crash on: refused here instead (docs/reliability.md)
        record_batch.validate(full=True)
        frame = pl.from_arrow(_without_metadata(record_batch))
        assert isinstance(frame, pl.DataFrame)
        stats.records_read += frame.height
        frame = frame.with_columns(
            pl.int_range(first, first + frame.height, dtype=pl.Int64).alias("\0record")
        )
        first += frame.height
        steps = _blank_as_null(frame[roles["steps"]])
        stats.skipped += steps.null_count()  # no step data (module docs)
        frame = frame.filter(steps.is_not_null())
        yield frame.select(
            record=pl.col("\0record"),
            **{role: _normalised(frame[name], role) for role, name in roles.items()},
            raw=_json_rows(frame.drop("\0record")),
        )


def _is_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # a damaged name decoded with escapes
        return False
    return True


def _blank_as_null(values: pl.Series) -> pl.Series:
    if values.dtype == pl.String:
        values = values.str.strip_chars()
        return values.replace("", None)
    return values


def _normalised(values: pl.Series, role: str) -> pl.Series:
    """Text stripped (empty -> null), categories as text, integer times as text (epoch values)."""
    epoch = role in ("start", "end") and values.dtype.is_integer()
    if isinstance(values.dtype, pl.Categorical | pl.Enum) or epoch:
        values = values.cast(pl.String)
    return _blank_as_null(values)


def _json_rows(frame: pl.DataFrame) -> pl.Series:
    """Each row as a compact JSON object of its scalar values (timestamps as text)."""
    scalar = [
        pl.col(name).cast(pl.String) if dtype.is_temporal() else pl.col(name)
        for name, dtype in frame.schema.items()
        if dtype.is_numeric() or dtype.is_temporal() or dtype in (pl.String, pl.Boolean)
    ]
    if not scalar:
        return pl.Series("raw", ["{}"] * frame.height, dtype=pl.String)
    return frame.select(pl.struct(scalar).struct.json_encode().alias("raw")).to_series()


# --- timestamps ------------------------------------------------------------------------------


def _strptime(*formats: str) -> Parse:
    def parse(text: str) -> datetime | None:
        for form in formats:
            try:
                return datetime.strptime(text, form)
            except ValueError:
                continue
        return None

    return parse


_YEAR_FIRST_FORMS = _strptime(
    "%Y-%m-%d %H:%M:%S %z",
    "%Y-%m-%d %H:%M:%S.%f %z",
    "%Y/%m/%d %H:%M:%S",
    "%Y/%m/%d %H:%M",
    "%Y/%m/%d",
)


def _year_first(text: str) -> datetime | None:
    if not _YEAR_FIRST.match(text):
        return None
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        return _YEAR_FIRST_FORMS(text)


def _epoch(text: str) -> datetime | None:
    # "²" is a digit too, but no number; and no epoch has more than 13 digits
    if not (text.isascii() and text.isdigit()) or len(text) > 16:
        return None
    low, high = _EPOCH_SECONDS
    value = int(text)
    if low <= value < high:
        return datetime.fromtimestamp(value, UTC)
    if low * 1000 <= value < high * 1000:
        return datetime.fromtimestamp(value / 1000, UTC)
    return None


def _slashed(parse: Parse) -> Parse:
    def guarded(text: str) -> datetime | None:
        return parse(text) if "/" in text or "." in text else None

    return guarded


_MONTH_FIRST = "month/day/year"
_DAY_FIRST = "day/month/year"
_FAMILIES: tuple[tuple[str, Parse], ...] = (
    ("ISO 8601", _year_first),
    ("epoch", _epoch),
    ("day-month name-year", _strptime("%d-%b-%Y %H:%M", "%d-%b-%Y %H:%M:%S", "%d-%b-%Y")),
    (
        _MONTH_FIRST,
        _slashed(
            _strptime(
                "%m/%d/%Y %I:%M:%S %p",
                "%m/%d/%Y %I:%M %p",
                "%m/%d/%Y %H:%M:%S",
                "%m/%d/%Y %H:%M",
                "%m/%d/%Y",
            )
        ),
    ),
    (
        _DAY_FIRST,
        _slashed(
            _strptime(
                "%d/%m/%Y %I:%M:%S %p",
                "%d/%m/%Y %I:%M %p",
                "%d/%m/%Y %H:%M:%S",
                "%d/%m/%Y %H:%M",
                "%d/%m/%Y",
                "%d.%m.%Y %H:%M:%S",
                "%d.%m.%Y %H:%M",
                "%d.%m.%Y",
            )
        ),
    ),
)

_PARSED = pl.Schema(
    {"text": pl.String(), "wall": _WALL, "offset": pl.Int16(), "instant": pl.Boolean()}
)


def _split(moment: datetime | None) -> tuple[datetime | None, int | None, bool]:
    """(wall clock as written, its own UTC offset in minutes, whether it is a UTC instant)."""
    if moment is None:
        return None, None, False
    offset = moment.utcoffset()
    if offset is None:
        return moment, None, False
    if not offset:
        return moment.replace(tzinfo=None), None, True
    return moment.replace(tzinfo=None), int(offset.total_seconds() // 60), False


class _TextTimes:
    """Timestamp text -> wall clock, own offset, UTC instant; one format per file.

    Files repeat the same timestamps for every patient, so each distinct text is parsed once and
    kept (up to ``_CACHE_LIMIT`` texts, then the cache starts afresh to bound memory).
    """

    def __init__(self, timestamp_format: str | None, where: str, unit: str = "line") -> None:
        self.timestamp_format = timestamp_format
        self.where = where
        self.unit = unit  # what a record number counts: CSV lines or Parquet rows
        self.parse: Parse | None = None
        self._known = pl.DataFrame(schema=_PARSED)

    def detect(self, texts: list[pl.Series], records: pl.Series | None = None) -> None:
        """Choose the format from the sampled values of the first batch that has some.

        Errors name the record of a value (``records``: each row's, for every series of
        ``texts``), never the value: a timestamp column may hold anything.
        """
        values = pl.concat(texts).rename("text")
        if records is None:
            lines = pl.Series("record", [None] * values.len(), dtype=pl.Int64)
        else:
            lines = pl.concat([records] * len(texts)).rename("record")
        distinct = (
            pl.DataFrame([values, lines])
            .drop_nulls("text")
            .unique("text", keep="first", maintain_order=True)
        )
        if distinct.is_empty():
            return
        if distinct.height > SAMPLE_VALUES:
            distinct = distinct.gather_every(distinct.height // SAMPLE_VALUES).head(SAMPLE_VALUES)
        sample = distinct["text"].to_list()
        at = dict(zip(sample, distinct["record"].to_list(), strict=True))

        def where(text: str) -> str:
            return f" (e.g. {self.unit} {at[text]})" if at.get(text) is not None else ""

        if self.timestamp_format is not None:
            parse = _strptime(self.timestamp_format)
            unread = [text for text in sample if parse(text) is None]
            if 2 * len(unread) >= len(sample):
                raise InputError(
                    f"{self.where}: {len(unread):,} of {len(sample):,} sampled timestamps do not "
                    f"match --timestamp-format {self.timestamp_format!r}{where(unread[0])}"
                )
            self.parse = parse
            return
        scores = {name: sum(p(text) is not None for text in sample) for name, p in _FAMILIES}
        best = max(scores.values())
        if 2 * best <= len(sample):
            unread_text = next(
                (t for t in sample if all(p(t) is None for _, p in _FAMILIES)), sample[0]
            )
            raise InputError(
                f"{self.where}: cannot tell the format of the timestamps{where(unread_text)}; "
                "give --timestamp-format (e.g. '%Y-%m-%d %H:%M:%S')"
            )
        if scores[_MONTH_FIRST] == scores[_DAY_FIRST] == best:
            raise InputError(
                f"{self.where}: the timestamps read both month first and day first"
                f"{where(sample[0])}; give --timestamp-format ('%m/%d/%Y %H:%M' or "
                "'%d/%m/%Y %H:%M' and the like)"
            )
        self.parse = next(p for name, p in _FAMILIES if scores[name] == best)

    def frame(self, texts: pl.Series) -> pl.DataFrame:
        """``text, wall, offset, instant`` per value of ``texts`` (nulls where unreadable)."""
        if self.parse is None:
            self.detect([texts])
        parse = self.parse
        values = texts.drop_nulls().unique()
        if parse is not None and values.len():
            new = values.filter(~values.is_in(self._known["text"].implode()))
            if new.len():
                if self._known.height + new.len() > _CACHE_LIMIT:
                    # Start afresh, and parse every text of this batch: the join below must find
                    # them all, including those only the dropped cache knew.
                    self._known = pl.DataFrame(schema=_PARSED)
                    new = values
                parts = [_split(parse(text)) for text in new.to_list()]
                added = pl.DataFrame(
                    {
                        "text": new,
                        "wall": [p[0] for p in parts],
                        "offset": [p[1] for p in parts],
                        "instant": [p[2] for p in parts],
                    },
                    schema=_PARSED,
                )
                self._known = pl.concat([self._known, added])
        return (
            texts.rename("text")
            .to_frame()
            .join(self._known, on="text", how="left", maintain_order="left")
        )


def _typed_times(values: pl.Series, where: str, column: str) -> pl.DataFrame:
    """``wall, offset, instant`` of a Parquet timestamp or date column."""
    dtype = values.dtype
    none = pl.Series([None] * values.len(), dtype=pl.Int16)
    falses = pl.zeros(values.len(), dtype=pl.Boolean, eager=True)
    if isinstance(dtype, pl.Datetime) and dtype.time_zone is not None:
        utc = values.dt.convert_time_zone("UTC").dt.replace_time_zone(None).cast(_WALL)
        if dtype.time_zone in _UTC_ZONES:
            return pl.DataFrame({"wall": utc, "offset": none, "instant": values.is_not_null()})
        local = values.dt.replace_time_zone(None).cast(_WALL)  # wall clock in the column's zone
        offset = (local - utc).dt.total_minutes().cast(pl.Int16)
        return pl.DataFrame({"wall": local, "offset": offset, "instant": falses})
    if isinstance(dtype, pl.Datetime) or dtype == pl.Date:
        return pl.DataFrame({"wall": values.cast(_WALL), "offset": none, "instant": falses})
    raise InputError(f"{where}: column {column!r} ({dtype}) holds no timestamps")


def _local(wall: pl.Expr, zone: str, ambiguous: str = "earliest") -> pl.Expr:
    """A naive local wall time in ``zone`` as UTC; null when the DST change skipped it."""
    return wall.dt.replace_time_zone(
        zone,
        ambiguous="latest" if ambiguous == "latest" else "earliest",
        non_existent="null",
    ).dt.convert_time_zone("UTC")


def _placed(prefix: str, zone: str, ambiguous: str = "earliest") -> pl.Expr:
    """The UTC instant of a start or end column (``<prefix>_wall/_offset/_instant``)."""
    wall, offset = pl.col(f"{prefix}_wall"), pl.col(f"{prefix}_offset")
    return (
        pl.when(pl.col(f"{prefix}_instant"))
        .then(wall.dt.replace_time_zone("UTC"))
        .when(offset.is_not_null())
        .then((wall - pl.duration(minutes=offset)).dt.replace_time_zone("UTC"))
        .otherwise(_local(wall, zone, ambiguous))
    )


def _is_local(prefix: str) -> pl.Expr:
    return ~pl.col(f"{prefix}_instant") & pl.col(f"{prefix}_offset").is_null()


def _skipped(prefix: str, zone: str) -> pl.Expr:
    wall = pl.col(f"{prefix}_wall")
    return wall.is_not_null() & _is_local(prefix) & _local(wall, zone).is_null()


# --- rows ------------------------------------------------------------------------------------


class _Reader:
    """Turns raw batches of one file into samples; keeps the per-file format and period.

    The zone of naive timestamps is given per batch (each patient may have their own); parsed
    texts (wall clock and any own offset) do not depend on it, so one cache serves every zone.
    """

    def __init__(
        self,
        options: GenericOptions,
        where: str,
        *,
        now: datetime,
        seen: SeenKeys,
        unit: str = "line",
    ) -> None:
        if options.period is not None and options.period not in PERIODS:
            raise InputError(f"unknown period {options.period!r} (use {', '.join(PERIODS)})")
        try:
            pl.Series([datetime(2020, 1, 1)]).dt.replace_time_zone(options.timezone)
        except pl.exceptions.PolarsError as err:
            raise InputError(f"unknown time zone {options.timezone!r} (use an IANA name)") from err
        self.options = options
        self.where = where
        self.now = now
        self.seen = seen
        self.period = options.period
        self.unit = unit
        self.texts = _TextTimes(options.timestamp_format, where, unit)

    def _times(self, values: pl.Series, prefix: str) -> pl.DataFrame:
        if values.dtype == pl.String:
            times = self.texts.frame(values).drop("text")
        else:
            times = _typed_times(values, self.where, prefix)
        return times.with_columns(given=values.is_not_null()).select(
            pl.col("wall").alias(f"{prefix}_wall"),
            pl.col("offset").alias(f"{prefix}_offset"),
            pl.col("instant").fill_null(False).alias(f"{prefix}_instant"),
            (pl.col("given") & pl.col("wall").is_null()).alias(f"{prefix}_unreadable"),
        )

    def _detect_period(self, walls: pl.Series, records: pl.Series) -> str | None:
        given = walls.is_not_null()
        walls, records = walls.filter(given), records.filter(given)
        if walls.is_empty():
            return None
        for period, every in _ON_GRID.items():
            if (walls == walls.dt.truncate(every)).all():
                return period
        odd = records.filter(walls != walls.dt.truncate("1m"))[0]
        raise InputError(
            f"{self.where}: no end column and start times are not all on whole minutes "
            f"(e.g. {self.unit} {odd}); give --column end=NAME or --period day|hour|minute"
        )

    def samples(self, raw: pl.DataFrame, zone: str) -> tuple[pl.DataFrame, pl.DataFrame]:
        """Split one raw batch, naive times in ``zone``, into step_samples and rejected rows."""
        has_end = "end" in raw.columns
        texts = [raw[c] for c in ("start", "end") if c in raw.columns]
        texts = [t for t in texts if t.dtype == pl.String]
        if self.texts.parse is None and texts:
            self.texts.detect(texts, raw["record"])
        parts = [raw, self._times(raw["start"], "start")]
        if has_end:
            parts.append(self._times(raw["end"], "end"))
        frame = pl.concat(parts, how="horizontal")
        if not has_end and self.period is None:
            self.period = self._detect_period(frame["start_wall"], frame["record"])
        frame = frame.with_columns(self._extent(has_end, zone)).with_columns(
            utc_offset_minutes=pl.coalesce(
                pl.col("start_offset"),
                (
                    pl.col("start_ts").dt.convert_time_zone(zone).dt.replace_time_zone(None)
                    - pl.col("start_ts").dt.replace_time_zone(None)
                ).dt.total_minutes(),
            ).cast(pl.Int16),
            patient_id=self._patient(raw),
            steps=_steps(raw["steps"]),
            source=self._source(raw),
        )
        unreadable = pl.col("start_unreadable")
        skipped = pl.col("start_skipped")
        if has_end:
            unreadable = unreadable | pl.col("end_unreadable")
            skipped = skipped | pl.col("end_skipped")
        checks = [
            (pl.col("patient_id").is_null(), "missing patient id"),
            (unreadable, "unreadable timestamp"),
            (skipped, f"local time skipped by the DST change in {zone}"),
        ]
        if not has_end and self.period is not None:
            wall = pl.col("start_wall")
            checks.append((wall != wall.dt.truncate(_ON_GRID[self.period]), _OFF_GRID[self.period]))
        first = pl.coalesce([pl.when(check).then(pl.lit(reason)) for check, reason in checks])
        last = pl.when(pl.col("end_ts") > self.now).then(pl.lit("sample in the future"))
        return split_samples(frame, first=first, last=last, seen=self.seen)

    def _extent(self, has_end: bool, zone: str) -> list[pl.Expr]:
        """``start_ts``, ``end_ts`` (UTC) and ``start_skipped`` expressions."""
        start = _placed("start", zone)
        if has_end:
            early, late = _placed("end", zone), _placed("end", zone, "latest")
            return [
                start.alias("start_ts"),
                pl.when(early < start).then(late).otherwise(early).alias("end_ts"),
                _skipped("start", zone).alias("start_skipped"),
                _skipped("end", zone).alias("end_skipped"),
            ]
        if self.period is None:  # no readable start yet: every row is rejected for its start
            return [
                start.alias("start_ts"),
                pl.lit(None, dtype=pl.Datetime("us", "UTC")).alias("end_ts"),
                _skipped("start", zone).alias("start_skipped"),
            ]
        if self.period != "day":
            return [
                start.alias("start_ts"),
                (start + _LENGTH[self.period]).alias("end_ts"),
                _skipped("start", zone).alias("start_skipped"),
            ]
        # A day sample is 24 real hours from local midnight with the offset of that midnight, as
        # for Fitbit daily: the aggregation places a sample by its own offset, so the day's steps
        # all land on that local date, also on 23- and 25-hour days. Where a DST change skips
        # midnight itself (some zones change at 00:00), the day starts an hour on.
        wall = pl.col("start_wall")
        midnight = pl.coalesce(_local(wall, zone), _local(wall + timedelta(hours=1), zone))
        start = pl.when(_is_local("start")).then(midnight).otherwise(start)
        return [
            start.alias("start_ts"),
            (start + _LENGTH["day"]).alias("end_ts"),
            pl.lit(False).alias("start_skipped"),
        ]

    def _patient(self, raw: pl.DataFrame) -> pl.Expr:
        if self.options.patient_id:
            return pl.lit(self.options.patient_id, dtype=pl.String)
        return pl.lit(_as_text(raw["patient_id"], self.where, "patient_id"))

    def _source(self, raw: pl.DataFrame) -> pl.Expr:
        fallback = pl.lit(self.options.source or DEFAULT_SOURCE, dtype=pl.String)
        if "source" not in raw.columns:
            return fallback
        return pl.coalesce(pl.lit(_as_text(raw["source"], self.where, "source")), fallback)


def _as_text(values: pl.Series, where: str, role: str) -> pl.Series:
    """Text ids: whole floats without ``.0`` (Parquet written from pandas turns ints to floats)."""
    dtype = values.dtype
    if dtype == pl.String:
        return values
    if dtype.is_float():
        number = pl.lit(values)
        return pl.select(
            pl.when(number.is_finite() & (number == number.round()))
            .then(number.cast(pl.Int64, strict=False).cast(pl.String))
            .when(number.is_finite())
            .then(number.cast(pl.String))
            .alias("text")
        ).to_series()
    if dtype.is_numeric() or dtype == pl.Boolean:
        return values.cast(pl.String)
    raise InputError(f"{where}: the {role} column ({dtype}) does not hold text")


def _steps(values: pl.Series) -> pl.Series:
    if values.dtype.is_numeric():
        return values.cast(pl.Float64)
    if values.dtype == pl.String:
        return values.cast(pl.Float64, strict=False)
    return pl.Series(values.name, [None] * values.len(), dtype=pl.Float64)
