"""Pseudonyms at ingestion: no source patient identifier reaches a table analysts can read.

Readers work with the identifiers as the files hold them; every frame is pseudonymised here on
its way to the lake (:mod:`lakehouse.pseudonyms`):

- step samples and clinical rows: ``patient_id`` becomes the pseudonym;
- quarantined rows: ``patient_id`` too, and the row's own identifier in its raw text (the CSV
  field or JSON value that holds it; in other text, every whole-token occurrence);
- the file's name as recorded (quarantine, job runs, commit metadata): a one-person file's
  identifier in its path (``apple-health/<id>/export.xml``) becomes the pseudonym.

Each pseudonym made goes into the restricted map ``admin/reidentification`` before the data is
committed, with the key's id: a lake whose map was made with another key refuses the ingest, and
two identifiers sharing a pseudonym (never expected, 80 bits) stop it.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime
from functools import lru_cache

import polars as pl

from jobs.ingest.common import delimiter_of
from lakehouse.catalog import REIDENTIFICATION, STEP_SAMPLES
from lakehouse.errors import InputError, StorageError
from lakehouse.pseudonyms import Pseudonymizer
from lakehouse.storage import Lake, conform

# An identifier counts inside a text only as a whole token: not as part of a longer id or number.
_TOKEN = "0-9A-Za-z_"


@lru_cache(maxsize=4096)
def _token_pattern(identifier: str) -> re.Pattern[str]:
    return re.compile(rf"(?<![{_TOKEN}]){re.escape(identifier)}(?![{_TOKEN}])")


def redact_text(text: str, pseudonyms: Mapping[str, str]) -> str:
    """``text`` with every source identifier of ``pseudonyms`` (as a whole token) replaced by
    its pseudonym."""
    for source, pseudonym in pseudonyms.items():
        if source and source in text:
            text = _token_pattern(source).sub(pseudonym, text)
    return text


class RedactedInputError(InputError):
    """An :class:`InputError` as recorded in the lake, with the patient named by pseudonym;
    ``original`` is the error as the user should see it (their own path)."""

    def __init__(self, message: str, original: InputError) -> None:
        super().__init__(message)
        self.original = original


@contextmanager
def redacted_errors(pseudonyms: Mapping[str, str]) -> Iterator[None]:
    """Errors raised inside name the patient by pseudonym for what records them (ops/job_runs:
    a file's path in the landing layout holds the identifier). Catch
    :class:`RedactedInputError` outside the recording and raise its ``original``."""
    try:
        yield
    except InputError as err:
        message = redact_text(str(err), pseudonyms)
        if message == str(err):
            raise
        raise RedactedInputError(message, err) from None


def redact_raw(raw: str, source: str, pseudonym: str) -> str:
    """A rejected record's raw text with its patient's identifier replaced by the pseudonym: the
    CSV fields or JSON values equal to it; in text of another kind, its whole-token occurrences.
    Other fields are left exactly as they were (a time ``1:00`` keeps its ``1`` for patient 1)."""
    if source not in raw:
        return raw
    if raw.lstrip().startswith("{"):
        try:
            record = json.loads(raw)
        except ValueError:
            record = None
        if isinstance(record, dict):
            replaced = {
                key: pseudonym if str(value).strip() == source else value
                for key, value in record.items()
            }
            return json.dumps(replaced, separators=(",", ":"), ensure_ascii=False)
    delimiter = delimiter_of(raw.split("\n", 1)[0])
    try:
        rows = list(csv.reader(io.StringIO(raw, newline=""), delimiter=delimiter))
    except csv.Error:
        rows = []
    if len(rows) == 1 and len(rows[0]) > 1:
        if not any(cell.strip() == source for cell in rows[0]):
            return raw
        out = io.StringIO()
        csv.writer(out, delimiter=delimiter, lineterminator="").writerow(
            pseudonym if cell.strip() == source else cell for cell in rows[0]
        )
        return out.getvalue()
    return redact_text(raw, {source: pseudonym})


def pseudonymise_samples(samples: pl.DataFrame, pseudonyms: Pseudonymizer) -> pl.DataFrame:
    """bronze/step_samples rows with pseudonyms, in the table's sort order again."""
    if samples.is_empty():
        return samples
    mapped = samples.with_columns(pseudonyms.series(samples["patient_id"]))
    if samples["patient_id"].n_unique() > 1:
        mapped = mapped.sort(list(STEP_SAMPLES.sort_by))
    return mapped


def pseudonymise_rejected(rejected: pl.DataFrame, pseudonyms: Pseudonymizer) -> pl.DataFrame:
    """Rejected rows (``record, reason, raw, patient_id``) with pseudonyms: in ``patient_id``
    and, for the row's own identifier, in ``raw``."""
    if rejected.is_empty():
        return rejected
    sources = rejected["patient_id"].cast(pl.String).str.strip_chars()
    raws = [
        raw if raw is None or not source else redact_raw(raw, source, pseudonyms.of(source))
        for raw, source in zip(rejected["raw"].to_list(), sources.to_list(), strict=True)
    ]
    return rejected.with_columns(
        pseudonyms.series(rejected["patient_id"]),
        pl.Series("raw", raws, dtype=pl.String),
    )


def zones_by_source(
    known: Callable[[list[str]], dict[str, str]], pseudonyms: Pseudonymizer
) -> Callable[[list[str]], dict[str, str]]:
    """A time-zone lookup by source identifier over one by stored (pseudonymous) patient id."""

    def lookup(sources: list[str]) -> dict[str, str]:
        by_pseudonym = {pseudonyms.of(s): s for s in sources if s.strip()}
        found = known(list(by_pseudonym))
        return {by_pseudonym[p]: zone for p, zone in found.items() if p in by_pseudonym}

    return lookup


def check_key(lake: Lake, pseudonyms: Pseudonymizer) -> None:
    """Refuse a key other than the one the lake's pseudonyms were made with.

    Raises:
        InputError: the re-identification map holds pseudonyms of another key.
    """
    if not lake.exists(REIDENTIFICATION):
        return
    other = (
        lake.scan(REIDENTIFICATION)
        .filter(pl.col("key_id") != pseudonyms.key_id)
        .select("key_id")
        .head(1)
        .collect()
    )
    if other.height:
        demo = " (the demo key)" if pseudonyms.demo else ""
        raise InputError(
            f"MOBILITY_PSEUDONYM_KEY{demo} is not the key this lake's pseudonyms were made with "
            f"(key id {pseudonyms.key_id}, the lake's {other['key_id'][0]}): the same person "
            "would become a second patient"
        )


def record_pseudonyms(
    lake: Lake, pseudonyms: Pseudonymizer, *, source_file: str, at: datetime
) -> int:
    """Add the pseudonyms made so far to the re-identification map (new ones only).

    Returns:
        The number of pseudonyms added.

    Raises:
        StorageError: a pseudonym in the map stands for another identifier (a collision).
    """
    made = pseudonyms.made()
    if not made:
        return 0
    rows = pl.DataFrame(
        {
            "patient_id": list(made.values()),
            "source_id": list(made.keys()),
        }
    ).with_columns(
        key_id=pl.lit(pseudonyms.key_id),
        first_seen_at=pl.lit(at, dtype=pl.Datetime("us", "UTC")),
        source_file=pl.lit(source_file, dtype=pl.String),
    )
    if lake.exists(REIDENTIFICATION):
        stored = (
            lake.scan(REIDENTIFICATION)
            .filter(pl.col("patient_id").is_in(rows["patient_id"].implode()))
            .select("patient_id", stored_source=pl.col("source_id"))
            .collect()
        )
        clash = rows.join(stored, on="patient_id").filter(
            pl.col("source_id") != pl.col("stored_source")
        )
        if clash.height:
            raise StorageError(
                f"pseudonym {clash['patient_id'][0]} already stands for another patient: "
                "nothing was ingested; tell the administrator (two identifiers share a pseudonym)"
            )
    arrow = conform(REIDENTIFICATION, rows.sort("patient_id"))
    return lake.insert_new(
        REIDENTIFICATION,
        lambda: arrow.to_reader(),
        metadata={"job": "ingest"},
    )
