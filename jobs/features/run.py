"""The features job: silver/daily_steps + clinical bronze -> silver/features.

Incremental and idempotent. Each successful run records in ``ops/job_runs`` which version of every
input table it covered and which feature set it wrote. The next run recomputes only:

- for daily_steps commits since then: the patients and dates of the added and removed files,
  from the earliest changed date to the end of each patient's record (weighted means reach back
  over the whole history, so later days can change too);
- for clinical tables (patients, therapies, side effects, diagnoses): every day of each patient
  whose rows differ between the two versions.

A change of the feature set (a column added to the dictionary), a rebuilt input table or
``--full`` recomputes everything. Rows are streamed into atomic replaces of contiguous patient
ranges (about ``commit_days`` patient-days each; a new feature set in one commit), so a crash
leaves each patient's rows all old or all new; the crashed run is not recorded as covering its
inputs, so the next run redoes its scopes. A run over unchanged inputs commits nothing.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import date

import polars as pl
import pyarrow as pa

from jobs.features.transform import features
from jobs.runs import job_run, last_succeeded_details
from jobs.scopes import Scope, changed_files, hull, merge_scopes
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
from lakehouse.storage import Lake, conform, empty_frame, sql_literal

JOB = "features"
CLINICAL = (PATIENTS, THERAPIES, SIDE_EFFECTS, DIAGNOSES)
INPUTS = (DAILY_STEPS, *CLINICAL)
# More scopes than this are recomputed as one covering scope (one short predicate).
_MAX_SCOPES = 64
_DAILY_COLUMNS = ("patient_id", "date", "steps", "coverage_hours", "is_wear_day")


def feature_set_id() -> str:
    """A fingerprint of the silver/features schema: changes when a feature is added or retyped."""
    text = ",".join(f"{f.name}:{f.type}" for f in FEATURES.schema)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class FeaturesSummary:
    """What one features run did."""

    mode: str  # "full", "incremental" or "up-to-date"
    scopes: int
    batches: int
    days_in: int
    rows_out: int

    def describe(self) -> str:
        """One line for the command line."""
        return (
            f"features: {self.mode}, {self.days_in:,} patient-days read -> "
            f"{self.rows_out:,} feature rows in {self.batches} batch(es)"
        )


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


def last_covered(lake: Lake) -> dict[str, object] | None:
    """Details of the last successful features run, None if there was none."""
    return last_succeeded_details(lake, JOB, having="inputs")


def _daily_scopes(lake: Lake, since: int, until: int) -> list[Scope]:
    changed = changed_files(lake, DAILY_STEPS, since, until)
    if changed is None:
        return []
    scopes = []
    for stats in changed:
        for row in stats.iter_rows(named=True):
            scopes.append(
                Scope(
                    first_patient=row["min.patient_id"],
                    last_patient=row["max.patient_id"],
                    first_day=row["min.date"],
                )
            )
    return scopes


def _changed_patients(lake: Lake, table: TableSpec, since: int, until: int) -> list[str]:
    """Patients whose rows differ between two versions of a clinical table."""
    before = lake.scan(table, version=since).collect()
    now = lake.scan(table, version=until).collect()
    columns = list(table.columns)
    differ = pl.concat(
        [
            before.join(now, on=columns, how="anti", nulls_equal=True),
            now.join(before, on=columns, how="anti", nulls_equal=True),
        ]
    )
    return sorted(differ["patient_id"].unique().to_list())


def plan(lake: Lake, inputs: Inputs, *, full: bool) -> tuple[str, list[Scope]]:
    """The run's mode and the scopes to recompute."""
    if inputs.version(DAILY_STEPS) is None:
        return "up-to-date", []
    covered = None if full or not lake.exists(FEATURES) else last_covered(lake)
    if (
        covered is None
        or covered.get("feature_set") != feature_set_id()
        or not lake.schema_matches(FEATURES)
    ):
        return "full", [Scope()]
    before = covered["inputs"]
    assert isinstance(before, dict)
    scopes: list[Scope] = []
    for table in INPUTS:
        then, now = before.get(table.path), inputs.versions[table.path]
        if now is None and then is None:
            continue
        if now is None or then is None or then[1] != now[1]:
            return "full", [Scope()]  # a table appeared, vanished or was rebuilt
        since, until = int(then[0]), now[0]
        if since == until:
            continue
        try:
            if table is DAILY_STEPS:
                scopes += _daily_scopes(lake, since, until)
            else:
                scopes += [Scope(p, p) for p in _changed_patients(lake, table, since, until)]
        except (StorageError, OSError, ValueError):
            return "full", [Scope()]  # the old version is gone (vacuumed)
    if not scopes:
        return "up-to-date", []
    merged = merge_scopes(scopes)
    return "incremental", merged if len(merged) <= _MAX_SCOPES else [hull(merged)]


def _in_scope(scope: Scope) -> pl.Expr:
    condition = pl.lit(True)
    if scope.first_patient is not None:
        condition &= pl.col("patient_id") >= scope.first_patient
    if scope.last_patient is not None:
        condition &= pl.col("patient_id") <= scope.last_patient
    return condition


def _scope_predicate(scope: Scope) -> str:
    parts = []
    if scope.first_patient is not None:
        parts.append(f"patient_id >= {sql_literal(scope.first_patient)}")
    if scope.last_patient is not None:
        parts.append(f"patient_id <= {sql_literal(scope.last_patient)}")
    if scope.first_day is not None:
        parts.append(f"date >= {sql_literal(scope.first_day.isoformat())}")
    return "(" + (" AND ".join(parts) or "true") + ")"


def _pack(counts: pl.DataFrame, limit: int) -> list[list[str]]:
    """Consecutive patients grouped so that each group has about ``limit`` patient-days."""
    groups: list[list[str]] = []
    running = limit
    for patient, days in counts.iter_rows():
        if running + days > limit:
            groups.append([])
            running = 0
        groups[-1].append(patient)
        running += days
    return groups


@dataclass
class _Progress:
    batches: int = 0
    days_in: int = 0


def _feature_batches(
    daily: pl.LazyFrame,
    clinical: dict[str, pl.DataFrame],
    patients: pl.DataFrame,
    first_day: date | None,
    *,
    batch_days: int,
    done: _Progress,
    progress: Callable[[int], None] | None,
) -> Iterator[pa.RecordBatch]:
    """Feature rows of some patients, batch by batch, from ``first_day`` on.

    Runs inside the Delta writer, so it must not open Delta tables itself: ``daily`` is a pinned
    scan and ``clinical`` is read. ``patients`` holds ``patient_id, len`` (their days), sorted.
    """
    if not patients.height:
        return
    first, last = patients["patient_id"][0], patients["patient_id"][-1]
    # read from storage once per commit; batches are computed from it in memory
    rows = daily.filter(pl.col("patient_id").is_between(pl.lit(first), pl.lit(last))).collect()
    for batch in _pack(patients, batch_days):
        frame = _batch_features(rows, clinical, batch, first_day)
        done.batches += 1
        done.days_in += int(patients.filter(pl.col("patient_id").is_in(batch))["len"].sum())
        if progress is not None:
            progress(len(batch))
        yield from conform(FEATURES, frame).to_batches()


def _batch_features(
    rows: pl.DataFrame, clinical: dict[str, pl.DataFrame], batch: list[str], first_day: date | None
) -> pl.DataFrame:
    patients = pl.Series(batch).implode()

    def of_batch(table: TableSpec) -> pl.DataFrame:
        return clinical[table.path].filter(pl.col("patient_id").is_in(patients))

    frame = features(
        rows.lazy().filter(pl.col("patient_id").is_between(pl.lit(batch[0]), pl.lit(batch[-1]))),
        patients=of_batch(PATIENTS),
        therapies=of_batch(THERAPIES),
        side_effects=of_batch(SIDE_EFFECTS),
        diagnoses=of_batch(DIAGNOSES),
    )
    if first_day is not None:
        frame = frame.filter(pl.col("date") >= first_day)
    return frame.collect()


def _range_predicate(
    scope: Scope, low: str | None, high: str | None, *, high_inclusive: bool
) -> str:
    """The scope's rows of patients in [low, high) (or [low, high])."""
    bounded = Scope(
        first_patient=low, last_patient=None, first_day=scope.first_day, last_day=scope.last_day
    )
    predicate = _scope_predicate(bounded)
    if high is not None:
        predicate += f" AND patient_id {'<=' if high_inclusive else '<'} {sql_literal(high)}"
    return predicate


def run(
    lake: Lake,
    *,
    full: bool = False,
    commit_days: int = 1_000_000,
    batch_days: int = 50_000,
    progress: Callable[[int], None] | None = None,
) -> FeaturesSummary:
    """Bring silver/features up to date with silver/daily_steps and the clinical tables.

    Args:
        lake: the lake.
        full: recompute every patient-day.
        commit_days: patient-days read and committed at once (each commit is one atomic replace
            of a contiguous patient range; bounds the writer's memory).
        batch_days: patient-days whose features are computed at once (bounds peak memory).
        progress: called with the number of patients of each finished batch.
    """
    with job_run(lake, JOB) as record:
        inputs = Inputs.current(lake)
        mode, scopes = plan(lake, inputs, full=full)
        done = _Progress()
        rows_out = commits = 0
        daily = lake.scan(DAILY_STEPS, version=inputs.version(DAILY_STEPS)).select(_DAILY_COLUMNS)
        clinical = {table.path: inputs.read(lake, table) for table in CLINICAL} if scopes else {}
        # A feature set with other columns is rebuilt in one commit: only that replaces the
        # table's schema without a moment where the table lacks rows.
        rebuild = mode == "full" and lake.exists(FEATURES) and not lake.schema_matches(FEATURES)
        for scope in scopes:
            counts = (
                daily.filter(_in_scope(scope))
                .group_by("patient_id")
                .len()
                .sort("patient_id")
                .collect()
            )
            groups = [counts] if rebuild else _commit_groups(counts, commit_days)
            for index, group in enumerate(groups):
                # the groups tile the scope's patient range: rows of patients gone from
                # daily_steps are deleted too
                low = scope.first_patient if index == 0 else group["patient_id"][0]
                last_group = index == len(groups) - 1
                high = scope.last_patient if last_group else groups[index + 1]["patient_id"][0]
                predicate = (
                    None
                    if rebuild
                    else _range_predicate(scope, low, high, high_inclusive=last_group)
                )

                def open_batches(
                    group: pl.DataFrame = group, first_day: date | None = scope.first_day
                ) -> pa.RecordBatchReader:
                    return pa.RecordBatchReader.from_batches(
                        FEATURES.schema,
                        _feature_batches(
                            daily,
                            clinical,
                            group,
                            first_day,
                            batch_days=batch_days,
                            done=done,
                            progress=progress,
                        ),
                    )

                rows_out += lake.replace_stream(
                    FEATURES, open_batches, predicate=predicate, metadata={"job": JOB}
                )
                commits += 1
        record.rows_in, record.rows_out = done.days_in, rows_out
        record.details.update(
            inputs=inputs.as_details(),
            feature_set=feature_set_id(),
            mode=mode,
            scopes=len(scopes),
            batches=done.batches,
            commits=commits,
        )
        return FeaturesSummary(mode, len(scopes), done.batches, done.days_in, rows_out)


def _commit_groups(counts: pl.DataFrame, commit_days: int) -> list[pl.DataFrame]:
    """``counts`` (patient_id, len) cut into consecutive groups of about ``commit_days`` days;
    one empty group when there are no patients (the commit then only deletes)."""
    if not counts.height:
        return [counts]
    groups = _pack(counts, commit_days)
    out, offset = [], 0
    for group in groups:
        out.append(counts.slice(offset, len(group)))
        offset += len(group)
    return out
