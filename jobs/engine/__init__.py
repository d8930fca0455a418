"""Engines: where a job's tasks run. The plug point between the jobs and Spark (or any other
distributed runner).

A job plans its work on the driver as small *task descriptions* (a patient range, the data files
of a pinned table version that can hold its rows, ...), hands them with a picklable task function
to :meth:`Engine.map_tasks`, and commits what the tasks staged, in task order, with its own commit
code. A task does its own I/O: it opens the lake from its URI (credentials from its own
environment, :func:`task_lake`), reads its Parquet files (``Lake.scan_files``), runs the job's
Polars transform, writes its result to its :class:`Staging` and returns a small
JSON-able summary. Rows never pass through the engine itself, so a distributed engine moves only
descriptions and summaries, never samples.

- :class:`jobs.engine.local.LocalEngine`: this machine, a few tasks at a time on threads (or in
  one worker process per core for tasks that are mostly Python), staged results kept in memory.
- :class:`jobs.engine.spark.SparkEngine`: a Spark master (``local[*]`` or a cluster); staged
  results go to the lake's object store (``<lake>/_staging/``), removed after the job.

A new engine (Ray, Dask, ...) is one more module implementing :class:`Engine`; no job changes.
"""

from jobs.engine.base import (
    Engine,
    EngineUnavailableError,
    Staging,
    TaskFunction,
    TaskResult,
    task_lake,
)
from jobs.engine.local import LocalEngine

ENGINES = ("local", "spark")


def start_engine(name: str, *, master: str = "local[*]") -> Engine:
    """The engine called ``name`` (one of :data:`ENGINES`), started.

    Raises:
        EngineUnavailableError: an unknown name, or the engine cannot run here (one line).
    """
    if name == "local":
        return LocalEngine()
    if name == "spark":
        from jobs.engine.spark import start_spark

        return start_spark(master)
    raise EngineUnavailableError(f"unknown engine {name!r}: use {' or '.join(ENGINES)}")


__all__ = [
    "ENGINES",
    "Engine",
    "EngineUnavailableError",
    "LocalEngine",
    "Staging",
    "TaskFunction",
    "TaskResult",
    "start_engine",
    "task_lake",
]
