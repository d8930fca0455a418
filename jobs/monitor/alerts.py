"""Alerts: one per check and subject while its check says "alert", resolved when the check is
back to "ok"; new alerts are also posted to a webhook when ``MOBILITY_ALERT_WEBHOOK`` names one.
"""

from __future__ import annotations

import json
import logging
import urllib.request
import uuid
from datetime import datetime

import polars as pl

from lakehouse.settings import get_settings

log = logging.getLogger(__name__)
WEBHOOK_TIMEOUT_SECONDS = 5.0


def reconcile(
    open_alerts: pl.DataFrame, checks: pl.DataFrame, run_id: str, now: datetime
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The alerts to raise and the open alerts to resolve.

    Args:
        open_alerts: ops/alerts rows without ``resolved_at``.
        checks: this run's ``check, subject, status, details`` rows.
        run_id: this run.
        now: the time stamped on new and resolved alerts.

    Returns:
        New alert rows, and the resolved rows (``resolved_at`` set), both in the ops/alerts
        schema.
    """
    keys = ["check", "subject"]
    failing = checks.filter(pl.col("status") == "alert").unique(keys, keep="first")
    raised = failing.join(open_alerts.select(keys), on=keys, how="anti")
    new = raised.select(
        alert_id=pl.Series([uuid.uuid4().hex for _ in range(raised.height)], dtype=pl.String),
        raised_at=pl.lit(now, pl.Datetime("us", "UTC")),
        check="check",
        subject="subject",
        message="details",
        run_id=pl.lit(run_id),
        resolved_at=pl.lit(None, pl.Datetime("us", "UTC")),
    )
    # a subject is back to normal when its checks say ok and none of them alerts (a job has a
    # "failed" and a "late" check)
    passing = (
        checks.filter(pl.col("status") == "ok")
        .select(keys)
        .unique()
        .join(failing.select(keys), on=keys, how="anti")
    )
    # a subject its check no longer reports (a model no longer forecast, a format no longer
    # sent) cannot come back to ok: it is resolved when its check ran without it
    ran = checks.select("check").unique()
    gone = open_alerts.join(ran, on="check", how="semi").join(
        checks.select(keys).unique(), on=keys, how="anti"
    )
    passing = pl.concat([passing, gone.select(keys)]).unique()
    resolved = open_alerts.join(passing, on=keys, how="semi").with_columns(
        resolved_at=pl.lit(now, pl.Datetime("us", "UTC"))
    )
    return new, resolved


def post(alerts: pl.DataFrame) -> str | None:
    """Post new alerts as JSON to the webhook of ``MOBILITY_ALERT_WEBHOOK``; returns the error
    (one line) when that failed, None otherwise or without a webhook. Never raises: a webhook
    that is down must not stop the monitoring."""
    url = get_settings().alert_webhook
    if not url or not alerts.height:
        return None
    body = json.dumps(
        {
            "alerts": [
                {k: str(v) if v is not None else None for k, v in row.items()}
                for row in alerts.iter_rows(named=True)
            ]
        }
    ).encode()
    request = urllib.request.Request(
        url, data=body, headers={"Content-Type": "application/json"}, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=WEBHOOK_TIMEOUT_SECONDS):
            return None
    except (OSError, ValueError) as err:
        log.warning("alert webhook failed: %s", err)
        return f"alert webhook failed: {err}"
