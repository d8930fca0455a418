"""Monitoring: matured forecasts scored against the backtests (injected drift raises an alert
and makes training due; recovery resolves it), job health, and cost from the recorded runs."""

from __future__ import annotations

import errno
import json
import math
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from jobs import aggregate, generate
from jobs import forecast as forecast_job
from jobs import train as train_job
from jobs.features import run as features_job
from jobs.monitor import cost, drift
from jobs.monitor import run as monitor_job
from jobs.recent_activity import NO_DATA_DAYS, as_of, recent_activity
from jobs.runs import job_run
from lakehouse.catalog import ALERTS, DAILY_STEPS, FORECASTS, JOB_RUNS, MONITOR_CHECKS, PATIENTS
from lakehouse.settings import get_settings
from lakehouse.storage import Lake, sql_literal
from synthetic.population import DEFAULT_END_DATE

NOW = datetime(2027, 1, 1, tzinfo=UTC)
DAILY_COLUMNS = {
    "patient_id": pl.String,
    "date": pl.Date,
    "steps": pl.Float64,
    "is_wear_day": pl.Boolean,
}


@pytest.fixture(scope="module")
def forecasted(tmp_path_factory: pytest.TempPathFactory) -> Lake:
    lake = Lake(str(tmp_path_factory.mktemp("monitor") / "lake"))
    generate.run(lake, patients=30, seed=11, years=2.0, end_date=DEFAULT_END_DATE)
    aggregate.run(lake)
    features_job.run(lake)
    train_job.run(lake, force=True, patients_per_cluster=6, origins=2, prophet_workers=1, now=NOW)
    forecast_job.run(lake, prophet_workers=1)
    return lake


def _days_that_happened(lake: Lake, factor: float) -> None:
    """35 wear days after every patient's forecast origin, at ``factor`` times their cluster's
    champion forecast (1.0: as forecast; 0.5: mobility halved), replacing earlier simulated
    days."""
    winners = pl.DataFrame(
        list(forecast_job.champions(lake).items()), schema=["cluster", "model"], orient="row"
    )
    patients = lake.read(PATIENTS).select("patient_id", cluster="disease_group")
    forecasts = lake.read(FORECASTS).join(
        patients.join(winners, on="cluster"), on=["patient_id", "model"]
    )
    days = forecasts.filter(
        pl.col("target_date") < pl.col("origin_date") + pl.duration(days=35)
    ).select(
        "patient_id",
        date="target_date",
        steps=(pl.col("yhat") * factor).round(0),
        coverage_hours=pl.lit(14, pl.Int16),
        n_samples=pl.lit(40, pl.Int32),
        n_sources=pl.lit(1, pl.Int16),
        is_wear_day=pl.lit(True),
        month=pl.col("target_date").dt.strftime("%Y-%m"),
    )
    origins = forecasts.select("patient_id", "origin_date").unique().sort("patient_id")
    predicate = " OR ".join(
        f"(patient_id = {sql_literal(p)} AND date >= {sql_literal(o.isoformat())})"
        for p, o in origins.iter_rows()
    )
    lake.replace(DAILY_STEPS, days, predicate=predicate)


def _open_accuracy_alerts(lake: Lake) -> pl.DataFrame:
    return lake.read(ALERTS).filter(
        (pl.col("check") == "accuracy") & pl.col("resolved_at").is_null()
    )


def test_injected_drift_raises_an_accuracy_alert_and_recovery_resolves_it(
    forecasted: Lake,
) -> None:
    lake = forecasted
    trained_at = NOW
    champions = forecast_job.champions(lake)
    # the largest cluster's champion, over the horizons the 35 days reach
    cluster = lake.read(PATIENTS)["disease_group"].value_counts(sort=True)["disease_group"][0]
    subject = f"{champions[cluster]} · {cluster} · first 91 days"
    _days_that_happened(lake, 1.0)
    calm = monitor_job.run(lake, now=NOW + timedelta(days=1))
    checks = lake.read(MONITOR_CHECKS).filter(pl.col("run_id") == calm.run_id)
    mine = checks.filter(pl.col("subject").str.starts_with(f"{champions[cluster]} · {cluster}"))
    assert mine.height and set(mine["status"]) == {"ok"}
    assert mine.filter(pl.col("subject") == subject)["value"].item() < 1.0
    # the champions' forecasts came true: no accuracy alert (other models at most warn), so
    # training is not due
    assert not lake.exists(ALERTS) or _open_accuracy_alerts(lake).is_empty()
    assert not train_job.is_due(lake, trained_at + timedelta(days=2))

    _days_that_happened(lake, 0.5)
    drifted = monitor_job.run(lake, now=NOW + timedelta(days=2))
    raised = _open_accuracy_alerts(lake)
    assert subject in set(raised["subject"])
    # only champions alert
    assert all(s.split(" · ")[0] in champions.values() for s in raised["subject"])
    row = _check(lake, drifted.run_id, subject)
    assert row["status"] == "alert" and row["value"] > row["threshold"] == pytest.approx(
        1.1 * row["reference"]
    )
    details = json.loads(row["details"])
    assert details["days"] >= 50 and details["champion"]
    assert details["mae_lower_95"] > row["reference"]  # beyond chance, not only beyond 10%
    assert train_job.is_due(lake, trained_at + timedelta(days=2))  # retraining follows
    retrained = train_job.run(
        lake, patients_per_cluster=6, origins=2, prophet_workers=1, now=NOW + timedelta(days=2)
    )
    assert retrained.status == "trained" and retrained.version == 2
    assert not train_job.is_due(lake, NOW + timedelta(days=2, hours=1))

    # the same drift the next day: still one open alert per subject, not a second one
    monitor_job.run(lake, now=NOW + timedelta(days=3))
    again = _open_accuracy_alerts(lake)
    assert again.height == again["subject"].n_unique()
    if forecast_job.champions(lake).get(cluster) == champions[cluster]:
        assert subject in set(again["subject"])

    _days_that_happened(lake, 1.0)
    monitor_job.run(lake, now=NOW + timedelta(days=4))
    assert _open_accuracy_alerts(lake).is_empty()


def test_a_failed_job_raises_an_alert_until_it_succeeds(forecasted: Lake) -> None:
    lake = forecasted
    with pytest.raises(OSError), job_run(lake, "features"):
        raise OSError(errno.ENOSPC, "No space left on device")
    monitor_job.run(lake)
    alerts = lake.read(ALERTS).filter(
        (pl.col("subject") == "job features · latest run") & pl.col("resolved_at").is_null()
    )
    assert alerts.height == 1 and "No space left on device" in alerts["message"][0]
    features_job.run(lake)
    monitor_job.run(lake)
    assert (
        not lake.read(ALERTS)
        .filter(
            (pl.col("subject") == "job features · latest run") & pl.col("resolved_at").is_null()
        )
        .height
    )


def test_cost_is_computed_from_the_recorded_runs(forecasted: Lake) -> None:
    lake = forecasted
    prices = cost.Prices.load()
    summary = monitor_job.run(lake, prices=prices)
    checks = lake.read(MONITOR_CHECKS).filter(
        (pl.col("run_id") == summary.run_id) & (pl.col("check") == "cost")
    )
    by = {r["subject"]: r for r in checks.iter_rows(named=True)}
    runs = lake.read(JOB_RUNS).filter(pl.col("run_id") != summary.run_id)
    first = runs["started_at"].min()
    checked_at = checks["checked_at"][0]
    days = max((checked_at - first).total_seconds() / 86400, 1.0)
    forecast_hours = (
        math.fsum(runs.filter(pl.col("job") == "forecast")["cpu_seconds"].to_list()) / 3600
    )
    expected = forecast_hours * (30 / days) * prices.usd_per_vcpu_hour["inference"]
    assert by["inference"]["value"] == pytest.approx(expected, rel=1e-6)
    assert by["total"]["value"] == pytest.approx(
        math.fsum(by[c]["value"] for c in ("storage", "processing", "training", "inference"))
    )
    assert by["total"]["threshold"] == prices.budget_usd_per_month
    assert by["storage"]["reference"] == pytest.approx(
        by["storage"]["value"] * prices.budget_patients / 30
    )


def test_psi_against_a_hand_computation() -> None:

    reference = drift.bins_of(pl.Series([float(v) for v in range(1, 101)] + [None]))
    assert reference["edges"] == pytest.approx([10.9 + 9.9 * k for k in range(9)])
    assert reference["shares"][:10] == pytest.approx([10 / 101] * 10)
    assert reference["shares"][10] == pytest.approx(1 / 101)
    same = pl.Series([float(v) for v in range(1, 101)] + [None])
    assert drift.psi(reference, same) == pytest.approx(0.0, abs=1e-12)
    # everyone now in the lowest bin, nobody missing; shares smoothed by half a patient per bin
    now = pl.Series([1.0] * 50)
    now_counts, then_counts = [50] + [0] * 10, [10] * 10 + [1]
    expected = math.fsum(
        (n - r) * math.log(n / r)
        for n, r in zip(
            [(c + 0.5) / (50 + 5.5) for c in now_counts],
            [(c + 0.5) / (101 + 5.5) for c in then_counts],
            strict=True,
        )
    )
    assert drift.psi(reference, now) == pytest.approx(expected)
    assert drift.psi(reference, now) > drift.PSI_ALERT


def test_drift_by_kolmogorov_smirnov_up_to_1000_patients_then_by_psi() -> None:
    """Re-measuring one population must not look like drift; a real shift must."""
    import numpy as np
    from scipy import stats

    rng = np.random.default_rng(3)
    assert len(drift.bins_of(pl.Series(rng.normal(size=30)))["edges"]) == 2  # terciles
    assert len(drift.bins_of(pl.Series(rng.normal(size=500)))["edges"]) == 9  # deciles
    for patients in (30, 100, 1000, 3000):
        then = rng.normal(size=patients)
        stored = json.dumps(drift.bins_of(pl.Series(then)))
        reference = pl.DataFrame({"subject": ["x"], "reference": [stored]})

        def check(now: np.ndarray, reference: pl.DataFrame = reference) -> dict[str, Any]:
            checked = drift.drift_checks(reference, pl.DataFrame({"x": now}), pl.Series([]))
            return checked.row(0, named=True)

        # the same patients some days later, each a little different: an alert at most about
        # 1% of the time
        later = [check(then + rng.normal(scale=0.3, size=patients)) for _ in range(200)]
        alerts = sum(row["status"] == "alert" for row in later)
        assert alerts <= 4, (patients, alerts)
        # everyone one standard deviation lower: an alert
        shifted = check(then - 1.0)
        assert shifted["status"] == "alert", (patients, shifted)
        if patients <= drift.KS_MAX_PATIENTS:
            assert shifted["metric"] == "ks p-value"
            assert shifted["value"] == pytest.approx(stats.ks_2samp(then, then - 1.0).pvalue)
        else:
            assert shifted["metric"] == "psi"
            psi = json.loads(shifted["details"])["psi"]
            assert shifted["value"] == pytest.approx(psi, abs=1e-4) and psi >= drift.PSI_ALERT


def test_a_shifted_population_raises_feature_and_prediction_drift(forecasted: Lake) -> None:
    lake = forecasted
    monitor_job.run(lake)  # the first run after training captures the reference (if not yet)
    _days_that_happened(lake, 0.5)
    features_job.run(lake)
    forecast_job.run(lake, prophet_workers=1)
    summary = monitor_job.run(lake)
    checks = lake.read(MONITOR_CHECKS).filter(pl.col("run_id") == summary.run_id)
    level = checks.filter(
        (pl.col("check") == "feature drift") & (pl.col("subject") == "ewm_mean_28d")
    ).row(0, named=True)
    # 30 patients: the Kolmogorov-Smirnov test (PSI needs many more)
    assert level["status"] == "alert" and level["metric"] == "ks p-value"
    assert level["value"] < drift.KS_ALERT
    prediction = checks.filter(pl.col("check") == "prediction drift").row(0, named=True)
    assert prediction["status"] == "alert"
    open_subjects = set(
        lake.read(ALERTS).filter(pl.col("resolved_at").is_null())["subject"].to_list()
    )
    assert {"ewm_mean_28d", prediction["subject"]} <= open_subjects


def test_a_schema_change_and_a_burst_of_bad_rows_are_reported(tmp_path: Path) -> None:
    from jobs.ingest import run as ingest

    lake = Lake(str(tmp_path / "lake"))
    good = tmp_path / "week1.csv"
    good.write_text(
        "patient_id,start,end,steps\n"
        + "".join(f"A,2024-01-0{d} 08:00,2024-01-0{d} 09:00,{1000 + d}\n" for d in range(1, 8))
    )
    ingest.run(lake, good, format="generic", timezone="UTC")
    first = monitor_job.run(lake)
    quality = lake.read(MONITOR_CHECKS).filter(
        (pl.col("run_id") == first.run_id) & (pl.col("check") == "data quality")
    )
    share = quality.filter(pl.col("subject") == "quarantine of generic files").row(0, named=True)
    assert share["value"] == 0.0 and share["status"] == "ok"

    # the export tool added a column, and half of the next file's rows are broken
    changed = tmp_path / "week2.csv"
    rows = [f"A,2024-01-{d:02d} 08:00,2024-01-{d:02d} 09:00,{1000 + d},watch" for d in range(8, 13)]
    rows += [f"A,2024-01-{d:02d} 08:00,2024-01-{d:02d} 09:00,-5,watch" for d in range(13, 18)]
    changed.write_text("patient_id,start,end,steps,device\n" + "\n".join(rows) + "\n")
    ingest.run(lake, changed, format="generic", timezone="UTC")
    second = monitor_job.run(lake)
    checks = lake.read(MONITOR_CHECKS).filter(pl.col("run_id") == second.run_id)
    schema = checks.filter(pl.col("subject") == "schema of generic files").row(0, named=True)
    # a column the product does not know is named by its position (docs/security.md)
    assert schema["status"] == "alert" and "new columns ['column 5']" in schema["details"]
    burst = checks.filter(pl.col("subject") == "quarantine of generic files").row(0, named=True)
    assert burst["value"] == pytest.approx(5 / 10)  # only the files since the last run count
    assert burst["status"] == "alert"
    raised = set(lake.read(ALERTS).filter(pl.col("resolved_at").is_null())["subject"])
    assert {"schema of generic files", "quarantine of generic files"} <= raised

    # the same columns again, all rows good: the schema check is ok, then the export tool
    # writes the steps as text ("1,017 steps"), and those rows are quarantined too
    same = tmp_path / "week3.csv"
    same.write_text(
        "patient_id,start,end,steps,device\n"
        + "".join(f"A,2024-01-{d} 08:00,2024-01-{d} 09:00,{1000 + d}.5,watch\n" for d in (18, 19))
    )
    ingest.run(lake, same, format="generic", timezone="UTC")
    third = monitor_job.run(lake)
    schema = _check(lake, third.run_id, "schema of generic files")
    assert schema["status"] == "ok", schema["details"]  # whole numbers to decimals: no change
    retyped = tmp_path / "week4.csv"
    retyped.write_text(
        "patient_id,start,end,steps,device\n"
        + "".join(f'A,2024-01-{d} 08:00,2024-01-{d} 09:00,"1,0{d} steps",watch\n' for d in (20, 21))
    )
    ingest.run(lake, retyped, format="generic", timezone="UTC")
    fourth = monitor_job.run(lake)
    schema = _check(lake, fourth.run_id, "schema of generic files")
    assert schema["status"] == "alert" and schema["value"] == 1.0
    assert "retyped columns ['steps: number -> text']" in schema["details"]


def _check(lake: Lake, run_id: str, subject: str) -> dict[str, Any]:
    checks = lake.read(MONITOR_CHECKS).filter(pl.col("run_id") == run_id)
    return checks.filter(pl.col("subject") == subject).row(0, named=True)


def _activity(daily: pl.DataFrame, last_days: pl.DataFrame, reference: date) -> pl.DataFrame:
    return recent_activity(daily, last_days, reference)


def test_wear_and_outliers_of_the_last_four_weeks_use_the_one_definition_of_wear() -> None:
    from jobs.monitor import quality

    reference = date(2024, 3, 28)
    rows = []
    for day in range(28):
        when = reference - timedelta(days=day)
        rows.append(("worn", when, 5000.0, True))
        rows.append(("rarely", when, 100.0, day % 2 == 0))  # 14 of 28 days worn
        if day >= 5:
            rows.append(("stopped", when, 4000.0, True))  # nothing in the last 5 days
    rows.append(("worn", reference, 80_000.0, True))
    rows.append(("worn", reference - timedelta(days=30), 90_000.0, True))  # before the window
    daily = pl.DataFrame(rows, schema=DAILY_COLUMNS, orient="row")
    # a fourth patient stopped sharing 40 days ago: no row in the last 28 days, still counted
    last_days = pl.concat(
        [
            daily.group_by("patient_id").agg(last_day=pl.col("date").max()),
            pl.DataFrame({"patient_id": ["gone"], "last_day": [reference - timedelta(days=40)]}),
        ]
    )
    activity = _activity(daily, last_days, reference)
    checks = {
        r["subject"]: r
        for r in quality.daily_checks(activity, daily, reference).iter_rows(named=True)
    }
    # "stopped" wore it 23 of 28 days (82%): enough; "rarely" (50%) and "gone" (0%) too little
    assert checks["low wear"]["value"] == pytest.approx(2 / 4)
    assert activity.filter("low_wear")["patient_id"].to_list() == ["gone", "rarely"]
    assert checks["low wear"]["status"] == "warning"
    assert checks["low wear"]["details"].startswith("2 of 4 patients (50%)")
    assert checks["outliers"]["value"] == 1.0 and checks["outliers"]["status"] == "warning"
    assert set(checks) == {"low wear", "outliers"}  # late data is the freshness check's


def _patients(reference: date, without_days: list[int | None], worn: list[int]) -> pl.DataFrame:
    """Daily rows of patients whose last day is ``without_days`` days before ``reference`` (None:
    no data at all), each worn on the first ``worn`` days of the four weeks before it."""
    rows = []
    for index, (without, days) in enumerate(zip(without_days, worn, strict=True)):
        if without is None:
            continue
        for back in range(without, without + 28):
            rows.append((f"P{index:02d}", reference - timedelta(days=back), 4000.0, back < days))
    return pl.DataFrame(rows, schema=DAILY_COLUMNS, orient="row")


def _last_days(daily: pl.DataFrame, patients: int) -> pl.DataFrame:
    everyone = pl.DataFrame({"patient_id": [f"P{i:02d}" for i in range(patients)]})
    return everyone.join(
        daily.group_by("patient_id").agg(last_day=pl.col("date").max()),
        on="patient_id",
        how="left",
    )


def test_thresholds_are_inclusive_for_wear_and_outliers() -> None:
    from jobs.monitor import quality

    reference = date(2026, 12, 6)
    # 3 of 10 patients (30% = the warning threshold) wear it on 19 of 28 days (68%), the others
    # on all 28
    daily = _patients(reference, [0] * 10, [19] * 3 + [28] * 7)
    outlier = pl.DataFrame(
        [("P05", reference, float(quality.OUTLIER_STEPS + 1), True)],
        schema=DAILY_COLUMNS,
        orient="row",
    )
    activity = _activity(daily, _last_days(daily, 10), reference)
    checks = {
        r["subject"]: r
        for r in quality.daily_checks(activity, pl.concat([daily, outlier]), reference).iter_rows(
            named=True
        )
    }
    low = checks["low wear"]
    assert low["value"] == pytest.approx(quality.LOW_WEAR_WARNING) == low["threshold"]
    assert low["status"] == "warning"
    outliers = checks["outliers"]
    assert outliers["value"] == outliers["threshold"] == 1.0 and outliers["status"] == "warning"


def test_freshness_against_the_reference_day_with_inclusive_thresholds() -> None:
    from jobs.monitor import freshness

    reference = date(2026, 12, 6)
    # 10 patients: the newest data 2 days before the reference day; P08 silent for exactly 7
    # days, P09 without any data: 2 of 10 (20%, the warning threshold) have no data
    daily = _patients(reference, [2, 2, 3, 3, 4, 5, 6, 6, NO_DATA_DAYS, None], [28] * 10)
    activity = _activity(daily, _last_days(daily, 10), reference)
    checks = {
        r["subject"]: r
        for r in freshness.freshness_checks(activity, reference, stale_after_days=2).iter_rows(
            named=True
        )
    }
    newest = checks["newest data"]
    assert (newest["value"], newest["threshold"], newest["status"]) == (2.0, 2.0, "alert")
    assert f"of {reference - timedelta(days=2)}" in newest["details"]
    silent = checks["patients without data"]
    assert silent["value"] == pytest.approx(freshness.NO_DATA_WARNING) == silent["threshold"]
    assert silent["status"] == "warning"
    assert silent["details"].startswith("2 of 10 patients (20%) have no data for 7 days or more")
    # a day later data had arrived: fresh, and one patient fewer without data
    calmer = freshness.freshness_checks(
        _activity(daily, _last_days(daily, 10), reference - timedelta(days=1)),
        reference - timedelta(days=1),
        stale_after_days=2,
    )
    assert calmer["status"].to_list() == ["ok", "ok"]


def test_health_thresholds_are_inclusive() -> None:
    from jobs.monitor import health

    now = datetime(2026, 12, 7, 2, tzinfo=UTC)
    success = now - health.LATE_AFTER  # exactly 26 hours ago

    def run(job: str, status: str, finished: datetime) -> dict[str, Any]:
        return {
            "job": job,
            "started_at": finished - timedelta(minutes=5),
            "finished_at": finished,
            "status": status,
            "error": None if status == "succeeded" else "OSError: disk full",
        }

    runs = pl.DataFrame([run("aggregate", "succeeded", success), run("train", "failed", now)])
    checks = {r["subject"]: r for r in health.health_checks(runs, now).iter_rows(named=True)}
    late = checks["job aggregate · daily success"]
    assert late["value"] == pytest.approx(late["threshold"]) and late["status"] == "alert"
    failed = checks["job train · latest run"]
    assert failed["value"] == failed["threshold"] == 1.0 and failed["status"] == "alert"
    fine = checks["job aggregate · latest run"]
    assert fine["value"] == 0.0 < fine["threshold"] and fine["status"] == "ok"


def test_accuracy_and_drift_thresholds_are_inclusive(monkeypatch: pytest.MonkeyPatch) -> None:
    from types import SimpleNamespace

    from jobs.monitor import accuracy

    matured = pl.DataFrame(
        {
            "model": ["m"],
            "cluster": ["MS"],
            "horizon_days": [28],
            "mae": [1100.0],
            "mae_se": [10.0],
            "rmse": [1500.0],
            "patients": [20],
            "days": [400],
        }
    )
    reference = pl.DataFrame({"model": ["m"], "cluster": ["MS"], "horizon_days": [28]})
    row = accuracy.accuracy_checks(
        matured, reference.with_columns(mae=pl.lit(1000.0)), {"MS": "m"}
    ).row(0, named=True)
    assert row["value"] == pytest.approx(row["threshold"]) and row["status"] == "alert"

    stored = json.dumps(drift.bins_of(pl.Series([float(v) for v in range(100)])))
    references = pl.DataFrame({"subject": ["x"], "reference": [stored]})
    now = pl.DataFrame({"x": [float(v) for v in range(100)]})
    for p_value, status in ((drift.KS_ALERT, "alert"), (drift.KS_WARNING, "warning")):
        test = SimpleNamespace(pvalue=p_value, statistic=0.5)
        monkeypatch.setattr(drift, "_ks_test", lambda *_args, test=test: test)
        checked = drift.drift_checks(references, now, pl.Series([])).row(0, named=True)
        assert (checked["value"], checked["status"]) == (p_value, status)


def _prices(budget: float) -> cost.Prices:
    return cost.Prices(
        storage_usd_per_gb_month=0.023,
        usd_per_vcpu_hour=dict.fromkeys(cost.CATEGORIES, 0.05),
        jobs={"processing": ("aggregate",), "training": ("train",), "inference": ("forecast",)},
        budget_usd_per_month=budget,
        budget_patients=100_000,
    )


def test_a_projection_over_the_budget_warns_at_once_and_alerts_on_a_week_of_record() -> None:
    now = datetime(2026, 12, 7, 2, tzinfo=UTC)
    # one CPU-hour of aggregation a day, 10 patients measured: $1.50 a month, $15,000 projected
    runs = pl.DataFrame(
        {
            "job": ["aggregate"] * 10,
            "started_at": [now - timedelta(days=d, hours=1) for d in range(10)],
            "cpu_seconds": [3600.0] * 10,
        }
    )

    def total(runs: pl.DataFrame, budget: float) -> dict[str, Any]:
        checks = cost.cost_checks(runs, 0, 10, _prices(budget), now)
        return checks.filter(pl.col("subject") == "total").row(0, named=True)

    young = runs.filter(pl.col("started_at") > now - timedelta(days=3))  # 2 days of record
    projected = total(young, 500.0)
    assert projected["reference"] > 500.0 and projected["status"] == "warning"
    assert "days of record" in projected["details"]
    week = total(runs, 500.0)
    assert week["status"] == "alert"
    at_budget = total(runs, week["reference"])  # projected exactly at the budget
    assert at_budget["status"] == "alert"
    assert total(young, projected["reference"] * 1.01)["status"] == "ok"


def test_cost_and_health_details_read_in_their_units() -> None:
    from jobs.monitor import health

    now = datetime(2026, 12, 7, 2, tzinfo=UTC)
    runs = pl.DataFrame(
        {
            "job": ["aggregate", "train", "train"],
            "started_at": [now - timedelta(days=2)] * 3,
            "finished_at": [now - timedelta(minutes=20)] * 3,
            "status": ["succeeded"] * 3,
            "cpu_seconds": [90.0, 3600.0, 1800.0],
            "error": [None] * 3,
        }
    )
    details = dict(
        cost.cost_checks(runs, 19_400_000, 10, _prices(500.0), now)
        .select("subject", "details")
        .iter_rows()
    )
    assert details["processing"] == "90 CPU-seconds in 1 run over 2.0 days at $0.05 a vCPU-hour"
    assert details["training"] == "1.5 CPU-hours in 2 runs over 2.0 days at $0.05 a vCPU-hour"
    assert details["storage"] == "19.4 MB in the lake"
    checks = {r["subject"]: r for r in health.health_checks(runs, now).iter_rows(named=True)}
    assert checks["job aggregate · daily success"]["details"] == "aggregate succeeded 20 min ago"


# ------------------------------------------------- a lake whose data stopped 40 days ago


@pytest.fixture(scope="module")
def stale(tmp_path_factory: pytest.TempPathFactory) -> Lake:
    """Six synthetic patients whose data ends 40 days before yesterday, and a seventh enrolled
    without any data."""
    lake = Lake(str(tmp_path_factory.mktemp("stale") / "lake"))
    generate.run(lake, patients=6, seed=21, years=0.3, end_date=as_of() - timedelta(days=40))
    aggregate.run(lake)
    newcomer = lake.read(PATIENTS).head(1).with_columns(patient_id=pl.lit("SYN21-000099"))
    lake.append(PATIENTS, newcomer)
    return lake


def _checks(lake: Lake, run_id: str) -> dict[tuple[str, str], dict[str, Any]]:
    rows = lake.read(MONITOR_CHECKS).filter(pl.col("run_id") == run_id)
    return {(r["check"], r["subject"]): r for r in rows.iter_rows(named=True)}


def test_data_that_stopped_40_days_ago_raises_a_freshness_alert_and_a_budget_warning(
    stale: Lake,
) -> None:
    lake = stale
    newest = lake.read(DAILY_STEPS)["date"].max()
    summary = monitor_job.run(lake, prices=_prices(budget=0.01))  # today by the wall clock
    checks = _checks(lake, summary.run_id)
    fresh = checks[("data freshness", "newest data")]
    yesterday = as_of(datetime.now(UTC).date())
    assert fresh["status"] == "alert" and fresh["value"] == (yesterday - newest).days >= 40
    assert fresh["threshold"] == get_settings().freshness_days == 2
    assert "data freshness: newest data" in summary.raised
    silent = checks[("data freshness", "patients without data")]
    assert silent["value"] == 1.0 and silent["status"] == "warning"
    assert silent["details"].startswith("7 of 7 patients (100%) have no data for 7 days")
    # the one definition of wear: nobody wore a device in the last four weeks
    assert checks[("data quality", "low wear")]["value"] == 1.0
    # a lake measured for minutes projected over the budget: a warning, not "too little data"
    budget = checks[("cost", "total")]
    assert budget["reference"] >= budget["threshold"] and budget["status"] == "warning"
    open_alerts = lake.read(ALERTS).filter(pl.col("resolved_at").is_null())
    message = open_alerts.filter(pl.col("subject") == "newest data")["message"].item()
    assert f"of {newest}" in message


def test_the_reference_day_follows_the_injected_now_and_the_setting(
    stale: Lake, monkeypatch: pytest.MonkeyPatch
) -> None:
    lake = stale
    newest = lake.read(DAILY_STEPS)["date"].max()
    assert isinstance(newest, date)

    def newest_data(now: datetime) -> dict[str, Any]:
        run_id = monitor_job.run(lake, now=now).run_id
        return _checks(lake, run_id)[("data freshness", "newest data")]

    # two days after the newest day: two days without data before "yesterday", an alert
    two_days = datetime.combine(newest + timedelta(days=3), time(2), tzinfo=UTC)
    checked = newest_data(two_days)
    assert (checked["value"], checked["status"]) == (2.0, "alert")
    # a day earlier, fresh enough: the alert is resolved
    assert newest_data(two_days - timedelta(days=1))["status"] == "ok"
    assert (
        lake.read(ALERTS)
        .filter((pl.col("subject") == "newest data") & pl.col("resolved_at").is_null())
        .is_empty()
    )
    # MOBILITY_FRESHNESS_DAYS: 60 days allowed, the 40-day-old lake is fresh enough
    monkeypatch.setenv("MOBILITY_FRESHNESS_DAYS", "60")
    get_settings.cache_clear()
    try:
        relaxed = newest_data(datetime.now(UTC))
    finally:
        get_settings.cache_clear()
    assert relaxed["threshold"] == 60.0 and relaxed["status"] == "ok"


def test_new_alerts_are_posted_to_the_webhook_and_a_dead_webhook_is_not_fatal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import threading
    from http.server import BaseHTTPRequestHandler, HTTPServer

    received: list[dict[str, object]] = []

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers["Content-Length"])
            received.append(json.loads(self.rfile.read(length)))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    lake = Lake(str(tmp_path / "lake"))
    with pytest.raises(OSError), job_run(lake, "forecast"):
        raise OSError(errno.ENOMEM, "Cannot allocate memory")
    try:
        monkeypatch.setenv("MOBILITY_ALERT_WEBHOOK", f"http://127.0.0.1:{server.server_port}/")
        get_settings.cache_clear()
        summary = monitor_job.run(lake)
    finally:
        server.shutdown()
        server.server_close()
    assert summary.webhook_error is None
    (body,) = received
    alerts = body["alerts"]
    assert isinstance(alerts, list)
    assert any("Cannot allocate memory" in str(a["message"]) for a in alerts)

    # the same failure stays one open alert: nothing new to post; a new one meets a dead hook
    with pytest.raises(OSError), job_run(lake, "aggregate"):
        raise OSError(errno.ENOSPC, "No space left on device")
    dead = monitor_job.run(lake)  # the server is shut down: the same address is dead now
    get_settings.cache_clear()
    assert dead.webhook_error is not None and "alert webhook failed" in dead.webhook_error
    assert len(received) == 1


def test_alerts_resolve_when_ok_or_no_longer_reported_and_stay_open_without_data() -> None:
    from jobs.monitor import alerts

    when = datetime(2027, 1, 5, tzinfo=UTC)
    open_alerts = pl.DataFrame(
        {
            "alert_id": ["a", "b", "c", "d"],
            "raised_at": [when - timedelta(days=1)] * 4,
            "check": ["accuracy", "accuracy", "accuracy", "cost"],
            "subject": ["back to ok", "no longer scored", "too few days", "total"],
            "message": ["m"] * 4,
            "run_id": ["r0"] * 4,
            "resolved_at": pl.Series([None] * 4, dtype=pl.Datetime("us", "UTC")),
        }
    )
    checks = pl.DataFrame(
        {
            "check": ["accuracy", "accuracy", "accuracy", "job health"],
            "subject": ["back to ok", "too few days", "new drift", "job x · latest run"],
            "status": ["ok", "too little data", "alert", "ok"],
            "details": ["", "", "MAE 2,000 over 1,100", ""],
        }
    )
    new, resolved = alerts.reconcile(open_alerts, checks, "r1", when)
    assert new["subject"].to_list() == ["new drift"]
    # "too few days" stays open (no verdict); cost did not run, so its alert stays open too
    assert sorted(resolved["subject"].to_list()) == ["back to ok", "no longer scored"]


def test_a_bad_price_table_is_one_plain_line(tmp_path: Path) -> None:
    from lakehouse.errors import InputError

    partial = tmp_path / "prices.toml"
    partial.write_text("[storage]\n")
    with pytest.raises(InputError, match="missing usd_per_gb_month"):
        cost.Prices.load(partial)
    with pytest.raises(InputError, match="No such file or directory"):
        cost.Prices.load(tmp_path / "none.toml")
