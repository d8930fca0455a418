"""The worker's scheduler (the Procfile's ``worker``: ``mobility scheduler``).

- Every day at 02:00 UTC (and once at start, so a fresh worker catches up): the files waiting in
  the landing folder (``MOBILITY_LANDING``, if set) are ingested, each moved to
  ``processed/<date>/`` once in the lake (a failed file stays for the next day and is recorded as
  a failed ingest run), then ``mobility pipeline`` runs: aggregate, features, train when due
  (weekly, or after an accuracy alert), forecast, monitor.
- Every :data:`RETRAIN_CHECK_HOURS` hours: ``mobility train``, which trains only when due, so a
  drift alert raised by monitoring is acted on the same day. One worker thread runs the jobs,
  so two never overlap.
- Every Sunday at 04:00 UTC: ``mobility lake optimize`` of the tables that gain small files
  (:data:`COMPACTED_WEEKLY`): the step samples (ingestion adds a file per export and month:
  10,297 files at 10,000 patients, where one patient's samples took 2.9 s to query), the audit
  log (a file per dashboard view: a commit to one with 580 files took 50-60 ms, after compaction
  20-30 ms), job runs, monitoring checks and alerts. Only files below the target size are
  rewritten, so a week's new files, not the whole table.
- A pipeline that still fails after its retries is followed by ``mobility monitor``, so the
  failure raises its alert.
- A run that fails (its stages are recorded as failed in ops/job_runs) is retried up to
  :data:`RETRIES` times, :data:`RETRY_DELAY_SECONDS` apart. Each stage commits atomically, so a
  failure leaves every table as it was before that stage, and the retry picks up from the data.

Each run is a child process: a crash cannot take the scheduler down.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.blocking import BlockingScheduler

from lakehouse.settings import apply_file_mode, get_settings
from lakehouse.storage import Lake

log = logging.getLogger(__name__)
DAILY_AT_HOUR_UTC = 2
RETRAIN_CHECK_HOURS = 6
RETRIES = 3
RETRY_DELAY_SECONDS = 600.0
PROCESSED = "processed"
COMPACTED_WEEKLY = (
    "bronze/step_samples",
    "ops/audit_log",
    "ops/job_runs",
    "ops/monitor_checks",
    "ops/alerts",
)


def mobility(lake: Lake, *args: str) -> int:
    """Run one ``mobility`` command for ``lake`` in a child process; its exit status."""
    completed = subprocess.run(
        [sys.executable, "-m", "jobs", "--lake", lake.uri, *args], check=False
    )
    return completed.returncode


def with_retries(
    lake: Lake, *args: str, retries: int = RETRIES, delay_seconds: float = RETRY_DELAY_SECONDS
) -> int:
    """Run a command, again after ``delay_seconds`` while it fails, at most ``retries`` more
    times; the last exit status."""
    status = mobility(lake, *args)
    for attempt in range(1, retries + 1):
        if status == 0:
            break
        log.error(
            "mobility %s failed (exit %s); retry %d in %.0f s",
            args[0],
            status,
            attempt,
            delay_seconds,
        )
        time.sleep(delay_seconds)
        status = mobility(lake, *args)
    return status


def ingest_landing(lake: Lake, landing: Path, *, now: datetime | None = None) -> tuple[int, int]:
    """Ingest every file waiting in ``landing`` (not under ``processed/``) and move each one that
    went in to ``processed/<YYYY-MM-DD>/`` with its relative path. Returns (ingested, failed).

    The files are found and read as :func:`jobs.ingest.run.run_folder` does: a symbolic link,
    FIFO, socket or device is refused (counted as failed, left where it is, recorded as a failed
    ingest run), and nothing outside ``landing`` is read; a ``processed`` that is a link (which
    would send the moved files elsewhere) stops the run."""
    from jobs.ingest import run as ingest_job
    from lakehouse.errors import InputError

    day = (now or datetime.now(UTC)).strftime("%Y-%m-%d")
    ingested = failed = 0
    try:
        if (landing / PROCESSED).is_symlink():
            raise InputError(f"{landing / PROCESSED} is a symbolic link: refused")
        results = ingest_job.run_folder(lake, landing, skip=(PROCESSED,))
        for result in results:
            if result.summary is None:
                failed += not result.left
                log.warning("landing file %s: %s", result.path, result.error)
                continue
            # moved as soon as it is in the lake: a later failure cannot ingest it twice
            target = landing / PROCESSED / day / result.path.relative_to(landing)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(result.path, target)
            ingested += 1
    except InputError as err:
        log.error("landing folder: %s", err)
        return ingested, failed + 1
    return ingested, failed


def daily(
    lake: Lake, landing: Path | None = None, *, delay_seconds: float = RETRY_DELAY_SECONDS
) -> int:
    """The daily run: landing files, then the pipeline with retries; the pipeline's status."""
    landing = landing or _landing_from_environment()
    try:
        if landing is not None:
            ingested, failed = ingest_landing(lake, landing)
            log.info("landing: %d file(s) ingested, %d failed", ingested, failed)
    except Exception:  # the landing folder must not keep the pipeline from running
        log.exception("landing folder ingest failed")
    status = with_retries(lake, "pipeline", delay_seconds=delay_seconds)
    if status != 0:
        # the pipeline stopped before its monitor stage: the failure still raises its alert
        mobility(lake, "monitor")
    return status


def compact_small_files(lake: Lake) -> int:
    """Compact (and vacuum) each table of :data:`COMPACTED_WEEKLY`; the worst exit status."""
    return max(mobility(lake, "lake", "optimize", "--table", path) for path in COMPACTED_WEEKLY)


def _landing_from_environment() -> Path | None:
    value = get_settings().landing
    return Path(value) if value else None


def run_forever(lake: Lake) -> None:
    """Block: the daily run now and every day at 02:00 UTC, the retraining check every 6 hours,
    the compaction of the tables that gain small files every Sunday at 04:00 UTC."""
    logging.basicConfig(level=logging.INFO)
    apply_file_mode(get_settings())  # as the CLI does; the child commands set it again
    # one worker thread: the daily run and the retraining check never run at the same time
    scheduler = BlockingScheduler(timezone="UTC", executors={"default": ThreadPoolExecutor(1)})
    scheduler.add_job(daily, "cron", hour=DAILY_AT_HOUR_UTC, args=[lake], max_instances=1)
    scheduler.add_job(
        with_retries, "interval", hours=RETRAIN_CHECK_HOURS, args=[lake, "train"], max_instances=1
    )
    scheduler.add_job(
        compact_small_files, "cron", day_of_week="sun", hour=4, args=[lake], max_instances=1
    )
    daily(lake)
    scheduler.start()
