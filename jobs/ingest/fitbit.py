"""Reader of Fitbit files (Fitabase CSVs, personal ``steps-*.json``) and Google Fit daily metrics.

Forms, told apart by their header (:func:`detect_kind`):

- ``hourlySteps_merged.csv`` (``Id, ActivityHour, StepTotal``): one sample per row spanning
  [hour, hour + 1 h), source ``Fitbit``;
- ``minuteStepsNarrow_merged.csv`` (``Id, ActivityMinute, Steps``): [minute, minute + 1 min),
  source ``Fitbit``;
- ``dailyActivity_merged.csv`` (``Id, ActivityDate, TotalSteps, ...``): one sample per row
  spanning the local day [00:00, 24:00), source ``Fitbit (daily)``;
- the personal Fitbit export's ``steps-YYYY-MM-DD.json`` (``[{"dateTime": "04/22/19 00:01:00",
  "value": "12"}, ...]``, one file per month of minutes; needs ``--patient-id``): one sample per
  entry spanning [dateTime, + 1 min), source ``Fitbit``. These intraday times are UTC instants,
  not local times: ``--timezone`` (default the patient's zone) only gives each sample its offset,
  so no hour is skipped or repeated on DST days. The record number is the entry's position;
- Google Fit ``Daily activity metrics.csv`` (``Date, Step count, ...``; needs ``--patient-id``):
  one sample per local day, source ``Google Fit``. A row whose ``Step count`` is empty is a day
  on which Google Fit recorded other metrics but no steps: it is skipped and counted (like the
  non-step records of Apple Health), not quarantined. A non-empty value that is not a number is
  quarantined with ``steps is not a number``.

Fitabase names the patient in the ``Id`` column (kept as text). Timestamps are naive local times,
``3/12/2016 1:00:00 AM`` or the Excel re-saved ``4/12/2016 0:00``, in CRLF or LF files. The
``--timezone`` (default UTC) gives each sample its UTC offset through :mod:`zoneinfo`, computed
once per distinct timestamp of the file (:class:`LocalTimes`), so DST changes land on the right
hour.

- A wall-clock time that does not exist (the hour skipped when clocks spring forward) is
  quarantined as ``local time skipped by the DST change in <zone>``: that day has 23 hours, and
  placing the row on either neighbour would collide with the neighbour's own row. Fitabase
  writes 24 hourly rows for that day (the shared month does, for 3/13/2016 2:00 AM), so with a
  US zone those rows land in quarantine with their raw text, not in the daily totals.
- A time that exists twice (clocks fall back) is read with ``fold=0``, the first occurrence; a
  file listing the repeated hour twice has its second row quarantined as a repeat.
- A day sample is 24 real hours from local midnight, with the offset of that midnight: the
  aggregation places a sample by its own offset, so the whole day's steps land on that local
  date even on 23- and 25-hour days.

Known limit: ingest one granularity per person. The daily file and the hourly (or minute) file
of the same person describe the same steps under two sources (``Fitbit (daily)`` and ``Fitbit``),
and nothing is quarantined for it. If both are ingested for the same patient-day, the
aggregation's per-hour best-source rule spreads the day sample evenly over its 24 hours and keeps,
for each local hour, the larger of the two sources: a max per hour, NOT a sum, which is generally
more than the true total (the sum over hours of max(hourly, daily / 24) is at least the daily
total). Hourly and minute files share the source ``Fitbit`` with different sample keys, so both
would be kept and summed within that source: a real double count. Ingest only one of them.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Literal
from zoneinfo import ZoneInfo

import polars as pl

from jobs.ingest.common import (
    ParseStats,
    SeenKeys,
    bounded_lines,
    column_names,
    content_free,
    csv_line,
    header_names,
    open_input,
    split_samples,
)
from lakehouse.errors import InputError

Kind = Literal["fitbit-hourly", "fitbit-minute", "fitbit-daily", "fitbit-json", "google-fit"]

BATCH_RECORDS = 50_000
# A personal export's steps-*.json holds a month of minutes (about 3 MB) and is read whole.
MAX_JSON_BYTES = 256 * 1024 * 1024
_FITABASE_TIMES = ("%m/%d/%Y %I:%M:%S %p", "%m/%d/%Y %H:%M", "%m/%d/%Y %H:%M:%S")
_DATES = ("%m/%d/%Y", *_FITABASE_TIMES)
_UTC = pl.Datetime("us", "UTC")
_RAW = ("patient", "time", "steps")  # text columns of a raw batch, besides record and raw


@dataclass(frozen=True)
class Layout:
    """Where one form keeps its values.

    Args:
        patient: the patient column, None when the patient comes from ``--patient-id``.
        time: the local start time (or date) column.
        steps: the step count column.
        formats: ``strptime`` formats of the time column, tried in order.
        length: the span of one sample.
        source: the ``source`` of its samples.
        utc: the times are UTC instants (their offset comes from the zone), not local times.
    """

    patient: str | None
    time: str
    steps: str
    formats: tuple[str, ...]
    length: timedelta
    source: str
    utc: bool = False


LAYOUTS: dict[Kind, Layout] = {
    "fitbit-hourly": Layout(
        "Id", "ActivityHour", "StepTotal", _FITABASE_TIMES, timedelta(hours=1), "Fitbit"
    ),
    "fitbit-minute": Layout(
        "Id", "ActivityMinute", "Steps", _FITABASE_TIMES, timedelta(minutes=1), "Fitbit"
    ),
    "fitbit-daily": Layout(
        "Id", "ActivityDate", "TotalSteps", _DATES, timedelta(days=1), "Fitbit (daily)"
    ),
    "fitbit-json": Layout(
        None, "dateTime", "value", ("%m/%d/%y %H:%M:%S",), timedelta(minutes=1), "Fitbit", True
    ),
    "google-fit": Layout(
        None, "Date", "Step count", ("%Y-%m-%d",), timedelta(days=1), "Google Fit"
    ),
}


def detect_kind(path: Path) -> Kind | None:
    """The form of ``path`` from its header line (or JSON start), None when it is none of them."""
    try:
        with open_input(path) as handle:
            head = handle.read(1024).lstrip()
    except OSError:
        return None
    if head.startswith(b"[") and b'"dateTime"' in head:
        return "fitbit-json"
    names = set(header_names(path) or [])
    for kind, layout in LAYOUTS.items():
        wanted = {layout.time, layout.steps} | ({layout.patient} if layout.patient else set())
        if wanted <= names:
            return kind
    return None


@contextmanager
def raw_batches(
    path: Path, kind: Kind, stats: ParseStats, *, batch_records: int = BATCH_RECORDS
) -> Iterator[Iterator[pl.DataFrame]]:
    """Open a file and yield an iterator of raw batches.

    Each batch has ``record`` (the CSV line number), ``patient``, ``time``, ``steps`` (text as
    written, null when absent) and ``raw`` (the row as CSV text, as written unless it was quoted
    needlessly).

    Raises:
        InputError: (also while iterating) the file is not of this form or cannot be decoded.
    """
    layout = LAYOUTS[kind]
    where = str(path)

    def rows(text: io.TextIOWrapper) -> Iterator[pl.DataFrame]:
        reader = csv.reader(bounded_lines(text))
        names = column_names(next(reader, []))
        wanted = (*([layout.patient] if layout.patient else []), layout.time, layout.steps)
        missing = [c for c in wanted if c not in names]
        if missing:
            raise InputError(f"{where}: not a {kind} file (no {', '.join(missing)} column)")
        columns = [names.index(c) for c in (layout.time, layout.steps)]
        patient_at = names.index(layout.patient) if layout.patient else None
        batch: dict[str, list[object]] = {k: [] for k in ("record", *_RAW, "raw")}
        for row in reader:
            if not row:
                continue
            stats.records_read += 1
            values = [row[i].strip() if i < len(row) else None for i in columns]
            if kind == "google-fit" and not values[1]:
                stats.skipped += 1  # a day without step data (see the module docstring)
                continue
            patient = None
            if patient_at is not None and patient_at < len(row):
                patient = row[patient_at].strip() or None
            batch["record"].append(reader.line_num)
            batch["patient"].append(patient)
            batch["time"].append(values[0])
            batch["steps"].append(values[1])
            batch["raw"].append(csv_line(row))
            if len(batch["record"]) >= batch_records:
                yield _frame(batch)
                batch = {k: [] for k in batch}
        if batch["record"]:
            yield _frame(batch)

    def guarded(batches: Iterator[pl.DataFrame]) -> Iterator[pl.DataFrame]:
        try:
            yield from batches
        except (UnicodeDecodeError, csv.Error) as err:
            raise InputError(f"{where}: unreadable CSV ({content_free(err)})") from err

    if kind == "fitbit-json":
        yield _json_batches(path, stats, batch_records)
        return
    with (
        open_input(path) as raw,
        io.TextIOWrapper(raw, encoding="utf-8-sig", newline="") as text,
    ):
        yield guarded(rows(text))


def _json_batches(path: Path, stats: ParseStats, batch_records: int) -> Iterator[pl.DataFrame]:
    """A personal export's ``steps-YYYY-MM-DD.json``: ``[{"dateTime": ..., "value": ...}, ...]``.

    The record number is the 1-based position in the list. Fitbit writes one file per month of
    minutes (about 3 MB), so the file is read whole.
    """
    with open_input(path) as handle:
        # read whole: a size cap keeps a hostile file from taking the machine's memory
        size = os.fstat(handle.fileno()).st_size
        if size > MAX_JSON_BYTES:
            raise InputError(
                f"{path}: {size:,} bytes is too large for a Fitbit steps file "
                f"(at most {MAX_JSON_BYTES:,}; Fitbit writes about 3 MB a month)"
            )
        content = handle.read(MAX_JSON_BYTES + 1)
    try:
        entries = json.loads(content.decode("utf-8-sig"))
    except ValueError as err:  # not UTF-8, not JSON, or a number too long to convert
        raise InputError(f"{path}: unreadable JSON ({content_free(err)})") from err
    except RecursionError as err:
        raise InputError(f"{path}: unreadable JSON (nested too deeply)") from err
    if not isinstance(entries, list):
        raise InputError(f"{path}: not a Fitbit steps file (expected a list of entries)")
    batch: dict[str, list[object]] = {k: [] for k in ("record", *_RAW, "raw")}
    for number, entry in enumerate(entries, start=1):
        stats.records_read += 1
        fields = entry if isinstance(entry, dict) else {}
        batch["record"].append(number)
        batch["patient"].append(None)
        batch["time"].append(_json_text(fields.get("dateTime")))
        batch["steps"].append(_json_text(fields.get("value")))
        raw = json.dumps(entry, separators=(",", ":"), ensure_ascii=False)
        batch["raw"].append(_valid_text(raw))
        if len(batch["record"]) >= batch_records:
            yield _frame(batch)
            batch = {k: [] for k in batch}
    if batch["record"]:
        yield _frame(batch)


def _json_text(value: object) -> str | None:
    """A JSON value as the text a CSV cell would hold (None for null or a nested value)."""
    if value is None or isinstance(value, dict | list | bool):
        return None
    return _valid_text(str(value).strip())


def _valid_text(text: str) -> str:
    """``text`` with any lone surrogate (JSON can escape one, UTF-8 cannot hold it) written
    out as its escape, so that the row is quarantined with it rather than failing the file."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _frame(batch: dict[str, list[object]]) -> pl.DataFrame:
    return pl.DataFrame(
        batch, schema={"record": pl.Int64, **dict.fromkeys(_RAW, pl.String), "raw": pl.String}
    )


def _parse_local(text: str, formats: tuple[str, ...]) -> datetime | None:
    for form in formats:
        try:
            return datetime.strptime(text, form)
        except ValueError:
            continue
    return None


_TIMES_SCHEMA = pl.Schema(
    {
        "time": pl.String(),
        "start_ts": _UTC,
        "end_ts": _UTC,
        "utc_offset_minutes": pl.Int16(),
        "skipped": pl.Boolean(),
    }
)


class LocalTimes:
    """Local time text -> UTC start and end, UTC offset in minutes, skipped by DST; per file.

    A file repeats the same few thousand timestamps for every patient, so each distinct text is
    parsed and placed in the zone once, and later batches only join against the known ones.
    """

    def __init__(self, layout: Layout, timezone: str) -> None:
        self.layout = layout
        self.zone = ZoneInfo(timezone)
        self._known = pl.DataFrame(schema=_TIMES_SCHEMA)

    def _place(self, text: str) -> tuple[datetime | None, int | None, bool]:
        local = _parse_local(text, self.layout.formats)
        if local is None:
            return None, None, False
        if self.layout.utc:
            instant = local.replace(tzinfo=UTC)
            offset = instant.astimezone(self.zone).utcoffset()
            return instant, int(offset.total_seconds() // 60) if offset is not None else None, False
        aware = local.replace(tzinfo=self.zone)
        start = aware.astimezone(UTC)
        offset = aware.utcoffset()
        # A wall-clock time skipped when clocks spring forward does not survive the round trip.
        skipped = start.astimezone(self.zone).replace(tzinfo=None) != local
        minutes = int(offset.total_seconds() // 60) if offset is not None else None
        return start, minutes, skipped

    def frame(self, texts: pl.Series) -> pl.DataFrame:
        """``time, start_ts, end_ts, utc_offset_minutes, skipped`` for the texts seen so far.

        Args:
            texts: the time texts of a batch; the ones not seen before are placed now.
        """
        new = (
            texts.drop_nulls()
            .unique()
            .filter(~texts.drop_nulls().unique().is_in(self._known["time"].implode()))
        )
        if new.len():
            placed = [self._place(text) for text in new.to_list()]
            added = pl.DataFrame(
                {
                    "time": new,
                    "start_ts": [p[0] for p in placed],
                    "utc_offset_minutes": [p[1] for p in placed],
                    "skipped": [p[2] for p in placed],
                },
                schema={k: v for k, v in _TIMES_SCHEMA.items() if k != "end_ts"},
            ).with_columns(end_ts=pl.col("start_ts") + self.layout.length)
            self._known = pl.concat([self._known, added.select(_TIMES_SCHEMA.names())])
        return self._known


def to_samples(
    raw: pl.DataFrame,
    kind: Kind,
    *,
    patient_id: str | None,
    timezone: str,
    now: datetime,
    seen: SeenKeys | None = None,
    times: LocalTimes | None = None,
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Split a raw batch into bronze/step_samples rows and rejected rows.

    Args:
        raw: a batch from :func:`raw_batches`.
        kind: its form.
        patient_id: the person (forms without a patient column), else None.
        timezone: IANA zone of the naive timestamps.
        now: the ingestion instant (UTC); samples that end after it are rejected.
        seen: keys accepted from earlier batches of the same file; repeats are rejected.
        times: the placed timestamps of earlier batches of the same file (same kind and zone).

    Returns:
        As :func:`jobs.ingest.common.split_samples`, the rejected rows with ``patient_id`` too.
    """
    layout = LAYOUTS[kind]
    times = times or LocalTimes(layout, timezone)
    placed = times.frame(raw["time"])
    patient = pl.lit(patient_id, dtype=pl.String) if patient_id else pl.col("patient")
    frame = raw.join(placed, on="time", how="left").with_columns(
        patient_id=patient,
        steps=pl.col("steps").cast(pl.Float64, strict=False),
        source=pl.lit(layout.source, dtype=pl.String),
    )
    own = (
        pl.when(pl.col("patient_id").is_null())
        .then(pl.lit("missing patient id"))
        .when(pl.col("time").is_not_null() & pl.col("start_ts").is_null())
        .then(pl.lit("unreadable timestamp"))
        .when(pl.col("skipped").fill_null(False))
        .then(pl.lit(f"local time skipped by the DST change in {timezone}"))
    )
    later = pl.when(pl.col("end_ts") > now).then(pl.lit("sample in the future"))
    none = pl.lit(None, dtype=pl.String)
    return split_samples(frame, first=own.otherwise(none), last=later.otherwise(none), seen=seen)
