"""Daily aggregation on Spark: :func:`jobs.aggregate.scope_daily_steps` per group of patients.

The groups are contiguous patient ranges of about ``batch_samples`` samples, planned like the
local engine's batches but from per-patient sample counts Spark takes from the bronze files
themselves. The driver commits each range's rows with the local engine's commit loop.
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import partial
from typing import Any

import polars as pl

from jobs.aggregate import JOB, ScopeWork, scope_daily_steps, scope_files, scope_tiles
from jobs.daily import DAILY_SCHEMA, SAMPLE_COLUMNS
from jobs.scopes import Scope, patient_range
from jobs.spark.session import SparkEngine, Staging
from lakehouse.catalog import STEP_SAMPLES
from lakehouse.storage import Lake

_DAILY = "daily_steps"
_SAMPLE_TYPES = {
    name: dtype
    for name, dtype in pl.DataFrame(STEP_SAMPLES.schema.empty_table()).schema.items()
    if name in SAMPLE_COLUMNS
}


def _aggregate_group(
    scope: Scope, staging: Staging, bucket: int, samples: pl.DataFrame
) -> dict[str, Any]:
    """On a worker: one patient range's daily rows, staged."""
    daily, n_samples = scope_daily_steps(samples.cast(_SAMPLE_TYPES), scope)  # type: ignore[arg-type]
    staging.write(_DAILY, bucket, daily)
    return {"samples": n_samples}


def spark_scope_work(
    spark: SparkEngine, lake: Lake, files: pl.DataFrame, scope: Scope, batch_samples: int
) -> ScopeWork:
    """The batches of one scope and their daily rows, computed on Spark.

    Args:
        spark: the engine.
        lake: the lake.
        files: file statistics of the pinned bronze version.
        scope: the patient-days to recompute.
        batch_samples: samples per group of patients, at most.
    """
    from pyspark.sql.functions import broadcast

    samples = spark.read_files(lake, STEP_SAMPLES, scope_files(files, scope), list(SAMPLE_COLUMNS))
    if samples is None:
        # no bronze file can touch the scope: its rows are deleted, as locally
        return [(scope.first_patient, scope.last_patient)], iter([(_no_days(), 0)])
    counts = (
        spark.collect(samples.groupBy("patient_id").count())
        .filter(patient_range(scope.first_patient, scope.last_patient))
        .sort("patient_id")
    )
    group_samples = spark.group_size(int(counts["count"].sum()), batch_samples)
    batches = scope_tiles(
        scope, list(counts.select("patient_id", "count").iter_rows()), group_samples
    )
    cuts = pl.Series([upper for _, upper in batches[:-1]], dtype=pl.String)
    plan = counts.select(
        "patient_id", bucket=cuts.search_sorted(counts["patient_id"], side="right").cast(pl.Int64)
    )
    rows = samples.join(broadcast(spark.frame(plan)), "patient_id")

    def results() -> Iterator[tuple[pl.DataFrame, int]]:
        with spark.staging(lake, JOB) as staging:
            summaries = spark.map_groups(
                rows, partial(_aggregate_group, scope, staging), buckets=len(batches)
            )
            for bucket in range(len(batches)):
                daily = staging.read(_DAILY, bucket)
                n_samples = int(summaries.get(bucket, {}).get("samples", 0))
                yield (_no_days() if daily is None else daily), n_samples

    return batches, results()


def _no_days() -> pl.DataFrame:
    return pl.DataFrame(schema=DAILY_SCHEMA)
