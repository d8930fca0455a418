"""What the features job must recompute: the inputs it covered last time against the current ones.

Each successful run records in ``ops/job_runs`` the version and table id of every input and the
fingerprint of the feature set it computed. The next run derives its work from that:

- commits to silver/daily_steps since then: per patient, the first day whose row differs between
  the two versions (the files the commits added or removed bound the comparison; compaction in
  between does not count);
- clinical tables (patients, therapies, side effects, diagnoses): the patients whose rows differ
  between the two versions (a table seen for the first time differs from an empty one);
- a changed feature set (a definition, a therapy alias, the transform's code or the holidays
  calendars), a rebuilt input table, an old version no longer readable or ``--full``: everything.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import polars as pl

from jobs.features import calendar, clinical, history, transform
from jobs.ingest.clinical import GROUP_CODES
from jobs.runs import last_succeeded_details
from jobs.scopes import Scope, changed_files, hull, merge_scopes, patient_range
from lakehouse import feature_dictionary
from lakehouse.catalog import (
    DAILY_STEPS,
    DIAGNOSES,
    FEATURES,
    PATIENTS,
    SIDE_EFFECTS,
    THERAPIES,
    TableSpec,
)
from lakehouse.errors import StorageError
from lakehouse.storage import Lake, empty_frame

JOB = "features"
CLINICAL = (PATIENTS, THERAPIES, SIDE_EFFECTS, DIAGNOSES)
INPUTS = (DAILY_STEPS, *CLINICAL)
# More daily_steps scopes than this are recomputed as one covering scope (a short predicate).
MAX_RANGES = 64


def feature_set_id() -> str:
    """Fingerprint of everything that decides a feature value besides the data: the dictionary
    (names, types, definitions, therapy aliases), the disease-group codes, the holidays calendars'
    version and the transform's source code."""
    parts = [repr(f) for f in feature_dictionary.FEATURES]
    parts.append(repr(sorted(feature_dictionary.THERAPY_SPELLINGS.items())))
    parts += [repr(sorted(GROUP_CODES.items())), metadata.version("holidays")]
    for module in (calendar, clinical, history, transform):
        assert module.__file__ is not None
        parts.append(Path(module.__file__).read_text(encoding="utf-8"))
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Inputs:
    """Pinned versions of the input tables: every batch of a run reads the same snapshot."""

    versions: dict[str, tuple[int, str] | None]  # table path -> (version, table id)

    @classmethod
    def current(cls, lake: Lake) -> Inputs:
        versions: dict[str, tuple[int, str] | None] = {}
        for table in INPUTS:
            version = lake.version(table)
            versions[table.path] = None if version is None else (version, lake.table_id(table))
        return cls(versions)

    def version(self, table: TableSpec) -> int | None:
        pinned = self.versions[table.path]
        return None if pinned is None else pinned[0]

    def read(self, lake: Lake, table: TableSpec) -> pl.DataFrame:
        version = self.version(table)
        if version is None:
            return empty_frame(table)
        return lake.scan(table, version=version).collect()

    def as_details(self) -> dict[str, list[object] | None]:
        return {path: None if v is None else list(v) for path, v in self.versions.items()}


CHANGED_SCHEMA = {"patient_id": pl.String, "from": pl.Date}
# The daily_steps columns features read: other columns changing changes no feature.
FEATURE_INPUT_COLUMNS = ("patient_id", "date", "steps", "coverage_hours", "is_wear_day")


@dataclass(frozen=True)
class Work:
    """What one run recomputes.

    ``ranges``: patient ranges recomputed whole (a full run: one unbounded range). ``changed``:
    ``patient_id, from``: each patient's first day whose inputs changed (null: a clinical change,
    every day). ``rebuild``: the stored table has other columns than the catalog, so it is
    rewritten whole.
    """

    mode: str  # "full", "incremental" or "up-to-date"
    ranges: list[Scope] = field(default_factory=list)
    changed: pl.DataFrame = field(default_factory=lambda: pl.DataFrame(schema=CHANGED_SCHEMA))
    rebuild: bool = False


def last_covered(lake: Lake) -> dict[str, object] | None:
    """Details of the last successful features run, None if there was none."""
    return last_succeeded_details(lake, JOB, having="inputs")


def _daily_changes(lake: Lake, since: int, until: int) -> pl.DataFrame:
    """``patient_id, from``: the first day whose daily_steps row (as features read it) differs
    between two versions, per patient. The files the commits added or removed bound where to
    look; the rows inside tell exactly."""
    changed = changed_files(lake, DAILY_STEPS, since, until)
    if changed is None:
        return pl.DataFrame(schema=CHANGED_SCHEMA)
    scopes = merge_scopes(
        [
            Scope(
                first_patient=row["min.patient_id"],
                last_patient=row["max.patient_id"],
                first_day=row["min.date"],
            )
            for stats in changed
            for row in stats.iter_rows(named=True)
        ]
    )
    if len(scopes) > MAX_RANGES:
        scopes = [hull(scopes)]
    found = []
    for scope in scopes:
        where = patient_range(scope.first_patient, scope.last_patient)
        if scope.first_day is not None:
            where &= pl.col("date") >= scope.first_day
        before, now = (
            lake.scan(DAILY_STEPS, version=version)
            .filter(where)
            .select(FEATURE_INPUT_COLUMNS)
            .collect()
            for version in (since, until)
        )
        columns = list(FEATURE_INPUT_COLUMNS)
        differ = pl.concat(
            [
                before.join(now, on=columns, how="anti", nulls_equal=True),
                now.join(before, on=columns, how="anti", nulls_equal=True),
            ]
        )
        found.append(differ.group_by("patient_id").agg(pl.col("date").min().alias("from")))
    return pl.concat(found).group_by("patient_id").agg(pl.col("from").min())


def _version_rows(lake: Lake, table: TableSpec, version: int | None) -> pl.DataFrame:
    if version is None:
        return empty_frame(table)
    return lake.scan(table, version=version).collect()


def _changed_patients(
    lake: Lake, table: TableSpec, since: int | None, until: int | None
) -> list[str]:
    """Patients whose rows differ between two versions of a clinical table (None: no table)."""
    before = _version_rows(lake, table, since)
    now = _version_rows(lake, table, until)
    columns = list(table.columns)
    differ = pl.concat(
        [
            before.join(now, on=columns, how="anti", nulls_equal=True),
            now.join(before, on=columns, how="anti", nulls_equal=True),
        ]
    )
    return sorted(differ["patient_id"].unique().to_list())


def plan(lake: Lake, inputs: Inputs, *, full: bool) -> Work:
    """The work of this run."""
    rebuild = lake.exists(FEATURES) and not lake.schema_matches(FEATURES)
    if inputs.version(DAILY_STEPS) is None:
        # no daily steps (never aggregated, or the table was dropped): no features either
        return (
            Work("full", [Scope()], rebuild=rebuild)
            if lake.exists(FEATURES)
            else Work("up-to-date")
        )
    covered = None if full or not lake.exists(FEATURES) else last_covered(lake)
    if covered is None or covered.get("feature_set") != feature_set_id() or rebuild:
        return Work("full", [Scope()], rebuild=rebuild)
    before = covered["inputs"]
    assert isinstance(before, dict)
    merged = changes_since(lake, before, inputs)
    if merged is None:
        return Work("full", [Scope()])
    if not merged.height:
        return Work("up-to-date")
    return Work("incremental", changed=merged)


def changes_since(lake: Lake, before: dict[str, Any], inputs: Inputs) -> pl.DataFrame | None:
    """``patient_id, from`` (sorted, one row per patient): each patient's first day whose
    inputs (:data:`INPUTS`) differ between the versions a run recorded (``before``, as
    :meth:`Inputs.as_details`) and ``inputs``; ``from`` is null for a clinical change (every
    day). None when that cannot be told: a table was dropped and rebuilt, or an old version is
    gone (vacuumed)."""
    changed: list[pl.DataFrame] = []
    try:
        for table in INPUTS:
            then, now = before.get(table.path), inputs.versions[table.path]
            if then is not None and now is not None and then[1] != now[1]:
                return None  # the table was dropped and rebuilt
            since = None if then is None else int(then[0])
            until = None if now is None else now[0]
            if since == until:
                continue
            if table is DAILY_STEPS:
                assert since is not None and until is not None
                changed.append(_daily_changes(lake, since, until))
            else:
                patients = _changed_patients(lake, table, since, until)
                changed.append(
                    pl.DataFrame(
                        {"patient_id": patients, "from": [None] * len(patients)},
                        schema=CHANGED_SCHEMA,
                    )
                )
    except (StorageError, OSError, ValueError):
        return None  # an old version is gone (vacuumed)
    merged = (
        pl.concat(changed).cast(CHANGED_SCHEMA)  # type: ignore[arg-type]
        if changed
        else pl.DataFrame(schema=CHANGED_SCHEMA)
    )
    # one row per patient; a clinical change (null: every day) wins over a first day
    return (
        merged.group_by("patient_id")
        .agg(pl.when(pl.col("from").null_count() == 0).then(pl.col("from").min()))
        .sort("patient_id")
    )
