"""Source (device or app) names as stored in bronze/step_samples: without their owner's name.

Devices are often named after their owner ("Maria's iPhone", "iPhone de Julien", "Galaxy Watch
von Jan"), and the SQL console shows bronze to analysts next to the patient ID. So a source name
is stored as it is only when it is exactly a known product or app name (:data:`KNOWN_SOURCES`:
``Apple Watch``, ``Fitbit``, ``Google Fit``, ...). Any other name becomes the first product word
it contains (:data:`PRODUCTS`, else ``Device``) and six hex digits of its SHA-256 digest:
``Maria's iPhone`` -> ``iPhone 3f9a1c``. The same name always gets the same label, so re-ingesting
an export adds nothing, and two devices of one person stay two sources (the daily aggregation
needs that to avoid counting steps twice).

Known limit: the digest is not keyed; someone holding a list of candidate names could test them.
The original name stays only in the quarantine row of a rejected record (its raw text).
"""

from __future__ import annotations

import hashlib
import re

import polars as pl

KNOWN_SOURCES = frozenset(
    {
        "Apple Watch",
        "iPhone",
        "iPad",
        "Health",
        "Fitbit",
        "Fitbit (daily)",
        "Google Fit",
        "Samsung Health",
        "Garmin Connect",
        "Withings",
        "Oura",
        "Strava",
        "Polar Flow",
        "Pedometer++",
        "Imported file",
    }
)
# Longest first, so "Apple Watch" wins over "Watch".
PRODUCTS = (
    "Apple Watch",
    "Galaxy Watch",
    "Pixel Watch",
    "iPhone",
    "iPad",
    "iPod",
    "Fitbit",
    "Garmin",
    "Galaxy",
    "Pixel",
    "Oura",
    "Withings",
    "Polar",
    "Suunto",
    "Amazfit",
    "Xiaomi",
    "Huawei",
    "Watch",
    "Phone",
)
_PRODUCT = re.compile("|".join(re.escape(p) for p in PRODUCTS), re.IGNORECASE)
_CANONICAL = {p.casefold(): p for p in PRODUCTS}


def source_label(name: str) -> str:
    """The stored label of one source name (see the module docstring)."""
    name = name.strip()
    if name in KNOWN_SOURCES:
        return name
    match = _PRODUCT.search(name)
    product = _CANONICAL[match.group(0).casefold()] if match else "Device"
    digest = hashlib.sha256(name.encode("utf-8")).hexdigest()[:6]
    return f"{product} {digest}"


def label_sources(names: pl.Series) -> pl.Series:
    """:func:`source_label` of every value (computed once per distinct name; nulls stay null)."""
    distinct = names.drop_nulls().unique().to_list()
    if not distinct:
        return names
    return names.replace_strict(
        {name: source_label(name) for name in distinct}, default=None, return_dtype=pl.String
    )
