"""The daily aggregation job: bronze/step_samples -> silver/daily_steps.

Incremental: the job remembers (in ``ops/job_runs``) which bronze table and version it last
aggregated. On the next run it compares the bronze files then and now; each added or removed
file's statistics (patient range, time range) give a *scope*, and only the patient-days inside the
scopes are recomputed, from all bronze samples that can touch them, all read from one bronze
snapshot. Results are committed in groups of batches, each one atomic replace-by-predicate of a
contiguous patient range, so a crash leaves every patient-day either old or new, and running the
job again over the same bronze is a no-op.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from typing import Any
from urllib.parse import unquote

import polars as pl
import pyarrow.parquet as pq

from jobs.daily import DAILY_SCHEMA, SAMPLE_COLUMNS, daily_steps
from jobs.engine import Engine, LocalEngine, Staging, task_lake
from jobs.runs import job_run, last_succeeded_details
from jobs.scopes import Scope, changed_files, files_of_patients, merge_scopes, patient_range
from lakehouse.catalog import DAILY_STEPS, STEP_SAMPLES
from lakehouse.storage import Lake, sql_literal

JOB = "aggregate"
# Samples are at most 24 h long and offsets at most 14 h, so a local day only receives samples
# that start within two days of it.
_SAMPLE_REACH = timedelta(days=2)
# Batches read and aggregated at the same time by the local engine (one per core on the 2-core
# reference machine).
_BATCHES_IN_FLIGHT = 2
# What a batch's task stages: its daily rows.
_DAILY = "daily_steps"
# Patient-days gathered before one commit: few commits and files, bounded memory (~100 MB).
_COMMIT_DAYS = 2_000_000


@dataclass(frozen=True)
class Bronze:
    """One snapshot of bronze/step_samples: every batch of a run reads the same version."""

    samples: pl.LazyFrame
    files: pl.DataFrame  # file statistics of that version


@dataclass(frozen=True)
class AggregateSummary:
    """What one aggregation run did."""

    mode: str  # "full", "incremental" or "up-to-date"
    bronze_version: int | None
    scopes: int
    batches: int
    samples_in: int
    days_out: int

    def describe(self) -> str:
        """One line for the command line."""
        return (
            f"aggregate: {self.mode}, {self.samples_in:,} samples -> "
            f"{self.days_out:,} patient-days in {self.batches} batch(es)"
        )


def last_aggregated_version(lake: Lake, bronze_table_id: str) -> int | None:
    """The bronze version the last successful aggregation run covered, None if there was none
    or it covered another bronze table (one dropped and rebuilt since, whose versions restart)."""
    covered = last_succeeded_details(lake, JOB, having="bronze_version")
    if covered is None or covered.get("bronze_table_id") != bronze_table_id:
        return None
    return int(covered["bronze_version"])


def _file_scopes(stats: pl.DataFrame) -> list[Scope]:
    return [
        Scope(
            first_patient=row["min.patient_id"],
            last_patient=row["max.patient_id"],
            first_day=(row["min.start_ts"] - timedelta(days=1)).date(),
            last_day=(row["max.end_ts"] + timedelta(days=1)).date(),
        )
        for row in stats.iter_rows(named=True)
    ]


def changed_scopes(lake: Lake, since_version: int, until_version: int) -> list[Scope] | None:
    """Scopes touched by bronze commits in (since_version, until_version]; None when those
    commits changed no data."""
    changed = changed_files(lake, STEP_SAMPLES, since_version, until_version)
    if changed is None:
        return None
    added, removed = changed
    return merge_scopes(_file_scopes(added) + _file_scopes(removed))


def _time_bounds(scope: Scope) -> tuple[datetime | None, datetime | None]:
    """[start, end) of the sample start times that can touch the scope's days (None: open)."""
    start = end = None
    if scope.first_day is not None:
        start = datetime.combine(scope.first_day, time(0), tzinfo=UTC) - _SAMPLE_REACH
    if scope.last_day is not None:
        end = datetime.combine(scope.last_day, time(0), tzinfo=UTC) + _SAMPLE_REACH
    return start, end


def _time_filter(scope: Scope) -> pl.Expr | None:
    """The samples that can touch the scope's days; None when that is every sample."""
    start, end = _time_bounds(scope)
    conditions = []
    if start is not None:
        conditions.append(pl.col("start_ts") >= start)
    if end is not None:
        conditions.append(pl.col("start_ts") < end)
    return pl.all_horizontal(conditions) if conditions else None


def _patient_batches(units: list[tuple[str, int]], batch_samples: int) -> list[str]:
    """First patient of each batch, packing (first patient, samples) units in order so that a
    batch holds about ``batch_samples`` samples."""
    starts: list[str] = []
    running = batch_samples  # forces a batch to start at the first unit
    for first_patient, samples in units:
        if running + samples > batch_samples:
            starts.append(first_patient)
            running = 0
        running += samples
    return starts


def _file_segments(stats: pl.DataFrame) -> list[tuple[str, str, int]]:
    """Patient ranges that no bronze file straddles, with their sample counts.

    Batches cut only between segments read every file once; a cut inside a file's patient range
    would make two batches decode the same row groups.
    """
    segments: list[tuple[str, str, int]] = []
    ranges = stats.select("min.patient_id", "max.patient_id", "num_records").sort("min.patient_id")
    for low, high, records in ranges.iter_rows():
        if segments and low <= segments[-1][1]:
            first, last, total = segments[-1]
            segments[-1] = (first, max(last, high), total + records)
        else:
            segments.append((low, high, records))
    return segments


def _replace_predicate(scope: Scope, first: str | None, upper: str | None, inclusive: bool) -> str:
    parts = []
    if first is not None:
        parts.append(f"patient_id >= {sql_literal(first)}")
    if upper is not None:
        parts.append(f"patient_id {'<=' if inclusive else '<'} {sql_literal(upper)}")
    if scope.first_day is not None:
        parts.append(f"date >= {sql_literal(scope.first_day.isoformat())}")
    if scope.last_day is not None:
        parts.append(f"date <= {sql_literal(scope.last_day.isoformat())}")
    return " AND ".join(parts) or "true"


def _row_group_units(
    lake: Lake, stats: pl.DataFrame, first: str, last: str
) -> list[tuple[str, int]] | None:
    """``(first patient, samples)`` of every row group of the files whose patients lie in
    [first, last], read from the files' footers (no sample is read); None when a row group has
    no patient statistics."""
    filesystem, root = lake.filesystem()
    folder = f"{root.rstrip('/')}/{STEP_SAMPLES.path}"
    paths = stats.filter((pl.col("min.patient_id") >= first) & (pl.col("max.patient_id") <= last))[
        "path"
    ]
    units: list[tuple[str, int]] = []
    for path in paths:
        footer = pq.read_metadata(f"{folder}/{unquote(path)}", filesystem=filesystem)
        column = footer.schema.names.index("patient_id")
        for index in range(footer.num_row_groups):
            group = footer.row_group(index)
            patient = group.column(column).statistics
            if patient is None or not patient.has_min_max:
                return None
            units.append((str(patient.min), group.num_rows))
    return sorted(units)


def _scope_batches(
    lake: Lake, bronze: Bronze, scope: Scope, batch_samples: int
) -> list[tuple[str | None, str | None]]:
    """Patient ranges [first, upper) that tile the scope, each with about ``batch_samples``
    samples. The last range includes its upper bound (the scope's last patient)."""
    stats = bronze.files
    if stats.height and scope.last_patient is not None:
        stats = stats.filter(pl.col("min.patient_id") <= scope.last_patient)
    if stats.height and scope.first_patient is not None:
        stats = stats.filter(pl.col("max.patient_id") >= scope.first_patient)
    estimate = int(stats["num_records"].sum()) if stats.height else 0
    if estimate <= batch_samples:
        # small enough for one batch: no need to plan
        return [(scope.first_patient, scope.last_patient)]
    units: list[tuple[str, int]] = []
    for first, last, records in _file_segments(stats):
        if records <= batch_samples:
            units.append((first, records))
            continue
        # a segment too big for one batch (large or compacted files, each holding thousands of
        # patients): for every day of its patients, the row groups' statistics say how many
        # samples each group of patients has (files are written sorted by patient)
        if scope.first_day is None and scope.last_day is None:
            groups = _row_group_units(lake, stats, first, last)
            # usable when each row group is well within a batch
            if groups and max(rows for _, rows in groups) <= batch_samples // 2:
                units.extend(groups)
                continue
        # else count the samples of its patients that fall in the scope
        low = first if scope.first_patient is None else max(first, scope.first_patient)
        high = last if scope.last_patient is None else min(last, scope.last_patient)
        where = patient_range(low, high, last_inclusive=True)
        if (in_time := _time_filter(scope)) is not None:
            where &= in_time
        counts = bronze.samples.filter(where).group_by("patient_id").len().collect()
        units.extend(counts.sort("patient_id").iter_rows())
    return scope_tiles(scope, units, batch_samples)


def scope_tiles(
    scope: Scope, units: list[tuple[str, int]], batch_samples: int
) -> list[tuple[str | None, str | None]]:
    """Patient ranges [first, upper) that tile the scope (the last one includes its upper
    bound), packing ``(first patient, samples)`` units, in patient order, about
    ``batch_samples`` samples a range."""
    # cut points strictly inside the scope: the batches then tile exactly the scope's range
    cuts = [
        start
        for start in _patient_batches(units, batch_samples)[1:]
        if (scope.first_patient is None or start > scope.first_patient)
        and (scope.last_patient is None or start <= scope.last_patient)
    ]
    bounds: list[str | None] = [scope.first_patient, *cuts]
    uppers: list[str | None] = [*cuts, scope.last_patient]
    return list(zip(bounds, uppers, strict=True))


def scope_files(files: pl.DataFrame, scope: Scope) -> pl.DataFrame:
    """The bronze files (statistics rows) that can hold samples the scope reads."""
    where = pl.lit(True)
    if scope.first_patient is not None:
        where &= pl.col("max.patient_id") >= scope.first_patient
    if scope.last_patient is not None:
        where &= pl.col("min.patient_id") <= scope.last_patient
    start, end = _time_bounds(scope)
    if start is not None:
        where &= pl.col("max.start_ts") >= start
    if end is not None:
        where &= pl.col("min.start_ts") < end
    return files.filter(where) if files.height else files


def scope_daily_steps(samples: pl.DataFrame, scope: Scope) -> pl.DataFrame:
    """silver/daily_steps rows of the scope's days from the samples of some of its patients.

    Args:
        samples: bronze rows of whole patients that can touch the scope's days (read with
            :func:`_time_filter`; samples of other days would only be aggregated and dropped).
        scope: the patient-days being recomputed.
    """
    daily = daily_steps(samples)
    if scope.first_day is not None:
        daily = daily.filter(pl.col("date") >= scope.first_day)
    if scope.last_day is not None:
        daily = daily.filter(pl.col("date") <= scope.last_day)
    return daily


@dataclass(frozen=True)
class BatchTask:
    """One batch of a scope, as a task gets it: where to read, which patients, which days.

    Args:
        lake_uri: the lake (the task opens it with its own credentials).
        files: the bronze data files of the pinned version that can hold the batch's samples
            (paths relative to the table).
        scope: the patient-days being recomputed.
        first: the batch's first patient (None: from the scope's start).
        upper: the batch's upper patient bound (None: to the scope's end).
        last: whether ``upper`` itself belongs to the batch (the scope's last batch).
        whole_files: every file holds only the batch's patients (no need to filter them).
    """

    lake_uri: str
    files: tuple[str, ...]
    scope: Scope
    first: str | None
    upper: str | None
    last: bool
    whole_files: bool = False


def aggregate_batch(_shared: Any, task: BatchTask, staging: Staging) -> dict[str, Any]:
    """A task: one batch's daily rows from its own bronze files, staged; returns the number of
    samples read."""
    samples = task_lake(task.lake_uri).scan_files(STEP_SAMPLES, task.files)
    if not task.whole_files:
        samples = samples.filter(patient_range(task.first, task.upper, last_inclusive=task.last))
    if (in_time := _time_filter(task.scope)) is not None:
        samples = samples.filter(in_time)
    rows = samples.select(SAMPLE_COLUMNS).collect()
    staging.write(_DAILY, scope_daily_steps(rows, task.scope))
    return {"samples": rows.height}


def _scope_tasks(
    engine: Engine, lake: Lake, bronze: Bronze, scope: Scope, batch_samples: int
) -> list[BatchTask]:
    """The scope's batches as tasks, each about as large as the engine asks (at most
    ``batch_samples`` samples)."""
    files = scope_files(bronze.files, scope)
    estimate = int(files["num_records"].sum()) if files.height else 0
    batches = _scope_batches(lake, bronze, scope, engine.task_size(estimate, batch_samples))
    tasks = []
    for index, (first, upper) in enumerate(batches):
        last = index == len(batches) - 1
        paths = files_of_patients(files, first, upper)
        tasks.append(
            BatchTask(
                lake.uri,
                paths,
                scope,
                first,
                upper,
                last,
                whole_files=_only_patients_of(files, paths, first, upper, last),
            )
        )
    return tasks


def _only_patients_of(
    files: pl.DataFrame, paths: tuple[str, ...], first: str | None, upper: str | None, last: bool
) -> bool:
    """Whether the files ``paths`` hold no patient outside [first, upper) ([first, upper] when
    ``last``): then a batch reading them need not filter its patients."""
    if not paths:
        return True
    held = files.filter(pl.col("path").is_in(paths))
    low, high = held["min.patient_id"].min(), held["max.patient_id"].max()
    if not (isinstance(low, str) and isinstance(high, str)):
        return False
    if first is not None and low < first:
        return False
    return upper is None or (high <= upper if last else high < upper)


def _aggregate_scope(
    engine: Engine,
    lake: Lake,
    scope: Scope,
    tasks: list[BatchTask],
    *,
    progress: Callable[[int], None] | None,
) -> tuple[int, int, int]:
    """Run one scope's batches on the engine and commit them as it delivers them, in order.
    Returns (batches, samples read, days written).

    The batches tile the scope's whole patient range, so every silver row in the scope is
    replaced (rows whose samples are gone are deleted). Each :data:`_COMMIT_DAYS` patient-days
    are committed as one atomic replace of their contiguous patient range.
    """
    samples_in = days_out = 0
    pending: list[pl.DataFrame] = []  # aggregated batches not yet committed
    pending_first: str | None = None

    def commit(upper: str | None, inclusive: bool) -> None:
        # one atomic replace for the contiguous patient range of the pending batches
        lake.replace(
            DAILY_STEPS,
            pl.concat(pending),
            predicate=_replace_predicate(scope, pending_first, upper, inclusive),
            metadata={"job": JOB},
        )
        pending.clear()

    with engine.map_tasks(
        lake, JOB, aggregate_batch, tasks, in_flight=_BATCHES_IN_FLIGHT
    ) as results:
        for task, result in zip(tasks, results, strict=True):
            daily = result.staged.read(_DAILY)
            if daily is None:
                daily = pl.DataFrame(schema=DAILY_SCHEMA)
            n_samples = int(result.summary["samples"])
            if not pending:
                pending_first = task.first
            pending.append(daily)
            if task.last or sum(frame.height for frame in pending) >= _COMMIT_DAYS:
                commit(task.upper, task.last)
            samples_in += n_samples
            days_out += daily.height
            if progress is not None:
                progress(n_samples)
    return len(tasks), samples_in, days_out


def run(
    lake: Lake,
    *,
    batch_samples: int = 4_000_000,
    full: bool = False,
    progress: Callable[[int], None] | None = None,
    engine: Engine | None = None,
) -> AggregateSummary:
    """Bring silver/daily_steps up to date with bronze/step_samples.

    Args:
        lake: the lake.
        batch_samples: samples per batch, at most (bounds a task's peak memory).
        full: recompute everything instead of only what changed.
        progress: called with the number of samples of each finished batch.
        engine: where the batches are aggregated (default: this process); the results are
            committed here whatever the engine.
    """
    engine = engine or LocalEngine()
    with job_run(lake, JOB, engine=engine.name) as record:
        bronze_version = lake.version(STEP_SAMPLES)
        bronze_id = lake.table_id(STEP_SAMPLES) if bronze_version is not None else None
        previous = (
            None
            if full or bronze_id is None or not lake.exists(DAILY_STEPS)
            else last_aggregated_version(lake, bronze_id)
        )
        if bronze_version is None:
            scopes: list[Scope] | None = None
            mode = "up-to-date"
        elif previous is None:
            scopes, mode = [Scope()], "full"
        elif previous >= bronze_version:
            scopes, mode = None, "up-to-date"
        else:
            scopes = changed_scopes(lake, previous, bronze_version)
            mode = "incremental" if scopes is not None else "up-to-date"
        batches = samples_in = days_out = 0
        if scopes:
            bronze = Bronze(
                samples=lake.scan(STEP_SAMPLES, version=bronze_version),
                files=lake.file_stats(STEP_SAMPLES, version=bronze_version),
            )
        for scope in scopes or []:
            tasks = _scope_tasks(engine, lake, bronze, scope, batch_samples)
            done = _aggregate_scope(engine, lake, scope, tasks, progress=progress)
            batches, samples_in, days_out = (
                batches + done[0],
                samples_in + done[1],
                days_out + done[2],
            )
        summary = AggregateSummary(
            mode, bronze_version, len(scopes or []), batches, samples_in, days_out
        )
        # each commit above adds a file per month: the patient page reads a patient's days
        # from every file of every month
        compacted = lake.compact(DAILY_STEPS) if batches else 0
        record.rows_in, record.rows_out = samples_in, days_out
        record.details.update(
            compacted_files=compacted,
            bronze_version=bronze_version,
            bronze_table_id=bronze_id,
            mode=mode,
            scopes=summary.scopes,
            batches=batches,
        )
        return summary
