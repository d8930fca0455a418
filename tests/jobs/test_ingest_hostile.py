"""Hostile and broken files for every ingestion parser (docs/reliability.md): each is read (rows
accepted or quarantined, counts adding up) or refused with one line, in bounded memory and time.
The longer fuzz campaign is ``benchmarks/bench_reliability.py``."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jobs.ingest import apple_health, fitbit
from lakehouse.catalog import STEP_SAMPLES
from lakehouse.storage import Lake
from tests.jobs.ingest_fuzz import CASES, check_bytes, outcome, parse
from tests.test_cli import assert_one_line_error, mobility

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = 40
XML_HEAD = '<?xml version="1.0" encoding="UTF-8"?>\n'
STEP_RECORD = (
    '<Record type="HKQuantityTypeIdentifierStepCount" sourceName="Watch" unit="count" '
    'startDate="2024-01-01 10:00:00 +0100" endDate="2024-01-01 10:01:00 +0100" value="{value}"/>'
)


@pytest.mark.parametrize("examples", [EXAMPLES, pytest.param(1000, marks=pytest.mark.slow)])
@pytest.mark.parametrize("case", sorted(CASES))
def test_fuzzed_files_are_read_or_refused_in_one_line(case: str, examples: int) -> None:
    format, strategy, suffix = CASES[case]

    @settings(
        max_examples=examples,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(strategy)
    def read_or_refuse(content: bytes) -> None:
        check_bytes(content, format, suffix)

    read_or_refuse()


def _write(folder: Path, name: str, content: str | bytes) -> Path:
    path = folder / name
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    return path


def _refused(path: Path, format: str, fragment: str, *, within: float = 5.0) -> str:
    started = time.perf_counter()
    result, message = outcome(path, format)
    assert time.perf_counter() - started < within
    assert result == "refused" and fragment in message, message
    return message


# --- XML ---------------------------------------------------------------------------------------

BILLION_LAUGHS = XML_HEAD + (
    '<!DOCTYPE HealthData [<!ENTITY lol "lol">'
    + "".join(f'<!ENTITY lol{i} "{f"&lol{i - 1};" * 10}">' for i in range(1, 10)).replace(
        "&lol0;", "&lol;"
    )
    + ']><HealthData><Record type="&lol9;"/></HealthData>'
)


@pytest.mark.parametrize(
    "document",
    [
        pytest.param(BILLION_LAUGHS, id="billion-laughs"),
        pytest.param(
            XML_HEAD
            + f'<!DOCTYPE HealthData [<!ENTITY big "{"x" * 100_000}">]><HealthData>'
            + f'<Record type="StepCount" value="{"&big;" * 10_000}"/></HealthData>',
            id="quadratic-blowup",
        ),
        pytest.param(
            XML_HEAD + '<!DOCTYPE HealthData [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
            "<HealthData><Record>&x;</Record></HealthData>",
            id="external-entity",
        ),
        pytest.param(
            XML_HEAD + '<!DOCTYPE HealthData [<!ENTITY % p SYSTEM "file:///etc/passwd"> %p;]>'
            "<HealthData/>",
            id="parameter-entity",
        ),
    ],
)
def test_entity_declarations_are_refused_not_expanded(tmp_path: Path, document: str) -> None:
    path = _write(tmp_path, "export.xml", document)
    message = _refused(path, "apple-health", "refused XML", within=2.0)
    assert "entit" in message


def test_an_external_dtd_is_neither_fetched_nor_fatal(tmp_path: Path) -> None:
    # a listener that would notice a fetch: nothing may connect to it
    document = (
        XML_HEAD
        + '<!DOCTYPE HealthData SYSTEM "http://127.0.0.1:9/health.dtd">'
        + f"<HealthData>{STEP_RECORD.format(value=12)}</HealthData>"
    )
    parsed = parse(_write(tmp_path, "export.xml", document), "apple-health")
    assert (parsed.records_read, parsed.accepted) == (1, 1)


def test_a_real_exports_dtd_is_accepted(tmp_path: Path) -> None:
    document = (
        XML_HEAD
        + "<!DOCTYPE HealthData [\n<!ELEMENT HealthData (ExportDate,Record*)>\n"
        + "<!ATTLIST Record type CDATA #REQUIRED value CDATA #IMPLIED>\n]>\n"
        + f"<HealthData>{STEP_RECORD.format(value=7) * 3}</HealthData>"
    )
    parsed = parse(_write(tmp_path, "export.xml", document), "apple-health")
    assert (parsed.records_read, parsed.accepted, parsed.rejected) == (3, 1, 2)  # 2 repeats


def test_deep_nesting_is_refused(tmp_path: Path) -> None:
    depth = 100_000
    document = XML_HEAD + "<HealthData>" + "<a>" * depth + "</a>" * depth + "</HealthData>"
    _refused(_write(tmp_path, "export.xml", document), "apple-health", "nested deeper than")


def _zip_bomb(folder: Path) -> Path:
    """An Apple Health zip of 600 MB of blanks, about 0.6 MB compressed."""
    path = folder / "export.zip"
    with (
        zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive,
        archive.open(apple_health.ZIP_MEMBER, "w") as member,
    ):
        member.write(XML_HEAD.encode() + b"<HealthData>")
        blank = b" " * (1 << 20)
        for _ in range(600):
            member.write(blank)
        member.write(b"</HealthData>")
    return path


def _billion_laughs(folder: Path) -> Path:
    return _write(folder, "export.xml", BILLION_LAUGHS)


def test_a_zip_bomb_is_refused_before_unpacking(tmp_path: Path) -> None:
    _refused(_zip_bomb(tmp_path), "apple-health", "more than 200 times", within=2.0)


# --- CSV and JSON ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("format", "header"),
    [
        ("generic", "patient_id,start,end,steps\n"),
        ("fitbit", "Id,ActivityHour,StepTotal\n"),
        ("clinical", "patient_id,disease_group,timezone\n"),
        ("apple-health", "type,sourceName,unit,startDate,endDate,value\n"),
    ],
)
def test_a_line_of_megabytes_is_refused(tmp_path: Path, format: str, header: str) -> None:
    path = _write(tmp_path, "export.csv", header + "P1," + "9" * (3 << 20))
    _refused(path, format, "longer than 1,048,576 characters")


@pytest.mark.parametrize("format", ["generic", "fitbit", "clinical", "apple-health"])
def test_a_utf16_file_is_refused_in_one_line(tmp_path: Path, format: str) -> None:
    header = {
        "generic": "patient_id,start,end,steps",
        "fitbit": "Id,ActivityHour,StepTotal",
        "clinical": "patient_id,disease_group,timezone",
        "apple-health": "type,sourceName,unit,startDate,endDate,value",
    }[format]
    path = _write(tmp_path, "export.csv", (header + "\nP1,1,2,3\n").encode("utf-16"))
    result, message = outcome(path, format)
    assert result == "refused", message


def test_nul_bytes_and_mixed_offsets_are_read_row_by_row(tmp_path: Path) -> None:
    rows = [
        "patient_id,start,end,steps",
        "P1,2024-03-01T08:00:00+01:00,2024-03-01T08:10:00+01:00,100",
        "P1,2024-03-01T08:00:00-05:00,2024-03-01T08:10:00-05:00,200",
        "P1,2024-03-01T08:00:00Z,2024-03-01T08:10:00Z,300",
        "P1\x00,2024-03-01T09:00:00Z,2024-03-01T09:10:00Z,4\x000",
    ]
    parsed = parse(_write(tmp_path, "samples.csv", "\n".join(rows) + "\n"), "generic")
    assert parsed.records_read == 4
    assert parsed.accepted + parsed.rejected == 4 and parsed.accepted >= 3


def test_deeply_nested_json_is_refused(tmp_path: Path) -> None:
    text = '[{"dateTime": "01/01/24 00:00:00", "value": ' + "[" * 200_000 + "]" * 200_000 + "}]"
    _refused(_write(tmp_path, "steps-2024-01-01.json", text), "fitbit", "nested too deeply")


def test_an_oversized_json_is_refused_unread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(fitbit, "MAX_JSON_BYTES", 1000)
    entries = [{"dateTime": "01/01/24 00:00:00", "value": "1"}] * 100
    path = _write(tmp_path, "steps-2024-01-01.json", json.dumps(entries))
    _refused(path, "fitbit", "too large for a Fitbit steps file")


# --- memory: each read in a fresh process, measured against a tiny file of its format ----------


def _measured(format: str, path: Path) -> dict[str, object]:
    done = subprocess.run(
        [sys.executable, "-m", "tests.jobs.ingest_fuzz", format, str(path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def _huge_attribute(folder: Path) -> Path:
    path = folder / "export.xml"
    with path.open("wb") as out:
        out.write(XML_HEAD.encode() + b'<HealthData><Record type="')
        chunk = b"x" * (1 << 20)
        for _ in range(200):
            out.write(chunk)
        out.write(b'"/></HealthData>')
    return path


def _wide_correlation(folder: Path) -> Path:
    path = folder / "export.xml"
    with path.open("wb") as out:
        out.write(XML_HEAD.encode() + b"<HealthData><Correlation>")
        children = (STEP_RECORD.format(value=1) + "\n").encode() * 10_000
        for _ in range(40):  # 400,000 records nested in one element, about 100 MB
            out.write(children)
        out.write(b"</Correlation>" + STEP_RECORD.format(value=3).encode() + b"</HealthData>")
    return path


def _giant_line(folder: Path) -> Path:
    path = folder / "samples.csv"
    with path.open("wb") as out:
        out.write(b"patient_id,start,end,steps\nP1,")
        chunk = b"9" * (1 << 20)
        for _ in range(200):
            out.write(chunk)
    return path


@pytest.mark.parametrize(
    ("format", "build", "expected"),
    [
        pytest.param("apple-health", _huge_attribute, "refused", id="xml-200mb-attribute"),
        pytest.param("apple-health", _wide_correlation, "parsed", id="xml-400k-nested-records"),
        pytest.param("generic", _giant_line, "refused", id="csv-200mb-line"),
    ],
)
def test_huge_hostile_files_take_bounded_memory(
    tmp_path: Path, format: str, build: object, expected: str
) -> None:
    assert callable(build)
    path = build(tmp_path)
    assert os.path.getsize(path) > 60_000_000
    measured = _measured(format, path)
    assert measured["outcome"] == expected, measured
    # reading 60-200 MB must not hold them: well under the size of the file
    assert float(measured["added_mb"]) < 60, measured  # type: ignore[arg-type]


# --- end to end: the command prints one line and commits nothing ---------------------------


def test_ingest_of_a_billion_laughs_export_prints_one_line_and_commits_nothing(
    tmp_path: Path,
) -> None:
    folder = tmp_path / "apple-health" / "P1"
    folder.mkdir(parents=True)
    path = _billion_laughs(folder)
    lake = tmp_path / "lake"
    done = mobility("--lake", str(lake), "ingest", str(path), cwd=tmp_path)
    assert_one_line_error(done, "refused XML: it declares an entity")
    assert not Lake(str(lake)).exists(STEP_SAMPLES)


@given(st.binary(max_size=300))
@settings(max_examples=EXAMPLES, deadline=None)
def test_random_bytes_are_refused_or_read(content: bytes) -> None:
    for format, suffix in (("apple-health", ".xml"), ("generic", ".csv"), ("fitbit", ".json")):
        check_bytes(content, format, suffix)


# --- what fuzzing found (each crashed with another exception before its fix) ---------------------


def _zip_with_bad_offsets() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr(apple_health.ZIP_MEMBER, "<HealthData/>")
    content = bytearray(buffer.getvalue())
    end = content.rfind(b"PK\x05\x06")
    content[end + 16 : end + 20] = (1_000_000).to_bytes(4, "little")  # central directory offset
    return bytes(content)


def _zip_with_bad_header() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr(apple_health.ZIP_MEMBER, "<HealthData/>")
    return b"QK" + buffer.getvalue()[2:]  # the member's local header magic


def _parquet_with_bad_utf8() -> bytes:
    import pyarrow as pa
    import pyarrow.parquet as pq

    buffer = io.BytesIO()
    table = pa.table({"patient_id": ["PATIENTXYZ"] * 3, "start": ["2024-01-01T00:00:00Z"] * 3})
    table = table.append_column("steps", pa.array([1.0, 2.0, 3.0]))
    pq.write_table(table, buffer, compression="none", use_dictionary=False, write_statistics=False)
    return buffer.getvalue().replace(b"PATIENTXYZ", b"PAT\xffENTXYZ")


def _parquet_with_bad_utf8_metadata(*, of_column: bool) -> bytes:
    import pyarrow as pa
    import pyarrow.parquet as pq

    # Polars panicked on key-value metadata that is not UTF-8 (found by the slow fuzz campaign)
    bad = {b"note": b"\xff\xfe not text"}
    fields = [
        pa.field("patient_id", pa.string(), metadata=bad if of_column else None),
        pa.field("start", pa.string()),
        pa.field("steps", pa.float64()),
    ]
    table = pa.table(
        {"patient_id": ["P1"], "start": ["2024-01-01T00:00:00Z"], "steps": [5.0]},
        schema=pa.schema(fields, metadata=None if of_column else bad),
    )
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("format", "name", "content", "expected"),
    [
        pytest.param(
            "apple-health", "export.zip", _zip_with_bad_offsets(), "refused", id="zip-offsets"
        ),
        pytest.param(
            "generic",
            "samples.parquet",
            _parquet_with_bad_utf8_metadata(of_column=False),
            "parsed",
            id="parquet-file-metadata-not-utf8",
        ),
        pytest.param(
            "generic",
            "samples.parquet",
            _parquet_with_bad_utf8_metadata(of_column=True),
            "parsed",
            id="parquet-column-metadata-not-utf8",
        ),
        pytest.param(
            "apple-health", "export.zip", _zip_with_bad_header(), "refused", id="zip-header"
        ),
        pytest.param(
            "apple-health",
            "export.xml",
            b'<?xml version="1.0" encoding="TTF-8"?><HealthData/>',
            "refused",
            id="xml-unknown-encoding",
        ),
        pytest.param(
            "fitbit",
            "steps-2024-01-01.json",
            b'[{"dateTime": "01/01/24 00:00:00", "value": "1\\udb00"}]',
            "parsed",
            id="json-lone-surrogate",
        ),
        pytest.param(
            "fitbit",
            "steps-2024-01-01.json",
            b'[{"dateTime": "01/01/24 00:00:00", "value": ' + b"9" * 70_000 + b"}]",
            "refused",
            id="json-70000-digit-number",
        ),
        pytest.param(
            "generic",
            "samples.csv",
            "patient_id,start,steps\nP1,²,5\n".encode(),
            "refused",
            id="csv-unicode-digit-timestamp",
        ),
        pytest.param(
            "generic",
            "samples.csv",
            b"patient_id,start,steps\nP1," + b"9" * 70_000 + b",5\n",
            "refused",
            id="csv-70000-digit-timestamp",
        ),
        pytest.param(
            "generic", "samples.parquet", _parquet_with_bad_utf8(), "refused", id="parquet-not-utf8"
        ),
    ],
)
def test_what_fuzzing_found_is_read_or_refused(
    tmp_path: Path, format: str, name: str, content: bytes, expected: str
) -> None:
    result, message = outcome(_write(tmp_path, name, content), format)
    assert result == expected, message
