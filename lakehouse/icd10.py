"""ICD-10-CM titles of diagnosis codes, from the tabular list the ``simple-icd-10-cm`` package
bundles (CMS's ICD-10-CM, public domain): no network, nothing to download.

The package's own module parses the whole classification into a tree on import (about 2 s); a
title is all the product needs, so the tabular XML is read once as text (about 0.1 s) and each
code is looked up in it on demand.
"""

from __future__ import annotations

import html
import re
from functools import cache
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path

# a code as clinical files write it: a letter, two characters, then up to four more, with or
# without the dot after the category (M17.9, M179, g35)
_CODE = re.compile(r"[A-Z][0-9][0-9A-Z](?:\.?[0-9A-Z]{1,4})?")


@cache
def _tabular() -> str:
    """The ICD-10-CM tabular list (XML) as text; empty when the package is missing."""
    try:
        package = distribution("simple-icd-10-cm")
    except PackageNotFoundError:
        return ""
    for file in package.files or ():
        if file.name.startswith("icd10c-tabular") and file.suffix == ".xml":
            return Path(str(package.locate_file(file))).read_text(encoding="utf-8")
    return ""


@cache
def icd10_name(code: str) -> str | None:
    """The ICD-10-CM title of ``code`` (any case, with or without its dot), None when it is not
    a code of the tabular list."""
    cleaned = code.strip().upper()
    if not _CODE.fullmatch(cleaned):
        return None
    if "." not in cleaned and len(cleaned) > 3:
        cleaned = f"{cleaned[:3]}.{cleaned[3:]}"
    found = re.search(rf"<name>{re.escape(cleaned)}</name>\s*<desc>([^<]*)</desc>", _tabular())
    return html.unescape(found.group(1)).strip() if found else None
