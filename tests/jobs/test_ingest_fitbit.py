"""Fitbit Fitabase (hourly, minute, daily) and Google Fit ingestion: real files, fixtures, DST."""

from __future__ import annotations

import csv
from collections import defaultdict
from datetime import UTC, date, datetime
from pathlib import Path

import pytest

from jobs import aggregate
from jobs.ingest import run as ingest
from lakehouse.catalog import DAILY_STEPS, PATIENTS, QUARANTINE, STEP_SAMPLES
from lakehouse.errors import InputError
from lakehouse.storage import Lake
from tests.pseudonyms import pseudonym, reidentified
from tests.test_cli import assert_one_line_error, mobility

FITABASE = Path(__file__).resolve().parents[2] / ".." / "shared/realdata/fitabase"
REAL_HOURLY = FITABASE / "hourlySteps_merged.csv"
REAL_DAILY = FITABASE / "dailyActivity_merged.csv"
needs_hourly = pytest.mark.skipif(not REAL_HOURLY.is_file(), reason="real Fitabase not present")
needs_daily = pytest.mark.skipif(not REAL_DAILY.is_file(), reason="real Fitabase not present")


def _write(path: Path, lines: list[str], *, newline: str = "\n", bom: bool = False) -> Path:
    path.write_bytes(newline.join([*lines, ""]).encode("utf-8-sig" if bom else "utf-8"))
    return path


def _check_invariant(summary: ingest.IngestSummary) -> None:
    assert summary.records_read == summary.accepted + summary.quarantined + summary.skipped


def _daily(lake: Lake) -> dict[tuple[str | None, date], float]:
    """Daily steps by the patients' source identifiers (the lake stores pseudonyms)."""
    aggregate.run(lake)
    rows = lake.read(DAILY_STEPS).select("patient_id", "date", "steps")
    sources = reidentified(lake, rows["patient_id"])
    return {(p, d): s for p, (_, d, s) in zip(sources, rows.iter_rows(), strict=True)}


def _fitabase_date(text: str) -> date:
    """Independent of the job: the date part of ``M/D/YYYY ...``."""
    month, day, year = text.split(" ")[0].split("/")
    return date(int(year), int(month), int(day))


@needs_hourly
def test_real_hourly_file_matches_an_independent_daily_total(lake: Lake) -> None:
    expected: dict[tuple[str, date], float] = defaultdict(float)
    with REAL_HOURLY.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    for row in rows:
        expected[row["Id"], _fitabase_date(row["ActivityHour"])] += float(row["StepTotal"])

    summary = ingest.run(lake, REAL_HOURLY)
    _check_invariant(summary)
    assert summary.records_read == len(rows) == summary.accepted
    assert summary.patient_id is None
    ids = {row["Id"] for row in rows}
    assert set(summary.patients) == {pseudonym(i) for i in ids}
    patients = lake.read(PATIENTS)
    assert set(reidentified(lake, patients["patient_id"])) == ids
    assert set(patients["timezone"]) == {"UTC"} and set(patients["disease_group"]) == {"OTHER"}
    bronze = lake.read(STEP_SAMPLES)
    assert set(bronze["source"]) == {"Fitbit"}
    assert (bronze["end_ts"] - bronze["start_ts"]).dt.total_seconds().unique().to_list() == [3600]

    got = _daily(lake)
    assert set(got) == set(expected)
    for key, steps in expected.items():
        assert got[key] == pytest.approx(steps, abs=1e-6)

    again = ingest.run(lake, REAL_HOURLY)
    assert again.new_samples == 0 and again.accepted == summary.accepted
    assert lake.read(STEP_SAMPLES).height == len(rows)


@needs_hourly
def test_real_hourly_file_in_a_us_zone_quarantines_the_skipped_hour(tmp_path: Path) -> None:
    lake = Lake(str(tmp_path / "chicago"))
    expected: dict[tuple[str, date], float] = defaultdict(float)
    gap = 0
    with REAL_HOURLY.open(newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            if row["ActivityHour"] == "3/13/2016 2:00:00 AM":
                gap += 1
                continue
            expected[row["Id"], _fitabase_date(row["ActivityHour"])] += float(row["StepTotal"])
    summary = ingest.run(lake, REAL_HOURLY, timezone="America/Chicago")
    _check_invariant(summary)
    assert gap > 0 and summary.quarantined == gap
    assert set(lake.read(PATIENTS)["timezone"]) == {"America/Chicago"}
    got = _daily(lake)
    assert set(got) == set(expected)
    for key, steps in expected.items():
        assert got[key] == pytest.approx(steps, abs=1e-6)


@needs_daily
def test_real_daily_file_keeps_each_day_total(lake: Lake) -> None:
    with REAL_DAILY.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    expected = {(r["Id"], _fitabase_date(r["ActivityDate"])): float(r["TotalSteps"]) for r in rows}
    assert len(expected) == len(rows)
    summary = ingest.run(lake, REAL_DAILY, timezone="America/Chicago")
    _check_invariant(summary)
    assert summary.accepted == len(rows)
    assert set(lake.read(STEP_SAMPLES)["source"]) == {"Fitbit (daily)"}
    got = _daily(lake)
    assert set(got) == set(expected)
    for key, steps in expected.items():
        assert got[key] == pytest.approx(steps, abs=1e-6)


def test_excel_resaved_timestamps_and_crlf_parse(lake: Lake, tmp_path: Path) -> None:
    lines = [
        "Id,ActivityHour,StepTotal",
        "1503960366,4/12/2016 0:00,373",
        "1503960366,4/12/2016 13:00,1200",
        "1503960366,4/12/2016 1:00:00 PM,1200",  # the same hour in the original form: a repeat
        "1503960366,4/12/2016 11:00:00 PM,55",
    ]
    # Excel's "CSV UTF-8" also starts the file with a byte-order mark.
    path = _write(tmp_path / "hourlySteps_merged.csv", lines, newline="\r\n", bom=True)
    summary = ingest.run(lake, path, format="fitbit")
    _check_invariant(summary)
    assert (summary.accepted, summary.quarantined) == (3, 1)
    rows = lake.read(STEP_SAMPLES).sort("start_ts")
    assert rows["start_ts"].to_list() == [
        datetime(2016, 4, 12, 0, tzinfo=UTC),
        datetime(2016, 4, 12, 13, tzinfo=UTC),
        datetime(2016, 4, 12, 23, tzinfo=UTC),
    ]
    assert rows["end_ts"][0] == datetime(2016, 4, 12, 1, tzinfo=UTC)
    assert rows["steps"].to_list() == [373.0, 1200.0, 55.0]
    assert rows["patient_id"].unique().to_list() == [pseudonym("1503960366")]
    assert lake.read(QUARANTINE).select("record", "reason").rows() == [
        (4, "repeats an earlier sample of this file")
    ]
    assert _daily(lake) == pytest.approx({("1503960366", date(2016, 4, 12)): 1628.0})


def test_bad_rows_are_quarantined_with_line_numbers(lake: Lake, tmp_path: Path) -> None:
    lines = [
        "Id,ActivityHour,StepTotal",
        "1,3/12/2016 12:00:00 AM,10",  # ok
        "1,3/12/2016 1:00:00 AM,abc",  # not a number
        "1,3/12/2016 2:00:00 AM,-5",  # negative
        "1,3/12/2016 3:00:00 AM,",  # empty
        "1,13/45/2016 4:00:00 AM,10",  # no such date
        ",3/12/2016 5:00:00 AM,10",  # no patient
        "1,3/12/2016 6:00:00 AM,50000",  # implausible rate
        "",  # blank line: not a record
        "2,3/12/2016 7:00:00 AM,20",  # ok
        "2,3/12/2099 8:00:00 AM,20",  # future
    ]
    path = _write(tmp_path / "hourly.csv", lines)
    summary = ingest.run(lake, path)
    _check_invariant(summary)
    assert (summary.records_read, summary.accepted, summary.quarantined) == (9, 2, 7)
    quarantine = lake.read(QUARANTINE).sort("record")
    assert quarantine.select("record", "reason").rows() == [
        (3, "steps is not a number"),
        (4, "negative steps"),
        (5, "steps is not a number"),
        (6, "unreadable timestamp"),
        (7, "missing patient id"),
        (8, "implausible step rate (over 5 steps per second)"),
        (11, "sample in the future"),
    ]
    # the raw text names the patient by pseudonym too; nothing else in it changes
    assert quarantine["raw"][0] == f"{pseudonym('1')},3/12/2016 1:00:00 AM,abc"
    assert reidentified(lake, quarantine["patient_id"]) == ["1", "1", "1", "1", None, "1", "2"]
    assert sorted(reidentified(lake, lake.read(PATIENTS)["patient_id"])) == ["1", "2"]

    again = ingest.run(lake, path)
    assert again.new_samples == 0
    assert lake.read(STEP_SAMPLES).height == 2 and lake.read(QUARANTINE).height == 7


def test_dst_days_get_their_offsets(lake: Lake, tmp_path: Path) -> None:
    hourly = _write(
        tmp_path / "hourlySteps_merged.csv",
        [
            "Id,ActivityHour,StepTotal",
            "7,3/13/2016 1:00:00 AM,100",  # EST
            "7,3/13/2016 2:00:00 AM,7",  # skipped by the change: quarantined
            "7,3/13/2016 3:00:00 AM,300",  # EDT (2 AM does not exist)
            "7,3/13/2016 11:00:00 PM,50",
            "7,11/6/2016 12:00:00 AM,10",  # EDT
            "7,11/6/2016 2:00:00 AM,20",  # EST again
        ],
    )
    summary = ingest.run(lake, hourly, timezone="America/New_York")
    _check_invariant(summary)
    assert (summary.accepted, summary.quarantined) == (5, 1)
    assert lake.read(QUARANTINE).select("record", "reason").rows() == [
        (3, "local time skipped by the DST change in America/New_York")
    ]
    rows = lake.read(STEP_SAMPLES).sort("start_ts")
    assert rows.select("start_ts", "utc_offset_minutes").rows() == [
        (datetime(2016, 3, 13, 6, tzinfo=UTC), -300),
        (datetime(2016, 3, 13, 7, tzinfo=UTC), -240),
        (datetime(2016, 3, 14, 3, tzinfo=UTC), -240),
        (datetime(2016, 11, 6, 4, tzinfo=UTC), -240),
        (datetime(2016, 11, 6, 7, tzinfo=UTC), -300),
    ]
    assert lake.read(PATIENTS).select("timezone").item() == "America/New_York"
    assert _daily(lake) == pytest.approx(
        {("7", date(2016, 3, 13)): 450.0, ("7", date(2016, 11, 6)): 30.0}
    )

    daily_lake = Lake(str(tmp_path / "daily"))
    daily = _write(
        tmp_path / "dailyActivity_merged.csv",
        [
            "Id,ActivityDate,TotalSteps,TotalDistance",
            "7,3/13/2016,8000,5.1",  # 23-hour day
            "7,11/6/2016,9000,6.0",  # 25-hour day
        ],
        newline="\r\n",
    )
    summary = ingest.run(daily_lake, daily, timezone="America/New_York")
    assert summary.accepted == 2
    rows = daily_lake.read(STEP_SAMPLES).sort("start_ts")
    assert rows.select("start_ts", "end_ts", "utc_offset_minutes", "source").rows() == [
        (
            datetime(2016, 3, 13, 5, tzinfo=UTC),
            datetime(2016, 3, 14, 5, tzinfo=UTC),
            -300,
            "Fitbit (daily)",
        ),
        (
            datetime(2016, 11, 6, 4, tzinfo=UTC),
            datetime(2016, 11, 7, 4, tzinfo=UTC),
            -240,
            "Fitbit (daily)",
        ),
    ]
    assert _daily(daily_lake) == pytest.approx(
        {
            ("7", date(2016, 3, 13)): 8000.0,
            ("7", date(2016, 11, 6)): 9000.0,
        }
    )


def test_minute_file_ingests(lake: Lake, tmp_path: Path) -> None:
    path = _write(
        tmp_path / "minuteStepsNarrow_merged.csv",
        [
            "Id,ActivityMinute,Steps",
            "9,4/12/2016 7:21:00 AM,30",
            "9,4/12/2016 7:22:00 AM,40",
            "9,4/12/2016 23:59,12",
            "9,4/12/2016 7:23:00 AM,400",  # implausible in one minute
        ],
        newline="\r\n",
    )
    summary = ingest.run(lake, path)
    _check_invariant(summary)
    assert (summary.accepted, summary.quarantined) == (3, 1)
    rows = lake.read(STEP_SAMPLES).sort("start_ts")
    assert (rows["end_ts"] - rows["start_ts"]).dt.total_seconds().to_list() == [60, 60, 60]
    assert _daily(lake) == pytest.approx({("9", date(2016, 4, 12)): 82.0})


GOOGLE_HEADER = (
    "Date,Move Minutes count,Calories (kcal),Distance (m),Heart Points,Heart Minutes,"
    "Average heart rate (bpm),Max heart rate (bpm),Min heart rate (bpm),"
    "Average speed (m/s),Max speed (m/s),Min speed (m/s),Step count,Walking duration (ms)"
)


def _google_row(day: str, steps: str) -> str:
    return f"{day},12,1800.5,3400.2,3,3,,,,1.2,1.9,0.3,{steps},3600000"


def test_google_fit_daily_metrics(lake: Lake, tmp_path: Path) -> None:
    path = _write(
        tmp_path / "Daily activity metrics.csv",
        [
            GOOGLE_HEADER,
            _google_row("2019-03-09", "4210"),
            _google_row("2019-03-10", "6105"),  # DST day in New York
            _google_row("2019-03-11", ""),  # other metrics, no steps: skipped
            _google_row("2019-03-12", "n/a"),  # quarantined
            _google_row("2019-03-13", "-1"),  # quarantined
        ],
    )
    with pytest.raises(InputError, match="--patient-id"):
        ingest.run(lake, path)
    summary = ingest.run(lake, path, patient_id="G1", timezone="America/New_York")
    _check_invariant(summary)
    assert (summary.accepted, summary.quarantined, summary.skipped) == (2, 2, 1)
    assert summary.patient_id == pseudonym("G1")
    assert summary.describe().startswith(f"ingest {path} (patient {pseudonym('G1')}): 5 records")
    rows = lake.read(STEP_SAMPLES).sort("start_ts")
    assert rows.select("start_ts", "utc_offset_minutes", "source").rows() == [
        (datetime(2019, 3, 9, 5, tzinfo=UTC), -300, "Google Fit"),
        (datetime(2019, 3, 10, 5, tzinfo=UTC), -300, "Google Fit"),
    ]
    assert lake.read(QUARANTINE).sort("record").select("record", "reason").rows() == [
        (5, "steps is not a number"),
        (6, "negative steps"),
    ]
    assert _daily(lake) == pytest.approx(
        {("G1", date(2019, 3, 9)): 4210.0, ("G1", date(2019, 3, 10)): 6105.0}
    )
    again = ingest.run(lake, path, patient_id="G1", timezone="America/New_York")
    assert again.new_samples == 0


def test_format_and_patient_errors(lake: Lake, tmp_path: Path) -> None:
    hourly = _write(tmp_path / "h.csv", ["Id,ActivityHour,StepTotal", "1,3/12/2016 1:00:00 AM,5"])
    google = _write(tmp_path / "g.csv", [GOOGLE_HEADER, _google_row("2019-03-09", "1")])
    with pytest.raises(InputError, match="--patient-id does not apply"):
        ingest.run(lake, hourly, patient_id="P1")
    with pytest.raises(InputError, match="not a google-fit file"):
        ingest.run(lake, hourly, format="google-fit")
    with pytest.raises(InputError, match="not a fitbit file"):
        ingest.run(lake, google, format="fitbit", patient_id="P1")
    with pytest.raises(InputError, match="time zone"):
        ingest.run(lake, hourly, timezone="Mars/Olympus")
    assert not lake.exists(STEP_SAMPLES)


def test_cli_detects_fitbit(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "hourlySteps_merged.csv",
        ["Id,ActivityHour,StepTotal", "1,3/12/2016 1:00:00 AM,5", "2,3/12/2016 1:00:00 AM,x"],
    )
    lake_dir = str(tmp_path / "cli-lake")
    done = mobility("--lake", lake_dir, "ingest", str(path), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "(1 patient): 2 records read, 1 accepted (1 new), 1 quarantined" in done.stdout
    failed = mobility("--lake", lake_dir, "ingest", str(path), "--patient-id", "X", cwd=tmp_path)
    assert_one_line_error(failed, "--patient-id does not apply")
