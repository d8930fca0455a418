"""The Spark engine: the same Polars transforms, run per group of patients on Apache Spark.

Spark reads the Parquet files of the pinned Delta versions (their list comes from delta-rs:
Spark cannot read Delta here), assigns each patient to a group (bucket) planned on the driver,
and applies the jobs' own transforms to each group with ``groupBy(...).applyInArrow``. Each group
writes its rows to a staging folder; the driver then commits them through delta-rs exactly as the
local engine commits its batches, and removes the folder. pyspark is imported only here (an
optional dependency, ``pip install -e '.[spark]'``), so the local engine never needs it.
"""

from jobs.spark.session import SparkEngine, SparkUnavailableError, start_spark

__all__ = ["SparkEngine", "SparkUnavailableError", "start_spark"]
