"""Data quality of what arrived: quarantine rates and schema changes of the ingested files, and
the wear and outliers of the last four weeks of daily steps.

Ingest checks read the ``ingest`` runs of ops/job_runs since the previous monitoring run (each
records its file's format, accepted and quarantined counts and CSV header):

- ``quarantine share`` per format: quarantined / (accepted + quarantined); a warning from
  :data:`QUARANTINE_WARNING`, an alert from :data:`QUARANTINE_ALERT`;
- ``schema`` per file: columns new, missing or retyped (the kind of value their first rows hold
  changed, e.g. numbers to text) against the previous file of the same format (an alert from
  one column changed: a device or export tool changed its format). Columns the product knows
  are named, any other by its position (``column 5``): a header is file content
  (docs/security.md).

Daily-steps checks over the :data:`~jobs.recent_activity.WEAR_WINDOW_DAYS` days up to the
reference day (yesterday by the wall clock: :func:`jobs.recent_activity.as_of`), with the one
definition of wear of :mod:`jobs.recent_activity` (warnings, not alerts: they describe the
patients, not a broken pipeline):

- ``low wear``: share of patients flagged ``low wear`` (worn on fewer than 70% of those days;
  days without any data count as not worn), a warning from :data:`LOW_WEAR_WARNING`;
- ``outliers``: wear days above :data:`OUTLIER_STEPS` steps, a warning from one.

Data arriving late or not at all is :mod:`jobs.monitor.freshness`'s.

Thresholds are inclusive: a value equal to its threshold raises its warning or alert.
"""

from __future__ import annotations

import json
from datetime import date, datetime, timedelta
from typing import Any

import polars as pl

from jobs.ingest.common import column_labels
from jobs.monitor import checks_frame
from jobs.recent_activity import ENOUGH_WEAR, WEAR_WINDOW_DAYS

QUARANTINE_WARNING = 0.01
QUARANTINE_ALERT = 0.05
# columns changed in a file's header from which the schema check alerts
SCHEMA_ALERT = 1
LOW_WEAR_WARNING = 0.3
OUTLIER_STEPS = 50_000
# wear days above OUTLIER_STEPS from which the outliers check warns
OUTLIERS_WARNING = 1


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
                "threshold": float(SCHEMA_ALERT),
                "status": "alert" if changed >= SCHEMA_ALERT else "ok",
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


def daily_checks(activity: pl.DataFrame, daily: pl.DataFrame, reference: date) -> pl.DataFrame:
    """Low wear and outliers of the :data:`~jobs.recent_activity.WEAR_WINDOW_DAYS` days up to
    ``reference``.

    Args:
        activity: :func:`jobs.recent_activity.recent_activity` rows of every patient for
            ``reference`` (its ``low_wear`` flag).
        daily: ``patient_id, date, steps, is_wear_day`` rows, at least those of the window.
        reference: the reference day (:func:`jobs.recent_activity.as_of`).
    """
    patients = activity.height
    if not patients:
        return checks_frame([], "data quality")
    low_patients = int(activity["low_wear"].sum())
    low = low_patients / patients
    first = reference - timedelta(days=WEAR_WINDOW_DAYS - 1)
    window = pl.col("date").is_between(first, reference)
    outliers = daily.filter(
        window & pl.col("is_wear_day") & (pl.col("steps") > OUTLIER_STEPS)
    ).height
    rows = [
        {
            "subject": "low wear",
            "metric": "share of patients",
            "value": low,
            "reference": None,
            "threshold": LOW_WEAR_WARNING,
            "status": "warning" if low >= LOW_WEAR_WARNING else "ok",
            "details": (
                f"{low_patients:,} of {patients:,} patients ({low:.0%}) wore their device on "
                f"fewer than {ENOUGH_WEAR:.0%} of the {WEAR_WINDOW_DAYS} days {first} to "
                f"{reference}"
            ),
        },
        {
            "subject": "outliers",
            "metric": "days",
            "value": float(outliers),
            "reference": None,
            "threshold": float(OUTLIERS_WARNING),
            "status": "warning" if outliers >= OUTLIERS_WARNING else "ok",
            "details": (
                f"{outliers:,} wear days above {OUTLIER_STEPS:,} steps between {first} and "
                f"{reference}"
            ),
        },
    ]
    return checks_frame(rows, "data quality")
