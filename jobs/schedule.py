"""The worker's scheduler: runs the daily pipeline.

The monitoring work will give it weekly retraining and retraining on drift alerts; until then it
runs ``mobility pipeline`` once a day (and once at start, so a fresh worker catches up).
"""

from __future__ import annotations

import logging
import subprocess
import sys

from apscheduler.schedulers.blocking import BlockingScheduler

from lakehouse.storage import Lake

log = logging.getLogger(__name__)
DAILY_AT_HOUR_UTC = 2


def run_pipeline_once(lake: Lake) -> int:
    """Run the pipeline in a child process (a crash cannot take the scheduler down)."""
    command = [sys.executable, "-m", "jobs", "--lake", lake.uri, "pipeline"]
    completed = subprocess.run(command, check=False)
    if completed.returncode != 0:
        log.error("pipeline failed with exit status %s", completed.returncode)
    return completed.returncode


def run_forever(lake: Lake) -> None:
    """Block, running the pipeline now and then every day at 02:00 UTC."""
    logging.basicConfig(level=logging.INFO)
    scheduler = BlockingScheduler(timezone="UTC")
    scheduler.add_job(run_pipeline_once, "cron", hour=DAILY_AT_HOUR_UTC, args=[lake])
    run_pipeline_once(lake)
    scheduler.start()
