"""The features job: silver/daily_steps + clinical bronze -> silver/features.

Incremental and idempotent (what is recomputed: :mod:`jobs.features.changes`). Features are always
computed from each patient's whole history (weighted means reach back to the first day), but only
the rows that can have changed are written: a full run rewrites everything, range by range; an
incremental run rewrites each changed patient's rows from their first day that can differ (a
clinical change: all their rows).

Rows are committed as atomic replaces of about ``commit_days`` patient-days (contiguous patient
ranges, or lists of patients), so a crash leaves each patient all old or all new; the crashed run
is not recorded as covering its inputs, so the next run redoes its work. A run over unchanged
inputs commits nothing. When the catalog's columns changed, the table is rewritten in one commit
with the new schema. A run that committed merges the months its commits left in several files.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import date
from typing import Any

import polars as pl
import pyarrow as pa

from jobs.engine import Engine, LocalEngine, Staging, task_lake
from jobs.features.changes import (
    CLINICAL,
    FEATURE_INPUT_COLUMNS,
    JOB,
    Inputs,
    Work,
    feature_set_id,
    plan,
)
from jobs.features.transform import features
from jobs.runs import job_run
from jobs.scopes import Scope, files_of_patients, patient_range
from lakehouse.catalog import DAILY_STEPS, DIAGNOSES, FEATURES, PATIENTS, SIDE_EFFECTS, THERAPIES
from lakehouse.storage import Lake, conform, in_list_predicate, sql_literal

# What a batch's task stages: its feature rows.
_FEATURES = "features"
_PLAN_SCHEMA = {"patient_id": pl.String, "days": pl.UInt32, "from": pl.Date}


@dataclass(frozen=True)
class FeaturesSummary:
    """What one features run did."""

    mode: str  # "full", "incremental" or "up-to-date"
    commits: int
    batches: int
    days_in: int
    rows_out: int
    note: str = ""

    def describe(self) -> str:
        """One line for the command line."""
        line = (
            f"features: {self.mode}, {self.days_in:,} patient-days read -> "
            f"{self.rows_out:,} feature rows in {self.batches} batch(es), {self.commits} commit(s)"
        )
        return f"{line} ({self.note})" if self.note else line


@dataclass
class _Tally:
    batches: int = 0
    days_in: int = 0


@dataclass(frozen=True)
class _Commit:
    """One atomic replace: the rows matching ``predicate`` become the features of ``patients``
    (``patient_id, days, from``; rows before ``from`` are kept, null = all rows)."""

    predicate: str | None
    patients: pl.DataFrame


def pack(days: list[int], limit: int) -> list[slice]:
    """Consecutive slices whose day counts add up to about ``limit`` (at least one item each)."""
    slices: list[slice] = []
    start = running = 0
    for index, count in enumerate(days):
        if index > start and running + count > limit:
            slices.append(slice(start, index))
            start, running = index, 0
        running += count
    if days:
        slices.append(slice(start, len(days)))
    return slices


def _range_commits(daily: pl.LazyFrame, scope: Scope, commit_days: int) -> Iterator[_Commit]:
    """Commits that tile the scope's patient range, every day of every patient (rows of
    patients gone from daily_steps are deleted too)."""
    counts = (
        daily.filter(patient_range(scope.first_patient, scope.last_patient))
        .group_by("patient_id")
        .agg(days=pl.len())
        .sort("patient_id")
        .with_columns(pl.lit(None, pl.Date).alias("from"))
        .collect()
        .cast(_PLAN_SCHEMA)  # type: ignore[arg-type]
    )
    groups = pack(counts["days"].to_list(), commit_days) or [slice(0, 0)]
    for index, rows in enumerate(groups):
        group = counts[rows]
        parts = []
        low = scope.first_patient if index == 0 else group["patient_id"][0]
        if low is not None:
            parts.append(f"patient_id >= {sql_literal(low)}")
        if index < len(groups) - 1:
            upper = counts["patient_id"][groups[index + 1].start]
            parts.append(f"patient_id < {sql_literal(upper)}")
        elif scope.last_patient is not None:
            parts.append(f"patient_id <= {sql_literal(scope.last_patient)}")
        yield _Commit(" AND ".join(parts) or "true", group)


def _changed_commits(
    lake: Lake, daily: pl.LazyFrame, changed: pl.DataFrame, commit_days: int
) -> Iterator[_Commit]:
    """Commits rewriting each changed patient's rows from the first day that can differ:
    min(first changed input day, the day after their stored rows end, two days after their last
    day with data); the last two cover rows that appear or vanish when a record grows or shrinks
    across a gap. A null first day (clinical change) rewrites every row."""
    patients = changed["patient_id"].implode()
    records = (
        daily.filter(pl.col("patient_id").is_in(patients))
        .group_by("patient_id")
        .agg(days=pl.len(), last=pl.col("date").max())
        .collect()
    )
    stored = (
        lake.scan(FEATURES)
        .filter(pl.col("patient_id").is_in(patients))
        .group_by("patient_id")
        .agg(end=pl.col("date").max())
        .collect()
    )
    plan = (
        changed.join(records, on="patient_id", how="left")
        .join(stored, on="patient_id", how="left")
        .select(
            "patient_id",
            pl.col("days").fill_null(0),
            pl.when(pl.col("from").is_not_null())
            .then(
                pl.min_horizontal(
                    "from",
                    pl.col("end") + pl.duration(days=1),
                    pl.col("last") + pl.duration(days=2),
                )
            )
            .alias("from"),
        )
        .sort("patient_id")
        .cast(_PLAN_SCHEMA)  # type: ignore[arg-type]
    )
    for rows in pack(plan["days"].to_list(), commit_days):
        group = plan[rows]
        terms = []
        for (day,), members in sorted(
            group.group_by("from"), key=lambda item: (item[0][0] is not None, str(item[0][0]))
        ):
            listed = in_list_predicate("patient_id", sorted(members["patient_id"]))
            if day is None:
                terms.append(listed)
            else:
                assert isinstance(day, date)
                terms.append(f"({listed} AND date >= {sql_literal(day.isoformat())})")
        yield _Commit(" OR ".join(terms), group)


def _batch_features(
    rows: pl.DataFrame, clinical: dict[str, pl.DataFrame], batch: pl.DataFrame
) -> pl.DataFrame:
    """Feature rows of the batch's patients (``patient_id, from``) from their ``from`` day on.

    Pure, shared by every engine.

    Args:
        rows: silver/daily_steps rows (the columns features read) of the batch's patients.
        clinical: the clinical tables by path (rows of other patients may be included).
        batch: ``patient_id, from`` of each patient (null ``from``: every row).
    """
    patients = batch["patient_id"].implode()

    def of_batch(table_path: str) -> pl.DataFrame:
        return clinical[table_path].filter(pl.col("patient_id").is_in(patients))

    return (
        features(
            rows.lazy(),
            patients=of_batch(PATIENTS.path),
            therapies=of_batch(THERAPIES.path),
            side_effects=of_batch(SIDE_EFFECTS.path),
            diagnoses=of_batch(DIAGNOSES.path),
        )
        .join(batch.lazy().select("patient_id", "from"), on="patient_id", maintain_order="left")
        .filter(pl.col("from").is_null() | (pl.col("date") >= pl.col("from")))
        .drop("from")
        .collect()
    )


@dataclass(frozen=True)
class FeatureTask:
    """One batch of patients, as a task gets it.

    Args:
        lake_uri: the lake (the task opens it with its own credentials).
        files: the silver/daily_steps data files of the pinned version that can hold the
            batch's rows (paths relative to the table).
        batch: ``patient_id, from`` of each patient of the batch, in patient order.
    """

    lake_uri: str
    files: tuple[str, ...]
    batch: pl.DataFrame


def features_batch(
    clinical: dict[str, pl.DataFrame], task: FeatureTask, staging: Staging
) -> dict[str, Any]:
    """A task: one batch's feature rows from its own daily_steps files, staged (exactly
    silver/features' schema); returns the patient-days read and the patients computed."""
    ids = task.batch["patient_id"]
    daily = (
        task_lake(task.lake_uri)
        .scan_files(DAILY_STEPS, task.files)
        .filter(
            pl.col("patient_id").is_between(pl.lit(ids[0]), pl.lit(ids[-1]))
            & pl.col("patient_id").is_in(ids.implode())
        )
        .select(FEATURE_INPUT_COLUMNS)
        .sort("patient_id", "date")
        .collect()
    )
    staging.write(_FEATURES, conform(FEATURES, _batch_features(daily, clinical, task.batch)))
    return {"days": daily.height, "patients": task.batch.height}


def _commit_tasks(
    lake: Lake, daily_files: pl.DataFrame, patients: pl.DataFrame, task_days: int
) -> list[FeatureTask]:
    """One commit's patients (``patient_id, days, from``) in batches of about ``task_days``
    patient-days; patients without daily rows need no task (their rows are deleted)."""
    present = patients.filter(pl.col("days") > 0)
    tasks = []
    for part in pack(present["days"].to_list(), task_days):
        batch = present[part]
        ids = batch["patient_id"]
        tasks.append(
            FeatureTask(
                lake.uri,
                files_of_patients(daily_files, ids[0], ids[-1]),
                batch.select("patient_id", "from"),
            )
        )
    return tasks


def _commits(lake: Lake, daily: pl.LazyFrame, work: Work, commit_days: int) -> Iterator[_Commit]:
    if work.rebuild:
        # one commit with the catalog's schema: there is no moment without rows
        everyone = (
            daily.group_by("patient_id")
            .agg(days=pl.len())
            .sort("patient_id")
            .with_columns(pl.lit(None, pl.Date).alias("from"))
            .collect()
            .cast(_PLAN_SCHEMA)  # type: ignore[arg-type]
        )
        yield _Commit(None, everyone)
        return
    for scope in work.ranges:
        yield from _range_commits(daily, scope, commit_days)
    if work.changed.height:
        yield from _changed_commits(lake, daily, work.changed, commit_days)


def _commit_all(
    engine: Engine,
    lake: Lake,
    commits: list[_Commit],
    tasks: list[list[FeatureTask]],
    clinical: dict[str, pl.DataFrame],
    progress: Callable[[int], None] | None,
) -> tuple[_Tally, int]:
    """Stream each commit's feature rows, computed by its tasks on the engine, into one atomic
    replace. Returns what was read and the rows written."""
    total = _Tally()
    rows_out = 0
    for commit, commit_tasks in zip(commits, tasks, strict=True):
        attempt = _Tally()

        def stream(
            commit_tasks: list[FeatureTask] = commit_tasks, attempt: _Tally = attempt
        ) -> Iterator[pa.RecordBatch]:
            with engine.map_tasks(
                lake, JOB, features_batch, commit_tasks, shared=clinical, in_flight=1
            ) as results:
                for result in results:
                    rows = result.staged.read(_FEATURES)
                    attempt.batches += 1
                    attempt.days_in += int(result.summary["days"])
                    if progress is not None:
                        progress(int(result.summary["patients"]))
                    if rows is not None:
                        yield from rows.to_arrow().cast(FEATURES.schema).to_batches()

        def open_batches(
            attempt: _Tally = attempt, stream: Callable[[], Iterator[pa.RecordBatch]] = stream
        ) -> pa.RecordBatchReader:
            # a commit conflict replays the stream: count the last attempt only
            attempt.batches = attempt.days_in = 0
            return pa.RecordBatchReader.from_batches(FEATURES.schema, stream())

        rows_out += lake.replace_stream(
            FEATURES, open_batches, predicate=commit.predicate, metadata={"job": JOB}
        )
        total.batches += attempt.batches
        total.days_in += attempt.days_in
    return total, rows_out


def run(
    lake: Lake,
    *,
    full: bool = False,
    commit_days: int = 1_000_000,
    batch_days: int = 50_000,
    progress: Callable[[int], None] | None = None,
    engine: Engine | None = None,
) -> FeaturesSummary:
    """Bring silver/features up to date with silver/daily_steps and the clinical tables.

    Args:
        lake: the lake.
        full: recompute every patient-day.
        commit_days: patient-days per commit (one atomic replace; bounds the writer's memory).
        batch_days: patient-days of one task, at most (bounds a task's peak memory).
        progress: called with the number of patients of each finished batch.
        engine: where the batches are computed (default: this process); the rows are committed
            here whatever the engine.
    """
    engine = engine or LocalEngine()
    with job_run(lake, JOB, engine=engine.name) as record:
        inputs = Inputs.current(lake)
        work = plan(lake, inputs, full=full)
        version = inputs.version(DAILY_STEPS)
        daily = lake.scan(DAILY_STEPS, version=version).select(FEATURE_INPUT_COLUMNS)
        clinical = (
            {t.path: inputs.read(lake, t) for t in CLINICAL}
            if work.ranges or work.changed.height
            else {}
        )
        commits = list(_commits(lake, daily, work, commit_days))
        daily_files = lake.file_stats(DAILY_STEPS, version=version) if version is not None else None
        total_days = sum(int(commit.patients["days"].sum()) for commit in commits)
        task_days = engine.task_size(total_days, batch_days)
        tasks = [
            _commit_tasks(lake, daily_files, commit.patients, task_days)
            if daily_files is not None
            else []
            for commit in commits
        ]
        total, rows_out = _commit_all(engine, lake, commits, tasks, clinical, progress)
        # each commit adds a file to every month it covers (a full run at 100,000 patients:
        # 55 commits x 25 months = 1,375 files): merged, so readers open a few files per month
        compacted = lake.compact(FEATURES) if commits else 0
        record.rows_in, record.rows_out = total.days_in, rows_out
        record.details.update(
            compacted_files=compacted,
            inputs=inputs.as_details(),
            feature_set=feature_set_id(),
            mode=work.mode,
            ranges=len(work.ranges),
            patients=work.changed.height,
            batches=total.batches,
            commits=len(commits),
        )
        note = (
            ""
            if inputs.version(DAILY_STEPS) is not None
            else "no silver/daily_steps yet: run mobility aggregate first"
        )
        return FeaturesSummary(
            work.mode, len(commits), total.batches, total.days_in, rows_out, note
        )
