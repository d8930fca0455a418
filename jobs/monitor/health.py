"""Job health: the latest run of each job failed, or a daily job has not succeeded for too long.

- ``latest run failed`` per job: 1 when its latest run did not succeed, 0 when it did; an alert
  at 1 (the threshold);
- ``hours since success`` per daily job: an alert from :data:`LATE_AFTER` (26 hours: a day and
  the time a run takes) or when it never succeeded.

A job that never ran is not late (a new lake); the daily jobs are the pipeline's stages.
Thresholds are inclusive: a value equal to its threshold alerts.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import polars as pl

from jobs.monitor import checks_frame

DAILY_JOBS = ("aggregate", "features", "forecast")
LATE_AFTER = timedelta(hours=26)


def health_checks(runs: pl.DataFrame, now: datetime) -> pl.DataFrame:
    """Check rows (``subject, metric, value, reference, threshold, status, details``) from
    ops/job_runs rows: per job, whether its latest run failed, and for the daily jobs the hours
    since their latest success."""
    rows = []
    for (job,), mine in runs.sort("started_at").group_by("job", maintain_order=True):
        latest = mine.row(-1, named=True)
        failed = latest["status"] != "succeeded"
        rows.append(
            {
                "subject": f"job {job} · latest run",
                "metric": "latest run failed",
                "value": 1.0 if failed else 0.0,
                "reference": None,
                "threshold": 1.0,
                "status": "alert" if failed else "ok",
                "details": (
                    f"{job} failed at {latest['started_at']:%Y-%m-%d %H:%M} UTC: {latest['error']}"
                    if failed
                    else f"{job} succeeded at {latest['finished_at']:%Y-%m-%d %H:%M} UTC"
                ),
            }
        )
        if job in DAILY_JOBS:
            succeeded = mine.filter(pl.col("status") == "succeeded")
            last = succeeded["finished_at"].max() if succeeded.height else None
            hours = (now - last).total_seconds() / 3600 if isinstance(last, datetime) else None
            late = hours is None or hours >= LATE_AFTER.total_seconds() / 3600
            rows.append(
                {
                    "subject": f"job {job} · daily success",
                    "metric": "hours since success",
                    "value": hours,
                    "reference": None,
                    "threshold": LATE_AFTER.total_seconds() / 3600,
                    "status": "alert" if late else "ok",
                    "details": (
                        f"{job} has not succeeded for {hours:.0f} h"
                        if late and hours is not None
                        else f"{job} has never succeeded"
                        if late
                        else f"{job} succeeded {_ago(hours or 0.0)}"
                    ),
                }
            )
    return checks_frame(rows, "job health")


def _ago(hours: float) -> str:
    """How long ago, in minutes under an hour (a run of the pipeline just now reads "0.0 h")."""
    if hours < 1:
        minutes = round(hours * 60)
        return "just now" if minutes == 0 else f"{minutes} min ago"
    return f"{hours:,.1f} h ago"
