"""Data quality of what arrived: quarantine rates and schema changes of the ingested files, and
the wear, lateness and outliers of the last weeks of daily steps.

Ingest checks read the ``ingest`` runs of ops/job_runs since the previous monitoring run (each
records its file's format, accepted and quarantined counts and CSV header):

- ``quarantine share`` per format: quarantined / (accepted + quarantined); a warning from
  :data:`QUARANTINE_WARNING`, an alert from :data:`QUARANTINE_ALERT`;
- ``schema`` per file: columns new, missing or retyped (the kind of value their first rows hold
  changed, e.g. numbers to text) against the previous file of the same format (an alert: a
  device or export tool changed its format). Columns the product knows are named, any other by
  its position (``column 5``): a header is file content (docs/security.md).

Daily-steps checks over the last :data:`RECENT_DAYS` days of data (warnings, not alerts: they
describe the patients, not a broken pipeline):

- ``low wear``: share of patients with wear days on fewer than 70% of those days (days without
  any data count as not worn), warning above :data:`LOW_WEAR_WARNING`;
- ``late data``: share of patients whose last day is more than :data:`LATE_DAYS` days before the
  lake's last day, warning above :data:`LATE_WARNING`;
- ``outliers``: wear days above :data:`OUTLIER_STEPS` steps, warning when any.
"""

from __future__ import annotations

import json
from datetime import date, datetime, timedelta
from typing import Any

import polars as pl

from jobs.ingest.common import column_labels
from jobs.monitor import checks_frame

QUARANTINE_WARNING = 0.01
QUARANTINE_ALERT = 0.05
RECENT_DAYS = 28
ENOUGH_WEAR = 0.7
LOW_WEAR_WARNING = 0.3
LATE_DAYS = 3
LATE_WARNING = 0.2
OUTLIER_STEPS = 50_000


def ingest_checks(runs: pl.DataFrame, since: datetime | None) -> pl.DataFrame:
    """Quarantine share per format and schema changes per file, over the ingest runs started
    after ``since`` (all when None), each file's header compared with the previous file of its
    format (earlier runs included)."""
    ingests = runs.filter(pl.col("job") == "ingest").sort("started_at")
    rows: list[dict[str, Any]] = []
    previous: dict[str, dict[str, str | None]] = {}
    totals: dict[str, list[int]] = {}
    for started, status, details in ingests.select("started_at", "status", "details").iter_rows():
        parsed = json.loads(details or "{}")
        kind, columns = parsed.get("format"), _columns(parsed)
        recent = since is None or started > since
        if status == "succeeded" and kind and recent:
            counts = totals.setdefault(kind, [0, 0])
            counts[0] += int(parsed.get("accepted") or 0)
            counts[1] += int(parsed.get("quarantined") or 0)
        if not kind or not columns:
            continue
        before = previous.get(kind)
        previous[kind] = columns
        if before is None or not recent:
            continue
        added = [c for c in columns if c not in before]
        missing = [c for c in before if c not in columns]
        retyped = [
            f"{c}: {before[c]} -> {now}"
            for c, now in columns.items()
            if c in before and _retyped(before[c], now)
        ]
        changed = len(added) + len(missing) + len(retyped)
        rows.append(
            {
                "subject": f"schema of {kind} files",
                "metric": "columns changed",
                "value": float(changed),
                "reference": None,
                "threshold": 0.0,
                "status": "alert" if changed else "ok",
                "details": (
                    f"{parsed.get('source_file')}: new columns {added or 'none'}, missing "
                    f"columns {missing or 'none'}, retyped columns {retyped or 'none'} against "
                    f"the previous {kind} file"
                ),
            }
        )
    for kind, (accepted, quarantined) in sorted(totals.items()):
        share = quarantined / (accepted + quarantined) if accepted + quarantined else 0.0
        rows.append(
            {
                "subject": f"quarantine of {kind} files",
                "metric": "quarantined share",
                "value": share,
                "reference": None,
                "threshold": QUARANTINE_ALERT,
                "status": "alert"
                if share >= QUARANTINE_ALERT
                else "warning"
                if share >= QUARANTINE_WARNING
                else "ok",
                "details": (
                    f"{quarantined:,} of {accepted + quarantined:,} step records quarantined"
                ),
            }
        )
    return checks_frame(rows, "data quality")


def _columns(details: dict[str, Any]) -> dict[str, str | None]:
    """A file's columns by label (:func:`jobs.ingest.common.column_labels`: a known name as
    itself, any other as ``column N``), with their kinds of value (None for runs recorded before
    kinds were). Runs recorded before labels hold the header's own names: labelled here, so no
    name a file gave a column reaches a check or an alert (docs/security.md)."""
    recorded = details.get("column_types")
    kinds = {str(k): str(v) for k, v in recorded.items()} if isinstance(recorded, dict) else {}
    names = [str(name) for name in details.get("columns") or kinds]
    labels = column_labels(names)
    return {label: kinds.get(name) for label, name in zip(labels, names, strict=True)}


def _retyped(before: str | None, now: str | None) -> bool:
    """A column's values changed kind; an empty sample or an unknown kind says nothing, and a
    column of whole numbers that now has decimals is still numbers."""
    if before in (None, "empty") or now in (None, "empty") or before == now:
        return False
    return {before, now} != {"integer", "number"}


def daily_checks(daily: pl.DataFrame, last_days: pl.DataFrame, last_day: date) -> pl.DataFrame:
    """Low wear, late data and outliers over ``daily`` rows (``patient_id, date, steps,
    is_wear_day``) of the :data:`RECENT_DAYS` days up to ``last_day``, for every patient of
    ``last_days`` (``patient_id, last``: each patient's last day with data, however old)."""
    since = last_day - timedelta(days=RECENT_DAYS - 1)
    recent = daily.filter(pl.col("date") >= since)
    worn = recent.group_by("patient_id").agg(wear=pl.col("is_wear_day").sum())
    per_patient = last_days.join(worn, on="patient_id", how="left").with_columns(
        pl.col("wear").fill_null(0)
    )
    patients = per_patient.height
    if not patients:
        return checks_frame([], "data quality")
    low = per_patient.filter(pl.col("wear") < ENOUGH_WEAR * RECENT_DAYS).height / patients
    late = (
        per_patient.filter(pl.col("last") < last_day - timedelta(days=LATE_DAYS)).height / patients
    )
    outliers = recent.filter(pl.col("is_wear_day") & (pl.col("steps") > OUTLIER_STEPS)).height
    rows = [
        {
            "subject": "low wear",
            "metric": "share of patients",
            "value": low,
            "reference": None,
            "threshold": LOW_WEAR_WARNING,
            "status": "warning" if low > LOW_WEAR_WARNING else "ok",
            "details": (
                f"{low:.0%} of {patients:,} patients wore their device on fewer than "
                f"{ENOUGH_WEAR:.0%} of the last {RECENT_DAYS} days"
            ),
        },
        {
            "subject": "late data",
            "metric": "share of patients",
            "value": late,
            "reference": None,
            "threshold": LATE_WARNING,
            "status": "warning" if late > LATE_WARNING else "ok",
            "details": (
                f"{late:.0%} of {patients:,} patients have no data in the last {LATE_DAYS} days "
                f"before {last_day}"
            ),
        },
        {
            "subject": "outliers",
            "metric": "days",
            "value": float(outliers),
            "reference": None,
            "threshold": 0.0,
            "status": "warning" if outliers else "ok",
            "details": f"{outliers:,} wear days above {OUTLIER_STEPS:,} steps",
        },
    ]
    return checks_frame(rows, "data quality")
