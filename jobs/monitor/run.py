"""The monitoring job: every check of :mod:`jobs.monitor` on the lake as it is now, one row per
check and subject in ops/monitor_checks, alerts raised and resolved in ops/alerts.

- ``accuracy`` (:mod:`jobs.monitor.accuracy`): matured forecasts against the backtests; an alert
  makes training due at the next pipeline run (:func:`jobs.train.is_due`);
- ``feature drift`` and ``prediction drift`` (:mod:`jobs.monitor.drift`): PSI of the population
  now against the one the current models were trained for (and a two-sample K-S test up to
  :data:`jobs.monitor.drift.KS_MAX_PATIENTS` patients);
- ``data quality`` (:mod:`jobs.monitor.quality`): quarantine rates and schema changes of the
  files ingested since the last run; low wear and outliers of the last four weeks;
- ``data freshness`` (:mod:`jobs.monitor.freshness`): the lake's newest data and the patients
  without data, against yesterday by the wall clock (``now``);
- ``job health`` (:mod:`jobs.monitor.health`): failed latest runs, daily jobs late;
- ``cost`` (:mod:`jobs.monitor.cost`): measured monthly cost and its projection to the budget's
  patients against the budget.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

import polars as pl

from jobs.daily import wear_steps
from jobs.forecast import champions
from jobs.monitor import accuracy, alerts, cost, drift, freshness, health, quality
from jobs.recent_activity import WEAR_WINDOW_DAYS, as_of, recent_activity
from jobs.runs import job_run
from jobs.train import latest_version
from lakehouse.catalog import (
    ALERTS,
    BACKTESTS,
    DAILY_STEPS,
    DRIFT_REFERENCE,
    FEATURES,
    FORECASTS,
    JOB_RUNS,
    MONITOR_CHECKS,
    OUTLOOK,
    PATIENTS,
    TABLES,
)
from lakehouse.settings import get_settings
from lakehouse.storage import Lake

JOB = "monitor"


@dataclass(frozen=True)
class MonitorSummary:
    """What one monitoring run found."""

    run_id: str
    statuses: dict[str, int] = field(default_factory=dict)
    raised: list[str] = field(default_factory=list)
    resolved: list[str] = field(default_factory=list)
    webhook_error: str | None = None

    def describe(self) -> str:
        """Lines for the command line."""
        counts = ", ".join(f"{n} {s}" for s, n in sorted(self.statuses.items())) or "no checks"
        lines = [
            f"monitor: {counts}; {len(self.raised)} alert(s) raised, {len(self.resolved)} resolved"
        ]
        lines += [f"  ALERT {subject}" for subject in self.raised]
        lines += [f"  resolved {subject}" for subject in self.resolved]
        if self.webhook_error:
            lines.append(f"  {self.webhook_error}")
        return "\n".join(lines)


def run(
    lake: Lake, *, now: datetime | None = None, prices: cost.Prices | None = None
) -> MonitorSummary:
    """Run every check, record them and reconcile the alerts.

    Args:
        lake: the lake.
        now: the time of the run (default: the wall clock); the checks of data freshness and
            wear measure up to the day before its UTC date.
        prices: the price table (default: :meth:`cost.Prices.load`).
    """
    now = now or datetime.now(UTC)
    reference = as_of(now.astimezone(UTC).date())
    prices = prices or cost.Prices.load()
    with job_run(lake, JOB) as record:
        # missing tables read as empty frames with their columns
        runs = lake.read(JOB_RUNS)
        recent = _recent_days(lake, reference)
        parts = [health.health_checks(runs, now), _drift(lake, now)]
        if recent is not None:
            last, daily, last_days = recent
            parts.append(_accuracy(lake, last, daily).with_columns(check=pl.lit("accuracy")))
            # the wear and freshness flags only: the means, which need half a year, are unused
            activity = recent_activity(daily, last_days, reference)
            parts.append(quality.daily_checks(activity, daily, reference))
            parts.append(
                freshness.freshness_checks(
                    activity, reference, stale_after_days=get_settings().freshness_days
                )
            )
        # since the last monitoring run that finished: a failed one checked nothing
        done = (pl.col("job") == JOB) & (pl.col("status") == "succeeded")
        monitored = runs.filter(done)["started_at"].max()
        parts.append(
            quality.ingest_checks(runs, monitored if isinstance(monitored, datetime) else None)
        )
        storage = sum(lake.info(table).size_bytes for table in TABLES)
        patients = lake.scan(PATIENTS).select(pl.len()).collect().item()
        parts.append(cost.cost_checks(runs, storage, patients, prices, now))
        checks = pl.concat([p for p in parts if p.height], how="diagonal_relaxed")
        checks = checks.with_columns(run_id=pl.lit(record.run_id), checked_at=pl.lit(now))
        if checks.height:
            lake.append(MONITOR_CHECKS, checks)
        open_alerts = lake.read(ALERTS).filter(pl.col("resolved_at").is_null())
        new, resolved = alerts.reconcile(open_alerts, checks, record.run_id, now)
        if new.height or resolved.height:
            lake.upsert(ALERTS, pl.concat([new, resolved], how="diagonal_relaxed"))
        webhook_error = alerts.post(new)
        statuses = dict(checks.group_by("status").len().iter_rows()) if checks.height else {}
        record.rows_out = checks.height
        record.details.update(
            statuses=statuses, raised=new.height, resolved=resolved.height, webhook=webhook_error
        )
        return MonitorSummary(
            record.run_id,
            statuses,
            [f"{c}: {s}" for c, s in new.select("check", "subject").iter_rows()],
            [f"{c}: {s}" for c, s in resolved.select("check", "subject").iter_rows()],
            webhook_error,
        )


def _recent_days(lake: Lake, reference: date) -> tuple[date, pl.DataFrame, pl.DataFrame] | None:
    """The lake's last day of data, the daily rows (``patient_id, date, steps, is_wear_day``) of
    the days the accuracy check (the last days of data) and the wear checks (the last days up to
    ``reference``) look at, and every patient's last day with data (``patient_id, last_day``;
    null for a patient without any); None before any daily steps. Read once for all checks."""
    with_data = (
        lake.scan(DAILY_STEPS).group_by("patient_id").agg(last_day=pl.col("date").max()).collect()
    )
    last = with_data["last_day"].max()
    if not isinstance(last, date):
        return None
    # patients enrolled who never sent data are patients without data too
    enrolled = lake.scan(PATIENTS).select("patient_id").unique().collect()
    last_days = enrolled.join(with_data, on="patient_id", how="full", coalesce=True)
    first = min(
        last - timedelta(days=accuracy.RECENT_DAYS - 1),
        reference - timedelta(days=WEAR_WINDOW_DAYS - 1),
    )
    daily = (
        lake.scan(DAILY_STEPS)
        .filter(pl.col("date") >= pl.lit(first))
        .select("patient_id", "date", "steps", "is_wear_day")
        .collect()
    )
    return last, daily, last_days


def _accuracy(lake: Lake, last: date, daily: pl.DataFrame) -> pl.DataFrame:
    """Accuracy check rows over the last :data:`accuracy.RECENT_DAYS` days of data."""
    if not lake.exists(FORECASTS) or not lake.exists(BACKTESTS):
        return pl.DataFrame()
    since = last - timedelta(days=accuracy.RECENT_DAYS - 1)
    window = pl.col("target_date").is_between(pl.lit(since), pl.lit(last))
    forecasts = lake.scan(FORECASTS).filter(window).collect(engine="streaming")
    actuals = daily.filter(pl.col("date") >= since).select("patient_id", "date", steps=wear_steps())
    clusters = (
        lake.scan(PATIENTS)
        .select("patient_id", cluster=pl.col("disease_group").fill_null("OTHER"))
        .collect()
    )
    backtests = lake.read(BACKTESTS)
    latest = backtests.filter(pl.col("trained_at") == pl.col("trained_at").max())
    reference = latest.group_by("model", "cluster", "horizon_days").agg(pl.col("mae").mean())
    matured = accuracy.matured_accuracy(forecasts, actuals, clusters)
    return accuracy.accuracy_checks(matured, reference, champions(lake))


def _drift(lake: Lake, now: datetime) -> pl.DataFrame:
    """Feature and prediction drift check rows; the first run after a training captures the
    reference instead (no rows)."""
    version = latest_version(lake)
    if version is None or not lake.exists(FEATURES) or not lake.exists(OUTLOOK):
        return pl.DataFrame()
    # each patient's latest row, found from two columns first: a window over every row held
    # the monitored columns of all of them (100,000 patients: peak 8 GB)
    latest = (
        lake.scan(FEATURES)
        .group_by("patient_id")
        .agg(pl.col("date").max())
        .collect(engine="streaming")
    )
    features = (
        lake.scan(FEATURES)
        .filter(pl.col("date") >= latest["date"].min())
        .join(latest.lazy(), on=["patient_id", "date"])
        .select("patient_id", *drift.MONITORED_FEATURES)
        .collect(engine="streaming")
    )
    # each patient's latest forecast, then its champion: the rows of the cohort page's list
    outlook = lake.scan(OUTLOOK).filter(
        pl.col("origin_date") == pl.col("origin_date").max().over("patient_id")
    )
    predictions = outlook.filter(pl.col("champion")).select("year_steps").collect()["year_steps"]
    stored = (
        lake.scan(DRIFT_REFERENCE).filter(pl.col("registry_version") == version).collect()
        if lake.exists(DRIFT_REFERENCE)
        else pl.DataFrame()
    )
    if not stored.height:
        rows = pl.DataFrame(drift.reference_rows(features, predictions)).with_columns(
            registry_version=pl.lit(version, pl.Int32), captured_at=pl.lit(now)
        )
        lake.upsert(DRIFT_REFERENCE, rows)
        return pl.DataFrame()
    return drift.drift_checks(stored, features, predictions)
