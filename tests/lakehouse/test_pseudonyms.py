"""Pseudonyms: keyed, stable, not reversible without the key; the key only from the
environment; demo mode's published key on local lakes only; a user's id resolved to the stored
one."""

from __future__ import annotations

import re

import polars as pl
import pytest

from lakehouse import InputError, Lake, get_settings
from lakehouse.catalog import PATIENTS
from lakehouse.pseudonyms import (
    DEMO_KEY,
    HEX_DIGITS,
    PREFIX,
    Pseudonymizer,
    from_settings,
    resolve_patient_id,
)
from tests.lakehouse.frames import edge_rows
from tests.pseudonyms import TEST_PSEUDONYM_KEY, pseudonym

OTHER_KEY = "another-tests-only-key-fedcba9876543210"


def test_a_pseudonym_is_a_keyed_hash_of_the_stripped_identifier() -> None:
    first = Pseudonymizer(TEST_PSEUDONYM_KEY)
    again = Pseudonymizer(TEST_PSEUDONYM_KEY)
    other = Pseudonymizer(OTHER_KEY)

    made = first.of("MRN-0042")
    assert re.fullmatch(rf"{re.escape(PREFIX)}[0-9a-f]{{{HEX_DIGITS}}}", made)
    assert again.of(" MRN-0042 ") == made  # surrounding spaces are not part of the id
    assert first.of("mrn-0042") != made  # case is
    assert other.of("MRN-0042") != made
    assert "0042" not in made
    assert first.key_id == again.key_id != other.key_id
    assert TEST_PSEUDONYM_KEY not in first.key_id


def test_a_column_is_pseudonymised_with_nulls_and_blanks_kept_null() -> None:
    pseudonyms = Pseudonymizer(TEST_PSEUDONYM_KEY)
    column = pl.Series("patient_id", ["A", None, " ", "B", "A"])
    assert pseudonyms.series(column).to_list() == [
        pseudonym("A"),
        None,
        None,
        pseudonym("B"),
        pseudonym("A"),
    ]
    assert pseudonyms.made() == {"A": pseudonym("A"), "B": pseudonym("B")}
    with pytest.raises(InputError, match="blank"):
        pseudonyms.of("   ")


def test_the_key_comes_from_the_environment_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MOBILITY_PSEUDONYM_KEY")
    get_settings.cache_clear()
    with pytest.raises(InputError, match="MOBILITY_PSEUDONYM_KEY is not set") as info:
        from_settings(get_settings())
    assert "\n" not in str(info.value)

    monkeypatch.setenv("MOBILITY_PSEUDONYM_KEY", "short")
    get_settings.cache_clear()
    with pytest.raises(InputError, match="too short"):
        from_settings(get_settings())

    monkeypatch.setenv("MOBILITY_PSEUDONYM_KEY", OTHER_KEY)
    get_settings.cache_clear()
    assert from_settings(get_settings()).key_id == Pseudonymizer(OTHER_KEY).key_id
    # the key is a secret: pydantic never shows it
    assert OTHER_KEY not in repr(get_settings())


def test_demo_mode_uses_the_published_key_on_local_lakes_only(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("MOBILITY_PSEUDONYM_KEY")
    monkeypatch.setenv("MOBILITY_DEMO", "1")
    get_settings.cache_clear()
    demo = from_settings(get_settings(), lake_uri="./lake")
    assert demo.demo and demo.key_id == Pseudonymizer(DEMO_KEY).key_id
    with pytest.raises(InputError, match="local synthetic demo only"):
        from_settings(get_settings(), lake_uri="s3://clinic/mobility")
    # a real key wins over the demo's
    monkeypatch.setenv("MOBILITY_PSEUDONYM_KEY", OTHER_KEY)
    get_settings.cache_clear()
    assert not from_settings(get_settings(), lake_uri="./lake").demo


def test_a_users_patient_id_resolves_to_the_stored_one(lake: Lake) -> None:
    rows = edge_rows(PATIENTS, rows=(1, 2)).with_columns(
        patient_id=pl.Series([pseudonym("MRN-1"), "SYN42-000001"])
    )
    lake.append(PATIENTS, rows)
    settings = get_settings()
    assert resolve_patient_id(lake, "MRN-1", settings) == pseudonym("MRN-1")
    assert resolve_patient_id(lake, pseudonym("MRN-1"), settings) == pseudonym("MRN-1")
    assert resolve_patient_id(lake, "SYN42-000001", settings) == "SYN42-000001"
    assert resolve_patient_id(lake, "nobody", settings) == "nobody"
