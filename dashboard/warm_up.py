"""Warm the dashboard's caches ahead of the first clinician: the cohort page as it opens, and
the tables of the patient page.

At 100,000 patients the cohort page's first render took 17.7 s (its headline figures, worklist and
weekly medians read a year of 54.7 million daily rows), every time a pipeline run gave the tables
new versions. The server's warm-up thread (:func:`start`, from ``dashboard/serve.py``) runs the
page's own queries with the page's first filter (:meth:`dashboard.data.CohortFilter.default`)
through the same cached functions, when the server starts and whenever a table the page reads has a
new version; the page then finds their results cached. Another filter is computed when asked.

It also runs the patient page's queries for one patient, which registers the tables that page
reads at their current versions (cold, the first patient page took 0.9 s at 100,000 patients,
the next one 0.47 s).

The thread takes the queries' shared connection like any session does; a page that needs a query
the thread is running waits for it rather than running it twice. A failure is logged and tried
again at the next version, never raised into a page.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import date

from streamlit.logger import get_logger

from dashboard import data
from jobs.recent_activity import as_of
from lakehouse.catalog import DAILY_STEPS, FORECASTS, OUTLOOK, PATIENTS, THERAPIES
from lakehouse.storage import Lake

# Streamlit's logger: its handler and level (``--logger.level``) are the server's
LOGGER = get_logger(__name__)
THREAD_NAME = "dashboard-warm-up"

# the tables the cohort page's queries read: a new version of one of them is worth a warm-up
COHORT_TABLES = (PATIENTS, THERAPIES, DAILY_STEPS, OUTLOOK, FORECASTS)


def warm(lake: Lake) -> bool:
    """Run the cohort page's queries as it opens (everyone, the last year, the worklist in its
    first order); False when the lake has no daily steps yet."""
    period = data.data_period(lake)
    if period is None:
        return False
    cohort = data.CohortFilter.default(period)
    reference = as_of()
    data.start_recent_activity(lake, reference)
    data.therapy_names(lake)
    data.cohort_kpis(lake, cohort)
    data.worklist(lake, cohort, reference)
    declining = data.declining_patients(lake, cohort)
    if declining.is_empty() and data.has_forecasts(lake):
        data.declining_patients(lake, cohort, limit=data.NEAREST_DECLINES, threshold=float("inf"))
    data.cohort_steps_by_group(lake, cohort)
    data.cohort_weekly_trend(lake, cohort)
    ids = data.patient_ids(lake)
    if ids:
        _open_patient_page_tables(lake, ids[0])
    return True


def _open_patient_page_tables(lake: Lake, patient_id: str) -> None:
    """The patient page's queries for one patient: the tables they read are then registered
    at their current versions, so the first patient a clinician opens pays for its own rows
    only (nothing of the patient leaves the server's cache: no audit row is due)."""
    profile = data.patient_profile(lake, patient_id)
    data.patient_daily_steps(lake, patient_id)
    data.patient_therapies(lake, patient_id)
    data.patient_side_effects(lake, patient_id)
    data.patient_diagnoses(lake, patient_id)
    forecast = data.patient_forecast(lake, patient_id)
    model = data.shown_model(forecast)
    origin = forecast["origin_date"].max() if forecast.height else None
    if model is not None and isinstance(origin, date):
        data.patient_explanation(lake, patient_id, model, origin, origin, origin)
    if profile is not None:
        data.cluster_accuracy(lake, profile.disease_group)
        if model is not None:
            data.forecast_choice(lake, patient_id, profile.disease_group, model)


class Warmer:
    """Warms the caches once per set of table versions.

    Args:
        lake: the lake (its versions are read through the dashboard's own cached look-up).
        warm_up: what warms them (:func:`warm`).
    """

    def __init__(self, lake: Lake, warm_up: Callable[[Lake], bool] = warm) -> None:
        self.lake = lake
        self.warm_up = warm_up
        self.warmed: data.TableVersions | None = None

    def check(self) -> bool:
        """Warm the caches if the tables changed since the last warm-up; whether it did."""
        versions = data.versions_of(self.lake, COHORT_TABLES)
        if versions == self.warmed:
            return False
        started = time.perf_counter()
        try:
            done = self.warm_up(self.lake)
        except Exception:  # a page would show it; the thread must go on
            LOGGER.exception("warming the dashboard's caches failed; trying at the next version")
            return False
        if done:
            self.warmed = versions
            LOGGER.info("cohort page warmed in %.1f s", time.perf_counter() - started)
        return done


class _NotWarmUp(logging.Filter):
    """Drops log records of the warm-up thread."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.threadName != THREAD_NAME


def start(lake: Lake, *, every_seconds: float = data.VERSION_TTL_SECONDS) -> threading.Thread:
    """The warm-up thread: warms at once, then looks for new table versions every
    ``every_seconds`` for as long as the server runs (a daemon thread)."""
    warmer = Warmer(lake)

    def loop() -> None:
        while True:
            warmer.check()
            time.sleep(every_seconds)

    # the cached functions look for a page's context, which this thread never has: not a problem
    logging.getLogger("streamlit.runtime.scriptrunner_utils.script_run_context").addFilter(
        _NotWarmUp()
    )
    thread = threading.Thread(target=loop, name=THREAD_NAME, daemon=True)
    thread.start()
    return thread
