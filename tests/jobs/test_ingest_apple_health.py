"""Apple Health ingestion: real export, zip and CSV forms, bad input, idempotence, landing files."""

from __future__ import annotations

import csv
import re
import tempfile
import zipfile
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jobs import aggregate, generate
from jobs.ingest import run as ingest
from jobs.ingest.apple_health import ZIP_MEMBER
from jobs.sources import source_label
from lakehouse.catalog import DAILY_STEPS, JOB_RUNS, PATIENTS, QUARANTINE, STEP_SAMPLES
from lakehouse.errors import InputError
from lakehouse.storage import Lake
from tests.jobs.reference_daily import reference_daily
from tests.pseudonyms import pseudonym
from tests.test_cli import assert_one_line_error, mobility

REAL_EXPORT = Path(__file__).resolve().parents[2] / ".." / "shared/realdata/apple-health/export.xml"
needs_real = pytest.mark.skipif(not REAL_EXPORT.is_file(), reason="real export not present")

_RECORD = re.compile(r"<Record ([^>]*?)/?>")
_ATTR = re.compile(r'(\w+)="([^"]*)"')
_EXPORT_DATE = re.compile(r'<ExportDate value="([^"]+)"')

HEADER = """<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE HealthData [
<!ELEMENT HealthData (ExportDate,Me,(Record|Correlation)*)>
]>
<HealthData locale="en_US">
 <ExportDate value="2021-09-02 10:00:00 +0530"/>
 <Me HKCharacteristicTypeIdentifierBiologicalSex="HKBiologicalSexFemale"/>
"""
DEVICE = 'device="&lt;&lt;HKDevice: 0x1&gt;, name:iPhone&gt;"'


def _record(kind: str, start: str, end: str, value: str, *, unit: str = "count") -> dict[str, str]:
    return {
        "type": kind,
        "sourceName": "Asha's iPhone",
        "sourceVersion": "14.7",
        "unit": unit,
        "creationDate": end,
        "startDate": start,
        "endDate": end,
        "value": value,
    }


STEP = "HKQuantityTypeIdentifierStepCount"
# Written in this order; comments give the expected outcome.
FIXTURE = [
    _record(STEP, "2021-08-30 13:40:34+05:30", "2021-08-30 13:50:34+05:30", "420"),  # ok
    _record(STEP, "2021-08-30 23:55:00 +0530", "2021-08-31 00:05:00 +0530", "600"),  # ok, midnight
    _record(
        "HKQuantityTypeIdentifierHeartRate",
        "2021-08-30 13:41:00 +0530",
        "2021-08-30 13:41:00 +0530",
        "88",
        unit="count/min",
    ),  # skipped
    _record(STEP, "2021-08-31 08:00:00 +0530", "2021-08-31 08:10:00 +0530", "abc"),  # not a number
    _record(STEP, "2021-08-31 09:00:00 +0530", "2021-08-31 09:10:00 +0530", "5", unit="km"),  # unit
    _record(STEP, "2021-08-31 10:00:00 +0530", "2021-08-31 10:10:00 +0530", "-3"),  # negative
    _record(STEP, "2021-08-31 18:00:00 -0400", "2021-08-31 18:30:00 -0400", "1200"),  # ok, travel
    _record(STEP, "2021-08-31 18:00:00 -0400", "2021-08-31 18:30:00 -0400", "1200"),  # repeat
    _record(STEP, "2030-01-06 12:35:46 +0530", "2030-01-06 12:35:51 +0530", "10"),  # after export
]
ACCEPTED, QUARANTINED, SKIPPED = 3, 5, 1


def _attrs(attrs: dict[str, str]) -> str:
    return " ".join(f'{k}="{v}"' for k, v in attrs.items()).replace("'", "&apos;")


def _xml_text(records: list[dict[str, str]]) -> str:
    lines = [HEADER]
    for attrs in records:
        body = _attrs(attrs)
        if "HeartRate" in attrs["type"]:
            lines.append(
                f' <Record {body} {DEVICE}>\n  <MetadataEntry key="ctx" value="1"/>\n </Record>\n'
            )
        else:
            lines.append(f" <Record {body} {DEVICE}/>\n")
    # Records inside a Correlation repeat top-level ones; they must not be read twice.
    lines.append(' <Correlation type="X" sourceName="s" startDate="a" endDate="b">\n')
    lines.append(f" <Record {_attrs(records[0])}/>\n")
    lines.append(" </Correlation>\n</HealthData>\n")
    return "".join(lines)


@pytest.fixture
def fixture_xml(tmp_path: Path) -> Path:
    path = tmp_path / "export.xml"
    path.write_text(_xml_text(FIXTURE), encoding="utf-8")
    return path


def _bronze(lake: Lake) -> pl.DataFrame:
    return lake.read(STEP_SAMPLES).sort("source", "start_ts", "end_ts")


def _check_invariant(summary: ingest.IngestSummary) -> None:
    assert summary.records_read == summary.accepted + summary.quarantined + summary.skipped


def _parse_ts(text: str) -> datetime:
    """Independent of the job: strptime, after dropping the colon of a ``+05:30`` offset."""
    text = re.sub(r"\s*([+-]\d{2}):?(\d{2})$", r" \1\2", text)
    return datetime.strptime(text, "%Y-%m-%d %H:%M:%S %z")


@needs_real
def test_real_export_matches_an_independent_daily_total(lake: Lake) -> None:
    text = REAL_EXPORT.read_text(encoding="utf-8")
    summary = ingest.run(lake, str(REAL_EXPORT), patient_id="REAL1")
    _check_invariant(summary)
    exported = _parse_ts(_EXPORT_DATE.search(text).group(1))  # type: ignore[union-attr]
    records = [dict(_ATTR.findall(m.group(1))) for m in _RECORD.finditer(text)]
    steps = [r for r in records if r["type"] == STEP]
    assert summary.records_read == len(records)
    assert summary.skipped == len(records) - len(steps)

    quarantine = lake.read(QUARANTINE)
    future = [r for r in steps if _parse_ts(r["startDate"]) > exported]
    assert len(future) == 1 and summary.quarantined == 1
    assert quarantine["reason"].to_list() == ["sample after the export date"]
    assert future[0]["startDate"] in quarantine["raw"][0]
    assert "HKDevice" not in quarantine["raw"][0]

    samples: list[dict[str, Any]] = []
    for r in steps:
        start, end = _parse_ts(r["startDate"]), _parse_ts(r["endDate"])
        if start > exported:
            continue
        offset = start.utcoffset()
        assert offset is not None
        samples.append(
            {
                "patient_id": pseudonym("REAL1"),
                "start_ts": start.astimezone(UTC),
                "end_ts": end.astimezone(UTC),
                "utc_offset_minutes": int(offset.total_seconds() // 60),
                "steps": float(r["value"]),
                "source": r["sourceName"],
            }
        )
    assert summary.accepted == len(samples)
    expected = reference_daily(samples)
    aggregate.run(lake)
    daily = lake.read(DAILY_STEPS)
    got = {(p, d): s for p, d, s in daily.select("patient_id", "date", "steps").iter_rows()}
    assert set(got) == set(expected)
    for key, row in expected.items():
        assert got[key] == pytest.approx(row["steps"], abs=1e-6)
    patients = lake.read(PATIENTS)
    assert patients.select("disease_group", "timezone").row(0) == ("OTHER", "Etc/GMT+4")
    runs = lake.read(JOB_RUNS).filter(pl.col("job") == "ingest")
    assert runs["status"].to_list() == ["succeeded"]


def test_fixture_counts_reasons_and_rows(lake: Lake, fixture_xml: Path) -> None:
    summary = ingest.run(lake, fixture_xml, patient_id="P1", timezone="Asia/Kolkata")
    _check_invariant(summary)
    assert (summary.accepted, summary.quarantined, summary.skipped) == (
        ACCEPTED,
        QUARANTINED,
        SKIPPED,
    )
    assert summary.new_samples == ACCEPTED
    reasons = lake.read(QUARANTINE).sort("record")
    assert reasons.select("record", "reason").rows() == [
        (4, "steps is not a number"),
        (5, "unit is not 'count'"),
        (6, "negative steps"),
        (8, "repeats an earlier sample of this file"),
        (9, "sample after the export date"),
    ]
    assert reasons["source_file"].unique().to_list() == [str(fixture_xml)]
    bronze = _bronze(lake)
    first = bronze.row(0, named=True)
    assert first["start_ts"] == datetime(2021, 8, 30, 8, 10, 34, tzinfo=UTC)
    assert first["utc_offset_minutes"] == 330 and first["steps"] == 420.0
    # Stored without the owner's name (jobs.sources), the same label on every ingest.
    assert first["source"] == "iPhone 7751a0" == source_label("Asha's iPhone")
    assert first["month"] == "2021-08"
    assert bronze["utc_offset_minutes"].to_list() == [330, 330, -240]
    assert lake.read(PATIENTS).select("timezone").item() == "Asia/Kolkata"


def test_zip_and_csv_give_the_same_rows_as_the_xml(tmp_path: Path, fixture_xml: Path) -> None:
    xml_lake = Lake(str(tmp_path / "xml"))
    ingest.run(xml_lake, fixture_xml, patient_id="P1")
    expected = _bronze(xml_lake)

    zipped = tmp_path / "export.zip"
    with zipfile.ZipFile(zipped, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.write(fixture_xml, ZIP_MEMBER)
    zip_lake = Lake(str(tmp_path / "zip"))
    summary = ingest.run(zip_lake, zipped, patient_id="P1")
    assert (summary.accepted, summary.quarantined, summary.skipped) == (
        ACCEPTED,
        QUARANTINED,
        SKIPPED,
    )
    assert _bronze(zip_lake).equals(expected)

    converted = tmp_path / "steps.csv"
    with converted.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(FIXTURE[0]))
        writer.writeheader()
        for i, row in enumerate(FIXTURE):
            # The conversion is found both with and without the type prefix.
            short = i % 2 == 0
            writer.writerow(
                {**row, "type": row["type"].removeprefix("HKQuantityTypeIdentifier")}
                if short
                else row
            )
    csv_lake = Lake(str(tmp_path / "csv"))
    summary = ingest.run(csv_lake, converted, patient_id="P1")
    _check_invariant(summary)
    # A CSV has no export date: the far-future sample is caught as a sample in the future.
    assert (summary.accepted, summary.quarantined, summary.skipped) == (
        ACCEPTED,
        QUARANTINED,
        SKIPPED,
    )
    assert _bronze(csv_lake).equals(expected)
    lines = csv_lake.read(QUARANTINE).sort("record")["record"].to_list()
    assert lines == [5, 6, 7, 9, 10]  # CSV line numbers (header is line 1)


def test_unreadable_files_commit_nothing(lake: Lake, tmp_path: Path, fixture_xml: Path) -> None:
    ingest.run(lake, fixture_xml, patient_id="P1")
    versions = {t.path: lake.version(t) for t in (STEP_SAMPLES, QUARANTINE, PATIENTS)}

    big = tmp_path / "big" / "export.xml"
    big.parent.mkdir()
    extra = [
        _record(STEP, f"2021-09-01 {h:02d}:00:00 +0530", f"2021-09-01 {h:02d}:05:00 +0530", "50")
        for h in range(20)
    ]
    text = _xml_text(FIXTURE[:2] + extra)
    truncated = tmp_path / "truncated.xml"
    truncated.write_text(text[: len(text) - 200], encoding="utf-8")
    bad_zip = tmp_path / "export.zip"
    bad_zip.write_bytes(b"PK\x03\x04 not really a zip")
    unknown = tmp_path / "notes.bin"
    unknown.write_bytes(b"\x00\x01\x02 binary")
    # A real zip whose compressed export is damaged in the middle, and one cut short.
    good_zip = tmp_path / "good.zip"
    with zipfile.ZipFile(good_zip, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(ZIP_MEMBER, text * 20)
    data = bytearray(good_zip.read_bytes())
    data[len(data) // 2 : len(data) // 2 + 64] = bytes(64)
    damaged_zip = tmp_path / "damaged" / "export.zip"
    damaged_zip.parent.mkdir()
    damaged_zip.write_bytes(bytes(data))
    cut_zip = tmp_path / "cut.zip"
    cut_zip.write_bytes(bytes(data[: len(data) // 2]))
    for path in (truncated, bad_zip, unknown, damaged_zip, cut_zip):
        with pytest.raises(InputError) as caught:
            ingest.run(lake, path, patient_id="P1")
        assert str(path) in str(caught.value) and "\n" not in str(caught.value)
    assert {t.path: lake.version(t) for t in (STEP_SAMPLES, QUARANTINE, PATIENTS)} == versions
    failed = lake.read(JOB_RUNS).filter(pl.col("status") == "failed")
    assert failed.height == 5

    with pytest.raises(InputError, match="--patient-id"):
        ingest.run(lake, fixture_xml)
    with pytest.raises(InputError, match="time zone"):
        ingest.run(lake, fixture_xml, patient_id="P1", timezone="Mars/Olympus")
    with pytest.raises(InputError, match="format"):
        ingest.run(lake, fixture_xml, patient_id="P1", format="fitbit-ish")


def test_reingest_adds_nothing_and_newer_export_adds_only_new(
    lake: Lake, tmp_path: Path, fixture_xml: Path
) -> None:
    first = ingest.run(lake, fixture_xml, patient_id="P1")
    again = ingest.run(lake, fixture_xml, patient_id="P1")
    assert again.new_samples == 0 and again.accepted == first.accepted
    assert lake.read(STEP_SAMPLES).height == ACCEPTED
    assert lake.read(QUARANTINE).height == QUARANTINED

    newer = tmp_path / "newer" / "export.xml"
    newer.parent.mkdir()
    extra = [
        _record(STEP, "2021-09-01 07:00:00 +0530", "2021-09-01 07:20:00 +0530", "900"),
        _record(STEP, "2021-09-01 08:00:00 +0530", "2021-09-01 08:20:00 +0530", "700"),
    ]
    newer.write_text(_xml_text(FIXTURE + extra), encoding="utf-8")
    summary = ingest.run(lake, newer, patient_id="P1", timezone="Europe/Paris")
    assert summary.accepted == ACCEPTED + 2 and summary.new_samples == 2
    assert lake.read(STEP_SAMPLES).height == ACCEPTED + 2
    # The first ingest chose the zone (5:30 is not a whole-hour offset, so UTC); never overwritten.
    assert lake.read(PATIENTS).select("patient_id", "timezone").rows() == [(pseudonym("P1"), "UTC")]


def test_synthetic_landing_exports_ingest(lake: Lake, tmp_path: Path) -> None:
    landing = tmp_path / "landing"
    generated = generate.run(
        lake, patients=4, seed=11, years=0.25, landing=landing, end_date=date(2026, 6, 30)
    )
    exports = sorted((landing / "apple-health").glob("*/export.*"))
    assert {p.suffix for p in exports} == {".xml", ".zip"}
    accepted = quarantined = 0
    for path in exports:
        summary = ingest.run(lake, path)
        _check_invariant(summary)
        assert summary.patient_id == pseudonym(path.parent.name)
        accepted += summary.accepted
        quarantined += summary.quarantined
    assert accepted == generated.samples
    assert quarantined == generated.quarantined
    assert lake.read(STEP_SAMPLES).height == generated.samples
    assert sorted(lake.read(PATIENTS)["patient_id"]) == sorted(
        pseudonym(p.parent.name) for p in exports
    )
    # the folder names the person: as recorded in the lake, it names the pseudonym
    recorded = [
        *lake.read(QUARANTINE)["source_file"].unique().to_list(),
        *lake.read(JOB_RUNS)["details"].drop_nulls().to_list(),
    ]
    assert recorded and not [text for text in recorded if "SYN11-" in text]
    assert {f for f in lake.read(QUARANTINE)["source_file"]} <= {
        str(p).replace(p.parent.name, pseudonym(p.parent.name)) for p in exports
    }


def test_cli_prints_counts_and_one_line_errors(tmp_path: Path, fixture_xml: Path) -> None:
    lake_dir = str(tmp_path / "cli-lake")
    done = mobility(
        "--lake", lake_dir, "ingest", str(fixture_xml), "--patient-id", "P1", cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr
    assert f"{ACCEPTED:,} accepted" in done.stdout
    assert f"{QUARANTINED:,} quarantined" in done.stdout
    assert f"{SKIPPED:,} skipped" in done.stdout
    truncated = tmp_path / "truncated.xml"
    truncated.write_text(fixture_xml.read_text(encoding="utf-8")[:-300], encoding="utf-8")
    failed = mobility(
        "--lake", lake_dir, "ingest", str(truncated), "--patient-id", "P1", cwd=tmp_path
    )
    assert_one_line_error(failed, "unreadable XML")


_CORRUPTIONS = {
    "value": lambda r: {**r, "value": "12,5x"},
    "negative": lambda r: {**r, "value": "-" + r["value"]},
    "unit": lambda r: {**r, "unit": "km"},
    "end before start": lambda r: {**r, "endDate": "2021-08-01 00:00:00 +0000"},
    "bad time": lambda r: {**r, "startDate": "yesterday"},
}


@settings(max_examples=15, deadline=None)
@given(
    corrupt=st.lists(
        st.tuples(st.integers(0, 23), st.sampled_from(sorted(_CORRUPTIONS))), max_size=10
    )
)
def test_random_corruption_never_loses_accepted_rows(corrupt: list[tuple[int, str]]) -> None:
    genuine = [
        _record(STEP, f"2021-09-01 {h:02d}:10:00 +0200", f"2021-09-01 {h:02d}:20:00 +0200", "300")
        for h in range(24)
    ]
    broken = dict(corrupt)
    records = [_CORRUPTIONS[broken[i]](r) if i in broken else r for i, r in enumerate(genuine)]
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "export.xml"
        path.write_text(_xml_text(records), encoding="utf-8")
        lake = Lake(str(Path(folder) / "lake"))
        summary = ingest.run(lake, path, patient_id="P1")
        _check_invariant(summary)
        assert summary.quarantined == len(broken)
        assert summary.accepted == 24 - len(broken)
        starts = sorted(t.hour for t in lake.read(STEP_SAMPLES)["start_ts"])
        assert starts == sorted((h - 2) % 24 for h in range(24) if h not in broken)
        assert lake.read(QUARANTINE)["record"].sort().to_list() == sorted(i + 1 for i in broken)
