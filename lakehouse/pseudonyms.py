"""Pseudonyms: source patient identifiers are replaced at ingestion by a keyed hash.

A pseudonym is ``P-`` and the first 20 hex digits (80 bits) of HMAC-SHA256 of the source
identifier (surrounding spaces removed, case kept) under the key ``MOBILITY_PSEUDONYM_KEY``. The
same identifier always gives the same pseudonym under the same key, so a newer export of a person
lands on the same patient; without the key nobody can tell whose a pseudonym is, nor test a guess.
At 100,000 patients the chance that two share a pseudonym is about 4e-15.

The key is never stored. Each pseudonym made is kept with its source identifier in the restricted
table ``admin/reidentification`` (admin role only, never in SQL), with the key's id (an HMAC of a
fixed text, not the key): ingestion with another key into the same lake is refused, because
it would split every patient in two.

The local synthetic demo (``MOBILITY_DEMO=1``, local lakes only) uses :data:`DEMO_KEY` when no key
is set: its pseudonyms are not secret, which is fine for synthetic people and wrong for anyone
real.
"""

from __future__ import annotations

import hashlib
import hmac

import polars as pl

from lakehouse.catalog import PATIENTS
from lakehouse.errors import InputError
from lakehouse.settings import Settings
from lakehouse.storage import Lake

PREFIX = "P-"
HEX_DIGITS = 20
MIN_KEY_LENGTH = 32
# Published on purpose: the demo's pseudonyms are of synthetic people only.
DEMO_KEY = "mobility-synthetic-demo-key-published-not-secret"
KEY_HELP = (
    'set it to a long random secret, e.g. python -c "import secrets; '
    "print(secrets.token_urlsafe(32))\", kept with the lake's other credentials"
)


class Pseudonymizer:
    """Turns source patient identifiers into pseudonyms under one key.

    Args:
        key: the secret key (at least :data:`MIN_KEY_LENGTH` characters).
        demo: the key is the published :data:`DEMO_KEY`.
    """

    def __init__(self, key: str, *, demo: bool = False) -> None:
        if len(key) < MIN_KEY_LENGTH:
            raise InputError(
                f"MOBILITY_PSEUDONYM_KEY is too short ({len(key)} characters, at least "
                f"{MIN_KEY_LENGTH}): {KEY_HELP}"
            )
        self._key = key.encode()
        self.demo = demo
        # Names the key without revealing it: two lakes (or runs) used the same key when equal.
        self.key_id = hmac.new(self._key, b"mobility key id", hashlib.sha256).hexdigest()[:16]
        self._known: dict[str, str] = {}

    def of(self, source_id: str) -> str:
        """The pseudonym of one source identifier.

        Raises:
            InputError: the identifier is blank.
        """
        text = source_id.strip()
        if not text:
            raise InputError("a blank patient identifier has no pseudonym")
        known = self._known.get(text)
        if known is None:
            digest = hmac.new(self._key, text.encode(), hashlib.sha256).hexdigest()
            known = self._known[text] = PREFIX + digest[:HEX_DIGITS]
        return known

    def series(self, source_ids: pl.Series) -> pl.Series:
        """The pseudonyms of a column of source identifiers (nulls and blanks stay null), each
        distinct identifier hashed once."""
        texts = source_ids.cast(pl.String).str.strip_chars()
        distinct = [t for t in texts.drop_nulls().unique().to_list() if t]
        mapping = {t: self.of(t) for t in distinct}
        return texts.replace_strict(mapping, default=None, return_dtype=pl.String).alias(
            source_ids.name
        )

    def made(self) -> dict[str, str]:
        """Every source identifier pseudonymised so far, with its pseudonym."""
        return dict(self._known)


def demo_allowed(lake_uri: str) -> bool:
    """Whether demo mode may run against this lake: local folders only, never object storage."""
    return Lake(lake_uri).is_local


def from_settings(settings: Settings, *, lake_uri: str | None = None) -> Pseudonymizer:
    """The pseudonymizer of this process: the key from ``MOBILITY_PSEUDONYM_KEY``; in demo mode
    on a local lake without a key, the published demo key.

    Raises:
        InputError: no key (and not the local demo), a key too short, or demo mode against
            object storage (one line each).
    """
    uri = lake_uri or settings.lake_uri
    if settings.pseudonym_key is not None and settings.pseudonym_key.get_secret_value():
        return Pseudonymizer(settings.pseudonym_key.get_secret_value())
    if settings.demo:
        if not demo_allowed(uri):
            raise InputError(
                f"demo mode (MOBILITY_DEMO) is for the local synthetic demo only, not for {uri}: "
                "set MOBILITY_PSEUDONYM_KEY"
            )
        return Pseudonymizer(DEMO_KEY, demo=True)
    raise InputError(f"MOBILITY_PSEUDONYM_KEY is not set: {KEY_HELP}")


def resolve_patient_id(lake: Lake, given: str, settings: Settings) -> str:
    """The stored patient id a user means by ``given``: itself when the lake knows it (a
    pseudonym, or a synthetic id), else its pseudonym when a key is available and the lake
    knows that, else itself (so that an error names what the user typed)."""

    def known(patient_id: str) -> bool:
        rows = lake.scan(PATIENTS).filter(pl.col("patient_id") == patient_id).select("patient_id")
        return bool(rows.head(1).collect().height)

    if known(given):
        return given
    try:
        pseudonym = from_settings(settings, lake_uri=lake.uri).of(given)
    except InputError:
        return given
    return pseudonym if known(pseudonym) else given
