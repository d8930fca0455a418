"""Records every job run in ``ops/job_runs`` with its cost figures.

Usage::

    with job_run(lake, "aggregate") as run:
        ...
        run.rows_in, run.rows_out = n_in, n_out

A run that raises is recorded as ``failed`` with its one-line error (:func:`recorded_error`),
then the error propagates.
"""

from __future__ import annotations

import json
import resource
import time
import traceback
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import polars as pl
import psutil

from lakehouse.catalog import JOB_RUNS
from lakehouse.errors import MobilityError
from lakehouse.storage import Lake

_ROOT = Path(__file__).resolve().parents[1]
_TAIL_FRAMES = 5


@dataclass
class JobRun:
    """The figures a running job reports about itself."""

    job: str
    engine: str
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    rows_in: int = 0
    rows_out: int = 0
    details: dict[str, Any] = field(default_factory=dict)


def _cpu_seconds() -> float:
    """CPU seconds of this process and of its children: those that ended (and were waited for)
    and those still running (the EBM and Prophet worker pools), so a run's cost counts the work
    it handed to other processes."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    ended = resource.getrusage(resource.RUSAGE_CHILDREN)
    running = 0.0
    for child in psutil.Process().children(recursive=True):
        try:
            times = child.cpu_times()
        except psutil.Error:  # it ended meanwhile
            continue
        running += times.user + times.system
    return own.ru_utime + own.ru_stime + ended.ru_utime + ended.ru_stime + running


def _io_bytes() -> tuple[int, int]:
    """Bytes this process and its running children have read and written through the operating
    system (``/proc/<pid>/io`` rchar and wchar: files, page cache hits and network alike, as a
    job reading an object store would be billed). Children that ended before this call are not
    in it (the OS keeps no such total for them); the long-lived worker pools are."""
    read = written = 0
    for process in (psutil.Process(), *psutil.Process().children(recursive=True)):
        try:
            counters = process.io_counters()
        except (psutil.Error, AttributeError):  # ended meanwhile; no /proc/<pid>/io here
            continue
        read += getattr(counters, "read_chars", counters.read_bytes)
        written += getattr(counters, "write_chars", counters.write_bytes)
    return read, written


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@contextmanager
def job_run(lake: Lake, job: str, *, engine: str = "local") -> Iterator[JobRun]:
    """Time a job and append its row to ``ops/job_runs`` when it ends, whatever the outcome."""
    run = JobRun(job=job, engine=engine)
    started = datetime.now(UTC)
    wall0, cpu0, (read0, written0) = time.perf_counter(), _cpu_seconds(), _io_bytes()
    error: str | None = None
    try:
        yield run
    except BaseException as err:
        error = recorded_error(err)
        run.details["traceback_tail"] = _frames(err)
        raise
    finally:
        read1, written1 = _io_bytes()
        row = {
            "run_id": run.run_id,
            "job": job,
            "started_at": started,
            "finished_at": datetime.now(UTC),
            "status": "succeeded" if error is None else "failed",
            "rows_in": run.rows_in,
            "rows_out": run.rows_out,
            "error": error,
            "engine": engine,
            "wall_seconds": time.perf_counter() - wall0,
            "cpu_seconds": _cpu_seconds() - cpu0,
            "peak_rss_mb": peak_rss_mb(),
            "bytes_read": max(0, read1 - read0),
            "bytes_written": max(0, written1 - written0),
            "details": json.dumps(run.details, default=str, sort_keys=True),
        }
        lake.append(JOB_RUNS, pl.DataFrame([row]))


def recorded_error(err: BaseException) -> str:
    """The one line ops/job_runs keeps of a failure (analysts can query that table).

    The product's own errors (:class:`lakehouse.errors.MobilityError`) as they read: their texts
    name files, rows and reasons, never what a file holds (docs/security.md). Any other
    exception by its type and the place it was raised only: a library's message may quote the
    data it choked on (Polars quotes the values it could not convert), so it is left to the
    process's standard error, which only the person or worker running the job sees. An
    operating system error keeps the system's words and the file's name.
    """
    if isinstance(err, MobilityError):
        text = f"{type(err).__name__}: {err}"
    elif isinstance(err, OSError) and err.errno is not None and err.strerror:
        # the operating system's own words (disk full, permission denied), and the file's name
        named = f": {err.filename}" if err.filename is not None else ""
        text = f"{type(err).__name__}: [Errno {err.errno}] {err.strerror}{named}"
    else:
        text = (
            f"{type(err).__name__} at {_where(err)} (its message is not recorded, it may quote "
            "data: see the job's own output)"
        )
    return (text.splitlines() or [type(err).__name__])[0][:500]


def _short(filename: str) -> str:
    """A source file's name without the machine's folders: from the project or package root."""
    path = Path(filename)
    if "site-packages" in path.parts:
        return Path(*path.parts[path.parts.index("site-packages") + 1 :]).as_posix()
    if path.is_relative_to(_ROOT):
        return path.relative_to(_ROOT).as_posix()
    return path.name


def _where(err: BaseException) -> str:
    frames = traceback.extract_tb(err.__traceback__)
    if not frames:
        return "an unknown place"
    return f"{_short(frames[-1].filename)}:{frames[-1].lineno}"


def _frames(err: BaseException) -> str:
    """The innermost frames of a failure, as ``file:line in function`` lines: where it happened,
    without its message or any value."""
    frames = traceback.extract_tb(err.__traceback__)[-_TAIL_FRAMES:]
    return "\n".join(f"{_short(f.filename)}:{f.lineno} in {f.name}" for f in frames)


def last_succeeded_details(lake: Lake, job: str, *, having: str) -> dict[str, Any] | None:
    """The details of the latest succeeded run of ``job`` that recorded ``having``, None if
    there is none: what an incremental job covered last time."""
    if not lake.exists(JOB_RUNS):
        return None
    runs = (
        lake.scan(JOB_RUNS)
        .filter((pl.col("job") == job) & (pl.col("status") == "succeeded"))
        .sort("finished_at")
        .select("details")
        .collect()
    )
    for details in reversed(runs["details"].to_list()):
        covered: dict[str, Any] = json.loads(details or "{}")
        if covered.get(having) is not None:
            return covered
    return None
