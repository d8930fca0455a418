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

from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from typing import TYPE_CHECKING

import polars as pl

from jobs.daily import SAMPLE_COLUMNS, daily_steps
from jobs.runs import job_run, last_succeeded_details
from jobs.scopes import Scope, changed_files, merge_scopes, patient_range
from lakehouse.catalog import DAILY_STEPS, STEP_SAMPLES
from lakehouse.storage import Lake, sql_literal

if TYPE_CHECKING:
    from jobs.spark.session import SparkEngine

JOB = "aggregate"
# Samples are at most 24 h long and offsets at most 14 h, so a local day only receives samples
# that start within two days of it.
_SAMPLE_REACH = timedelta(days=2)
# Batches read and aggregated at the same time (one per core on the 2-core reference machine).
_BATCHES_IN_FLIGHT = 2
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


def _time_filter(scope: Scope) -> pl.Expr:
    start, end = _time_bounds(scope)
    condition = pl.lit(True)
    if start is not None:
        condition &= pl.col("start_ts") >= start
    if end is not None:
        condition &= pl.col("start_ts") < end
    return condition


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


def _scope_batches(
    bronze: Bronze, scope: Scope, batch_samples: int
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
        # a segment too big for one batch (e.g. compacted files): count the samples of its
        # patients that fall in the scope
        low = first if scope.first_patient is None else max(first, scope.first_patient)
        high = last if scope.last_patient is None else min(last, scope.last_patient)
        where = patient_range(low, high, last_inclusive=True) & _time_filter(scope)
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


def scope_daily_steps(samples: pl.DataFrame, scope: Scope) -> tuple[pl.DataFrame, int]:
    """silver/daily_steps rows of the scope's days from the samples of some of its patients.

    Pure, shared by every engine: the local engine calls it per batch of patients, the Spark
    engine per group of patients on its workers.

    Args:
        samples: bronze rows of whole patients (any other samples of theirs may be included:
            only those that can touch the scope's days are used).
        scope: the patient-days being recomputed.

    Returns:
        The daily rows and the number of samples they were computed from.
    """
    samples = samples.filter(_time_filter(scope)).select(SAMPLE_COLUMNS)
    daily = daily_steps(samples)
    if scope.first_day is not None:
        daily = daily.filter(pl.col("date") >= scope.first_day)
    if scope.last_day is not None:
        daily = daily.filter(pl.col("date") <= scope.last_day)
    return daily, samples.height


# The batches of a scope (patient ranges [first, upper), the last one inclusive) and, in the same
# order, each one's daily rows with the number of samples read: what an engine computes.
ScopeWork = tuple[list[tuple[str | None, str | None]], Iterator[tuple[pl.DataFrame, int]]]


def _local_scope_work(bronze: Bronze, scope: Scope, batch_samples: int) -> ScopeWork:
    """The in-process engine: two batches are read and aggregated at once on worker threads
    (Polars and NumPy release the GIL)."""
    batches = _scope_batches(bronze, scope, batch_samples)

    def aggregate_batch(index: int) -> tuple[pl.DataFrame, int]:
        first, upper = batches[index]
        last_batch = index == len(batches) - 1
        where = patient_range(first, upper, last_inclusive=last_batch) & _time_filter(scope)
        return scope_daily_steps(bronze.samples.filter(where).collect(), scope)

    def results() -> Iterator[tuple[pl.DataFrame, int]]:
        with ThreadPoolExecutor(max_workers=_BATCHES_IN_FLIGHT) as workers:
            in_flight: deque[Future[tuple[pl.DataFrame, int]]] = deque()
            submitted = 0
            for _ in batches:
                while submitted < len(batches) and len(in_flight) < _BATCHES_IN_FLIGHT:
                    in_flight.append(workers.submit(aggregate_batch, submitted))
                    submitted += 1
                yield in_flight.popleft().result()

    return batches, results()


def _aggregate_scope(
    lake: Lake,
    scope: Scope,
    work: ScopeWork,
    *,
    progress: Callable[[int], None] | None,
) -> tuple[int, int, int]:
    """Commit one scope's batches as the engine delivers them, in order. Returns (batches,
    samples read, days written).

    The batches tile the scope's whole patient range, so every silver row in the scope is
    replaced (rows whose samples are gone are deleted). Each :data:`_COMMIT_DAYS` patient-days
    are committed as one atomic replace of their contiguous patient range.
    """
    batches, results = work
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

    for index, ((first, upper), (daily, n_samples)) in enumerate(
        zip(batches, results, strict=True)
    ):
        if not pending:
            pending_first = first
        pending.append(daily)
        last_batch = index == len(batches) - 1
        if last_batch or sum(frame.height for frame in pending) >= _COMMIT_DAYS:
            commit(upper, last_batch)
        samples_in += n_samples
        days_out += daily.height
        if progress is not None:
            progress(n_samples)
    return len(batches), samples_in, days_out


def run(
    lake: Lake,
    *,
    batch_samples: int = 4_000_000,
    full: bool = False,
    progress: Callable[[int], None] | None = None,
    spark: SparkEngine | None = None,
) -> AggregateSummary:
    """Bring silver/daily_steps up to date with bronze/step_samples.

    Args:
        lake: the lake.
        batch_samples: samples per batch (bounds peak memory; on Spark, per group of patients).
        full: recompute everything instead of only what changed.
        progress: called with the number of samples of each finished batch.
        spark: run the aggregation on this Spark engine instead of in this process; the
            results are committed here all the same.
    """
    with job_run(lake, JOB, engine="local" if spark is None else "spark") as record:
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
            if spark is None:
                work = _local_scope_work(bronze, scope, batch_samples)
            else:
                from jobs.spark.aggregate import spark_scope_work

                work = spark_scope_work(spark, lake, bronze.files, scope, batch_samples)
            done = _aggregate_scope(lake, scope, work, progress=progress)
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
