"""The local engine: a job's tasks in this process, a few at a time on threads (Polars, NumPy
and the Parquet readers release the GIL), results kept in memory and handed over in order."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

from jobs.engine.base import Summary, TaskFunction, TaskResult
from jobs.engine.staging import MemoryStaging
from lakehouse.storage import Lake


def _run(function: TaskFunction, shared: Any, description: Any) -> tuple[Summary, MemoryStaging]:
    staging = MemoryStaging()
    return function(shared, description, staging), staging


class LocalEngine:
    """Tasks on this machine, in this process."""

    name = "local"
    distributed = False

    def task_size(self, total: int, limit: int) -> int:
        # one process: the fewer tasks the better, within the memory bound
        return max(1, limit)

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
    ) -> Iterator[Iterator[TaskResult]]:
        """At most ``in_flight`` tasks computed ahead of the one the caller is consuming; a
        result is dropped once the caller moves on, so memory stays bounded whatever the number
        of tasks."""
        width = max(1, in_flight)
        with ThreadPoolExecutor(max_workers=width, thread_name_prefix=f"{job}-task") as workers:
            running: deque[Future[tuple[Summary, MemoryStaging]]] = deque()

            def results() -> Iterator[TaskResult]:
                submitted = 0
                for index in range(len(descriptions)):
                    while submitted < len(descriptions) and len(running) < width:
                        running.append(
                            workers.submit(_run, function, shared, descriptions[submitted])
                        )
                        submitted += 1
                    summary, staged = running.popleft().result()
                    yield TaskResult(index, summary, staged)

            try:
                yield results()
            finally:
                for future in running:
                    future.cancel()

    def stop(self) -> None:
        """Nothing to release."""
