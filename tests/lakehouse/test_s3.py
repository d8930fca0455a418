"""The lake on object storage: a real S3 API (moto's server) on loopback, credentials and
endpoint only from the environment."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator

import boto3
import pytest

from jobs import aggregate, generate
from lakehouse.catalog import DAILY_STEPS, STEP_SAMPLES
from lakehouse.query import connect, run_query
from lakehouse.settings import get_settings
from lakehouse.storage import Lake


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    # A separate process: an in-process server thread would wait for the GIL while delta-rs
    # blocks on its requests.
    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(endpoint, timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise RuntimeError("moto server did not start") from None
                time.sleep(0.1)
        yield endpoint
    finally:
        server.terminate()
        server.wait(timeout=10)


@pytest.fixture
def s3_lake(s3_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Lake]:
    environment = {
        "AWS_ACCESS_KEY_ID": "test-key",
        "AWS_SECRET_ACCESS_KEY": "test-secret",
        "AWS_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": s3_endpoint,
        "AWS_ALLOW_HTTP": "true",
        "LAKE_URI": "s3://clinic-lake/prod",
    }
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1").create_bucket(
        Bucket="clinic-lake"
    )
    get_settings.cache_clear()
    settings = get_settings()
    yield Lake(settings.lake_uri, storage_options=settings.storage_options())
    get_settings.cache_clear()


def test_pipeline_and_queries_run_on_s3(s3_lake: Lake) -> None:
    assert s3_lake.uri == "s3://clinic-lake/prod"
    summary = generate.run(s3_lake, patients=2, seed=3, years=0.2)
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
