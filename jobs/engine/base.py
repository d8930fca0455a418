"""The engine interface the jobs call, and what a task sees of it."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Protocol

import polars as pl
import pyarrow as pa

from lakehouse.errors import MobilityError
from lakehouse.storage import Lake

# What a task returns: small, JSON-able (counts, a predicate, a list of patients).
Summary = dict[str, Any]


class EngineUnavailableError(MobilityError):
    """An engine cannot run here (a package or Java missing, a master that does not answer)."""


class Staging(Protocol):
    """Where one task leaves its results for the driver, by name (``"daily_steps"``, ...)."""

    def write(self, name: str, rows: pl.DataFrame | pa.Table) -> None:
        """Store ``rows`` as this task's ``name`` result, replacing what an earlier attempt of
        the same task left."""
        ...

    def read(self, name: str) -> pl.DataFrame | None:
        """This task's ``name`` result; None when it wrote none."""
        ...


# (shared, description, staging) -> summary; picklable: a module-level function or a
# functools.partial of one. ``shared`` is what every task reads besides its own description
# (models, clinical tables), shipped once per worker by a distributed engine.
TaskFunction = Callable[[Any, Any, Staging], Summary]


@dataclass(frozen=True)
class TaskResult:
    """One task's outcome, on the driver."""

    index: int  # the task's place among the descriptions
    summary: Summary
    staged: Staging  # what the task wrote, read back with ``staged.read(name)``


class Engine(Protocol):
    """Runs a job's tasks. Implementations: :mod:`jobs.engine.local`, :mod:`jobs.engine.spark`."""

    name: str
    # whether tasks run in other processes or machines (a task then uses one core of its own)
    distributed: bool

    def task_size(self, total: int, limit: int) -> int:
        """How much work (samples, patient-days, ...) to give one task when there are ``total``
        units: at most ``limit`` (the memory bound of one task); a distributed engine makes them
        small enough to keep every worker busy."""
        ...

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
    ) -> AbstractContextManager[Iterator[TaskResult]]:
        """Run ``function(shared, description, staging)`` for every description.

        Args:
            lake: the lake the tasks read (a distributed engine stages results in it).
            job: the job's name (names the staging area).
            function: the task function (picklable).
            descriptions: one per task, picklable and small.
            shared: read by every task (picklable).
            in_flight: tasks run at once in this process (a local engine's memory bound;
                distributed engines run as many as they have slots).
            cpu_bound: the tasks are mostly Python (they hold the GIL): a local engine runs
                them in worker processes rather than threads (distributed engines always do).

        Returns:
            A context whose value yields every task's result in the descriptions' order; staged
            results are removed when the context ends, also after a failure. A task that fails
            (after the engine's retries) raises from the iterator.
        """
        ...

    def stop(self) -> None:
        """Release what the engine holds (a Spark context and its JVM)."""
        ...


def task_lake(uri: str) -> Lake:
    """The lake at ``uri`` as a task opens it: credentials and object-store options from the
    task's own environment (or the machine's instance role), never from its description."""
    from lakehouse.settings import get_settings

    return Lake(uri, storage_options=get_settings().storage_options())
