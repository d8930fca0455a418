"""What changed in a Delta table between two versions, as patient-range x date-range scopes.

Incremental jobs (aggregate, features) recompute only the rows inside the scopes touched by the
commits of their input table since their last run. A commit's added and removed files carry
min/max statistics, and those ranges are the scopes.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import TypeVar

import polars as pl

from lakehouse.catalog import TableSpec
from lakehouse.storage import Lake

T = TypeVar("T", str, date)
# History operations that rewrite files without changing the data.
NO_DATA_CHANGE = {"OPTIMIZE", "VACUUM START", "VACUUM END"}


@dataclass(frozen=True)
class Scope:
    """Patient-days to recompute: patients in [first_patient, last_patient], dates in [first_day,
    last_day]; None means unbounded."""

    first_patient: str | None = None
    last_patient: str | None = None
    first_day: date | None = None
    last_day: date | None = None


def patient_range(first: str | None, last: str | None, *, last_inclusive: bool = True) -> pl.Expr:
    """Rows of patients in [first, last] (or [first, last)); None means unbounded."""
    condition = pl.lit(True)
    if first is not None:
        condition &= pl.col("patient_id") >= first
    if last is not None:
        condition &= pl.col("patient_id") <= last if last_inclusive else pl.col("patient_id") < last
    return condition


def files_of_patients(files: pl.DataFrame, first: str | None, last: str | None) -> tuple[str, ...]:
    """The paths of ``files`` (rows of ``Lake.file_stats``) whose patient range meets
    [first, last] (None: unbounded): the data files a task of those patients reads."""
    if not files.height:
        return ()
    where = pl.lit(True)
    if first is not None:
        where &= pl.col("max.patient_id") >= first
    if last is not None:
        where &= pl.col("min.patient_id") <= last
    return tuple(files.filter(where)["path"].to_list())


def _lowest(a: T | None, b: T | None) -> T | None:
    """The lower of two bounds where None means unbounded below."""
    return None if a is None or b is None else min(a, b)


def _highest(a: T | None, b: T | None) -> T | None:
    """The higher of two bounds where None means unbounded above."""
    return None if a is None or b is None else max(a, b)


def merge_scopes(scopes: list[Scope]) -> list[Scope]:
    """Merge scopes whose patient ranges overlap (their date ranges are united).

    None stands for "unbounded" on every side and stays so in the merged scope.
    """
    merged: list[Scope] = []
    ordered = sorted(scopes, key=lambda s: (s.first_patient is not None, s.first_patient or ""))
    for scope in ordered:
        previous = merged[-1] if merged else None
        overlaps = previous is not None and (
            previous.last_patient is None
            or scope.first_patient is None
            or scope.first_patient <= previous.last_patient
        )
        if previous is not None and overlaps:
            merged[-1] = Scope(
                first_patient=_lowest(previous.first_patient, scope.first_patient),
                last_patient=_highest(previous.last_patient, scope.last_patient),
                first_day=_lowest(previous.first_day, scope.first_day),
                last_day=_highest(previous.last_day, scope.last_day),
            )
        else:
            merged.append(scope)
    return merged


def hull(scopes: list[Scope]) -> Scope:
    """One scope covering all the given ones."""
    out = scopes[0]
    for scope in scopes[1:]:
        out = Scope(
            first_patient=_lowest(out.first_patient, scope.first_patient),
            last_patient=_highest(out.last_patient, scope.last_patient),
            first_day=_lowest(out.first_day, scope.first_day),
            last_day=_highest(out.last_day, scope.last_day),
        )
    return out


def changed_files(
    lake: Lake, table: TableSpec, since_version: int, until_version: int
) -> tuple[pl.DataFrame, pl.DataFrame] | None:
    """Statistics of the files added and removed by the data-changing commits in (since, until];
    None when those commits changed no data.

    Each data-changing commit is compared with the version just before it, so a compaction in
    between (which rewrites every file without changing data) adds nothing to the scopes.
    """
    newest = lake.version(table) or 0
    history = lake.history(table, limit=max(1, newest - since_version))
    changing = sorted(
        int(c["version"])
        for c in history
        if since_version < int(c.get("version", -1)) <= until_version
        and c.get("operation") not in NO_DATA_CHANGE
    )
    if not changing:
        return None
    added, removed = [], []
    for version in changing:
        before = lake.file_stats(table, version=version - 1)
        now = lake.file_stats(table, version=version)
        if not before.height:
            added.append(now)
            continue
        added.append(now.filter(~pl.col("path").is_in(before["path"].implode())))
        removed.append(before.filter(~pl.col("path").is_in(now["path"].implode())))
    return pl.concat(added, how="diagonal_relaxed"), pl.concat(
        removed or [added[0].clear()], how="diagonal_relaxed"
    )
