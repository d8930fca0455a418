"""The Spark engine: a job's tasks on a Spark master (``local[*]`` or a cluster).

Each task description is one partition of an RDD: Spark pickles the descriptions to the
executors' Python workers, each task opens the lake from its URI with the worker's own
credentials, reads its Parquet files, runs the job's Polars transform and stages its result in
the lake (:mod:`jobs.engine.staging`, also on S3); only a small JSON summary comes back. No
DataFrame, no JVM row and no Hadoop connector is involved, so raw samples never enter the JVM and
an ``s3://`` lake needs nothing but the workers' credentials. pyspark is imported only here (an
optional dependency, ``pip install -e '.[spark]'``).

The workers run the project's code: on this machine's masters the driver's interpreter; on a
cluster ``PYSPARK_PYTHON`` of an environment with the package installed
(docs/spark-sizing.md, the run-book).
"""

from __future__ import annotations

import json
import re
import shutil
import sys
import tempfile
import threading
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from jobs.engine.base import EngineUnavailableError, Summary, TaskFunction, TaskResult
from jobs.engine.staging import LakeStagingArea, lake_staging
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
# Thread pools of the libraries a task runs (read when a worker process imports them).
_TASK_THREAD_VARIABLES = ("POLARS_MAX_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS")
# Tasks per task slot, at least, when the work allows.
_TASKS_PER_SLOT = 4


@contextmanager
def _pyspark_quiet() -> Iterator[None]:
    """pyspark warns about pandas 3 at start although the engine never uses pandas; nothing
    for us to act on."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="PySpark does not yet fully support pandas")
        yield


class SparkUnavailableError(EngineUnavailableError):
    """The Spark engine cannot run here (pyspark or Java missing, a master that does not
    answer)."""


class TaskFailedError(MobilityError):
    """A task failed on every attempt Spark gave it; nothing of the stage was committed."""


_PYTHON_ERROR = re.compile(r"^(?:[\w.]+\.)?(\w+(?:Error|Exception|Panic)\w*): (.+)$")


def task_error(err: BaseException) -> str:
    """The task's own Python error in one line (the last ``SomeError: message`` line of the
    worker's traceback Spark passes on), else the first line of Spark's message."""
    text = str(err)
    found = [m for line in text.splitlines() if (m := _PYTHON_ERROR.match(line.strip()))]
    if found:
        name, message = found[-1].groups()
        return f"{name}: {message}"[:500]
    return (text.strip().splitlines() or [type(err).__name__])[0][:500]


def _run_task(
    function: TaskFunction, shared: Any, area: LakeStagingArea, item: tuple[int, Any]
) -> tuple[int, str]:
    """On a worker: one task, its results staged in the lake, its summary as JSON."""
    index, description = item
    value = shared.value if shared is not None else None
    summary = function(value, description, area.task(index))
    return index, json.dumps(summary, default=str)


@dataclass
class SparkEngine:
    """Tasks on a Spark master: each description is one partition of an RDD, so Spark carries
    only the pickled descriptions and summaries; a task reads and writes the lake itself.

    Args:
        session: the ``pyspark.sql.SparkSession``.
        master: its master URL.
    """

    session: Any
    master: str
    name: str = "spark"
    distributed: bool = True

    def slots(self) -> int:
        """Tasks the cluster runs at once."""
        return int(self.session.sparkContext.defaultParallelism)

    def task_size(self, total: int, limit: int) -> int:
        """At most ``limit``, and small enough to give every task slot several tasks (a slow
        or lost task then holds back a small share of the stage)."""
        return max(1, min(limit, -(-total // (_TASKS_PER_SLOT * self.slots()))))

    @contextmanager
    def map_tasks(
        self,
        lake: Lake,
        job: str,
        function: TaskFunction,
        descriptions: Sequence[Any],
        *,
        shared: Any = None,
        in_flight: int = 2,
        cpu_bound: bool = False,
    ) -> Iterator[Iterator[TaskResult]]:
        """Every task on the cluster (Spark retries a failed or lost one on another executor),
        then their results in order; the staging folder is removed when the block ends."""
        context = self.session.sparkContext
        with lake_staging(lake, job) as area:
            summaries: dict[int, Summary] = {}
            if descriptions:
                broadcast = context.broadcast(shared) if shared is not None else None
                try:
                    items = list(enumerate(descriptions))
                    rdd = context.parallelize(items, numSlices=len(items))
                    rows = rdd.map(partial(_run_task, function, broadcast, area)).collect()
                except Exception as err:  # py4j's Py4JJavaError, pyspark's errors
                    raise TaskFailedError(
                        f"{job}: a task failed on Spark ({self.master}) after its retries: "
                        f"{task_error(err)}"
                    ) from err
                finally:
                    if broadcast is not None:
                        broadcast.destroy()
                summaries = {index: json.loads(summary) for index, summary in rows}

            def results() -> Iterator[TaskResult]:
                for index in range(len(descriptions)):
                    yield TaskResult(index, summaries[index], area.task(index))

            yield results()

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


def _is_local(master: str) -> bool:
    return master == "local" or master.startswith("local[")


def _on_loopback(master: str) -> bool:
    """A master in this process or on this machine's loopback: the driver listens there too."""
    host = master.removeprefix("spark://").rsplit(":", 1)[0]
    return _is_local(master) or host in ("127.0.0.1", "localhost")


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
    )
    # Spark runs one task per core: a task's Polars, Arrow and BLAS use that core only, instead
    # of each starting a thread per core of the machine and fighting the other tasks for them
    for variable in _TASK_THREAD_VARIABLES:
        builder = builder.config(f"spark.executorEnv.{variable}", "1")
    if _on_loopback(master):
        # everything on this machine, on loopback only
        builder = builder.config("spark.driver.host", "127.0.0.1").config(
            "spark.driver.bindAddress", "127.0.0.1"
        )
    if _is_local(master):
        builder = builder.config("spark.driver.memory", _LOCAL_DRIVER_MEMORY)
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
