"""The ingest entry point: landing folders, Fitbit steps JSON, generic files, option checks, CLI."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import polars as pl
import pytest

from jobs import aggregate, generate
from jobs.ingest import run as ingest
from jobs.ingest.common import IngestSummary
from jobs.sources import source_label
from lakehouse.catalog import (
    DAILY_STEPS,
    DIAGNOSES,
    PATIENTS,
    QUARANTINE,
    SIDE_EFFECTS,
    STEP_SAMPLES,
    THERAPIES,
    TableSpec,
)
from lakehouse.errors import InputError
from lakehouse.storage import Lake
from synthetic.population import DEFAULT_END_DATE
from tests.pseudonyms import pseudonym, reidentified
from tests.test_cli import assert_one_line_error, mobility

PATIENTS_HEADER = "patient_id,disease_group,timezone,sex,birth_year,country,enrolled_on"
SAMPLE_COLUMNS = ["patient_id", "source", "start_ts", "end_ts", "utc_offset_minutes", "steps"]


def _check_invariant(summary: IngestSummary) -> None:
    assert summary.records_read == summary.accepted + summary.quarantined + summary.skipped


def _identified(lake: Lake, table: TableSpec) -> pl.DataFrame:
    """The table with its patients' source identifiers (the lake stores pseudonyms)."""
    frame = lake.read(table)
    return frame.with_columns(
        pl.Series("patient_id", reidentified(lake, frame["patient_id"]), dtype=pl.String)
    )


def _pseudonymised(frame: pl.DataFrame) -> pl.DataFrame:
    """A frame of source identifiers as ingestion stores it."""
    return frame.with_columns(pl.col("patient_id").map_elements(pseudonym, return_dtype=pl.String))


def _daily(lake: Lake) -> dict[tuple[str, date], float]:
    aggregate.run(lake)
    rows = _identified(lake, DAILY_STEPS).select("patient_id", "date", "steps").iter_rows()
    return {(p, d): s for p, d, s in rows}


def _sorted(frame: pl.DataFrame, keys: list[str] | None = None) -> pl.DataFrame:
    return frame.sort(keys or frame.columns)


def _one_line(err: pytest.ExceptionInfo[InputError]) -> str:
    message = str(err.value)
    assert message and "\n" not in message
    return message


def _utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


# ------------------------------------------------------------------ landing folder end to end


def test_landing_folder_gives_the_same_lake_as_direct_generation(tmp_path: Path) -> None:
    # Seed 27 writes corrupt samples, so quarantine is compared too.
    direct = Lake(str(tmp_path / "direct"))
    landed = Lake(str(tmp_path / "landed"))
    landing = tmp_path / "landing"
    made = generate.run(direct, patients=3, seed=27, years=0.5, end_date=DEFAULT_END_DATE)
    written = generate.run(
        Lake(str(tmp_path / "scratch")),
        patients=3,
        seed=27,
        years=0.5,
        landing=landing,
        end_date=DEFAULT_END_DATE,
    )
    assert written.mode == "landing" and written.landing_files == 7
    assert (made.samples, made.quarantined) == (written.samples, written.quarantined)
    assert made.quarantined > 0

    results = list(ingest.run_folder(landed, landing))
    assert all(r.error is None and not r.left and r.summary for r in results), results
    names = [r.path.relative_to(landing).as_posix() for r in results]
    assert names == [
        "clinical/patients.csv",
        "apple-health/SYN27-000001/export.xml",
        "apple-health/SYN27-000002/export.xml",
        "apple-health/SYN27-000003/export.xml",
        "clinical/diagnoses.csv",
        "clinical/side_effects.csv",
        "clinical/therapies.csv",
    ]
    summaries = [r.summary for r in results if r.summary is not None]
    for summary in summaries:
        _check_invariant(summary)
    exports = summaries[1:4]
    assert sum(s.accepted for s in exports) == made.samples
    assert sum(s.quarantined for s in exports) == made.quarantined

    # generated directly, the synthetic ids stay; ingested, they become pseudonyms
    a = _pseudonymised(direct.read(STEP_SAMPLES).select(SAMPLE_COLUMNS))
    b = landed.read(STEP_SAMPLES).select(SAMPLE_COLUMNS)
    assert a.height == b.height == made.samples
    keys = ["patient_id", "source", "start_ts", "end_ts"]
    assert _sorted(a, keys).equals(_sorted(b, keys))
    for table in (PATIENTS, THERAPIES, SIDE_EFFECTS, DIAGNOSES):
        direct_rows = _pseudonymised(direct.read(table))
        assert _sorted(direct_rows).equals(_sorted(landed.read(table))), table.path
    assert direct.read(PATIENTS).height == 3
    assert direct.read(THERAPIES).height == made.therapies == 2
    assert direct.read(DIAGNOSES).height == made.diagnoses == 6

    quarantine_a = direct.read(QUARANTINE)
    quarantine_b = landed.read(QUARANTINE)
    assert quarantine_a.height == quarantine_b.height == made.quarantined
    assert _sorted(_pseudonymised(quarantine_a.select("patient_id", "reason"))).equals(
        _sorted(quarantine_b.select("patient_id", "reason"))
    )

    aggregate.run(direct)
    aggregate.run(landed)
    daily_a = _pseudonymised(direct.read(DAILY_STEPS))
    daily_b = landed.read(DAILY_STEPS)
    assert daily_a.height > 300
    assert _sorted(daily_a, ["patient_id", "date"]).equals(_sorted(daily_b, ["patient_id", "date"]))

    # Again: every file ingests, nothing new.
    again = list(ingest.run_folder(landed, landing))
    assert [r.summary.new_samples for r in again[1:4] if r.summary] == [0, 0, 0]
    assert landed.read(STEP_SAMPLES).height == made.samples


APPLE_HEAD = """<?xml version="1.0" encoding="UTF-8"?>
<HealthData locale="en_US">
 <ExportDate value="2024-05-02 10:00:00 +0200"/>
 <Me HKCharacteristicTypeIdentifierBiologicalSex="HKBiologicalSexFemale"/>
"""


def _apple_record(start: str, end: str, value: int) -> str:
    return (
        ' <Record type="HKQuantityTypeIdentifierStepCount" sourceName="Apple Watch" '
        f'unit="count" creationDate="{end}" startDate="{start}" endDate="{end}" '
        f'value="{value}"/>\n'
    )


def _apple_export(hours: range) -> str:
    records = "".join(
        _apple_record(f"2024-05-01 {h:02d}:00:00 +0200", f"2024-05-01 {h:02d}:10:00 +0200", 100)
        for h in hours
    )
    return APPLE_HEAD + records + "</HealthData>\n"


def _mixed_folder(root: Path) -> Path:
    """A landing folder: patients, a good export, a truncated one, a generic CSV, notes."""
    (root / "clinical").mkdir(parents=True)
    (root / "clinical" / "patients.csv").write_text(
        f"{PATIENTS_HEADER}\nP8,MS,Europe/Berlin,F,1970,DE,2024-01-01\n", encoding="utf-8"
    )
    for patient in ("P8", "P9"):
        (root / "apple-health" / patient).mkdir(parents=True)
    (root / "apple-health" / "P8" / "export.xml").write_text(
        _apple_export(range(8, 12)), encoding="utf-8"
    )
    text = _apple_export(range(8, 20))
    (root / "apple-health" / "P9" / "export.xml").write_text(text[:-300], encoding="utf-8")
    (root / "other").mkdir()
    (root / "other" / "samples.csv").write_text(
        "patient_id,start,end,steps\nP7,2024-05-01T08:00:00Z,2024-05-01T08:30:00Z,250\n",
        encoding="utf-8",
    )
    (root / "notes.txt").write_text("called the patient, watch was charging\n", encoding="utf-8")
    (root / ".hidden.csv").write_text("not,read\n", encoding="utf-8")
    (root / "other" / "late.csv.partial").write_text("patient_id,start\n", encoding="utf-8")
    return root


def test_folder_leaves_unknown_files_and_reports_a_broken_export(
    lake: Lake, tmp_path: Path
) -> None:
    folder = _mixed_folder(tmp_path / "landing")
    results = {r.path.relative_to(folder).as_posix(): r for r in ingest.run_folder(lake, folder)}
    assert set(results) == {
        "clinical/patients.csv",
        "apple-health/P8/export.xml",
        "apple-health/P9/export.xml",
        "other/samples.csv",
        "notes.txt",
    }
    notes = results["notes.txt"]
    assert notes.left and notes.summary is None and notes.error and "notes.txt" in notes.error
    broken = results["apple-health/P9/export.xml"]
    assert not broken.left and broken.summary is None
    assert broken.error and "\n" not in broken.error and "P9" in broken.error
    good = results["apple-health/P8/export.xml"].summary
    assert good is not None
    assert (good.patient_id, good.accepted, good.new_samples) == (pseudonym("P8"), 4, 4)
    generic_summary = results["other/samples.csv"].summary
    assert generic_summary is not None and generic_summary.patients == (pseudonym("P7"),)

    bronze = _identified(lake, STEP_SAMPLES)
    assert sorted(bronze["patient_id"].unique()) == ["P7", "P8"]
    assert bronze.height == 5
    patients = dict(_identified(lake, PATIENTS).select("patient_id", "timezone").iter_rows())
    # P8's zone comes from patients.csv (ingested first), not from the export's +02:00.
    assert patients == {"P7": "Etc/GMT", "P8": "Europe/Berlin"}


def test_cli_folder_counts_failures_and_refuses_single_file_options(tmp_path: Path) -> None:
    folder = _mixed_folder(tmp_path / "landing")
    lake_dir = str(tmp_path / "cli-lake")
    done = mobility("--lake", lake_dir, "ingest", str(folder), cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    lines = done.stdout.splitlines()
    assert lines[-1] == f"ingest {folder}: 3 file(s) ingested, 1 failed, 1 left alone"
    assert len(lines) == 4
    assert "Traceback" not in done.stderr
    errors = done.stderr.splitlines()
    assert len(errors) == 2
    assert any(e.startswith("left alone: ") and "notes.txt" in e for e in errors)
    assert any(e.startswith("error: ") and "P9" in e for e in errors)

    refused = mobility(
        "--lake", lake_dir, "ingest", str(folder), "--patient-id", "P1", cwd=tmp_path
    )
    assert_one_line_error(refused, "--patient-id: for single files only")


# ------------------------------------------------------------------ Fitbit personal steps JSON

# UTC instants; Berlin switches from CET (+60) to CEST (+120) at 2024-03-31 01:00 UTC.
FITBIT_ENTRIES: list[object] = [
    {"dateTime": "03/30/24 22:59:00", "value": "5"},  # 1: Berlin 23:59 CET 03-30
    {"dateTime": "03/30/24 23:00:00", "value": "7"},  # 2: Berlin 00:00 CET 03-31
    {"dateTime": "03/30/24 23:05:00", "value": "abc"},  # 3: not a number
    {"dateTime": "03/30/24 23:30:00", "value": "10"},  # 4: Berlin 00:30 CET 03-31
    {"dateTime": "03/31/24 00:00:00", "value": "20"},  # 5: UTC midnight, Berlin 01:00 CET
    {"value": "99"},  # 6: no dateTime
    {"dateTime": "03/31/24 00:59:00", "value": "30"},  # 7: Berlin 01:59 CET, last minute of CET
    {"dateTime": "03/31/24 01:00:00", "value": "40"},  # 8: Berlin 03:00 CEST, first of CEST
    5,  # 9: not an object
    {"dateTime": "03/31/24 02:30:00", "value": 50},  # 10: Berlin 04:30 CEST (number value)
    {"dateTime": "03/31/24 21:59:00", "value": "60"},  # 11: Berlin 23:59 CEST 03-31
    {"dateTime": "03/31/24 22:00:00", "value": "70"},  # 12: Berlin 00:00 CEST 04-01
]
FITBIT_BAD_RECORDS = [3, 6, 9]
FITBIT_ACCEPTED = 9


@pytest.fixture
def fitbit_json(tmp_path: Path) -> Path:
    path = tmp_path / "steps-2024-03-01.json"
    path.write_text(json.dumps(FITBIT_ENTRIES), encoding="utf-8")
    return path


def test_fitbit_json_across_dst_and_utc_midnight(lake: Lake, fitbit_json: Path) -> None:
    assert ingest.detect_format(fitbit_json) == "fitbit"
    summary = ingest.run(lake, fitbit_json, patient_id="P1", timezone="Europe/Berlin")
    _check_invariant(summary)
    assert (summary.records_read, summary.accepted, summary.quarantined, summary.skipped) == (
        12,
        FITBIT_ACCEPTED,
        3,
        0,
    )
    assert summary.new_samples == FITBIT_ACCEPTED and summary.patient_id == pseudonym("P1")

    bronze = _identified(lake, STEP_SAMPLES).sort("start_ts")
    assert set(bronze["source"]) == {"Fitbit"} and set(bronze["patient_id"]) == {"P1"}
    assert bronze["start_ts"].to_list() == [
        _utc(2024, 3, 30, 22, 59),
        _utc(2024, 3, 30, 23, 0),
        _utc(2024, 3, 30, 23, 30),
        _utc(2024, 3, 31, 0, 0),
        _utc(2024, 3, 31, 0, 59),
        _utc(2024, 3, 31, 1, 0),
        _utc(2024, 3, 31, 2, 30),
        _utc(2024, 3, 31, 21, 59),
        _utc(2024, 3, 31, 22, 0),
    ]
    assert (bronze["end_ts"] - bronze["start_ts"]).to_list() == [timedelta(minutes=1)] * 9
    assert bronze["utc_offset_minutes"].to_list() == [60] * 5 + [120] * 4
    assert bronze["steps"].to_list() == [5.0, 7.0, 10.0, 20.0, 30.0, 40.0, 50.0, 60.0, 70.0]
    assert bronze["month"].to_list() == ["2024-03"] * 9

    quarantine = _identified(lake, QUARANTINE).sort("record")
    assert quarantine["record"].to_list() == FITBIT_BAD_RECORDS
    assert set(quarantine["source_file"]) == {str(fitbit_json)}
    assert set(quarantine["patient_id"]) == {"P1"}
    assert quarantine["reason"][0] == "steps is not a number"
    assert json.loads(quarantine["raw"][1]) == {"value": "99"}
    assert quarantine["raw"][2] == "5"
    assert dict(_identified(lake, PATIENTS).select("patient_id", "timezone").iter_rows()) == {
        "P1": "Europe/Berlin"
    }

    assert _daily(lake) == {
        ("P1", date(2024, 3, 30)): 5.0,  # 22:59 UTC = 23:59 CET
        # 00:00, 00:30, 01:00, 01:59 CET (7 + 10 + 20 + 30) and 03:00, 04:30, 23:59 CEST
        # (40 + 50 + 60): 217
        ("P1", date(2024, 3, 31)): 217.0,
        ("P1", date(2024, 4, 1)): 70.0,  # 22:00 UTC = 00:00 CEST
    }

    again = ingest.run(lake, fitbit_json, patient_id="P1", timezone="Europe/Berlin")
    _check_invariant(again)
    assert (again.accepted, again.new_samples, again.quarantined) == (FITBIT_ACCEPTED, 0, 3)
    assert lake.read(STEP_SAMPLES).height == FITBIT_ACCEPTED
    assert lake.read(QUARANTINE).height == 3


def test_fitbit_json_takes_offsets_from_the_patients_zone(lake: Lake, fitbit_json: Path) -> None:
    patients = fitbit_json.parent / "patients.csv"
    patients.write_text(
        f"{PATIENTS_HEADER}\nP1,PD,America/New_York,M,1950,US,2024-01-01\n", encoding="utf-8"
    )
    assert ingest.run(lake, patients).accepted == 1
    summary = ingest.run(lake, fitbit_json, format="auto", patient_id="P1")
    _check_invariant(summary)
    assert summary.accepted == FITBIT_ACCEPTED
    bronze = lake.read(STEP_SAMPLES)
    # New York is on EDT (-240) since 2024-03-10.
    assert set(bronze["utc_offset_minutes"]) == {-240}
    assert _daily(lake) == {
        # 22:59 UTC 03-30 = 18:59 EDT .. 02:30 UTC 03-31 = 22:30 EDT 03-30:
        # 5 + 7 + 10 + 20 + 30 + 40 + 50 = 162
        ("P1", date(2024, 3, 30)): 162.0,
        # 21:59 and 22:00 UTC 03-31 = 17:59 and 18:00 EDT: 60 + 70
        ("P1", date(2024, 3, 31)): 130.0,
    }
    # The clinical row is kept, not replaced by the ingest's default.
    assert _identified(lake, PATIENTS).select("patient_id", "disease_group", "timezone").rows() == [
        ("P1", "PD", "America/New_York")
    ]


def test_fitbit_json_needs_a_patient_and_takes_no_generic_options(
    lake: Lake, fitbit_json: Path
) -> None:
    with pytest.raises(InputError) as missing:
        ingest.run(lake, fitbit_json, timezone="Europe/Berlin")
    assert "--patient-id" in _one_line(missing)
    with pytest.raises(InputError) as formatted:
        ingest.run(lake, fitbit_json, patient_id="P1", timestamp_format="%m/%d/%y %H:%M:%S")
    assert "generic files only" in _one_line(formatted)
    assert not lake.exists(STEP_SAMPLES)


# ------------------------------------------------------------------ generic files through run


def test_generic_csv_with_iso_offsets_is_detected(lake: Lake, tmp_path: Path) -> None:
    path = tmp_path / "samples.csv"
    path.write_text(
        "patient_id,start,end,steps,source\n"
        "G1,2024-03-30T23:30:00+01:00,2024-03-30T23:45:00+01:00,100,Maria's iPhone\n"
        "G1,2024-03-31T00:10:00+01:00,2024-03-31T00:20:00+01:00,200,Maria's iPhone\n"
        "G1,2024-03-31T10:00:00+02:00,2024-03-31T10:30:00+02:00,300,Apple Watch\n"
        "G1,2024-03-31T11:00:00+02:00,2024-03-31T11:30:00+02:00,-4,Apple Watch\n",
        encoding="utf-8",
    )
    assert ingest.detect_format(path) == "generic"
    summary = ingest.run(lake, path)
    _check_invariant(summary)
    assert (summary.records_read, summary.accepted, summary.quarantined) == (4, 3, 1)
    assert summary.patients == (pseudonym("G1"),) and summary.patient_id is None
    bronze = lake.read(STEP_SAMPLES).sort("start_ts")
    assert bronze["start_ts"].to_list() == [
        _utc(2024, 3, 30, 22, 30),
        _utc(2024, 3, 30, 23, 10),
        _utc(2024, 3, 31, 8, 0),
    ]
    assert bronze["utc_offset_minutes"].to_list() == [60, 60, 120]
    phone = source_label("Maria's iPhone")
    assert bronze["source"].to_list() == [phone, phone, "Apple Watch"]
    assert not any("Maria" in s for s in bronze["source"])
    assert lake.read(QUARANTINE).select("record", "reason").rows() == [(5, "negative steps")]
    # The most common offset, +60, as an Etc zone (which counts the other way round).
    assert _identified(lake, PATIENTS).select("patient_id", "timezone").rows() == [
        ("G1", "Etc/GMT-1")
    ]
    assert _daily(lake) == {
        ("G1", date(2024, 3, 30)): 100.0,  # 23:30 CET
        ("G1", date(2024, 3, 31)): 500.0,  # 00:10 CET (200) + 10:00 CEST (300)
    }


HOURLY_CSV = (
    "ID,Time,Count,Note\n"
    "A1,11-Nov-2014 00:00,120,\n"  # 10 Nov 23:00 UTC, CET
    "A1,11-Nov-2014 01:00,30,night\n"
    "A1,11-Nov-2014 23:00,45,\n"
    "A1,12-Nov-2014 00:00,500,\n"
    "A1,12-Nov-2014 01:00,n/a,\n"  # not a number
)


def test_generic_csv_with_mapped_columns_and_hourly_samples(lake: Lake, tmp_path: Path) -> None:
    path = tmp_path / "hourly.csv"
    path.write_text(HOURLY_CSV, encoding="utf-8")
    with pytest.raises(InputError) as unmapped:
        ingest.run(lake, path, timezone="Europe/Berlin")
    assert "--column" in _one_line(unmapped)
    columns = {"patient_id": "ID", "start": "Time", "steps": "Count"}
    summary = ingest.run(lake, path, columns=columns, timezone="Europe/Berlin", source="Withings")
    _check_invariant(summary)
    assert (summary.records_read, summary.accepted, summary.quarantined) == (5, 4, 1)
    bronze = lake.read(STEP_SAMPLES).sort("start_ts")
    assert bronze["start_ts"].to_list() == [
        _utc(2014, 11, 10, 23),
        _utc(2014, 11, 11, 0),
        _utc(2014, 11, 11, 22),
        _utc(2014, 11, 11, 23),
    ]
    assert (bronze["end_ts"] - bronze["start_ts"]).to_list() == [timedelta(hours=1)] * 4
    assert set(bronze["utc_offset_minutes"]) == {60}
    assert set(bronze["source"]) == {"Withings"}
    assert bronze["month"].to_list() == ["2014-11"] * 4
    assert lake.read(QUARANTINE).select("record", "reason").rows() == [(6, "steps is not a number")]
    assert _identified(lake, PATIENTS).select("patient_id", "timezone").rows() == [
        ("A1", "Europe/Berlin")
    ]
    assert _daily(lake) == {
        ("A1", date(2014, 11, 11)): 195.0,  # 00:00, 01:00, 23:00 CET: 120 + 30 + 45
        ("A1", date(2014, 11, 12)): 500.0,  # 00:00 CET
    }

    # A start off the grid of a given period is quarantined, not stretched.
    late = tmp_path / "late.csv"
    late.write_text("ID;Time;Count\nA2;11-Nov-2014 00:00;10\nA2;11-Nov-2014 00:30;9\n")
    more = ingest.run(lake, late, columns=columns, timezone="Europe/Berlin", period="hour")
    _check_invariant(more)
    assert (more.accepted, more.quarantined) == (1, 1)
    assert lake.read(QUARANTINE).filter(pl.col("source_file") == str(late)).select(
        "record", "reason"
    ).rows() == [(3, "start is not on a whole hour (hourly samples, no end column)")]


def test_generic_parquet_is_detected_by_its_bytes(lake: Lake, tmp_path: Path) -> None:
    path = tmp_path / "watch-dump"  # no suffix: only the PAR1 magic says Parquet
    pl.DataFrame(
        {
            "patient_id": ["N1", "N1", "N1"],
            "start": [_utc(2024, 7, 1, 3, 0), _utc(2024, 7, 1, 4, 0), _utc(2024, 7, 1, 15, 0)],
            "end": [_utc(2024, 7, 1, 3, 15), _utc(2024, 7, 1, 4, 15), _utc(2024, 7, 1, 15, 15)],
            "steps": [11, 22, 33],
        }
    ).write_parquet(path)
    assert ingest.detect_format(path) == "generic"
    summary = ingest.run(lake, path, timezone="America/New_York")
    _check_invariant(summary)
    assert (summary.records_read, summary.accepted, summary.quarantined) == (3, 3, 0)
    bronze = lake.read(STEP_SAMPLES).sort("start_ts")
    assert set(bronze["utc_offset_minutes"]) == {-240}
    assert set(bronze["source"]) == {"Imported file"}
    assert bronze["steps"].to_list() == [11.0, 22.0, 33.0]
    assert _daily(lake) == {
        ("N1", date(2024, 6, 30)): 11.0,  # 03:00 UTC = 23:00 EDT the day before
        ("N1", date(2024, 7, 1)): 55.0,  # 00:00 and 11:00 EDT: 22 + 33
    }


def test_options_that_do_not_fit_the_file_are_refused(lake: Lake, tmp_path: Path) -> None:
    export = tmp_path / "apple-health" / "P2" / "export.xml"
    export.parent.mkdir(parents=True)
    export.write_text(_apple_export(range(8, 10)), encoding="utf-8")
    hourly = tmp_path / "hourly.csv"
    hourly.write_text(HOURLY_CSV, encoding="utf-8")
    columns = {"patient_id": "ID", "start": "Time", "steps": "Count"}

    with pytest.raises(InputError) as column:
        ingest.run(lake, export, columns={"steps": "value"})
    assert "generic files only" in _one_line(column) and "apple-health" in str(column.value)
    with pytest.raises(InputError) as period:
        ingest.run(lake, hourly, columns=columns, period="week")
    assert "unknown period 'week'" in _one_line(period)
    with pytest.raises(InputError) as source:
        ingest.run(lake, export, source="Apple Watch")
    _one_line(source)
    assert not lake.exists(STEP_SAMPLES)

    # The export itself is fine without them, its patient from the folder name.
    summary = ingest.run(lake, export)
    assert (summary.patient_id, summary.accepted) == (pseudonym("P2"), 2)


def test_cli_ingests_a_generic_csv_with_column_options(tmp_path: Path) -> None:
    path = tmp_path / "hourly.csv"
    path.write_text(HOURLY_CSV, encoding="utf-8")
    lake_dir = tmp_path / "cli-lake"
    done = mobility(
        "--lake",
        str(lake_dir),
        "ingest",
        str(path),
        "--column",
        "patient_id=ID",
        "--column",
        "start=Time",
        "--column",
        "steps=Count",
        "--timezone",
        "Europe/Berlin",
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        f"ingest {path} (1 patient): 5 records read, 4 accepted (4 new), 1 quarantined, 0 skipped"
    ]
    lake = Lake(str(lake_dir))
    assert lake.read(STEP_SAMPLES)["steps"].sum() == 695.0
    assert set(lake.read(STEP_SAMPLES)["source"]) == {"Imported file"}


def test_personal_exports_in_a_landing_folder_take_the_patient_from_the_folder(
    lake: Lake, tmp_path: Path
) -> None:
    landing = tmp_path / "landing"
    steps = landing / "fitbit" / "P7" / "steps-2024-03-01.json"
    steps.parent.mkdir(parents=True)
    steps.write_text(json.dumps(FITBIT_ENTRIES), encoding="utf-8")
    daily = landing / "google-fit" / "P8" / "Daily activity metrics.csv"
    daily.parent.mkdir(parents=True)
    daily.write_text("Date,Step count,Distance (m)\n2024-03-01,4321,3000\n", encoding="utf-8")
    results = list(ingest.run_folder(lake, landing))
    assert [r.error for r in results] == [None, None]
    by_patient = {r.summary.patients: r.summary for r in results if r.summary is not None}
    assert by_patient[(pseudonym("P7"),)].accepted == FITBIT_ACCEPTED
    assert by_patient[(pseudonym("P8"),)].accepted == 1
    totals = dict(
        _identified(lake, STEP_SAMPLES)
        .group_by("patient_id")
        .agg(pl.col("steps").sum())
        .iter_rows()
    )
    assert totals["P8"] == 4321.0
