"""Generic CSV / Parquet step samples: columns, timestamp forms, offsets, DST, periods, errors."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jobs import aggregate
from jobs.ingest import fitbit
from jobs.ingest.common import ParseStats, SeenKeys
from jobs.ingest.generic import (
    DEFAULT_SOURCE,
    GenericOptions,
    is_generic,
    parse_columns,
    read_samples,
)
from jobs.sources import source_label
from lakehouse.catalog import DAILY_STEPS, STEP_SAMPLES
from lakehouse.errors import InputError
from lakehouse.storage import Lake

NOW = datetime(2024, 1, 1, tzinfo=UTC)
BERLIN = "Europe/Berlin"


def _write(path: Path, lines: list[str], *, newline: str = "\n", bom: bool = False) -> Path:
    path.write_bytes(newline.join([*lines, ""]).encode("utf-8-sig" if bom else "utf-8"))
    return path


def _read(
    path: Path, batch_records: int = 50_000, **options: object
) -> tuple[pl.DataFrame, pl.DataFrame, ParseStats]:
    """All valid and rejected rows of a file, checking the counting invariant."""
    stats = ParseStats()
    valid, rejected = [], []
    for good, bad in read_samples(
        path,
        GenericOptions(**options),  # type: ignore[arg-type]
        stats=stats,
        seen=SeenKeys(),
        now=NOW,
        batch_records=batch_records,
    ):
        valid.append(good)
        rejected.append(bad)
    accepted = pl.concat(valid) if valid else pl.DataFrame(schema=pl.Schema(STEP_SAMPLES.schema))
    quarantined = (
        pl.concat(rejected)
        if rejected
        else pl.DataFrame(schema={"record": pl.Int64, "reason": pl.String, "raw": pl.String})
    )
    assert stats.records_read == accepted.height + quarantined.height + stats.skipped
    return accepted.sort("start_ts"), quarantined.sort("record"), stats


def _daily(lake: Lake, accepted: pl.DataFrame) -> dict[tuple[str, date], float]:
    """Through bronze and jobs.aggregate, as ingest will do once wired."""
    lake.append(STEP_SAMPLES, accepted)
    aggregate.run(lake)
    rows = lake.read(DAILY_STEPS).select("patient_id", "date", "steps").iter_rows()
    return {(p, d): s for p, d, s in rows}


def _utc(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)  # type: ignore[misc]


# --- golden daily totals ------------------------------------------------------------------


def test_samples_with_end_column_give_hand_computed_daily_totals(
    lake: Lake, tmp_path: Path
) -> None:
    path = _write(
        tmp_path / "steps.csv",
        [
            "Patient_ID,Start,End,Steps,Source",
            "A,2021-06-01 08:00,2021-06-01 08:30,1000,Phone",
            "A,2021-06-01 23:30,2021-06-02 00:30,600,Phone",  # 300 on each day (Berlin time)
            "A,2021-06-02 10:00,2021-06-02 11:00,2000,Phone",
            "A,2021-06-02T12:00:00Z,2021-06-02T12:30:00Z,400,Phone",  # 14:00 in Berlin
            # its own offset: 23:30-00:30 at UTC-4, 400 on each side of that midnight
            "A,2021-06-02T23:30:00-04:00,2021-06-03T00:30:00-04:00,800,Phone",
            "B,2021-06-02 09:00,2021-06-02 09:10,50,",  # empty source: the default
        ],
    )
    accepted, quarantined, stats = _read(path, timezone=BERLIN)
    assert quarantined.is_empty() and stats.records_read == 6 and stats.skipped == 0
    assert accepted.filter(pl.col("patient_id") == "A")["utc_offset_minutes"].to_list() == [
        120,
        120,
        120,
        120,
        -240,
    ]
    assert accepted.filter(pl.col("patient_id") == "B")["source"].item() == DEFAULT_SOURCE
    assert _daily(lake, accepted) == pytest.approx(
        {
            ("A", date(2021, 6, 1)): 1000 + 300,
            ("A", date(2021, 6, 2)): 300 + 2000 + 400 + 400,
            ("A", date(2021, 6, 3)): 400,
            ("B", date(2021, 6, 2)): 50,
        }
    )


def test_daily_rows_on_23_and_25_hour_days_keep_their_date(lake: Lake, tmp_path: Path) -> None:
    path = _write(
        tmp_path / "daily.csv",
        ["date;steps", "2021-03-27;4000", "2021-03-28;5000", "2021-10-31;7000"],
    )
    accepted, quarantined, _ = _read(
        path, columns={"start": "date"}, patient_id="B", timezone=BERLIN
    )
    assert quarantined.is_empty()
    assert accepted.select("start_ts", "end_ts", "utc_offset_minutes").rows() == [
        (_utc(2021, 3, 26, 23), _utc(2021, 3, 27, 23), 60),
        # 24 hours at the offset of midnight (as Fitbit daily): the day's steps stay on its date
        (_utc(2021, 3, 27, 23), _utc(2021, 3, 28, 23), 60),  # a 23-hour day
        (_utc(2021, 10, 30, 22), _utc(2021, 10, 31, 22), 120),  # a 25-hour day
    ]
    assert _daily(lake, accepted) == pytest.approx(
        {
            ("B", date(2021, 3, 27)): 4000,
            ("B", date(2021, 3, 28)): 5000,
            ("B", date(2021, 10, 31)): 7000,
        }
    )


# --- timestamp forms and offsets ----------------------------------------------------------

# (two values of one form, the UTC start of the first, its offset) with --timezone New York
FORMS = [
    ("2021-08-30T13:40:34+05:30", "2021-08-31T13:40:34+05:30", _utc(2021, 8, 30, 8, 10, 34), 330),
    ("2021-08-30T13:40:34Z", "2021-08-31T13:40:34Z", _utc(2021, 8, 30, 13, 40, 34), -240),
    (
        "2021-08-30 13:40:34.250+0530",
        "2021-08-31 13:40:34+0530",
        _utc(2021, 8, 30, 8, 10, 34, 250_000),
        330,
    ),
    ("2019-05-14 18:52:09 -0400", "2019-05-15 18:52:09 -0400", _utc(2019, 5, 14, 22, 52, 9), -240),
    ("2021-01-30T13:40:34", "2021-01-31T13:40:34", _utc(2021, 1, 30, 18, 40, 34), -300),
    ("2021-08-30 13:40", "2021-08-31 13:40", _utc(2021, 8, 30, 17, 40), -240),
    ("2021/08/30 13:40", "2021/08/31 13:40", _utc(2021, 8, 30, 17, 40), -240),
    ("2021-08-30", "2021-08-31", _utc(2021, 8, 30, 4), -240),
    ("11-Nov-2014 00:00", "12-Nov-2014 00:00", _utc(2014, 11, 11, 5), -300),
    ("11-Nov-2014 07:15:00", "12-Nov-2014 07:15:00", _utc(2014, 11, 11, 12, 15), -300),
    ("3/12/2016 1:00:00 AM", "3/13/2016 1:00:00 PM", _utc(2016, 3, 12, 6), -300),
    ("4/12/2016 0:00", "4/13/2016 13:00", _utc(2016, 4, 12, 4), -240),
    ("30/08/2021 13:40", "31/08/2021 13:40", _utc(2021, 8, 30, 17, 40), -240),
    ("30.08.2021 13:40:00", "31.08.2021 13:40:00", _utc(2021, 8, 30, 17, 40), -240),
    ("1630330834", "1630417234", _utc(2021, 8, 30, 13, 40, 34), -240),
    ("1630330834000", "1630417234000", _utc(2021, 8, 30, 13, 40, 34), -240),
]


@pytest.mark.parametrize(("first", "second", "start", "offset"), FORMS, ids=[f[0] for f in FORMS])
def test_each_timestamp_form_is_detected(
    tmp_path: Path, first: str, second: str, start: datetime, offset: int
) -> None:
    # zero-length samples (end = start) so that any form, with or without seconds, is accepted
    lines = ["start,end,steps", f"{first},{first},10", f"{second},{second},20"]
    path = _write(tmp_path / "f.csv", lines)
    accepted, quarantined, _ = _read(path, patient_id="P", timezone="America/New_York")
    assert quarantined.is_empty()
    assert accepted.height == 2
    assert accepted.select("start_ts", "utc_offset_minutes").row(0) == (start, offset)
    assert accepted["end_ts"][0] == start


def test_explicit_timestamp_format_with_offset(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "f.csv",
        ["start,end,steps", "30|08|2021 13:40 +0200,30|08|2021 13:50 +0200,10", "bad,bad,1"],
    )
    accepted, quarantined, _ = _read(path, patient_id="P", timestamp_format="%d|%m|%Y %H:%M %z")
    assert accepted.select("start_ts", "end_ts", "utc_offset_minutes").rows() == [
        (_utc(2021, 8, 30, 11, 40), _utc(2021, 8, 30, 11, 50), 120)
    ]
    assert quarantined.select("record", "reason").rows() == [(3, "unreadable timestamp")]


# --- DST ----------------------------------------------------------------------------------


def test_berlin_dst_skipped_and_repeated_local_times(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "dst.csv",
        [
            "patient_id,start,end,steps",
            "P,2021-03-28 01:30,2021-03-28 01:45,10",  # CET
            "P,2021-03-28 02:30,2021-03-28 02:45,20",  # does not exist
            "P,2021-03-28 03:00,2021-03-28 03:15,30",  # CEST
            "P,2021-10-31 02:30,2021-10-31 02:45,40",  # twice: the first (CEST)
            "P,2021-10-31 02:50,2021-10-31 02:10,50",  # the end is the second 02:10 (CET)
            "P,2021-10-31 03:00,2021-10-31 03:15,60",  # CET
        ],
    )
    accepted, quarantined, _ = _read(path, timezone=BERLIN)
    assert quarantined.select("record", "reason").rows() == [
        (3, f"local time skipped by the DST change in {BERLIN}")
    ]
    assert quarantined["raw"].item() == "P,2021-03-28 02:30,2021-03-28 02:45,20"
    assert accepted.select("start_ts", "end_ts", "utc_offset_minutes").rows() == [
        (_utc(2021, 3, 28, 0, 30), _utc(2021, 3, 28, 0, 45), 60),
        (_utc(2021, 3, 28, 1), _utc(2021, 3, 28, 1, 15), 120),
        (_utc(2021, 10, 31, 0, 30), _utc(2021, 10, 31, 0, 45), 120),
        (_utc(2021, 10, 31, 0, 50), _utc(2021, 10, 31, 1, 10), 120),
        (_utc(2021, 10, 31, 2), _utc(2021, 10, 31, 2, 15), 60),
    ]


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    minutes=st.lists(st.integers(0, 3 * 366 * 24 * 60), min_size=1, max_size=30),
    zone=st.sampled_from([BERLIN, "America/New_York", "Australia/Lord_Howe", "Asia/Kolkata"]),
)
def test_naive_times_are_placed_as_zoneinfo_does(
    tmp_path: Path, minutes: list[int], zone: str
) -> None:
    walls = [datetime(2020, 1, 1) + timedelta(minutes=m) for m in minutes]
    lines = ["start,steps"] + [f"{w:%Y-%m-%d %H:%M},{i}" for i, w in enumerate(walls)]
    path = _write(tmp_path / "p.csv", lines)
    accepted, quarantined, stats = _read(path, batch_records=7, patient_id="P", timezone=zone)
    expected: dict[float, tuple[datetime, int]] = {}
    gaps = set()
    for steps, wall in enumerate(walls):
        aware = wall.replace(tzinfo=ZoneInfo(zone))
        start = aware.astimezone(UTC)
        if start.astimezone(ZoneInfo(zone)).replace(tzinfo=None) != wall:
            gaps.add(steps + 2)  # line number
            continue
        offset = aware.utcoffset()
        assert offset is not None
        expected.setdefault(start.timestamp(), (start, int(offset.total_seconds() // 60)))
    got = accepted.select("start_ts", "utc_offset_minutes").rows()
    assert sorted(got) == sorted(expected.values())
    dst = quarantined.filter(pl.col("reason").str.starts_with("local time skipped"))
    assert set(dst["record"]) == gaps
    assert stats.records_read == len(walls)


# --- periods ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("starts", "period", "length"),
    [
        (["2021-08-30 00:00", "2021-08-31 00:00"], "day", timedelta(days=1)),
        (["2021-08-30 00:00", "2021-08-30 13:00"], "hour", timedelta(hours=1)),
        (["2021-08-30 00:00", "2021-08-30 13:01"], "minute", timedelta(minutes=1)),
    ],
)
def test_period_is_detected(
    tmp_path: Path, starts: list[str], period: str, length: timedelta
) -> None:
    path = _write(tmp_path / "p.csv", ["start,steps", *(f"{s},5" for s in starts)])
    accepted, _, _ = _read(path, patient_id="P")
    assert (accepted["end_ts"] - accepted["start_ts"]).to_list() == [length, length]
    explicit, _, _ = _read(path, patient_id="P", period=period)
    assert explicit.equals(accepted)


def test_rows_off_the_period_grid_are_quarantined(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "p.csv",
        ["start,steps", "2021-08-30 13:00,5", "2021-08-30 13:00,6", "2021-08-30 14:30,7"],
    )
    accepted, quarantined, _ = _read(path, patient_id="P", period="hour", batch_records=1)
    assert accepted["steps"].to_list() == [5.0]
    assert quarantined.select("record", "reason").rows() == [
        (3, "repeats an earlier sample of this file"),
        (4, "start is not on a whole hour (hourly samples, no end column)"),
    ]
    # detected on the first batch (hours), then a later batch has a minute
    accepted, quarantined, _ = _read(path, patient_id="P", batch_records=2)
    assert quarantined["reason"].to_list()[-1].startswith("start is not on a whole hour")
    with pytest.raises(InputError, match=r"not all on whole minutes \(e\.g\. line 2\)"):
        _read(_write(tmp_path / "s.csv", ["start,steps", "2021-08-30 13:00:30,5"]), patient_id="P")


# --- Parquet ------------------------------------------------------------------------------


def test_parquet_typed_columns(tmp_path: Path) -> None:
    naive = datetime(2021, 3, 28, 1, 0)
    table = pa.table(
        {
            "pid": pa.array([1503960366, 1503960366, 7, 7, 7], pa.int64()),
            "local": pa.array([naive, naive + timedelta(hours=1), None, naive, naive]),
            "n": pa.array([10.0, 20.0, 30.0, None, 40.0]),
            "note": ["a", "b", "c", "d", "e"],
        }
    )
    path = tmp_path / "typed.parquet"
    pq.write_table(table, path, row_group_size=2)
    accepted, quarantined, stats = _read(
        path,
        batch_records=2,
        columns={"patient_id": "pid", "start": "local", "steps": "n"},
        timezone=BERLIN,
    )
    assert stats.skipped == 1  # null steps
    assert accepted.select("patient_id", "start_ts", "utc_offset_minutes").rows() == [
        ("1503960366", _utc(2021, 3, 28, 0), 60),
        ("7", _utc(2021, 3, 28, 0), 60),
    ]
    assert quarantined.select("record", "reason").rows() == [
        (2, f"local time skipped by the DST change in {BERLIN}"),
        (3, "missing timestamp"),
    ]
    assert json.loads(quarantined["raw"][0]) == {
        "pid": 1503960366,
        "local": "2021-03-28 02:00:00.000000",
        "n": 20.0,
        "note": "b",
    }

    aware = pa.table(
        {
            "patient_id": pa.array([1.0, 2.0]),  # ids written as floats by pandas
            "start": pa.array(
                [datetime(2021, 6, 1, 12, tzinfo=UTC)] * 2, pa.timestamp("ms", tz="UTC")
            ),
            "end": pa.array(
                [datetime(2021, 6, 1, 13, tzinfo=UTC)] * 2,
                pa.timestamp("ns", tz="America/New_York"),
            ),
            "steps": pa.array([100, 200], pa.int32()),
            "epoch": pa.array([1622548800, 1622548800_000], pa.int64()),  # seconds, milliseconds
        }
    )
    pq.write_table(aware, tmp_path / "aware.pq")
    accepted, _, _ = _read(tmp_path / "aware.pq", timezone=BERLIN)
    assert accepted.select("patient_id", "start_ts", "end_ts", "utc_offset_minutes").rows() == [
        ("1", _utc(2021, 6, 1, 12), _utc(2021, 6, 1, 13), 120),
        ("2", _utc(2021, 6, 1, 12), _utc(2021, 6, 1, 13), 120),
    ]
    by_epoch, _, _ = _read(tmp_path / "aware.pq", columns={"start": "epoch", "end": "end"})
    assert by_epoch["start_ts"].to_list() == [_utc(2021, 6, 1, 12)] * 2


def test_parquet_dates_zones_and_text(tmp_path: Path) -> None:
    table = pa.table(
        {
            "patient_id": ["X", "X"],
            "day": pa.array([date(2021, 3, 28), date(2021, 3, 29)], pa.date32()),
            "steps": [5000, 6000],
        }
    )
    pq.write_table(table, tmp_path / "d.parquet")
    accepted, _, _ = _read(tmp_path / "d.parquet", columns={"start": "day"}, timezone=BERLIN)
    assert accepted.select("start_ts", "end_ts").rows() == [
        (_utc(2021, 3, 27, 23), _utc(2021, 3, 28, 23)),
        (_utc(2021, 3, 28, 22), _utc(2021, 3, 29, 22)),
    ]
    zoned = pa.table(
        {
            "patient_id": ["X"],
            "start": pa.array(
                [datetime(2021, 6, 1, 12, tzinfo=UTC)], pa.timestamp("us", tz="Asia/Kolkata")
            ),
            "steps": ["42"],
        }
    )
    pq.write_table(zoned, tmp_path / "z.parquet")
    accepted, _, _ = _read(tmp_path / "z.parquet", timezone=BERLIN, period="minute")
    assert accepted.select("start_ts", "utc_offset_minutes", "steps").row(0) == (
        _utc(2021, 6, 1, 12),
        330,
        42.0,
    )
    text = pa.table(
        {
            "patient_id": ["X", "X"],
            "start": ["30/08/2021 13:40", "31/08/2021 13:40"],
            "end": ["30/08/2021 13:50", "31/08/2021 13:50"],
            "steps": ["12", "x"],
        }
    )
    pq.write_table(text, tmp_path / "t.parquet")
    accepted, quarantined, _ = _read(tmp_path / "t.parquet", timezone="UTC")
    assert accepted.select("start_ts", "end_ts").row(0) == (
        _utc(2021, 8, 30, 13, 40),
        _utc(2021, 8, 30, 13, 50),
    )
    assert quarantined.select("record", "reason").rows() == [(2, "steps is not a number")]
    assert json.loads(quarantined["raw"].item())["steps"] == "x"


# --- rows ---------------------------------------------------------------------------------


def test_row_reasons_skips_and_invariant_across_batches(tmp_path: Path) -> None:
    lines = [
        "ID,Time,Count,Device",
        "1,2021-08-30 10:00,100,Watch",  # 2 ok
        "1,2021-08-30 11:00,abc,Watch",  # 3 not a number
        "",  # 4 blank line: skipped
        ",,,",  # 5 empty row: skipped
        "1,2021-08-30 12:00,,Watch",  # 6 no steps: skipped
        ",2021-08-30 13:00,5,Watch",  # 7 no patient
        "1,2021-02-30 13:00,5,Watch",  # 8 no such date
        "1,2021-08-30 14:00,-3,Watch",  # 9 negative
        "1,2030-08-30 14:00,3,Watch",  # 10 future
        "1,2021-08-30 10:00,100,Watch",  # 11 repeat of line 2
        '2,2021-08-30 10:00,7,"Phone, left pocket"',  # 12 ok, quoted
    ]
    path = _write(tmp_path / "rows.csv", lines, newline="\r\n", bom=True)
    accepted, quarantined, stats = _read(
        path,
        batch_records=3,
        columns={"patient_id": "ID", "start": "Time", "steps": "Count", "source": "Device"},
    )
    assert (stats.records_read, stats.skipped, accepted.height) == (11, 3, 2)
    assert quarantined.select("record", "reason").rows() == [
        (3, "steps is not a number"),
        (7, "missing patient id"),
        (8, "unreadable timestamp"),
        (9, "negative steps"),
        (10, "sample in the future"),
        (11, "repeats an earlier sample of this file"),
    ]
    assert quarantined["raw"][0] == "1,2021-08-30 11:00,abc,Watch"
    assert accepted["source"].to_list() == [
        source_label("Watch"),
        source_label("Phone, left pocket"),
    ]


# --- options and errors -------------------------------------------------------------------


def test_parse_columns() -> None:
    assert parse_columns(["steps=StepTotal", " start = Activity Hour "]) == {
        "steps": "StepTotal",
        "start": "Activity Hour",
    }
    assert parse_columns([]) == {}
    for bad, message in [
        (["steps"], "ROLE=NAME"),
        (["steps="], "ROLE=NAME"),
        (["=x"], "ROLE=NAME"),
        (["walk=x"], "unknown role 'walk'"),
        (["steps=a", "steps=b"], "given twice"),
        (["start=t", "end=t"], "more than one role"),
    ]:
        with pytest.raises(InputError, match=message):
            parse_columns(bad)


def test_is_generic(tmp_path: Path) -> None:
    pq.write_table(pa.table({"a": [1]}), tmp_path / "data.bin")
    (tmp_path / "x.xml").write_text("<x/>")
    assert is_generic(tmp_path / "a.CSV") and is_generic(tmp_path / "b.pq")
    assert is_generic(tmp_path / "data.bin")
    assert not is_generic(tmp_path / "x.xml") and not is_generic(tmp_path / "missing.zip")


@pytest.mark.parametrize(
    ("lines", "options", "message"),
    [
        (
            ["a,b", "1,2"],
            {"patient_id": "P"},
            "no start column .none of its 2 columns is named start.; give --column start=NAME",
        ),
        (["start,b", "2021-01-01,2"], {"patient_id": "P"}, "no steps column"),
        (["start,steps", "2021-01-01,2"], {}, "no patient column"),
        (
            ["start,steps", "2021-01-01,2"],
            {"patient_id": "P", "columns": {"steps": "Total"}},
            "no column 'Total' .for steps. among the 2 columns",
        ),
        (["patient_id,start,steps", "Q,2021-01-01,2"], {"patient_id": "P"}, "does not apply"),
        (["start,steps,source", "2021-01-01,2,W"], {"patient_id": "P", "source": "S"}, "source"),
        (
            ["start,end,steps", "2021-01-01,2021-01-02,2"],
            {"patient_id": "P", "period": "day"},
            "--period does not apply",
        ),
        (["start,steps", "2021-01-01,2"], {"patient_id": "P", "period": "week"}, "unknown period"),
        (["start,steps", "2021-01-01,2"], {"patient_id": "P", "timezone": "Mars/Base"}, "zone"),
        (["start,steps", "yesterday,2", "today,3"], {"patient_id": "P"}, "cannot tell the format"),
        (
            ["start,steps", "3/4/2021 10:00,2", "5/6/2021 10:00,3"],
            {"patient_id": "P"},
            "both month first and day first",
        ),
        (
            ["start,steps", "2021-01-01 10:00,2"],
            {"patient_id": "P", "timestamp_format": "%d/%m/%Y"},
            "do not match --timestamp-format",
        ),
        ([], {"patient_id": "P"}, "empty file"),
    ],
)
def test_file_level_errors(
    tmp_path: Path, lines: list[str], options: dict[str, object], message: str
) -> None:
    path = _write(tmp_path / "e.csv", lines)
    with pytest.raises(InputError, match=message) as raised:
        _read(path, **options)
    assert "\n" not in str(raised.value)


def test_unreadable_files(tmp_path: Path) -> None:
    latin = tmp_path / "latin.csv"
    latin.write_bytes("patient_id,start,steps\nJos\xe9,2021-01-01,2\n".encode("latin-1"))
    with pytest.raises(InputError, match="unreadable CSV"):
        _read(latin)
    broken = tmp_path / "broken.parquet"
    broken.write_bytes(b"PAR1" + b"\0" * 64)
    with pytest.raises(InputError, match="unreadable Parquet"):
        _read(broken, patient_id="P")
    with pytest.raises(InputError, match="cannot read"):
        _read(tmp_path / "missing.csv", patient_id="P")


FITABASE = Path(__file__).resolve().parents[2] / ".." / "shared/realdata/fitabase"
REAL_HOURLY = FITABASE / "hourlySteps_merged.csv"


@pytest.mark.skipif(not REAL_HOURLY.is_file(), reason="real Fitabase not present")
def test_real_fitabase_hourly_file_reads_as_the_fitbit_reader_does() -> None:
    zone = "America/Chicago"
    columns = parse_columns(["patient_id=Id", "start=ActivityHour", "steps=StepTotal"])
    accepted, quarantined, stats = _read(REAL_HOURLY, columns=columns, timezone=zone)
    fitbit_stats = ParseStats()
    times = fitbit.LocalTimes(fitbit.LAYOUTS["fitbit-hourly"], zone)
    expected, expected_rejected = [], []
    with fitbit.raw_batches(REAL_HOURLY, "fitbit-hourly", fitbit_stats) as batches:
        for raw in batches:
            good, bad = fitbit.to_samples(
                raw, "fitbit-hourly", patient_id=None, timezone=zone, now=NOW, times=times
            )
            expected.append(good)
            expected_rejected.append(bad)
    keep = ["patient_id", "start_ts", "end_ts", "utc_offset_minutes", "steps"]
    order = ["patient_id", "start_ts"]
    assert accepted.select(keep).sort(order).equals(pl.concat(expected).select(keep).sort(order))
    assert quarantined.select("record", "reason").equals(
        pl.concat(expected_rejected).select("record", "reason")
    )
    assert stats.records_read == fitbit_stats.records_read


def test_timestamp_cache_reset_keeps_every_text_readable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When the parsed-text cache starts afresh mid-file, texts it knew must still be read."""
    import jobs.ingest.generic as generic_module

    monkeypatch.setattr(generic_module, "_CACHE_LIMIT", 5)
    hours = [f"2021-08-30T{h:02d}:00:00+02:00" for h in range(8)]
    # No end column (hourly samples): one cache lookup per batch of 4. The second batch repeats
    # two known texts and brings two new ones, overflowing the cache of 5.
    order = [0, 1, 2, 3, 2, 3, 4, 5, 0, 6, 7, 1]
    lines = ["patient_id,start,steps"] + [f"P{i},{hours[h]},10" for i, h in enumerate(order)]
    accepted, quarantined, stats = _read(_write(tmp_path / "t.csv", lines), batch_records=4)
    assert quarantined.height == 0, quarantined.rows()
    assert accepted.height == stats.records_read == len(order)
