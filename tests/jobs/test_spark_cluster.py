"""The Spark engine on a real cluster against an object-store lake.

A standalone master and two workers on loopback (tests/spark_cluster.py), each worker in its own
process group and folder, with nothing shared with the driver but moto's S3 server: the workers'
environment holds its endpoint and credentials and nothing else of ours. The lake lives in S3
only. ``mobility --lake s3://... --engine spark pipeline`` on that cluster must give the local
engine's tables; a worker killed in the middle of a stage must leave the stage completed (its
tasks rerun on the other worker) or failed with nothing half-committed.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import boto3
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from jobs import aggregate, generate
from jobs import forecast as forecast_job
from jobs.engine.spark import SparkEngine, start_spark
from jobs.features import run as features_job
from lakehouse.catalog import (
    DAILY_STEPS,
    EXPLANATIONS,
    FEATURES,
    FORECASTS,
    JOB_RUNS,
    OUTLOOK,
    TableSpec,
)
from lakehouse.settings import get_settings
from lakehouse.storage import Lake
from synthetic.population import DEFAULT_END_DATE
from tests.conftest import create_bucket, s3_environment
from tests.jobs.test_spark_engine import _forecasts_match
from tests.reliability import QUICK
from tests.spark_cluster import Cluster, standalone_cluster

PATIENTS = 12
SEED = 5

pytestmark = pytest.mark.skipif(
    shutil.which("java") is None, reason="Java 17 is not installed: the Spark engine needs it"
)


def _table(lake: Lake, table: TableSpec) -> pl.DataFrame:
    return lake.read(table).sort(list(table.keys))


def _credentials(endpoint: str) -> dict[str, str]:
    return {k: v for k, v in s3_environment(endpoint, "").items() if k.startswith("AWS_")}


@pytest.fixture(scope="module")
def cluster(s3_endpoint: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """Two workers of one core each; they know the object store and nothing else of ours."""
    with standalone_cluster(
        tmp_path_factory.mktemp("cluster"), workers=2, worker_env=_credentials(s3_endpoint)
    ) as running:
        yield running


@pytest.fixture
def s3_env(s3_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A new bucket; the driver's environment set for it. Returns the lake's URI."""
    bucket = f"cluster-lake-{uuid.uuid4().hex[:12]}"
    uri = f"s3://{bucket}/prod"
    for name, value in s3_environment(s3_endpoint, uri).items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("PYSPARK_PYTHON", sys.executable)
    create_bucket(s3_endpoint, bucket)
    get_settings.cache_clear()
    yield uri
    get_settings.cache_clear()


def _lake(uri: str) -> Lake:
    return Lake(uri, storage_options=get_settings().storage_options())


def _reference(folder: Path) -> Lake:
    """The same population through the local engine, in a local folder."""
    lake = Lake(str(folder / "reference"))
    generate.run(lake, patients=PATIENTS, seed=SEED, years=2.0, end_date=DEFAULT_END_DATE)
    aggregate.run(lake)
    features_job.run(lake)
    return lake


def test_the_pipeline_on_a_cluster_against_s3_equals_the_local_engine(
    cluster: Cluster, s3_env: str, tmp_path: Path
) -> None:
    lake = _lake(s3_env)
    generate.run(lake, patients=PATIENTS, seed=SEED, years=2.0, end_date=DEFAULT_END_DATE)
    done = subprocess.run(
        [sys.executable, "-m", "jobs", "--lake", s3_env, "--engine", "spark", "pipeline"],
        env={**os.environ, **QUICK, "SPARK_MASTER": cluster.master_url},
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    reference = _reference(tmp_path)
    for table in (DAILY_STEPS, FEATURES):
        assert_frame_equal(_table(lake, table), _table(reference, table))
    runs = lake.read(JOB_RUNS).filter(pl.col("job").is_in(["aggregate", "features", "forecast"]))
    assert set(runs["engine"]) == {"spark"} and set(runs["status"]) == {"succeeded"}
    # the forecasts the cluster made equal the local engine's from the same registry
    on_cluster = {t.path: _table(lake, t) for t in (FORECASTS, OUTLOOK, EXPLANATIONS)}
    forecast_job.run(lake, prophet_workers=1)
    local = {t.path: _table(lake, t) for t in (FORECASTS, OUTLOOK, EXPLANATIONS)}
    _forecasts_match(local, on_cluster)
    # nothing staged is left in the bucket
    assert not _staged_keys(s3_env)


def _staged_keys(uri: str) -> list[str]:
    bucket, _, prefix = uri.removeprefix("s3://").partition("/")
    client = boto3.client(
        "s3",
        endpoint_url=os.environ["AWS_ENDPOINT_URL"],
        region_name="us-east-1",
        aws_access_key_id=os.environ["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=os.environ["AWS_SECRET_ACCESS_KEY"],
    )
    listed = client.list_objects_v2(Bucket=bucket, Prefix=f"{prefix}/_staging/")
    return [item["Key"] for item in listed.get("Contents", [])]


@pytest.fixture
def driver(cluster: Cluster, s3_env: str) -> Iterator[SparkEngine]:
    engine = start_spark(cluster.master_url)
    yield engine
    engine.stop()


def test_a_worker_killed_mid_stage_leaves_nothing_half_committed(
    cluster: Cluster, s3_env: str, driver: SparkEngine, tmp_path: Path
) -> None:
    """SIGKILL one worker (and its executor) once the first task has staged its result: Spark
    reruns the lost tasks on the other worker and the stage completes with the local engine's
    rows; had it failed, no daily row would be committed."""
    lake = _lake(s3_env)
    generate.run(lake, patients=PATIENTS, seed=SEED, years=2.0, end_date=DEFAULT_END_DATE)
    victim = next(w for w in cluster.workers if w.process.poll() is None)
    killed = threading.Event()

    def kill_when_staged() -> None:
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline and not killed.is_set():
            if _staged_keys(s3_env):
                victim.kill()
                killed.set()
                return
            time.sleep(0.05)

    watcher = threading.Thread(target=kill_when_staged, daemon=True)
    watcher.start()
    try:
        summary = aggregate.run(lake, batch_samples=20_000, engine=driver)
        completed = True
    except Exception:  # the stage may also fail cleanly
        completed = False
    killed.set()
    watcher.join(timeout=10)
    assert victim.process.poll() is not None, "the worker was never killed mid-stage"
    cluster.add_worker()  # two workers again for the module's other tests
    runs = lake.read(JOB_RUNS).filter(pl.col("job") == "aggregate")
    if completed:
        assert summary.batches > 2
        reference = _reference(tmp_path)
        assert_frame_equal(_table(lake, DAILY_STEPS), _table(reference, DAILY_STEPS))
        assert runs["status"].to_list() == ["succeeded"]
    else:
        assert not lake.exists(DAILY_STEPS) or lake.read(DAILY_STEPS).is_empty()
        assert runs["status"].to_list() == ["failed"]
    assert not _staged_keys(s3_env)
