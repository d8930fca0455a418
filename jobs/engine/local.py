"""The local engine: a job's tasks on this machine, results kept in memory and handed over in
order.

Tasks run a few at a time on threads of this process (Polars, NumPy, numba and the Parquet
readers release the GIL), or, for a job whose tasks are mostly Python (``cpu_bound``: the
forecast's models), in worker processes, one per core: threads there would take turns on the
GIL. Workers are started (``spawn``: no fork of a process with threads) for a job with two tasks or
more, get the job's ``shared`` data once each, and end with the job.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
import types
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

from jobs.engine.base import Summary, TaskFunction, TaskResult
from jobs.engine.staging import MemoryStaging
from lakehouse.errors import InputError
from lakehouse.storage import Lake

# How many worker processes cpu-bound tasks get (default: one per core; 1: none, all in this
# process on threads).
PROCESSES_ENV = "MOBILITY_LOCAL_PROCESSES"

# a worker process's copy of the job's shared data (set once by the pool's initializer)
_WORKER_SHARED: Any = None


def _run(function: TaskFunction, shared: Any, description: Any) -> tuple[Summary, MemoryStaging]:
    staging = MemoryStaging()
    return function(shared, description, staging), staging


def _start_worker(shared: Any) -> None:
    global _WORKER_SHARED
    _WORKER_SHARED = shared


def _run_in_worker(function: TaskFunction, description: Any) -> tuple[Summary, MemoryStaging]:
    return _run(function, _WORKER_SHARED, description)


@contextmanager
def _main_module_hidden() -> Iterator[None]:
    """While worker processes start: a ``__main__`` without a file or a module name, so that
    spawn imports nothing as the worker's main module. Spawn would run the parent's main module
    again in each worker, and that is not always a program with a ``__main__`` guard: a
    Streamlit page or an ``AppTest`` script, which Streamlit installs as ``__main__`` while it
    runs, or a script without a guard (which would run the whole job again and wait for the
    lake's lease its parent holds). Tasks are module-level functions of importable modules."""
    main = sys.modules.get("__main__")
    sys.modules["__main__"] = types.ModuleType("__main__")
    try:
        yield
    finally:
        if main is not None:
            sys.modules["__main__"] = main


def default_processes() -> int:
    """Worker processes for cpu-bound tasks: :data:`PROCESSES_ENV`, else one per core.

    Raises:
        InputError: the variable is not a whole number from 1 (one line).
    """
    text = os.environ.get(PROCESSES_ENV, "").strip()
    if not text:
        return max(1, os.cpu_count() or 1)
    if not text.isdigit() or int(text) < 1:
        raise InputError(f"{PROCESSES_ENV} must be a whole number from 1, not {text!r}")
    return int(text)


class LocalEngine:
    """Tasks on this machine.

    Args:
        processes: worker processes for cpu-bound tasks (default :func:`default_processes`);
            1 runs them on threads of this process like every other task.
    """

    name = "local"
    distributed = False

    def __init__(self, processes: int | None = None) -> None:
        self.processes = default_processes() if processes is None else max(1, processes)

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
        cpu_bound: bool = False,
    ) -> Iterator[Iterator[TaskResult]]:
        """At most ``in_flight`` tasks computed ahead of the one the caller is consuming (as
        many as there are worker processes for ``cpu_bound`` tasks, so that none waits while
        the caller commits); a result is dropped once the caller moves on, so memory stays
        bounded whatever the number of tasks."""
        in_processes = cpu_bound and self.processes > 1 and len(descriptions) > 1
        width = max(1, in_flight, self.processes if in_processes else 1)
        workers: Executor
        if in_processes:
            workers = ProcessPoolExecutor(
                max_workers=min(self.processes, len(descriptions)),
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_start_worker,
                initargs=(shared,),
            )
        else:
            workers = ThreadPoolExecutor(max_workers=width, thread_name_prefix=f"{job}-task")

        def submit(description: Any) -> Future[tuple[Summary, MemoryStaging]]:
            if in_processes:
                with _main_module_hidden():  # a submit may start a worker
                    return workers.submit(_run_in_worker, function, description)
            return workers.submit(_run, function, shared, description)

        with workers:
            running: deque[Future[tuple[Summary, MemoryStaging]]] = deque()

            def results() -> Iterator[TaskResult]:
                submitted = 0

                def fill() -> None:
                    nonlocal submitted
                    while submitted < len(descriptions) and len(running) < width:
                        running.append(submit(descriptions[submitted]))
                        submitted += 1

                for index in range(len(descriptions)):
                    fill()
                    current = running.popleft()
                    if in_processes:
                        # every worker busy while the caller commits this result
                        fill()
                    summary, staged = current.result()
                    yield TaskResult(index, summary, staged)

            try:
                yield results()
            finally:
                for future in running:
                    future.cancel()

    def stop(self) -> None:
        """Nothing to release."""
