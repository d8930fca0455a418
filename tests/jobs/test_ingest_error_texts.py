"""Errors name files, rows and reasons, never what a file holds (issue 18, finding 5).

The reproduction: ingesting a CSV whose header is ``MRN-778812 Jane Doe,...`` stored "the file's
columns are 'MRN-778812 Jane Doe', ..." in ops/job_runs.error, which analysts can query. Here
every reader is given files whose header names, cells, timestamps, entity and member names hold
a record number and a name; afterwards neither appears in any stored text of any table (ops
job runs, monitoring checks and alerts included), except the quarantine's ``raw`` column, which
keeps a rejected row's text for the data steward on purpose (and never holds a header).
"""

from __future__ import annotations

import json
import zipfile
from datetime import UTC, datetime
from pathlib import Path

import polars as pl
import pytest

from jobs.ingest import clinical, common
from jobs.ingest import run as ingest
from jobs.monitor import quality
from jobs.monitor import run as monitor_job
from lakehouse.catalog import ALL_TABLES, JOB_RUNS, MONITOR_CHECKS, QUARANTINE
from lakehouse.errors import InputError
from lakehouse.storage import Lake
from tests.test_cli import mobility

MRN = "MRN-778812"
NAME = "Jane Doe"
HOSTILE = f"{MRN} {NAME}"
GOOD_ROWS = "".join(f"A,2024-01-0{d} 08:00,2024-01-0{d} 09:00,{1000 + d}\n" for d in range(1, 8))


def _write(path: Path, text: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    return path


def _leaks(lake: Lake) -> list[str]:
    """Every stored string value of every table that holds the record number or the name (in any
    case), as ``layer/table.column: value``; the quarantine's raw text excepted."""
    found: list[str] = []
    for table in ALL_TABLES:
        if not lake.exists(table):
            continue
        frame = lake.read(table)
        for column, dtype in frame.schema.items():
            if dtype != pl.String or (table is QUARANTINE and column == "raw"):
                continue
            for value in frame[column].drop_nulls().to_list():
                folded = value.casefold()
                if MRN.casefold() in folded or NAME.casefold() in folded:
                    found.append(f"{table.path}.{column}: {value}")
    return found


def _refused(lake: Lake, path: Path, **options: object) -> str:
    with pytest.raises(InputError) as raised:
        ingest.run(lake, path, **options)  # type: ignore[arg-type]
    message = str(raised.value)
    assert message.startswith(str(path)), message
    assert MRN not in message and NAME not in message, message
    return message


def test_a_hostile_header_and_hostile_cells_end_up_in_no_stored_text(
    lake: Lake, tmp_path: Path
) -> None:
    # generic CSV: the record number where the patient column's name should be
    header = _write(tmp_path / "header.csv", f"{HOSTILE},start,end,steps\n" + GOOD_ROWS)
    assert "no patient column (none of its 4 columns is named patient_id)" in _refused(
        lake, header, format="generic", timezone="UTC"
    )
    # timestamps that are a record number and a name
    times = _write(tmp_path / "times.csv", f"patient_id,start,steps\nA,{HOSTILE},5\nA,{NAME},6\n")
    assert "cannot tell the format of the timestamps (e.g. line 2)" in _refused(
        lake, times, format="generic"
    )
    assert "sampled timestamps do not match --timestamp-format '%Y-%m-%d'" in _refused(
        lake, times, format="generic", timestamp_format="%Y-%m-%d"
    )
    # a generic file that gains a column named so: read, and a schema change for monitoring
    first = _write(tmp_path / "week1.csv", "patient_id,start,end,steps\n" + GOOD_ROWS)
    ingest.run(lake, first, format="generic", timezone="UTC")
    monitor_job.run(lake)
    rows = "".join(f"A,2024-01-{d} 08:00,2024-01-{d} 09:00,-5,x\n" for d in range(10, 14))
    second = _write(tmp_path / "week2.csv", f"patient_id,start,end,steps,{HOSTILE}\n" + rows)
    summary = ingest.run(lake, second, format="generic", timezone="UTC")
    assert summary.quarantined == 4
    # clinical files: a header column named so (ignored), a disease group cell that is a name,
    # a required column missing, the same name twice
    patients = _write(
        tmp_path / "patients.csv",
        f"patient_id,disease_group,timezone,{HOSTILE}\nA,MS,UTC,{MRN}\nB,{HOSTILE},UTC,x\n",
    )
    ingest.run(lake, patients)
    reasons = lake.read(QUARANTINE).filter(pl.col("source_file") == str(patients))["reason"]
    assert reasons.to_list() == ["unknown disease group (MS, PD, RA, OTHER)"]
    missing = _write(tmp_path / "therapies.csv", f"{HOSTILE},therapy,start_date,end_date\n")
    assert "missing column patient_id for a therapies file (its header has 4 columns" in (
        _refused(lake, missing, format="therapies")
    )
    twice = _write(
        tmp_path / "twice.csv",
        f"patient_id,therapy,start_date,end_date,{HOSTILE},{HOSTILE}\nA,x,2023-01-01,,1,2\n",
    )
    assert "columns 5 and 6 of the header have the same name" in _refused(lake, twice)
    # a Fitabase file with an extra column named so
    fitbit = _write(
        tmp_path / "hourlySteps_merged.csv",
        f"Id,ActivityHour,StepTotal,{HOSTILE}\n1,4/12/2016 1:00:00 AM,5,x\n",
    )
    ingest.run(lake, fitbit, timezone="UTC")
    # Apple Health: an entity named by the record number; a damaged zip member named so
    xml = _write(
        tmp_path / "apple-health" / "A" / "export.xml",
        f'<?xml version="1.0"?><!DOCTYPE HealthData [<!ENTITY {MRN} "x">]><HealthData/>',
    )
    assert "refused XML: it declares an entity" in _refused(lake, xml)
    assert "damaged zip" in _refused(lake, _damaged_zip(tmp_path / "apple-health" / "B"))

    checks = monitor_job.run(lake)
    schema = (
        lake.read(MONITOR_CHECKS)
        .filter(
            (pl.col("run_id") == checks.run_id) & (pl.col("subject") == "schema of generic files")
        )
        .row(0, named=True)
    )
    assert schema["status"] == "alert" and "new columns ['column 5']" in schema["details"]
    assert _leaks(lake) == []
    failed = lake.read(JOB_RUNS).filter(pl.col("status") == "failed")
    assert failed.height >= 7  # every refusal above was recorded, by file and reason


def _damaged_zip(folder: Path) -> Path:
    """An Apple Health zip whose export (in a folder named by a record number and a name) fails
    its checksum."""
    path = folder / "export.zip"
    folder.mkdir(parents=True, exist_ok=True)
    body = b'<?xml version="1.0"?><HealthData>' + b" " * 4096 + b"</HealthData>"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as archive:
        archive.writestr(f"{HOSTILE}/export.xml", body)
    content = bytearray(path.read_bytes())
    at = content.index(b" " * 4096)
    content[at + 100] = ord("x")  # the stored bytes no longer match their CRC
    path.write_bytes(bytes(content))
    return path


def test_the_command_line_names_no_cell_either(tmp_path: Path) -> None:
    """Content-free everywhere, the terminal included: the user who ran ingest on their own file
    finds the column by its position ("column 1 of the header")."""
    path = _write(tmp_path / "steps.csv", f"patient_id,{HOSTILE},steps\nA,2024-01-01,5\n")
    done = mobility("--lake", str(tmp_path / "lake"), "ingest", str(path), cwd=tmp_path)
    assert done.returncode == 2
    assert "no start column (none of its 3 columns is named start)" in done.stderr
    assert MRN not in done.stderr + done.stdout and NAME not in done.stderr + done.stdout


def test_errors_name_the_row_of_a_value_not_the_value(tmp_path: Path) -> None:
    from jobs.ingest.generic import GenericOptions, read_samples

    path = tmp_path / "steps.parquet"
    pl.DataFrame(
        {"start": ["2024-01-01 10:00:00", "2024-01-01 11:00:30"], "steps": [5, 6]}
    ).write_parquet(path)
    with pytest.raises(InputError) as raised:
        for _ in read_samples(
            path,
            GenericOptions(patient_id="P"),
            stats=common.ParseStats(),
            seen=common.SeenKeys(),
            now=datetime.now(UTC),
        ):
            pass
    assert "start times are not all on whole minutes (e.g. row 2)" in str(raised.value)
    assert "11:00:30" not in str(raised.value)


def test_column_labels_name_known_columns_and_number_the_others() -> None:
    names = ["Patient_ID", "start", HOSTILE, "StepTotal", "battery_pct", "column 2"]
    assert common.column_labels(names) == [
        "patient_id",
        "start",
        "column 3",
        "StepTotal",
        "column 5",
        "column 6",
    ]
    assert common.column_labels(names, mapped=["battery_pct"])[4] == "battery_pct"
    labels = common.column_labels(names)
    assert common.column_labels(labels) == labels  # labelling again changes nothing
    assert set(clinical.LAYOUTS["patients"].columns) <= common.known_columns()


def test_runs_recorded_before_labels_are_labelled_before_they_reach_a_check() -> None:
    """ops/job_runs rows written by an earlier version hold the header's own names: the schema
    check labels them too, so an old hostile name never reaches a check or an alert."""

    def run(at: int, columns: list[str]) -> dict[str, object]:
        details = {
            "format": "generic",
            "source_file": f"week{at}.csv",
            "accepted": 1,
            "quarantined": 0,
            "columns": columns,
            "column_types": dict.fromkeys(columns, "text"),
        }
        return {
            "job": "ingest",
            "status": "succeeded",
            "started_at": datetime(2024, 1, at, tzinfo=UTC),
            "details": json.dumps(details, sort_keys=True),
        }

    runs = pl.DataFrame(
        [
            run(1, ["patient_id", "start", "steps"]),
            run(2, ["patient_id", "start", "steps", HOSTILE]),
        ]
    )
    checks = quality.ingest_checks(runs, since=datetime(2024, 1, 1, 12, tzinfo=UTC))
    details = " ".join(checks["details"].drop_nulls().to_list())
    assert "new columns ['column 4']" in details
    assert MRN not in details and NAME not in details
