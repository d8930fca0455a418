"""Hostile inputs for the ingestion parsers (docs/reliability.md): hypothesis strategies that
build plausible files of each format and then damage them, and a harness that reads a file the
way ``mobility ingest`` does up to its commit (no lake needed).

Also ``python -m tests.jobs.ingest_fuzz FORMAT FILE``: reads one file in a fresh process and
prints JSON with the outcome and the peak memory it added over a tiny file of the same format
(the memory tests and the benchmark).
"""

from __future__ import annotations

import io
import json
import resource
import sys
import tempfile
import time
import zipfile
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from xml.sax.saxutils import quoteattr

import pyarrow as pa
import pyarrow.parquet as pq
from hypothesis import strategies as st

from jobs.ingest import apple_health, clinical, fitbit, generic
from jobs.ingest.common import ParseStats, SeenKeys
from lakehouse.errors import InputError

FORMATS = ("apple-health", "fitbit", "generic", "clinical")
NOW = datetime(2026, 6, 1, tzinfo=UTC)


@dataclass(frozen=True)
class Parsed:
    """What reading a file gave: ``records_read == accepted + rejected + skipped``."""

    records_read: int
    accepted: int
    rejected: int
    skipped: int


def parse(path: Path, format: str) -> Parsed:
    """Read ``path`` as ``format`` (apple-health, fitbit, generic or clinical) as ingestion does
    before committing: every batch split into valid and rejected rows.

    Raises:
        InputError: the file cannot be read (the one line ``mobility ingest`` prints).
    """
    stats, seen = ParseStats(), SeenKeys()
    accepted = rejected = 0
    if format == "apple-health":
        kind = apple_health.detect_kind(path)
        with apple_health.raw_batches(path, kind, stats) as batches:
            for raw in batches:
                exported = stats.export_date
                valid, bad = apple_health.to_samples(
                    raw,
                    patient_id="P1",
                    export_date=apple_health.parse_timestamp(exported) if exported else None,
                    now=NOW,
                    seen=seen,
                )
                accepted, rejected = accepted + valid.height, rejected + bad.height
    elif format == "fitbit":
        found = fitbit.detect_kind(path)
        if found is None:
            raise InputError(f"{path}: not a Fitbit file")
        layout = fitbit.LAYOUTS[found]
        times = fitbit.LocalTimes(layout, "UTC")
        patient = None if layout.patient else "P1"
        with fitbit.raw_batches(path, found, stats) as batches:
            for raw in batches:
                valid, bad = fitbit.to_samples(
                    raw, found, patient_id=patient, timezone="UTC", now=NOW, seen=seen, times=times
                )
                accepted, rejected = accepted + valid.height, rejected + bad.height
    elif format == "generic":
        options = generic.GenericOptions(timezone="UTC")
        for valid, bad in generic.read_samples(path, options, stats=stats, seen=seen, now=NOW):
            accepted, rejected = accepted + valid.height, rejected + bad.height
    elif format == "clinical":
        kind = clinical.detect_kind(path)
        if kind is None:
            raise InputError(f"{path}: not a clinical CSV")
        read = clinical._read(path, kind, str(path))
        valid, bad = clinical._split_rows(kind, read.rows, today=NOW.date(), known=None)
        return Parsed(read.records_read, valid.height, bad.height, read.blank)
    else:
        raise ValueError(format)
    return Parsed(stats.records_read, accepted, rejected, stats.skipped)


def outcome(path: Path, format: str) -> tuple[str, str]:
    """``("parsed", "")`` or ``("refused", the error)``, checking the invariants of either:
    counts that add up, or one non-empty line of error. Any other exception propagates: a bug."""
    try:
        parsed = parse(path, format)
    except InputError as err:
        message = str(err)
        assert message.strip(), "an empty error"
        assert "\n" not in message and "\r" not in message, f"not one line: {message!r}"
        return "refused", message
    assert parsed.records_read == parsed.accepted + parsed.rejected + parsed.skipped, parsed
    return "parsed", ""


def check_bytes(content: bytes, format: str, suffix: str) -> str:
    """:func:`outcome` of ``content`` written to a temporary file named ``*suffix``."""
    with tempfile.TemporaryDirectory(prefix="mobility-fuzz-") as folder:
        path = Path(folder) / f"export{suffix}"
        path.write_bytes(content)
        return outcome(path, format)[0]


# --- strategies --------------------------------------------------------------------------------

# Text that breaks parsers: delimiters, quotes, markup, line ends, NUL, controls, unicode.
_NASTY = st.sampled_from(
    [
        ",",
        ";",
        "\t",
        '"',
        "'",
        "<",
        ">",
        "&",
        "\n",
        "\r\n",
        "\r",
        "\x00",
        "\x1b",
        "\ufeff",
        "é",
        "患",
    ]
)
nasty_text = st.lists(st.one_of(_NASTY, st.text(max_size=6)), max_size=8).map("".join)


def _xml_chars(text: str) -> str:
    return "".join(c for c in text if c in "\t\n\r" or (ord(c) >= 0x20 and c not in "\ufffe\uffff"))


_OFFSETS = ["", "Z", "+00:00", "+01:00", "-05:00", "+0530", "-0930", "+14:00", "-12:00", "+25:00"]


@st.composite
def timestamps(draw: st.DrawFn, *, style: str = "iso") -> str:
    """A timestamp as exports write them, with a mix of UTC offsets, or garbage."""
    if draw(st.integers(0, 9)) == 0:
        return draw(nasty_text)
    day = draw(st.dates(date(1899, 1, 1), date(2101, 12, 31)))
    hour, minute, second = (
        draw(st.integers(0, 24)),
        draw(st.integers(0, 60)),
        draw(st.integers(0, 59)),
    )
    offset = draw(st.sampled_from(_OFFSETS))
    if style == "apple":
        offset = offset.replace(":", "") or "+0000"
        return f"{day.isoformat()} {hour:02d}:{minute:02d}:{second:02d} {offset}"
    if style == "fitbit":
        half = "AM" if hour < 12 else "PM"
        return (
            f"{day.month}/{day.day}/{day.year} {(hour % 12) or 12}:{minute:02d}:{second:02d} {half}"
        )
    if draw(st.booleans()):
        return str(draw(st.integers(0, 5_000_000_000)))  # epoch seconds
    return f"{day.isoformat()}T{hour:02d}:{minute:02d}:{second:02d}{offset}"


steps = st.one_of(
    st.integers(-10, 100_000).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    nasty_text,
)


@st.composite
def damaged(draw: st.DrawFn, content: bytes) -> bytes:
    """``content``, maybe cut short, with bytes flipped, NULs inserted or a giant field added."""
    kind = draw(st.sampled_from(["none", "none", "truncate", "flip", "nul", "giant"]))
    if not content or kind == "none":
        return content
    at = draw(st.integers(0, len(content) - 1))
    if kind == "truncate":
        return content[:at]
    if kind == "flip":
        return content[:at] + bytes([content[at] ^ draw(st.integers(1, 255))]) + content[at + 1 :]
    if kind == "nul":
        return content[:at] + b"\x00" * draw(st.integers(1, 4)) + content[at:]
    giant = draw(st.sampled_from([b"9", b'"', b"x", b" "])) * draw(st.integers(70_000, 300_000))
    return content[:at] + giant + content[at:]


def _encoded(draw: st.DrawFn, text: str) -> bytes:
    encoding = draw(st.sampled_from(["utf-8"] * 5 + ["utf-8-sig", "utf-16", "latin-1", "cp1252"]))
    return text.encode(encoding, errors="replace")


@st.composite
def apple_xml(draw: st.DrawFn) -> bytes:
    """An export.xml: DOCTYPE, ExportDate, step and other records, correlations, odd values."""
    parts = ['<?xml version="1.0" encoding="UTF-8"?>\n']
    if draw(st.booleans()):
        parts.append("<!DOCTYPE HealthData [\n<!ELEMENT HealthData (ExportDate,Record*)>\n]>\n")
    parts.append('<HealthData locale="en_US">\n')
    if draw(st.booleans()):
        parts.append(f" <ExportDate value={quoteattr(draw(timestamps(style='apple')))}/>\n")
    for _ in range(draw(st.integers(0, 12))):
        attrs = {
            "type": draw(
                st.sampled_from(
                    ["HKQuantityTypeIdentifierStepCount", "HKQuantityTypeIdentifierHeartRate"]
                )
            ),
            "sourceName": draw(nasty_text),
            "unit": draw(st.sampled_from(["count", "count/min", ""])),
            "startDate": draw(timestamps(style="apple")),
            "endDate": draw(timestamps(style="apple")),
            "value": draw(steps),
        }
        if draw(st.integers(0, 19)) == 0:  # unescaped: not well-formed
            text = " ".join(f'{k}="{v}"' for k, v in attrs.items())
        elif draw(st.integers(0, 9)) == 0:  # characters XML cannot hold: not well-formed
            text = " ".join(f"{k}={quoteattr(v)}" for k, v in attrs.items())
        else:
            text = " ".join(f"{k}={quoteattr(_xml_chars(v))}" for k, v in attrs.items())
        record = f" <Record {text}/>\n"
        if draw(st.integers(0, 5)) == 0:
            record = f" <Correlation type='x'>\n {record} </Correlation>\n"
        parts.append(record)
    parts.append("</HealthData>\n")
    return draw(damaged(_encoded(draw, "".join(parts))))


@st.composite
def apple_zip(draw: st.DrawFn) -> bytes:
    """An export.zip around :func:`apple_xml` (sometimes under another name), maybe damaged."""
    buffer = io.BytesIO()
    name = draw(st.sampled_from([apple_health.ZIP_MEMBER, "other/export.xml", "export.xml"]))
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(name, draw(apple_xml()))
    return draw(damaged(buffer.getvalue()))


def _csv(draw: st.DrawFn, header: list[str], cells: list[st.SearchStrategy[str]]) -> bytes:
    delimiter = draw(st.sampled_from([",", ",", ";", "\t"]))
    lines = [delimiter.join(header)]
    for _ in range(draw(st.integers(0, 15))):
        row = [draw(cell) for cell in cells]
        if draw(st.booleans()):
            row = ['"' + value.replace('"', '""') + '"' for value in row]
        lines.append(delimiter.join(row))
    ending = draw(st.sampled_from(["\n", "\r\n"]))
    return draw(damaged(_encoded(draw, ending.join(lines) + ending)))


@st.composite
def apple_csv(draw: st.DrawFn) -> bytes:
    """The CSV conversion of an export."""
    header = ["type", "sourceName", "unit", "startDate", "endDate", "value"]
    kinds = st.sampled_from(["HKQuantityTypeIdentifierStepCount", "StepCount", "HeartRate"])
    stamp = timestamps(style="apple")
    return _csv(draw, header, [kinds, nasty_text, st.just("count"), stamp, stamp, steps])


@st.composite
def fitbit_csv(draw: st.DrawFn) -> bytes:
    """A Fitabase hourly steps file (``Id,ActivityHour,StepTotal``)."""
    header = ["Id", "ActivityHour", "StepTotal"]
    ids = st.one_of(st.integers(0, 10**12).map(str), nasty_text)
    return _csv(draw, header, [ids, timestamps(style="fitbit"), steps])


_json_values = st.recursive(
    st.none() | st.booleans() | st.floats() | st.integers() | nasty_text,
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(nasty_text, children, max_size=3)
    ),
    max_leaves=10,
)


@st.composite
def fitbit_json(draw: st.DrawFn) -> bytes:
    """A ``steps-*.json`` of a personal export: ``dateTime``/``value`` entries, or any JSON."""
    if draw(st.integers(0, 4)) == 0:
        document = draw(_json_values)
    else:
        entries = st.fixed_dictionaries(
            {
                "dateTime": st.one_of(timestamps(), _json_values),
                "value": st.one_of(steps, _json_values),
            }
        )
        document = draw(st.lists(entries, max_size=12))
    text = json.dumps(document, ensure_ascii=draw(st.booleans()))
    if not text.lstrip().startswith("[") or '"dateTime"' not in text[:1024]:
        text = '[{"dateTime": "01/01/24 00:00:00", "value": "1"}, ' + text + "]"
    return draw(damaged(_encoded(draw, text)))


@st.composite
def generic_csv(draw: st.DrawFn) -> bytes:
    """A generic samples file: role columns in any order and case, mixed UTC offsets."""
    roles = ["patient_id", "start", "end", "steps", "source"]
    chosen = draw(st.permutations(roles))
    chosen = [r for r in chosen if r in ("start", "steps", "patient_id") or draw(st.booleans())]
    header = [draw(st.sampled_from([r, r.upper(), r.title()])) for r in chosen]
    values = {
        "patient_id": st.one_of(st.sampled_from(["P1", "P2"]), nasty_text),
        "start": timestamps(),
        "end": timestamps(),
        "steps": steps,
        "source": nasty_text,
    }
    return _csv(draw, header, [values[r] for r in chosen])


@st.composite
def generic_parquet(draw: st.DrawFn) -> bytes:
    """A generic samples file in Parquet: typed or text columns, maybe damaged."""
    rows = draw(st.integers(0, 12))
    typed = draw(st.booleans())
    moments = st.datetimes(datetime(1900, 1, 1), datetime(2100, 1, 1), timezones=st.just(UTC))
    columns: dict[str, pa.Array] = {
        "patient_id": pa.array([draw(nasty_text) for _ in range(rows)]),
        "start": pa.array([draw(moments) if typed else draw(timestamps()) for _ in range(rows)]),
        "steps": pa.array(
            [draw(st.floats(allow_nan=True)) if typed else draw(steps) for _ in range(rows)]
        ),
    }
    if draw(st.booleans()):
        columns["end"] = pa.array([draw(timestamps()) for _ in range(rows)])
    buffer = io.BytesIO()
    pq.write_table(pa.table(columns), buffer)
    return draw(damaged(buffer.getvalue()))


@st.composite
def clinical_csv(draw: st.DrawFn) -> bytes:
    """A patients or therapies file."""
    dates = st.one_of(st.dates(date(1890, 1, 1), date(2101, 1, 1)).map(str), nasty_text)
    if draw(st.booleans()):
        header = ["patient_id", "disease_group", "timezone"]
        groups = st.sampled_from(["MS", "PD", "RA", "OTHER", "ms", ""]) | nasty_text
        zones = st.sampled_from(["Europe/Berlin", "UTC", "Mars/Olympus", ""])
        return _csv(draw, header, [nasty_text, groups, zones])
    header = ["patient_id", "therapy", "start_date", "end_date"]
    return _csv(draw, header, [nasty_text, nasty_text, dates, dates])


# (format, strategy, file name suffix) of every fuzzed form
CASES: dict[str, tuple[str, st.SearchStrategy[bytes], str]] = {
    "apple-xml": ("apple-health", apple_xml(), ".xml"),
    "apple-zip": ("apple-health", apple_zip(), ".zip"),
    "apple-csv": ("apple-health", apple_csv(), ".csv"),
    "fitbit-csv": ("fitbit", fitbit_csv(), ".csv"),
    "fitbit-json": ("fitbit", fitbit_json(), ".json"),
    "generic-csv": ("generic", generic_csv(), ".csv"),
    "generic-parquet": ("generic", generic_parquet(), ".parquet"),
    "clinical-csv": ("clinical", clinical_csv(), ".csv"),
}

# A tiny valid file per format: the baseline of a memory measurement.
TINY = {
    "apple-health": (
        ".xml",
        b'<?xml version="1.0"?><HealthData><Record type="HKQuantityTypeIdentifierStepCount" '
        b'sourceName="w" unit="count" startDate="2024-01-01 10:00:00 +0000" '
        b'endDate="2024-01-01 10:01:00 +0000" value="5"/></HealthData>',
    ),
    "fitbit": (".csv", b"Id,ActivityHour,StepTotal\n1,1/1/2024 10:00:00 AM,5\n"),
    "generic": (
        ".csv",
        b"patient_id,start,end,steps\nP1,2024-01-01T10:00:00Z,2024-01-01T10:01:00Z,5\n",
    ),
    "clinical": (".csv", b"patient_id,disease_group,timezone\nP1,MS,UTC\n"),
}


def measure(format: str, path: Path) -> dict[str, object]:
    """Read a tiny file of the format, then ``path``; the outcome, error, seconds and the peak
    memory (MB) reading ``path`` added. Meant for a fresh process."""
    suffix, content = TINY[format]
    with tempfile.TemporaryDirectory() as folder:
        tiny = Path(folder) / f"tiny{suffix}"
        tiny.write_bytes(content)
        outcome(tiny, format)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()
    result, message = outcome(path, format)
    seconds = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {
        "outcome": result,
        "message": message,
        "seconds": round(seconds, 3),
        "added_mb": round((after - before) / 1024, 1),
    }


if __name__ == "__main__":
    print(json.dumps(measure(sys.argv[1], Path(sys.argv[2]))))
