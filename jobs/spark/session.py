"""The Spark session, the staging folder and the grouped map every Spark stage runs.

A stage hands :meth:`SparkEngine.map_groups` a Spark frame with a ``bucket`` column and a
function ``(bucket, rows) -> summary``. The function runs on the workers, once per bucket, with
the bucket's rows as a Polars frame; it writes what it computed to the :class:`Staging` folder
and returns a small JSON-able summary, which the driver gets back per bucket. The rows never pass
through Spark's type system on the way out, so they reach Delta with exactly the types the
transforms made.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
import threading
import uuid
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa

from lakehouse.catalog import TableSpec
from lakehouse.errors import MobilityError
from lakehouse.storage import Lake

# Spark's own chatter (its startup warnings, stage progress) stays off the terminal; errors
# still show. The JVM reads this log4j2 configuration when it starts. Spark's own loggers need a
# level of their own, or Spark treats pyspark as an interactive shell and resets them to WARN.
_LOG4J2 = """\
rootLogger.level = error
rootLogger.appenderRef.stderr.ref = stderr
appender.console.type = Console
appender.console.name = stderr
appender.console.target = SYSTEM_ERR
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = %d{HH:mm:ss} %p %c{1}: %m%n%ex
logger.spark.name = org.apache.spark
logger.spark.level = error
logger.hadoop.name = org.apache.hadoop
logger.hadoop.level = error
"""

# Memory of the one JVM that is driver and executor in a local master (the machine has 24 GB and
# other work); a cluster takes its sizes from its own Spark configuration.
_LOCAL_DRIVER_MEMORY = "4g"
# Rows per Arrow batch handed to the Python workers (Spark's default is 10,000).
_ARROW_BATCH_ROWS = 100_000

# Groups per task slot, at least, when the work allows.
_GROUPS_PER_SLOT = 4
# One summary row per group: the bucket and what its function returned, as JSON.
_SUMMARY_SCHEMA = "bucket long, summary string"

GroupFunction = Callable[[int, pl.DataFrame], dict[str, Any]]
CogroupFunction = Callable[[int, pl.DataFrame, pl.DataFrame], dict[str, Any]]


class SparkUnavailableError(MobilityError):
    """The Spark engine cannot run here (pyspark or Java missing, a lake Spark cannot read)."""


@contextmanager
def _pyspark_quiet() -> Iterator[None]:
    """pyspark warns about pandas 3 when a grouped map is declared although it uses Arrow only,
    not pandas; nothing for us to act on."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="PySpark does not yet fully support pandas")
        yield


@dataclass(frozen=True)
class Staging:
    """A folder the workers write each bucket's results to and the driver reads them from.

    Args:
        root: the folder (in the lake's folder, so every worker that reads the lake reaches it).
    """

    root: str

    def _path(self, name: str, bucket: int) -> Path:
        return Path(self.root) / name / f"bucket-{bucket:06d}.parquet"

    def write(self, name: str, bucket: int, rows: pl.DataFrame | pa.Table) -> None:
        """Store ``rows`` as the bucket's ``name`` results (replacing what a failed attempt of the
        same task left: the file name depends only on the bucket)."""
        path = self._path(name, bucket)
        path.parent.mkdir(parents=True, exist_ok=True)
        partial_path = path.with_suffix(f".partial-{uuid.uuid4().hex}")
        frame = rows if isinstance(rows, pl.DataFrame) else pl.from_arrow(rows)
        assert isinstance(frame, pl.DataFrame)
        frame.write_parquet(partial_path, compression="lz4", statistics=False)
        partial_path.replace(path)

    def read(self, name: str, bucket: int) -> pl.DataFrame | None:
        """The bucket's ``name`` results, None when it wrote none."""
        path = self._path(name, bucket)
        return pl.read_parquet(path) if path.exists() else None


@dataclass
class SparkEngine:
    """A running Spark session and the lake-side helpers the stages use.

    Args:
        session: the ``pyspark.sql.SparkSession``.
        master: its master URL.
    """

    session: Any
    master: str

    def group_size(self, total: int, limit: int) -> int:
        """The size of a group (in samples, patient-days, ...) for ``total`` units of work: at
        most ``limit`` (the memory bound), and small enough to give every task slot several
        groups, as the groups' numbers are hashed onto tasks and two may share one."""
        slots = int(self.session.sparkContext.defaultParallelism)
        return max(1, min(limit, -(-total // (_GROUPS_PER_SLOT * slots))))

    def read_files(
        self, lake: Lake, table: TableSpec, files: pl.DataFrame, columns: list[str]
    ) -> Any:
        """The rows of the given data files of ``table`` (rows of ``Lake.file_stats``, e.g. those of
        a pinned version), as a Spark frame of ``columns``; None when there are no files.

        delta-rs writes no deletion vectors, so a version's rows are exactly its files' rows.
        """
        _require_local(lake)
        if not files.height:
            return None
        paths = [f"{lake.table_uri(table)}/{path}" for path in files["path"].to_list()]
        return self.session.read.parquet(*paths).select(*columns)

    def collect(self, frame: Any) -> pl.DataFrame:
        """A small Spark result (e.g. counts per patient) on the driver."""
        with _pyspark_quiet():
            rows = pl.from_arrow(frame.toArrow())
        assert isinstance(rows, pl.DataFrame)
        return rows

    def frame(self, rows: pl.DataFrame) -> Any:
        """A small driver-side frame (e.g. a bucket plan) as a Spark frame."""
        with _pyspark_quiet():
            return self.session.createDataFrame(rows.to_arrow())

    def broadcast(self, value: Any) -> Any:
        """``value`` shipped once to every worker; read it there with ``.value``."""
        return self.session.sparkContext.broadcast(value)

    @contextmanager
    def staging(self, lake: Lake, job: str) -> Iterator[Staging]:
        """A fresh staging folder in the lake's folder, removed when the block ends."""
        _require_local(lake)
        root = (
            Path(lake.uri.removeprefix("file://")) / "_spark_staging" / f"{job}-{uuid.uuid4().hex}"
        )
        root.mkdir(parents=True)
        try:
            yield Staging(str(root))
        finally:
            shutil.rmtree(root, ignore_errors=True)
            if root.parent.exists() and not any(root.parent.iterdir()):
                root.parent.rmdir()

    def map_groups(
        self, rows: Any, function: GroupFunction, *, buckets: int
    ) -> dict[int, dict[str, Any]]:
        """Run ``function(bucket, rows of the bucket)`` for every bucket on the workers.

        Args:
            rows: a Spark frame with a ``bucket`` column (an integer).
            function: picklable (a module-level function, or a ``functools.partial`` of one);
                gets the bucket's rows without the ``bucket`` column.
            buckets: how many buckets there are (the frame is spread over that many tasks, at
                most).

        Returns:
            Each bucket's summary, by bucket (buckets without rows are absent).
        """

        # pyspark tells the kind of grouped map from the function's type hints
        def apply(key: tuple[Any, ...], table: pa.Table) -> pa.Table:
            return _apply_group(function, key, table)

        with _pyspark_quiet():
            grouped = rows.repartition(max(1, buckets), "bucket").groupBy("bucket")
            return _summaries(grouped.applyInArrow(apply, _SUMMARY_SCHEMA))

    def map_cogroups(
        self, left: Any, right: Any, function: CogroupFunction, *, buckets: int
    ) -> dict[int, dict[str, Any]]:
        """Like :meth:`map_groups` over two frames grouped by the same ``bucket`` column:
        ``function(bucket, left rows, right rows)``."""

        def apply(key: tuple[Any, ...], left: pa.Table, right: pa.Table) -> pa.Table:
            return _apply_cogroup(function, key, left, right)

        with _pyspark_quiet():
            partitions = max(1, buckets)
            grouped = left.repartition(partitions, "bucket").groupBy("bucket")
            other = right.repartition(partitions, "bucket").groupBy("bucket")
            return _summaries(grouped.cogroup(other).applyInArrow(apply, _SUMMARY_SCHEMA))

    def stop(self) -> None:
        """Stop Spark and its JVM; a new engine may be started afterwards."""
        from pyspark import SparkContext

        gateway = SparkContext._gateway
        self.session.stop()
        if gateway is None:
            return
        gateway.shutdown()
        process = getattr(gateway, "proc", None)
        if process is not None:
            # the JVM exits when its stdin closes
            if process.stdin is not None:
                process.stdin.close()
            process.wait(timeout=60)
        SparkContext._gateway = None
        SparkContext._jvm = None
        # py4j's finalizer thread ends within a second of the shutdown it was just sent
        for thread in threading.enumerate():
            if type(thread).__module__.startswith("py4j"):
                thread.join(timeout=5)


def _summaries(result: Any) -> dict[int, dict[str, Any]]:
    rows = result.collect()
    return {int(row["bucket"]): json.loads(row["summary"]) for row in rows}


def _rows(table: pa.Table) -> pl.DataFrame:
    frame = pl.from_arrow(table)
    assert isinstance(frame, pl.DataFrame)
    return frame.drop("bucket")


def _summary(bucket: int, summary: dict[str, Any]) -> pa.Table:
    return pa.table(
        {"bucket": pa.array([bucket], pa.int64()), "summary": [json.dumps(summary, default=str)]}
    )


def _apply_group(function: GroupFunction, key: tuple[Any, ...], table: pa.Table) -> pa.Table:
    bucket = int(key[0].as_py())
    return _summary(bucket, function(bucket, _rows(table)))


def _apply_cogroup(
    function: CogroupFunction, key: tuple[Any, ...], left: pa.Table, right: pa.Table
) -> pa.Table:
    bucket = int(key[0].as_py())
    return _summary(bucket, function(bucket, _rows(left), _rows(right)))


def _require_local(lake: Lake) -> None:
    if not lake.is_local:
        raise SparkUnavailableError(
            f"the spark engine reads the lake's Parquet files itself and needs a lake folder "
            f"every Spark worker can read; {lake.uri} would need Spark's S3 connector "
            "(hadoop-aws), which is not installed: use --engine local"
        )


def _is_local(master: str) -> bool:
    return master == "local" or master.startswith("local[")


def start_spark(master: str, *, app_name: str = "mobility") -> SparkEngine:
    """Start a Spark session on ``master`` (e.g. ``local[2]`` or ``spark://host:7077``).

    Raises:
        SparkUnavailableError: pyspark is not installed or Java could not be started.
    """
    try:
        from pyspark.errors import PySparkException
        from pyspark.sql import SparkSession
    except ImportError as err:
        raise SparkUnavailableError(
            "the spark engine needs pyspark: pip install -e '.[spark]' (and Java 17)"
        ) from err
    if shutil.which("java") is None:
        raise SparkUnavailableError("the spark engine needs Java 17: no java on the PATH")
    builder = (
        SparkSession.builder.master(master)
        .appName(app_name)
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.sql.execution.arrow.pyspark.enabled", "true")
        .config("spark.sql.execution.arrow.maxRecordsPerBatch", str(_ARROW_BATCH_ROWS))
    )
    if _is_local(master):
        # everything on this machine, on loopback only
        builder = (
            builder.config("spark.driver.host", "127.0.0.1")
            .config("spark.driver.bindAddress", "127.0.0.1")
            .config("spark.driver.memory", _LOCAL_DRIVER_MEMORY)
        )
    with tempfile.TemporaryDirectory(prefix="mobility-spark-") as folder:
        log_config = Path(folder) / "log4j2.properties"
        log_config.write_text(_LOG4J2, encoding="utf-8")
        java_options = f"-Dlog4j2.configurationFile={log_config.as_uri()}"
        builder = builder.config("spark.driver.extraJavaOptions", java_options)
        try:
            with _pyspark_quiet():
                session = builder.getOrCreate()
        except (PySparkException, OSError) as err:
            message = " ".join(str(err).split())
            raise SparkUnavailableError(
                f"could not start Spark on {master} (it needs Java 17): {message}"
            ) from err
    if _is_local(master):
        # the local workers run this interpreter, which has the project and its packages;
        # a cluster's workers use their own (PYSPARK_PYTHON in the cluster's configuration)
        session.sparkContext.pythonExec = sys.executable
    return SparkEngine(session=session, master=master)
