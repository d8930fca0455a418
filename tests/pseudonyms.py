"""The tests' pseudonym key (ingestion refuses to run without one) and the pseudonyms it makes.

Not a secret: tests only ever see synthetic and public sample data.
"""

from __future__ import annotations

from collections.abc import Iterable

from lakehouse.catalog import REIDENTIFICATION
from lakehouse.pseudonyms import Pseudonymizer
from lakehouse.storage import Lake

TEST_PSEUDONYM_KEY = "tests-only-pseudonym-key-0123456789abcdef"
TEST_PSEUDONYMS = Pseudonymizer(TEST_PSEUDONYM_KEY)


def pseudonym(source_id: str) -> str:
    """The pseudonym ingestion stores for ``source_id`` under the tests' key."""
    return TEST_PSEUDONYMS.of(source_id)


def source_ids(lake: Lake) -> dict[str, str]:
    """The lake's re-identification map: pseudonym -> source identifier."""
    if not lake.exists(REIDENTIFICATION):
        return {}
    rows = lake.read(REIDENTIFICATION).select("patient_id", "source_id")
    return dict(rows.iter_rows())


def reidentified(lake: Lake, pseudonyms: Iterable[str | None]) -> list[str | None]:
    """The source identifiers of ``pseudonyms`` by the lake's re-identification map (each one
    must be in it; None stays None)."""
    known = source_ids(lake)
    return [None if p is None else known[p] for p in pseudonyms]
