"""``mobility monitor``: data freshness against yesterday, forecast accuracy against the
backtests, feature and prediction drift, data quality, job health and cost, recorded in
ops/monitor_checks, with alerts in ops/alerts (see :mod:`jobs.monitor.run`).

Every check module returns rows of :data:`CHECK_COLUMNS`; :func:`checks_frame` builds them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import polars as pl

CHECK_COLUMNS = {
    "check": pl.String,
    "subject": pl.String,
    "metric": pl.String,
    "value": pl.Float64,
    "reference": pl.Float64,
    "threshold": pl.Float64,
    "status": pl.String,
    "details": pl.String,
}


def checks_frame(rows: Sequence[dict[str, Any]], check: str) -> pl.DataFrame:
    """Check rows (each without ``check``, or with it) as a frame of :data:`CHECK_COLUMNS`."""
    return pl.DataFrame([{"check": check, **row} for row in rows], schema=CHECK_COLUMNS)
