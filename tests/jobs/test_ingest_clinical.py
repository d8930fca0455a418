"""Clinical CSV ingestion: golden files per kind, quarantine reasons, idempotence, corrections,
disease groups from diagnoses, file-level errors, and a round trip of synthetic landing files."""

from __future__ import annotations

import json
from datetime import date, timedelta
from pathlib import Path

import polars as pl
import pytest

from jobs.ingest import clinical
from jobs.ingest import run as device_ingest
from jobs.ingest.clinical import ClinicalSummary
from jobs.ingest.common import IngestSummary
from lakehouse.catalog import (
    DIAGNOSES,
    JOB_RUNS,
    PATIENTS,
    QUARANTINE,
    SIDE_EFFECTS,
    THERAPIES,
    TableSpec,
)
from lakehouse.errors import InputError
from lakehouse.storage import Lake
from synthetic.landing import write_clinical_csvs
from synthetic.population import clinical_frames, simulate_history
from tests.pseudonyms import pseudonym, reidentified

PATIENTS_HEADER = "patient_id,disease_group,timezone,sex,birth_year,country,enrolled_on"
THERAPIES_HEADER = "patient_id,therapy,start_date,end_date"
SIDE_EFFECTS_HEADER = "patient_id,date,effect,severity"
DIAGNOSES_HEADER = "patient_id,code,diagnosed_on,description"
CLINICAL = (PATIENTS, THERAPIES, SIDE_EFFECTS, DIAGNOSES)
DATA_TABLES = (*CLINICAL, QUARANTINE)


def _write(
    folder: Path, name: str, lines: list[str], *, newline: str = "\n", bom: bool = False
) -> Path:
    path = folder / name
    path.write_bytes(newline.join([*lines, ""]).encode("utf-8-sig" if bom else "utf-8"))
    return path


def _ingest(lake: Lake, path: Path, **kwargs: clinical.ClinicalKind) -> ClinicalSummary:
    summary = clinical.run(lake, path, **kwargs)
    assert isinstance(summary, ClinicalSummary)
    assert summary.records_read == summary.accepted + summary.quarantined + summary.skipped
    assert summary.accepted == summary.new_samples + summary.updated + summary.unchanged
    return summary


def _quarantined(lake: Lake, path: Path) -> dict[int, str]:
    rows = lake.read(QUARANTINE).filter(pl.col("source_file") == str(path))
    return dict(rows.select("record", "reason").iter_rows())


def _rows(lake: Lake, table: TableSpec) -> list[tuple[object, ...]]:
    """The table's rows with the patients' source identifiers (the lake stores pseudonyms)."""
    frame = lake.read(table).select(table.columns)
    sources = reidentified(lake, frame["patient_id"])
    at = table.columns.index("patient_id")
    rows = [
        (*r[:at], source, *r[at + 1 :])
        for r, source in zip(frame.iter_rows(), sources, strict=True)
    ]
    return sorted(rows, key=repr)


def _versions(lake: Lake) -> dict[str, int | None]:
    return {t.path: lake.version(t) for t in DATA_TABLES}


def _groups(lake: Lake) -> dict[str | None, str]:
    """Each patient's disease group, by source identifier."""
    rows = lake.read(PATIENTS).select("patient_id", "disease_group")
    return dict(zip(reidentified(lake, rows["patient_id"]), rows["disease_group"], strict=True))


def _last_run(lake: Lake) -> dict[str, object]:
    row = lake.read(JOB_RUNS).sort("finished_at").row(-1, named=True)
    return {**row, "details": json.loads(row["details"])}


@pytest.fixture
def known_patients(lake: Lake, tmp_path: Path) -> Lake:
    """A lake that knows patients P1 (MS), P2 (PD) and P3 (OTHER)."""
    path = _write(
        tmp_path,
        "known_patients.csv",
        [
            "patient_id,disease_group,timezone",
            "P1,MS,Europe/Berlin",
            "P2,PD,America/New_York",
            "P3,OTHER,Asia/Kolkata",
        ],
    )
    _ingest(lake, path)
    return lake


# ------------------------------------------------------------------ detection


def test_detect_kind_from_the_header(tmp_path: Path) -> None:
    cases = {
        "patients": ("\ufeffPatient_ID , Disease_Group,TimeZone", "\r\n"),
        "therapies": (THERAPIES_HEADER + ",prescriber", "\n"),
        "side-effects": (SIDE_EFFECTS_HEADER.upper(), "\r\n"),
        "diagnoses": ("patient_id,code,diagnosed_on", "\n"),
    }
    for kind, (header, newline) in cases.items():
        path = tmp_path / f"{kind}.csv"
        path.write_bytes(f"{header}{newline}P1,x,y,z{newline}".encode())
        assert clinical.detect_kind(path) == kind
    not_clinical = {
        "fitbit.csv": "Id,ActivityHour,StepTotal",
        "steps.csv": "patient_id,start,end,steps,source,timezone",
        "no_patient.csv": "disease_group,timezone",
        "both.csv": "patient_id,therapy,effect",
        "empty.csv": "",
    }
    for name, header in not_clinical.items():
        assert clinical.detect_kind(_write(tmp_path, name, [header])) is None, name
    # Columns of two kinds: the one whose required columns are all present wins.
    mixed = _write(tmp_path, "mixed.csv", [THERAPIES_HEADER + ",effect"])
    assert clinical.detect_kind(mixed) == "therapies"
    assert clinical.detect_kind(tmp_path / "missing.csv") is None


# ------------------------------------------------------------------ golden cases


def test_patients_golden(lake: Lake, tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "patients.csv",
        [
            PATIENTS_HEADER + ",name",
            "P1,MS,Europe/Berlin,F,1980,DE,2023-04-01,Anna Schmidt",
            " P2 , pd ,America/New_York,,,,,Bob Jones",
            "P3,Other,UTC,M,1955,US,2022-12-31,",
        ],
        newline="\r\n",
        bom=True,
    )
    summary = _ingest(lake, path)
    assert (summary.kind, summary.records_read, summary.accepted, summary.quarantined) == (
        "patients",
        3,
        3,
        0,
    )
    assert (summary.new_samples, summary.updated, summary.regrouped) == (3, 0, 0)
    assert summary.patients == tuple(sorted(pseudonym(p) for p in ("P1", "P2", "P3")))
    assert _rows(lake, PATIENTS) == [
        ("P1", "MS", "Europe/Berlin", "F", 1980, "DE", date(2023, 4, 1)),
        ("P2", "PD", "America/New_York", None, None, None, None),
        ("P3", "OTHER", "UTC", "M", 1955, "US", date(2022, 12, 31)),
    ]
    # Names (an extra column) never reach a table.
    assert "name" not in lake.read(PATIENTS).columns
    run = _last_run(lake)
    assert (run["job"], run["status"], run["rows_in"], run["rows_out"]) == (
        "ingest",
        "succeeded",
        3,
        3,
    )
    details = run["details"]
    assert isinstance(details, dict)
    assert details["format"] == "patients" and details["regrouped"] == 0
    assert details["patients"] == 3
    assert summary.describe() == (
        f"ingest {path} (patients, 3 patients): 3 records read, 3 accepted (3 new, 0 updated), "
        "0 quarantined, 0 skipped"
    )


def test_therapies_golden(known_patients: Lake, tmp_path: Path) -> None:
    lake = known_patients
    path = _write(
        tmp_path,
        "therapies.csv",
        [
            "Patient_Id,Therapy,Start_Date,End_Date",
            "P1,ocrelizumab,2023-01-10,",
            "P1,physiotherapy,2023-03-01,2023-04-12",
            "P2,levodopa,2022-06-15,2022-06-15",
        ],
    )
    summary = _ingest(lake, path)
    assert (summary.accepted, summary.quarantined, summary.new_samples) == (3, 0, 3)
    assert _rows(lake, THERAPIES) == [
        ("P1", "ocrelizumab", date(2023, 1, 10), None),
        ("P1", "physiotherapy", date(2023, 3, 1), date(2023, 4, 12)),
        ("P2", "levodopa", date(2022, 6, 15), date(2022, 6, 15)),
    ]


def test_side_effects_golden(known_patients: Lake, tmp_path: Path) -> None:
    lake = known_patients
    path = _write(
        tmp_path,
        "side_effects.csv",
        [
            SIDE_EFFECTS_HEADER,
            "P1,2023-02-01,headache,1",
            "P1,2023-02-01,fatigue,5",
            "P3,2024-07-09,nausea, 3 ",
        ],
    )
    summary = _ingest(lake, path)
    assert (summary.accepted, summary.quarantined) == (3, 0)
    assert _rows(lake, SIDE_EFFECTS) == [
        ("P1", date(2023, 2, 1), "fatigue", 5),
        ("P1", date(2023, 2, 1), "headache", 1),
        ("P3", date(2024, 7, 9), "nausea", 3),
    ]


def test_diagnoses_golden(known_patients: Lake, tmp_path: Path) -> None:
    lake = known_patients
    path = _write(
        tmp_path,
        "diagnoses.csv",
        [
            DIAGNOSES_HEADER,
            "P1,G35,2015-05-20,Multiple sclerosis",
            'P2,m06.9,2019-01-02,"Rheumatoid arthritis, unspecified"',
            "P2,G200,2018-03-04,",
            'P3,I10,2020-11-30,"Essential',
            '(primary) hypertension"',
        ],
    )
    summary = _ingest(lake, path)
    assert (summary.records_read, summary.accepted, summary.quarantined) == (4, 4, 0)
    assert _rows(lake, DIAGNOSES) == [
        ("P1", "G35", date(2015, 5, 20), "Multiple sclerosis"),
        ("P2", "G20.0", date(2018, 3, 4), None),
        ("P2", "M06.9", date(2019, 1, 2), "Rheumatoid arthritis, unspecified"),
        ("P3", "I10", date(2020, 11, 30), "Essential\n(primary) hypertension"),
    ]
    # P3 is OTHER with no group-naming diagnosis; P1 and P2 already have a group.
    assert summary.regrouped == 0
    assert _groups(lake) == {"P1": "MS", "P2": "PD", "P3": "OTHER"}


# ------------------------------------------------------------------ quarantine


def test_every_patients_reason(lake: Lake, tmp_path: Path) -> None:
    lines = [
        PATIENTS_HEADER,
        "P1,MS,Europe/Berlin,F,1980,DE,2023-04-01",  # 2 accepted
        ",MS,Europe/Berlin,F,1980,DE,2023-04-01",  # 3
        "P2,XX,Europe/Berlin,F,1980,DE,2023-04-01",  # 4
        "P3,,Europe/Berlin,F,1980,DE,2023-04-01",  # 5
        "P4,RA,Mars/Olympus,F,1980,DE,2023-04-01",  # 6
        "P5,RA,,F,1980,DE,2023-04-01",  # 7
        "P6,RA,UTC,F,19x0,DE,2023-04-01",  # 8
        "P7,RA,UTC,F,1850,DE,2023-04-01",  # 9
        "P8,RA,UTC,F,2099,DE,2023-04-01",  # 10
        "P9,RA,UTC,F,1980,DE,01/04/2023",  # 11
        "P10,RA,UTC,F,1980,DE,2099-01-01",  # 12
        "P11,RA,UTC,F,1980,DE,1899-12-31",  # 13
        "P12,RA,UTC,F,1980,DE",  # 14
        "P13,RA,UTC,F,1980,DE,2023-04-01,extra",  # 15
        "P1,PD,UTC,F,1980,DE,2023-04-01",  # 16
        "",  # 17 skipped
        ",,,,,,",  # 18 skipped
        "P14,RA,UTC,F,1980,DE,2023-04-01,",  # 19 accepted: the extra field is empty
    ]
    path = _write(tmp_path, "patients.csv", lines)
    summary = _ingest(lake, path)
    expected = {
        3: "missing patient id",
        4: "unknown disease group (MS, PD, RA, OTHER)",
        5: "missing disease_group",
        6: "unknown time zone",
        7: "missing timezone",
        8: "unreadable birth_year",
        9: "birth_year out of range",
        10: "birth_year out of range",
        11: "unreadable date",
        12: "date in the future",
        13: "date before 1900",
        14: "has 6 fields, the header 7",
        15: "has 8 fields, the header 7",
        16: "repeats an earlier row of this file",
    }
    assert _quarantined(lake, path) == expected
    assert (summary.records_read, summary.accepted, summary.quarantined, summary.skipped) == (
        18,
        2,
        14,
        2,
    )
    assert set(reidentified(lake, lake.read(PATIENTS)["patient_id"])) == {"P1", "P14"}
    stored = lake.read(QUARANTINE).sort("record")
    # as written, but the patient named by pseudonym: the identifier is its first field
    as_written = [lines[r - 1] for r in sorted(expected)]
    assert stored["raw"].to_list() == [
        line if line.startswith(",") else pseudonym(line.split(",")[0]) + line[line.index(",") :]
        for line in as_written
    ]
    assert reidentified(lake, stored["patient_id"].to_list()[:3]) == [None, "P2", "P3"]


def test_every_therapies_side_effects_and_diagnoses_reason(
    known_patients: Lake, tmp_path: Path
) -> None:
    lake = known_patients
    therapies = _write(
        tmp_path,
        "therapies.csv",
        [
            THERAPIES_HEADER,
            "P1,ocrelizumab,2023-01-10,",  # 2 accepted
            ",ocrelizumab,2023-01-10,",  # 3
            "P1,,2023-01-10,",  # 4
            "P1,natalizumab,,",  # 5
            "P1,natalizumab,2023-13-01,",  # 6
            "P1,natalizumab,2099-01-01,",  # 7
            "P1,natalizumab,2023-01-10,2022-12-31",  # 8
            "P1,natalizumab,2023-01-10,someday",  # 9
            "P9,natalizumab,2023-01-10,",  # 10
            "P1,ocrelizumab,2023-01-10,2024-01-01",  # 11
            "P1,physiotherapy,2026-09-01,2099-01-01",  # 12 accepted: a planned end
            f"P1,rasagiline,{date.today() + timedelta(days=60)},",  # 13 accepted: planned
        ],
    )
    assert _ingest(lake, therapies).accepted == 3
    assert _quarantined(lake, therapies) == {
        3: "missing patient id",
        4: "missing therapy",
        5: "missing start_date",
        6: "unreadable date",
        7: "date in the future",
        8: "end_date before start_date",
        9: "unreadable date",
        10: "patient not known (ingest patients.csv first)",
        11: "repeats an earlier row of this file",
    }
    side_effects = _write(
        tmp_path,
        "side_effects.csv",
        [
            SIDE_EFFECTS_HEADER,
            "P1,2023-02-01,headache,2",  # 2 accepted
            "P1,2023-02-01,nausea,0",  # 3
            "P1,2023-02-01,nausea,6",  # 4
            "P1,2023-02-01,nausea,2.5",  # 5
            "P1,2023-02-01,nausea,",  # 6
            "P1,2023-02-01,,2",  # 7
            "P1,,nausea,2",  # 8
            "P1,2099-02-01,nausea,2",  # 9
            "P9,2023-02-01,nausea,2",  # 10
            "P1,2023-02-01,headache,3",  # 11
        ],
    )
    assert _ingest(lake, side_effects).accepted == 1
    severity = "severity must be an integer 1-5"
    assert _quarantined(lake, side_effects) == {
        3: severity,
        4: severity,
        5: severity,
        6: severity,
        7: "missing effect",
        8: "missing date",
        9: "date in the future",
        10: "patient not known (ingest patients.csv first)",
        11: "repeats an earlier row of this file",
    }
    diagnoses = _write(
        tmp_path,
        "diagnoses.csv",
        [
            DIAGNOSES_HEADER,
            "P1,G35,2015-05-20,",  # 2 accepted
            "P1,35G,2015-05-20,",  # 3
            "P1,G35.,2015-05-20,",  # 4
            "P1,,2015-05-20,",  # 5
            "P1,I10,,",  # 6
            "P1,I10,2099-01-01,",  # 7
            "P9,I10,2015-05-20,",  # 8
            "P1,g35,2016-01-01,",  # 9: the same code once normalised
        ],
    )
    assert _ingest(lake, diagnoses).accepted == 1
    assert _quarantined(lake, diagnoses) == {
        3: "not an ICD-10 code",
        4: "not an ICD-10 code",
        5: "missing code",
        6: "missing diagnosed_on",
        7: "date in the future",
        8: "patient not known (ingest patients.csv first)",
        9: "repeats an earlier row of this file",
    }


def test_unknown_patients_are_quarantined_in_an_empty_lake(lake: Lake, tmp_path: Path) -> None:
    path = _write(tmp_path, "therapies.csv", [THERAPIES_HEADER, "P1,levodopa,2023-01-01,"])
    summary = _ingest(lake, path)
    assert (summary.accepted, summary.quarantined) == (0, 1)
    assert not lake.exists(THERAPIES)
    assert _quarantined(lake, path) == {2: "patient not known (ingest patients.csv first)"}


# ------------------------------------------------------------------ idempotence and corrections


def test_ingesting_twice_adds_nothing_and_commits_nothing(
    known_patients: Lake, tmp_path: Path
) -> None:
    lake = known_patients
    path = _write(
        tmp_path,
        "therapies.csv",
        [THERAPIES_HEADER, "P1,ocrelizumab,2023-01-10,", "P2,levodopa,2099-01-01,"],
    )
    first = _ingest(lake, path)
    assert (first.new_samples, first.quarantined) == (1, 1)
    versions = _versions(lake)
    rows = _rows(lake, THERAPIES)
    quarantine = lake.read(QUARANTINE)
    runs = lake.read(JOB_RUNS).height

    again = _ingest(lake, path)
    assert (again.accepted, again.new_samples, again.updated, again.unchanged) == (1, 0, 0, 1)
    assert again.quarantined == 1
    assert _versions(lake) == versions
    assert _rows(lake, THERAPIES) == rows
    assert lake.read(QUARANTINE).equals(quarantine)
    assert lake.read(JOB_RUNS).height == runs + 1
    assert _last_run(lake)["rows_out"] == 0


def test_a_corrected_file_updates_rows_and_clears_its_quarantine(
    known_patients: Lake, tmp_path: Path
) -> None:
    lake = known_patients
    lines = [THERAPIES_HEADER, "P1,ocrelizumab,2023-01-10,", "P2,levodopa,2023-13-01,"]
    path = _write(tmp_path, "therapies.csv", lines)
    _ingest(lake, path)
    assert _quarantined(lake, path) == {3: "unreadable date"}
    version = lake.version(THERAPIES)

    lines[1:] = ["P1,ocrelizumab,2023-01-10,2024-02-29", "P2,levodopa,2023-11-01,"]
    _write(tmp_path, "therapies.csv", lines)
    summary = _ingest(lake, path)
    assert (summary.new_samples, summary.updated, summary.quarantined) == (1, 1, 0)
    assert _rows(lake, THERAPIES) == [
        ("P1", "ocrelizumab", date(2023, 1, 10), date(2024, 2, 29)),
        ("P2", "levodopa", date(2023, 11, 1), None),
    ]
    assert lake.version(THERAPIES) == (version or 0) + 1  # one merge
    assert _quarantined(lake, path) == {}
    assert lake.read(QUARANTINE).height == 0


def test_a_missing_optional_column_keeps_stored_values(lake: Lake, tmp_path: Path) -> None:
    full = _write(
        tmp_path, "patients.csv", [PATIENTS_HEADER, "P1,MS,Europe/Berlin,F,1980,DE,2023-04-01"]
    )
    _ingest(lake, full)
    # A later export without demographics changes only what it lists.
    short = _write(
        tmp_path, "patients_short.csv", ["patient_id,disease_group,timezone", "P1,MS,UTC"]
    )
    assert _ingest(lake, short).updated == 1
    assert _rows(lake, PATIENTS) == [("P1", "MS", "UTC", "F", 1980, "DE", date(2023, 4, 1))]
    # A present but empty column clears the value.
    cleared = _write(tmp_path, "patients_cleared.csv", [PATIENTS_HEADER, "P1,MS,UTC,,,,"])
    _ingest(lake, cleared)
    assert _rows(lake, PATIENTS) == [("P1", "MS", "UTC", None, None, None, None)]


# ------------------------------------------------------------------ disease groups


def _fitbit_hourly(folder: Path, patients: list[str]) -> Path:
    lines = ["Id,ActivityHour,StepTotal"]
    lines += [f"{p},4/12/2016 {hour}:00:00 AM,{100 * hour}" for p in patients for hour in (1, 2)]
    return _write(folder, "hourlySteps_merged.csv", lines)


def test_device_patients_are_updated_by_patients_csv_and_regrouped_by_diagnoses(
    lake: Lake, tmp_path: Path
) -> None:
    device_ingest.run(lake, _fitbit_hourly(tmp_path, ["D1", "D2", "D3", "D4"]))
    assert _groups(lake) == dict.fromkeys(("D1", "D2", "D3", "D4"), "OTHER")
    assert set(lake.read(PATIENTS)["timezone"]) == {"UTC"}

    patients = _write(
        tmp_path,
        "patients.csv",
        [
            PATIENTS_HEADER,
            "D1,OTHER,Europe/Paris,F,1970,FR,2016-01-01",
            "D3,MS,Australia/Sydney,M,1960,AU,2016-01-01",
        ],
    )
    summary = _ingest(lake, patients)
    assert (summary.new_samples, summary.updated) == (0, 2)
    assert _rows(lake, PATIENTS) == [
        ("D1", "OTHER", "Europe/Paris", "F", 1970, "FR", date(2016, 1, 1)),
        ("D2", "OTHER", "UTC", None, None, None, None),
        ("D3", "MS", "Australia/Sydney", "M", 1960, "AU", date(2016, 1, 1)),
        ("D4", "OTHER", "UTC", None, None, None, None),
    ]

    diagnoses = _write(
        tmp_path,
        "diagnoses.csv",
        [
            DIAGNOSES_HEADER,
            "D1,G35.1,2012-01-01,",  # -> MS
            "D2,M06.9,2014-05-01,",  # -> PD: G20 is earlier
            "D2,G20,2013-02-01,",
            "D2,I10,2010-01-01,",
            "D3,G20,2015-01-01,",  # stays MS: explicit group
            "D4,E11.9,2015-01-01,",  # stays OTHER
        ],
    )
    summary = _ingest(lake, diagnoses)
    assert summary.regrouped == 2
    assert "2 patients regrouped" in summary.describe()
    assert _last_run(lake)["details"]["regrouped"] == 2  # type: ignore[index]
    assert _groups(lake) == {"D1": "MS", "D2": "PD", "D3": "MS", "D4": "OTHER"}
    # Regrouping changes only the group.
    assert _rows(lake, PATIENTS)[0] == (
        "D1",
        "MS",
        "Europe/Paris",
        "F",
        1970,
        "FR",
        date(2016, 1, 1),
    )
    # Again: nothing left to regroup, nothing committed.
    version = lake.version(PATIENTS)
    assert _ingest(lake, diagnoses).regrouped == 0
    assert lake.version(PATIENTS) == version


def test_patients_csv_after_diagnoses_keeps_the_diagnosed_group(
    known_patients: Lake, tmp_path: Path
) -> None:
    lake = known_patients
    diagnoses = _write(
        tmp_path,
        "diagnoses.csv",
        [DIAGNOSES_HEADER, "P1,G20,2010-01-01,", "P3,M05.79,2011-01-01,"],
    )
    assert _ingest(lake, diagnoses).regrouped == 1
    # An explicit MS is never changed by a PD diagnosis.
    assert _groups(lake) == {"P1": "MS", "P2": "PD", "P3": "RA"}

    # Re-sending the patients file with OTHER for P3 does not undo its diagnosed group
    # (the result does not depend on the order of the files), and changes nothing.
    again = _write(
        tmp_path,
        "patients_again.csv",
        ["patient_id,disease_group,timezone", "P3,OTHER,Asia/Kolkata", "P2,RA,America/New_York"],
    )
    version = lake.version(PATIENTS)
    summary = _ingest(lake, again)
    assert (summary.unchanged, summary.updated, summary.regrouped) == (1, 1, 0)
    # The file is authoritative for an explicit group: P2 becomes RA.
    assert _groups(lake) == {"P1": "MS", "P2": "RA", "P3": "RA"}
    assert lake.version(PATIENTS) == (version or 0) + 1


# ------------------------------------------------------------------ file-level errors


def test_file_level_errors_leave_every_table_untouched(
    known_patients: Lake, tmp_path: Path
) -> None:
    lake = known_patients
    _ingest(
        lake,
        _write(tmp_path, "therapies.csv", [THERAPIES_HEADER, "P1,levodopa,2099-01-01,"]),
    )
    before = _versions(lake)
    bad_bytes = tmp_path / "latin1.csv"
    bad_bytes.write_bytes(
        (THERAPIES_HEADER + "\nP1,levodopa,2023-01-01,\n" * 3 + "P1,Lévodopa,2023-01-02,\n").encode(
            "latin-1"
        )
    )
    cases: list[tuple[Path, clinical.ClinicalKind | None, str]] = [
        (
            _write(tmp_path, "no_end.csv", ["patient_id,therapy,start_date", "P1,x,2023-01-01"]),
            None,
            "missing column end_date for a therapies file",
        ),
        (
            _write(tmp_path, "few.csv", ["patient_id,Disease_Group", "P1,MS"]),
            None,
            "missing column timezone",
        ),
        (
            _write(tmp_path, "cols.csv", ["patient_id,therapy", "P1,x"]),
            "therapies",
            "missing columns start_date, end_date",
        ),
        (
            _write(tmp_path, "steps.csv", ["Id,ActivityHour,StepTotal", "1,4/12/2016 1:00,5"]),
            None,
            "not a clinical CSV",
        ),
        (_write(tmp_path, "empty.csv", []), "patients", "empty file"),
        (bad_bytes, "therapies", "unreadable CSV"),
        (
            _write(tmp_path, "twice.csv", [THERAPIES_HEADER + ",Therapy", "P1,a,2023-01-01,,b"]),
            None,
            "columns 2 and 5 of the header have the same name",
        ),
    ]
    for path, kind, fragment in cases:
        with pytest.raises(InputError) as raised:
            clinical.run(lake, path, kind=kind)
        message = str(raised.value)
        assert fragment in message and "\n" not in message, message
        assert message.startswith(str(path)), message
        run = _last_run(lake)
        assert run["status"] == "failed" and fragment in str(run["error"])
    with pytest.raises(InputError, match="no such file"):
        clinical.run(lake, tmp_path / "nowhere.csv")
    with pytest.raises(InputError, match="unknown clinical file kind"):
        clinical.run(lake, tmp_path / "few.csv", kind="therapy")  # type: ignore[arg-type]
    assert _versions(lake) == before


# ------------------------------------------------------------------ round trip


def test_synthetic_landing_files_round_trip(lake: Lake, tmp_path: Path) -> None:
    histories = [simulate_history(11, index, years=1.5) for index in range(1, 31)]
    frames = clinical_frames(histories)
    files = write_clinical_csvs(frames, tmp_path / "landing")
    expected = {
        PATIENTS: frames.patients,
        THERAPIES: frames.therapies,
        SIDE_EFFECTS: frames.side_effects,
        DIAGNOSES: frames.diagnoses,
    }
    assert all(frame.height for frame in expected.values())
    kinds = [clinical.detect_kind(path) for path in files]
    assert kinds == ["patients", "therapies", "side-effects", "diagnoses"]
    for path, table in zip(files, expected, strict=True):
        summary = clinical.run(lake, path)
        assert isinstance(summary, IngestSummary)
        assert (summary.accepted, summary.new_samples) == (expected[table].height,) * 2
        assert (summary.quarantined, summary.skipped) == (0, 0)
    for table, frame in expected.items():
        keys = list(table.keys)
        pseudonymised = frame.with_columns(
            pl.col("patient_id").map_elements(pseudonym, return_dtype=pl.String)
        )
        stored = lake.read(table).select(table.columns)
        assert stored.sort(keys).equals(pseudonymised.sort(keys))
    assert not lake.exists(QUARANTINE)
    versions = _versions(lake)
    for path in files:
        assert clinical.run(lake, path).new_samples == 0
    assert _versions(lake) == versions


def test_a_header_only_file_writes_nothing(lake: Lake, tmp_path: Path) -> None:
    path = _write(tmp_path, "patients.csv", [PATIENTS_HEADER, "", ""], newline="\r\n")
    summary = _ingest(lake, path)
    assert (summary.records_read, summary.accepted, summary.skipped) == (2, 0, 2)
    assert not any(lake.exists(table) for table in DATA_TABLES)
    assert _last_run(lake)["status"] == "succeeded"
