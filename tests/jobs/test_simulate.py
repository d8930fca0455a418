"""A simulated population living on day by day through the landing folder, the pipeline and the
monitoring: alerts fire when, and only when, something happened."""

from __future__ import annotations

import os
from datetime import date, timedelta
from pathlib import Path

import polars as pl
import pytest

from jobs import simulate
from lakehouse.catalog import (
    ALERTS,
    DAILY_STEPS,
    JOB_RUNS,
    LAKE_LOCK,
    MONITOR_CHECKS,
    QUARANTINE,
    STEP_SAMPLES,
)
from lakehouse.errors import InputError
from lakehouse.lock import LakeLock, Lease
from lakehouse.storage import Lake
from tests.test_cli import mobility

START = date(2026, 10, 31)
TRAINING = {"patients_per_cluster": 40, "origins": 2, "prophet_workers": 1}


@pytest.fixture(scope="module")
def started(tmp_path_factory: pytest.TempPathFactory) -> Lake:
    folder = tmp_path_factory.mktemp("simulate")
    lake = Lake(str(folder / "lake"))
    simulate.start(
        lake,
        patients=30,
        seed=8,
        landing=folder / "landing",
        years=1.5,
        start_day=START,
        days_ahead=40,
        training=TRAINING,
    )
    return lake


def _open_alerts(lake: Lake) -> pl.DataFrame:
    if not lake.exists(ALERTS):
        return pl.DataFrame(schema={"check": pl.String, "subject": pl.String})
    return lake.read(ALERTS).filter(pl.col("resolved_at").is_null())


def _last_checks(lake: Lake) -> pl.DataFrame:
    checks = lake.read(MONITOR_CHECKS)
    return checks.filter(pl.col("checked_at") == pl.col("checked_at").max())


def test_the_start_day_is_ingested_through_the_landing_folder(started: Lake) -> None:
    lake = started
    state = simulate.load(lake)
    assert state is not None and state.today == START and state.last_day == START + timedelta(40)
    # nothing after the start day reached the lake
    assert lake.scan(DAILY_STEPS).select(pl.col("date").max()).collect().item() == START
    landing = Path(state.landing)
    waiting = [p for p in landing.rglob("*") if p.is_file() and "processed" not in p.parts]
    assert waiting == []  # every file went in and was moved to processed/
    ingests = lake.read(JOB_RUNS).filter(pl.col("job") == "ingest")
    assert ingests.height == 30 + 4  # an export per patient and the four clinical files
    assert set(ingests["status"]) == {"succeeded"}
    with pytest.raises(InputError, match="already has a simulation"):
        simulate.start(lake, patients=30, seed=8, landing=landing, start_day=START)


def test_calm_days_raise_no_alert_then_injections_do(started: Lake) -> None:
    lake = started
    # five ordinary days: data arrives, nothing alerts, no retraining
    calm = simulate.advance(lake, days=5)
    assert [r.day for r in calm] == [START + timedelta(days=d) for d in range(1, 6)]
    assert all(r.ingested == 1 and r.failed_files == 0 for r in calm)
    assert all(r.trained == "not due" for r in calm)
    assert [r.alerts_raised for r in calm] == [()] * 5, [r.alerts_raised for r in calm]
    assert _open_alerts(lake).is_empty()
    assert lake.scan(DAILY_STEPS).select(pl.col("date").max()).collect().item() == calm[-1].day
    checks = _last_checks(lake)
    assert {"accuracy", "feature drift", "prediction drift", "data quality"} <= set(checks["check"])

    # a broken exporter: a burst of bad rows and a new column, reported the same day
    broken = simulate.advance(lake, days=1, bad_rows=400, extra_column="battery_pct")[0]
    raised = set(broken.alerts_raised)
    assert "data quality: quarantine of generic files" in raised
    assert "data quality: schema of generic files" in raised
    assert raised <= {
        "data quality: quarantine of generic files",
        "data quality: schema of generic files",
    }
    day_file = pl.col("source_file").str.contains(broken.day.isoformat())
    reasons = lake.read(QUARANTINE).filter(day_file)["reason"].value_counts()
    counts = dict(reasons.iter_rows())
    # half of the broken rows each (plus the few corrupt samples devices send anyway)
    assert counts.get("negative steps", 0) >= 200
    assert counts.get("unreadable timestamp", 0) == 200
    # the next day is clean again (the new column stays): both resolve
    mended = simulate.advance(lake, days=1)[0]
    assert set(mended.alerts_resolved) >= raised
    assert _open_alerts(lake).is_empty()

    # mobility falls by half: the champion's accuracy alert, drift, then retraining
    shifted = simulate.advance(lake, days=1, shift=simulate.Shift(date.min, 0.5))
    shifted += simulate.advance(lake, days=7)
    raised_checks = {a.split(":")[0] for r in shifted for a in r.alerts_raised}
    assert "accuracy" in raised_checks, [r.describe() for r in shifted]
    assert raised_checks & {"feature drift", "prediction drift"}, [r.describe() for r in shifted]
    first_alert = next(
        i for i, r in enumerate(shifted) if any(a.startswith("accuracy") for a in r.alerts_raised)
    )
    assert any(r.trained == "trained" for r in shifted[first_alert + 1 :])
    state = simulate.load(lake)
    assert state is not None and state.shifts[0].from_day == mended.day + timedelta(days=1)


def test_the_monitoring_page_shows_the_simulated_days(
    started: Lake, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After the days above: drift, data quality, job and cost figures on the page, as an ops
    engineer opens it (the local demo's sign-in-free mode, admin role)."""
    import streamlit as st
    from streamlit.testing.v1 import AppTest

    from dashboard import data
    from lakehouse.settings import get_settings

    monkeypatch.setenv("LAKE_URI", started.uri)
    monkeypatch.setenv("MOBILITY_DEMO", "1")
    get_settings.cache_clear()
    data.clear_caches()
    st.cache_data.clear()
    st.cache_resource.clear()
    app = AppTest.from_file(
        str(Path(__file__).parents[2] / "dashboard" / "app.py"), default_timeout=120
    )
    app.run()
    app.switch_page("views/monitoring.py").run()
    assert not app.exception and not app.error, [e.value for e in [*app.exception, *app.error]]
    metrics = {m.label: m.value for m in app.metric}
    assert int(metrics["Open alerts"]) == _open_alerts(started).height
    tables = [frame.value for frame in app.dataframe]
    by_check = {check: t for t in tables if "check" in t.columns for check in set(t["check"])}
    assert {"accuracy", "feature drift", "data quality", "job health", "cost"} <= set(by_check)
    drift = by_check["feature drift"]
    assert set(drift["check"]) == {"feature drift", "prediction drift"}
    assert set(drift["metric"]) == {"K-S p-value"}  # 30 patients
    runs = next(t for t in tables if "run_id" in t.columns)
    assert {"ingest", "aggregate", "features", "train", "forecast", "monitor"} <= set(runs["job"])
    assert (runs["mb_read"] > 0).all() and (runs["cpu_seconds"] > 0).all()
    assert metrics["Measured, per month"].startswith("$")
    quarantine = next(t for t in tables if "reason" in t.columns)
    assert "unreadable timestamp" in set(quarantine["reason"])
    get_settings.cache_clear()


def test_bad_requests_are_one_line_errors(started: Lake, tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no simulation"):
        simulate.advance(Lake(str(tmp_path / "empty")), days=1)
    with pytest.raises(InputError, match="day\\(s\\) left"):
        simulate.advance(started, days=400)
    with pytest.raises(InputError, match="--shift must be above 0"):
        simulate.advance(started, days=1, shift=simulate.Shift(date.min, 0.0))


def test_advance_waits_for_another_holder_of_the_lease_then_releases_its_day(
    started: Lake,
) -> None:
    lake = started
    before = simulate.load(lake)
    assert before is not None
    scheduled = LakeLock(lake, purpose="pipeline")  # a scheduled pipeline, as another process
    scheduled.acquire(wait_seconds=0)
    waited_for: list[Lease] = []

    def waiting(holder: Lease) -> None:
        waited_for.append(holder)
        assert simulate.load(lake) == before  # nothing written while waiting
        scheduled.release()  # the pipeline ends

    reports = simulate.advance(lake, days=1, on_wait=waiting)
    assert [lease.holder for lease in waited_for] == [scheduled.holder]
    assert [r.day for r in reports] == [before.today + timedelta(days=1)]
    # the simulation held the lease for its whole day and gave it back; its stages re-entered it
    _, lease = scheduled.current()
    assert lease is not None and lease.purpose == "simulate advance"
    assert lease.released_at is not None
    purposes = {commit.get("purpose") for commit in lake.history(LAKE_LOCK)} - {None}
    assert purposes == {"simulate start", "simulate advance", "pipeline"}


def test_the_command_says_who_holds_the_lease_and_writes_nothing_after_the_wait(
    tmp_path: Path,
) -> None:
    lake = Lake(str(tmp_path / "lake"))
    landing = tmp_path / "landing"
    state = simulate.Simulation(
        seed=1,
        patients=2,
        first_day=START - timedelta(days=200),
        start_day=START,
        today=START,
        last_day=START + timedelta(days=10),
        landing=str(landing),
    )
    lake.write_object(simulate.STATE_PATH, state.to_json())
    other = LakeLock(lake, purpose="lake optimize")
    other.acquire(wait_seconds=0)
    try:
        done = mobility(
            "--lake",
            lake.uri,
            "simulate",
            "advance",
            cwd=tmp_path,
            env={"MOBILITY_LOCK_WAIT": "1"},
        )
    finally:
        other.release()
    assert done.returncode == 2, done.stderr
    waiting, error = done.stderr.splitlines()
    assert waiting.startswith(
        f"waiting for the lake lock, held by lake optimize (pid {os.getpid()}"
    )
    assert error.startswith("error: the lake ") and "locked by lake optimize" in error
    assert "waited 1 s (MOBILITY_LOCK_WAIT)" in error
    assert done.stdout == ""
    assert simulate.load(lake) == state
    assert not landing.exists()
    assert not lake.exists(STEP_SAMPLES) and not lake.exists(JOB_RUNS)
