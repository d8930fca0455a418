"""Features on Spark: :func:`jobs.features.run._batch_features` per group of patients.

The groups are the local engine's batches (about ``batch_days`` patient-days of each commit's
patients); Spark reads silver/daily_steps' files of the pinned version and the clinical tables go
to every worker once. The driver streams each commit's groups, in order, into one atomic replace,
as the local engine does.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from typing import Any

import polars as pl
import pyarrow as pa

from jobs.features.changes import FEATURE_INPUT_COLUMNS, JOB
from jobs.features.run import FeatureBatches, _batch_features, pack
from jobs.spark.session import SparkEngine, Staging
from lakehouse.catalog import DAILY_STEPS, FEATURES
from lakehouse.storage import Lake, conform

_FEATURES = "features"
_DAILY_TYPES = {
    name: dtype
    for name, dtype in pl.DataFrame(DAILY_STEPS.schema.empty_table()).schema.items()
    if name in FEATURE_INPUT_COLUMNS
}


def _features_group(
    clinical: Any, staging: Staging, bucket: int, rows: pl.DataFrame
) -> dict[str, Any]:
    """On a worker: one batch's feature rows, staged."""
    batch = rows.select("patient_id", "from").unique().sort("patient_id")
    daily = rows.select(FEATURE_INPUT_COLUMNS).cast(_DAILY_TYPES).sort("patient_id", "date")  # type: ignore[arg-type]
    staging.write(
        _FEATURES, bucket, conform(FEATURES, _batch_features(daily, clinical.value, batch))
    )
    return {"days": daily.height, "patients": batch.height}


@contextmanager
def spark_feature_batches(
    spark: SparkEngine,
    lake: Lake,
    daily_files: pl.DataFrame | None,
    clinical: dict[str, pl.DataFrame],
    commits: list[pl.DataFrame],
    *,
    batch_days: int,
) -> Iterator[FeatureBatches]:
    """Compute every commit's feature rows on Spark; yields the function that hands them to the
    commits, group by group.

    Args:
        spark: the engine.
        lake: the lake.
        daily_files: file statistics of the pinned silver/daily_steps version (None: no table).
        clinical: the clinical tables by path, read at their pinned versions.
        commits: each commit's patients (``patient_id, days, from``), in commit order.
        batch_days: patient-days per group, at most.
    """
    from pyspark.sql.functions import broadcast

    plans: list[pl.DataFrame] = []
    commit_buckets: list[range] = []
    total_days = sum(int(patients["days"].sum()) for patients in commits)
    group_days = spark.group_size(total_days, batch_days)
    for patients in commits:
        present = patients.filter(pl.col("days") > 0)
        first = sum(len(buckets) for buckets in commit_buckets)
        groups = pack(present["days"].to_list(), group_days)
        for offset, group in enumerate(groups):
            plans.append(present[group].select("patient_id", "from", bucket=pl.lit(first + offset)))
        commit_buckets.append(range(first, first + len(groups)))
    buckets = sum(len(b) for b in commit_buckets)
    with spark.staging(lake, JOB) as staging:
        summaries: dict[int, dict[str, Any]] = {}
        daily = (
            spark.read_files(lake, DAILY_STEPS, daily_files, list(FEATURE_INPUT_COLUMNS))
            if daily_files is not None and buckets
            else None
        )
        if daily is not None:
            plan = pl.concat(plans).with_columns(pl.col("bucket").cast(pl.Int64))
            rows = daily.join(broadcast(spark.frame(plan)), "patient_id")
            shared = spark.broadcast(clinical)
            summaries = spark.map_groups(
                rows, partial(_features_group, shared, staging), buckets=buckets
            )
            shared.unpersist()

        def commit_batches(
            index: int, _patients: pl.DataFrame
        ) -> Iterator[tuple[pa.Table, int, int]]:
            for bucket in commit_buckets[index]:
                staged = staging.read(_FEATURES, bucket)
                if staged is None:  # a batch whose patients have no daily rows any more
                    continue
                summary = summaries[bucket]
                yield (
                    staged.to_arrow().cast(FEATURES.schema),
                    int(summary["days"]),
                    int(summary["patients"]),
                )

        yield commit_batches
