"""Data freshness against the wall clock: whether data is still arriving, in the lake as a whole
and patient by patient.

Both are measured in days without data before the reference day, yesterday (the last complete
day: :func:`jobs.recent_activity.as_of`), as :mod:`jobs.recent_activity` defines them: 0 when
yesterday has data. A lake whose data stopped arriving therefore looks stale however complete it
is up to its own last day.

- ``newest data`` (an alert: the feed or the pipeline has stopped): days without data of the
  lake's newest day, an alert from ``MOBILITY_FRESHNESS_DAYS`` days
  (:attr:`lakehouse.settings.Settings.freshness_days`, default
  :data:`lakehouse.settings.FRESHNESS_DAYS`);
- ``patients without data`` (a warning: patients, not the pipeline): the share of patients
  flagged ``no data`` (none for :data:`~jobs.recent_activity.NO_DATA_DAYS` days or more, or
  none at all), a warning from :data:`NO_DATA_WARNING`.

Thresholds are inclusive: a value equal to its threshold raises its warning or alert.
"""

from __future__ import annotations

from datetime import date

import polars as pl

from jobs.monitor import checks_frame
from jobs.recent_activity import NO_DATA_DAYS

CHECK = "data freshness"
NO_DATA_WARNING = 0.2


def freshness_checks(
    activity: pl.DataFrame, reference: date, *, stale_after_days: int
) -> pl.DataFrame:
    """The ``newest data`` and ``patients without data`` check rows.

    Args:
        activity: :func:`jobs.recent_activity.recent_activity` rows of every patient for
            ``reference`` (``last_day`` and the ``no_data`` flag).
        reference: the reference day (:func:`jobs.recent_activity.as_of`).
        stale_after_days: days without data of the newest day from which ``newest data``
            alerts.
    """
    rows = []
    newest = activity["last_day"].max()
    if isinstance(newest, date):
        without = max((reference - newest).days, 0)
        rows.append(
            {
                "subject": "newest data",
                "metric": "days without data",
                "value": float(without),
                "reference": None,
                "threshold": float(stale_after_days),
                "status": "alert" if without >= stale_after_days else "ok",
                "details": (
                    f"the newest data in the lake is of {newest}: {_days(without)} without "
                    f"data up to {reference} (an alert from {_days(stale_after_days)}, "
                    "MOBILITY_FRESHNESS_DAYS)"
                ),
            }
        )
    patients = activity.height
    if patients:
        silent = int(activity["no_data"].sum())
        share = silent / patients
        rows.append(
            {
                "subject": "patients without data",
                "metric": "share of patients",
                "value": share,
                "reference": None,
                "threshold": NO_DATA_WARNING,
                "status": "warning" if share >= NO_DATA_WARNING else "ok",
                "details": (
                    f"{silent:,} of {patients:,} patients ({share:.0%}) have no data for "
                    f"{NO_DATA_DAYS} days or more up to {reference}"
                ),
            }
        )
    return checks_frame(rows, CHECK)


def _days(count: int) -> str:
    return f"{count:,} day" if count == 1 else f"{count:,} days"
