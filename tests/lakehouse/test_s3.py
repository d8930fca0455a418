"""The lake on object storage: a real S3 API (moto's server, tests/conftest.py) on loopback,
credentials and endpoint only from the environment; failing and stalled requests injected by a
proxy in front of it (tests/fault_proxy.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import polars as pl
import pytest
import streamlit as st

from dashboard import data
from jobs import aggregate, generate
from jobs import check as lake_check
from lakehouse.catalog import DAILY_STEPS, FORECASTS, JOB_RUNS, LAKE_LOCK, STEP_SAMPLES
from lakehouse.errors import StorageError
from lakehouse.lock import LakeLock
from lakehouse.query import connect, run_query
from lakehouse.settings import get_settings
from lakehouse.storage import Lake
from synthetic.population import DEFAULT_END_DATE
from tests.conftest import create_bucket, s3_environment, wait_for_http
from tests.lakehouse.frames import edge_rows
from tests.lakehouse.test_lock import race_for_lease
from tests.reliability import QUICK

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_pipeline_and_queries_run_on_s3(s3_lake: Lake) -> None:
    assert s3_lake.uri.startswith("s3://clinic-lake-")
    summary = generate.run(s3_lake, patients=2, seed=3, years=0.2, end_date=DEFAULT_END_DATE)
    first = aggregate.run(s3_lake)
    assert first.mode == "full"
    assert first.samples_in == s3_lake.info(STEP_SAMPLES).rows == summary.samples
    assert aggregate.run(s3_lake).mode == "up-to-date"
    days = s3_lake.read(DAILY_STEPS)
    result = run_query(
        connect(s3_lake), "SELECT count(*) AS n, sum(steps) AS total FROM silver.daily_steps"
    ).table.to_pylist()[0]
    assert result["n"] == days.height > 0
    assert result["total"] == pytest.approx(days["steps"].sum())
    # an analyst's query: in the sandbox's worker process, the lake's storage options passed on
    from lakehouse import sandbox

    analyst = sandbox.run(s3_lake, "SELECT count(*) AS n FROM silver.daily_steps").table
    assert analyst.column("n").to_pylist() == [days.height]


def _mobility(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """``mobility ARGS`` in a child process with this test's environment (lake, credentials and
    endpoint only there) and quick training."""
    return subprocess.run(
        [sys.executable, "-m", "jobs", *args],
        env={**os.environ, **QUICK},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def _forget_dashboard_caches() -> None:
    data.clear_caches()
    st.cache_data.clear()
    st.cache_resource.clear()


def test_whole_pipeline_lake_check_and_dashboard_data_on_s3(s3_lake: Lake) -> None:
    generate.run(s3_lake, patients=3, seed=7, years=1.6, end_date=DEFAULT_END_DATE)
    pipeline = _mobility("pipeline")
    assert pipeline.returncode == 0, pipeline.stderr[-3000:]
    check = _mobility("lake", "check")
    assert check.returncode == 0, check.stdout + check.stderr
    assert "forecasts of 3 patients complete" in check.stdout
    runs = s3_lake.read(JOB_RUNS)
    assert set(runs["job"]) >= {"aggregate", "features", "train", "forecast", "monitor"}
    assert runs["status"].unique().to_list() == ["succeeded"]
    assert s3_lake.read(LAKE_LOCK)["released_at"].is_not_null().all()

    # the dashboard's data module, without Streamlit's runtime, on the same lake
    _forget_dashboard_caches()
    try:
        lake = data.current_lake()
        assert lake.uri == s3_lake.uri
        patients = data.patient_ids(lake)
        assert len(patients) == 3
        daily = s3_lake.read(DAILY_STEPS)
        first, last = data.data_period(lake) or (None, None)
        assert (first, last) == (daily["date"].min(), daily["date"].max())
        mine = daily.filter(pl.col("patient_id") == patients[0])
        assert data.patient_daily_steps(lake, patients[0]).height == mine.height
        forecast = data.patient_forecast(lake, patients[0])
        stored = s3_lake.read(FORECASTS).filter(pl.col("patient_id") == patients[0])
        latest = stored.filter(pl.col("origin_date") == pl.col("origin_date").max())
        assert forecast.height == latest.height > 0
        ebm = latest.filter(pl.col("model").str.starts_with("ebm_")).sort("target_date")
        assert ebm.height, "an EBM forecast to explain"
        row = ebm.row(0, named=True)
        day = row["target_date"]
        explained = data.patient_explanation(
            lake, patients[0], row["model"], row["origin_date"], day, day
        )
        assert explained["contribution"].sum() == pytest.approx(row["yhat"], abs=1e-6)
        counted = data.run_analyst_query(lake, "SELECT count(*) AS n FROM gold.forecasts")
        assert counted.table.to_pylist() == [{"n": s3_lake.info(FORECASTS).rows}]
        assert data.recent_job_runs(lake).height == runs.height
        window = data.CohortFilter(first_day=last - timedelta(days=27), last_day=last)
        assert data.cohort_kpis(lake, window).patients == 3
    finally:
        _forget_dashboard_caches()


def test_lease_on_s3_has_one_winner_and_frees_when_released(s3_lake: Lake) -> None:
    # S3 has no rename: Delta's commits (and so the lease) rely on conditional puts
    for _ in range(2):
        won = race_for_lease(s3_lake, 3)
        assert len(won) == 1
        won[0].release()
    first = LakeLock(s3_lake, purpose="pipeline")
    first.acquire(wait_seconds=0)
    try:
        holder = LakeLock(s3_lake, purpose="other").try_acquire()
        assert holder is not None and holder.holder == first.holder
    finally:
        first.release()
    second = LakeLock(s3_lake, purpose="other")
    assert second.try_acquire() is None
    second.release()


# --- failing and stalled requests ----------------------------------------------------------------


class FaultProxy:
    """Controls the fault proxy in front of the S3 server (tests/fault_proxy.py)."""

    def __init__(self, url: str) -> None:
        self.url = url

    def inject(self, *rules: dict[str, Any]) -> None:
        """Replace the rules (see tests/fault_proxy.py)."""
        request = urllib.request.Request(
            f"{self.url}/__faults__", data=json.dumps(list(rules)).encode(), method="PUT"
        )
        urllib.request.urlopen(request, timeout=10).close()

    def injected(self) -> list[int]:
        """How many requests each rule has hit so far."""
        with urllib.request.urlopen(f"{self.url}/__faults__", timeout=10) as answer:
            state = json.loads(answer.read())
        return [rule["injected"] for rule in state["rules"]]


@pytest.fixture(scope="module")
def fault_proxy(s3_endpoint: str) -> Iterator[FaultProxy]:
    proxy = subprocess.Popen(
        [sys.executable, "-m", "tests.fault_proxy", s3_endpoint],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        cwd=ROOT,
        text=True,
    )
    try:
        assert proxy.stdout is not None
        url = f"http://127.0.0.1:{proxy.stdout.readline().strip()}"
        wait_for_http(f"{url}/__faults__", proxy, "fault proxy")
        yield FaultProxy(url)
    finally:
        proxy.terminate()
        proxy.wait(timeout=10)
        if proxy.stdout is not None:
            proxy.stdout.close()


@pytest.fixture
def flaky_lake(
    fault_proxy: FaultProxy, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[Lake, FaultProxy]]:
    """A lake on S3 reached through the fault proxy, with short request timeouts (as an operator
    would set them with MOBILITY_STORAGE_*)."""
    bucket = f"flaky-{time.monotonic_ns()}"
    create_bucket(fault_proxy.url, bucket)
    environment = {
        **s3_environment(fault_proxy.url, f"s3://{bucket}/prod"),
        "MOBILITY_STORAGE_TIMEOUT": "2",
        "MOBILITY_STORAGE_RETRIES": "3",
        "MOBILITY_STORAGE_RETRY_SECONDS": "20",
    }
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    settings = get_settings()
    fault_proxy.inject()
    yield Lake(settings.lake_uri, storage_options=settings.storage_options()), fault_proxy
    fault_proxy.inject()
    get_settings.cache_clear()


COMMIT = {"method": "PUT", "path": "/_delta_log/0"}
DATA_FILE = {"method": "PUT", "path": ".parquet"}


def _rows(batch: int) -> pl.DataFrame:
    return edge_rows(STEP_SAMPLES, (0, 1)).with_columns(
        pl.Series("patient_id", [f"P{batch}-a", f"P{batch}-b"])
    )


@pytest.mark.parametrize(
    "fault",
    [
        pytest.param({**COMMIT, "fault": "500", "times": 2}, id="commit-fails-twice"),
        pytest.param({**COMMIT, "fault": "500-after", "times": 1}, id="commit-lands-answer-lost"),
        pytest.param({**COMMIT, "fault": "stall", "times": 1, "seconds": 4}, id="commit-stalls"),
        pytest.param({**DATA_FILE, "fault": "reset", "times": 1}, id="upload-reset"),
        pytest.param({**DATA_FILE, "fault": "stall", "times": 1, "seconds": 4}, id="upload-stalls"),
    ],
)
def test_a_failing_or_stalled_request_is_retried_and_commits_once(
    flaky_lake: tuple[Lake, FaultProxy], fault: dict[str, Any]
) -> None:
    lake, proxy = flaky_lake
    lake.append(STEP_SAMPLES, _rows(0))
    proxy.inject(fault)
    lake.append(STEP_SAMPLES, _rows(1))
    assert proxy.injected() == [fault["times"]]
    stored = lake.read(STEP_SAMPLES)
    assert sorted(stored["patient_id"]) == ["P0-a", "P0-b", "P1-a", "P1-b"]


def test_storage_down_gives_one_line_and_leaves_the_table_as_it_was(
    flaky_lake: tuple[Lake, FaultProxy],
) -> None:
    lake, proxy = flaky_lake
    lake.append(STEP_SAMPLES, _rows(0))
    version = lake.version(STEP_SAMPLES)
    proxy.inject({"method": "PUT", "fault": "500", "times": 10_000})
    started = time.monotonic()
    with pytest.raises(StorageError) as failure:
        lake.replace(STEP_SAMPLES, _rows(2), predicate=None)
    assert time.monotonic() - started < 60
    message = str(failure.value)
    assert "\n" not in message and "\x1b" not in message
    assert message.startswith("replace in bronze/step_samples:") and "500" in message
    proxy.inject()
    assert lake.version(STEP_SAMPLES) == version
    assert sorted(lake.read(STEP_SAMPLES)["patient_id"]) == ["P0-a", "P0-b"]


def test_cli_on_storage_down_prints_one_line_then_recovers(
    flaky_lake: tuple[Lake, FaultProxy],
) -> None:
    lake, proxy = flaky_lake
    generate.run(lake, patients=2, seed=3, years=0.2, end_date=DEFAULT_END_DATE)
    proxy.inject({"method": "PUT", "fault": "500", "times": 10_000})
    failed = _mobility("aggregate", timeout=300)
    assert failed.returncode == 2
    errors = [line for line in failed.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in failed.stderr, failed.stderr[-2000:]
    proxy.inject()
    assert not lake.exists(DAILY_STEPS)
    done = _mobility("aggregate", timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    problems, days = lake_check.check_daily_totals(lake, lake_check.sample_patients(lake, 5, 0))
    assert problems == [] and days > 0
