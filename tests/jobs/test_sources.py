"""Source labels: known product names kept, owner names never stored."""

from __future__ import annotations

import hashlib
import re

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jobs.sources import KNOWN_SOURCES, PRODUCTS, label_sources, source_label

_WORD = re.compile(r"[^\W\d_]+")
PRODUCT_WORDS = frozenset(
    w.casefold() for name in (*PRODUCTS, *KNOWN_SOURCES) for w in _WORD.findall(name)
)
_HEX6 = r"[0-9a-f]{6}"


def _digest(name: str) -> str:
    """Independent of the module: the first six hex digits of the name's SHA-256."""
    return hashlib.sha256(name.encode("utf-8")).hexdigest()[:6]


@pytest.mark.parametrize(
    "name", ["Apple Watch", "Fitbit", "Google Fit", "Fitbit (daily)", "iPhone", "Imported file"]
)
def test_known_names_are_kept(name: str) -> None:
    assert source_label(name) == name
    assert source_label(f"  {name} ") == name


def test_owner_named_iphone_becomes_iphone_and_digest() -> None:
    label = source_label("Maria's iPhone")
    assert label == "iPhone " + _digest("Maria's iPhone")
    assert re.fullmatch(rf"iPhone {_HEX6}", label)
    assert source_label("Maria's iPhone") == label  # same input, same label
    assert source_label("  Maria's iPhone  ") == label  # surrounding blanks do not count
    other = source_label("Julien's iPhone")
    assert other.startswith("iPhone ") and other != label
    assert source_label("iPhone de Julien") not in (label, other)


def test_product_words_are_found_anywhere_in_any_case() -> None:
    galaxy = source_label("Galaxy Watch von Jan")
    assert re.fullmatch(rf"Galaxy Watch {_HEX6}", galaxy)
    assert "Jan" not in galaxy and "von" not in galaxy
    assert re.fullmatch(rf"Apple Watch {_HEX6}", source_label("Apple Watch de Léa"))
    assert re.fullmatch(rf"iPhone {_HEX6}", source_label("IPHONE VON KARL"))
    assert re.fullmatch(rf"Pixel Watch {_HEX6}", source_label("Pixel Watch 2 (Tom)"))
    assert re.fullmatch(rf"Garmin {_HEX6}", source_label("Garmin Forerunner 255 Sophie"))


def test_unknown_devices_become_device_and_digest() -> None:
    label = source_label("Henrik's step counter")
    assert label == "Device " + _digest("Henrik's step counter")
    assert "Henrik" not in label
    assert source_label("Kasia").startswith("Device ")
    assert source_label("Kasia") != source_label("Kasia2")


def test_label_sources_keeps_nulls_and_maps_every_value() -> None:
    names = pl.Series("source", ["Maria's iPhone", None, "Fitbit", "Maria's iPhone", "Tom's Oura"])
    labels = label_sources(names)
    assert labels.dtype == pl.String
    assert labels.to_list() == [
        source_label("Maria's iPhone"),
        None,
        "Fitbit",
        source_label("Maria's iPhone"),
        source_label("Tom's Oura"),
    ]
    assert labels[4].startswith("Oura ")
    assert not any("Maria" in v or "Tom" in v for v in labels.drop_nulls())
    nothing = pl.Series("source", [None, None], dtype=pl.String)
    assert label_sources(nothing).to_list() == [None, None]
    assert label_sources(pl.Series("source", [], dtype=pl.String)).len() == 0


_NAME_WORDS = st.text(
    alphabet=st.characters(categories=["L"], max_codepoint=0x24F), min_size=1, max_size=12
)
_NAMES = st.one_of(
    st.lists(
        st.one_of(_NAME_WORDS, st.sampled_from(sorted(PRODUCTS))), min_size=1, max_size=5
    ).flatmap(
        lambda words: st.sampled_from([" ".join(words), "'s ".join(words), " von ".join(words)])
    ),
    st.text(max_size=40),
)


@settings(max_examples=200, deadline=None)
@given(name=_NAMES)
def test_label_never_carries_a_name_word(name: str) -> None:
    label = source_label(name)
    assert label == source_label(name)
    if name.strip() in KNOWN_SOURCES:
        assert label == name.strip()
        return
    product, _, digest = label.rpartition(" ")
    assert product in (*PRODUCTS, "Device")
    assert digest == _digest(name.strip())
    label_words = {w.casefold() for w in _WORD.findall(label)}
    for word in _WORD.findall(name):
        if len(word) > 3 and word.casefold() not in PRODUCT_WORDS:
            assert word.casefold() not in label_words, (name, label)
