"""Batch forecasts on Spark: :func:`jobs.forecast.forecast_batch` per batch of patients.

The fine-grained forecasting pattern: each task forecasts one batch (the local engine's batches,
so the cluster-level forecasts come from the same cohorts), Prophet fitting its patients one
after another; Spark reads silver/daily_steps and silver/features and brings each batch's rows
together (a cogroup), and the registered models, patients and therapies go to every worker once.
The driver commits each batch's rows as the local engine does.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from typing import Any, cast

import polars as pl

from jobs.forecast import JOB, BatchForecast, Shrinkage, forecast_batch
from jobs.panel import load_panel
from jobs.spark.session import SparkEngine, Staging
from lakehouse.catalog import DAILY_STEPS, FEATURES, PATIENTS, THERAPIES, TableSpec
from lakehouse.storage import Lake, empty_frame
from models.direct import LEVEL, STATE_FEATURES
from models.ebm import ClusterEBM

_DAILY_COLUMNS = ("patient_id", "date", "steps", "is_wear_day")
_FEATURE_COLUMNS = ("patient_id", "date", LEVEL, *STATE_FEATURES)
_OUTPUTS = ("forecasts", "outlook", "explanations")


def _types(table: TableSpec, columns: tuple[str, ...]) -> dict[str, pl.DataType]:
    schema = pl.DataFrame(table.schema.empty_table()).schema
    return {name: schema[name] for name in columns}


@dataclass(frozen=True)
class _Shared:
    """What every task reads besides its own rows (shipped once per worker)."""

    batches: pl.DataFrame  # patient_id, origin, bucket
    patients: pl.DataFrame
    therapies: pl.DataFrame
    ebms: list[ClusterEBM]
    winners: dict[str, str]
    calibration: pl.DataFrame | None = None
    shrinkage: Shrinkage | None = None


class _BatchTables:
    """One batch's rows, scanned like the lake's tables, so :func:`jobs.panel.load_panel` builds
    the batch's panel with the same code as from the lake."""

    def __init__(self, frames: dict[str, pl.DataFrame]) -> None:
        self._frames = frames

    def scan(self, table: TableSpec, *, version: int | None = None) -> pl.LazyFrame:
        return self._frames[table.path].lazy()


def _forecast_group(
    shared: Any,
    staging: Staging,
    horizon: int,
    bucket: int,
    daily: pl.DataFrame,
    features: pl.DataFrame,
) -> dict[str, Any]:
    """On a worker: one batch's forecasts, staged."""
    context: _Shared = shared.value
    batch = context.batches.filter(pl.col("bucket") == bucket).select("patient_id", "origin")
    tables = _BatchTables(
        {
            DAILY_STEPS.path: daily.cast(_types(DAILY_STEPS, _DAILY_COLUMNS)),  # type: ignore[arg-type]
            FEATURES.path: features.cast(_types(FEATURES, _FEATURE_COLUMNS)),  # type: ignore[arg-type]
            PATIENTS.path: context.patients,
            THERAPIES.path: context.therapies,
        }
    )
    panel = load_panel(cast(Lake, tables), patients=batch["patient_id"].to_list())
    made = forecast_batch(
        panel,
        batch,
        context.ebms,
        context.winners,
        horizon=horizon,
        prophet_workers=1,
        calibration=context.calibration,
        shrinkage=context.shrinkage,
    )
    for name, rows in zip(_OUTPUTS, (made.forecasts, made.outlook, made.explanations), strict=True):
        if rows is not None:
            staging.write(name, bucket, rows)
    return {
        "predicate": made.predicate,
        "cluster_level": made.cluster_level,
        "unforecastable": made.unforecastable,
    }


def _without_features(
    shared: Any, staging: Staging, horizon: int, bucket: int, daily: pl.DataFrame
) -> dict[str, Any]:
    """On a worker, before silver/features exists: the models that need no features."""
    features = empty_frame(FEATURES).select(_FEATURE_COLUMNS)
    return _forecast_group(shared, staging, horizon, bucket, daily, features)


@contextmanager
def spark_forecasts(
    spark: SparkEngine,
    lake: Lake,
    batches: list[pl.DataFrame],
    ebms: list[ClusterEBM],
    winners: dict[str, str],
    *,
    horizon: int,
    calibration: pl.DataFrame | None = None,
    shrinkage: Shrinkage | None = None,
) -> Iterator[Iterator[BatchForecast]]:
    """Forecast every batch on Spark; yields their results in batch order.

    Args:
        spark: the engine.
        lake: the lake.
        batches: ``patient_id, origin`` of each batch, in order.
        ebms: the registered EBMs.
        winners: each cluster's champion model.
        horizon: days forecast.
        calibration: the registered models' interval calibration.
        shrinkage: the registered learned models' shrinkage toward the usual level.
    """
    from pyspark.sql.functions import broadcast

    if not batches:
        yield iter([])
        return
    plan = pl.concat(
        [batch.with_columns(bucket=pl.lit(index, pl.Int64)) for index, batch in enumerate(batches)]
    )

    def patient_buckets() -> Any:
        # a frame of its own for each side of the cogroup: one frame joined twice is ambiguous
        return broadcast(spark.frame(plan.select("patient_id", "bucket")))

    shared = spark.broadcast(
        _Shared(
            plan,
            lake.read(PATIENTS),
            lake.read(THERAPIES),
            ebms,
            winners,
            calibration,
            shrinkage,
        )
    )
    with spark.staging(lake, JOB) as staging:
        daily = spark.read_files(
            lake, DAILY_STEPS, lake.file_stats(DAILY_STEPS), list(_DAILY_COLUMNS)
        ).join(patient_buckets(), "patient_id")
        features = spark.read_files(
            lake, FEATURES, lake.file_stats(FEATURES), list(_FEATURE_COLUMNS)
        )
        if features is None:
            summaries = spark.map_groups(
                daily, partial(_without_features, shared, staging, horizon), buckets=len(batches)
            )
        else:
            summaries = spark.map_cogroups(
                daily,
                features.join(patient_buckets(), "patient_id"),
                partial(_forecast_group, shared, staging, horizon),
                buckets=len(batches),
            )
        shared.unpersist()

        def results() -> Iterator[BatchForecast]:
            for bucket in range(len(batches)):
                summary = summaries[bucket]
                yield BatchForecast(
                    forecasts=staging.read("forecasts", bucket),
                    outlook=staging.read("outlook", bucket),
                    explanations=staging.read("explanations", bucket),
                    predicate=summary["predicate"],
                    cluster_level=int(summary["cluster_level"]),
                    unforecastable=list(summary["unforecastable"]),
                )

        yield results()
