"""The Spark engine against the local engine on one small synthetic population.

Spark runs on ``local[2]`` (as in CI), one session for the module. daily_steps and features must be
identical, row for row and bit for bit, for a full run and an incremental one. Forecasts must be
identical too, except Prophet's interval bounds: Prophet draws them from 200 unseeded random
samples, so two runs of the *same* engine already differ (up to 0.29 of the interval's width
measured here). Prophet's bounds must lie within half the local interval's width of the local
bounds; its point forecast and every other model's rows must be identical.
"""

from __future__ import annotations

import shutil
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import psutil
import pytest
from polars.testing import assert_frame_equal

from jobs import aggregate, generate
from jobs import forecast as forecast_job
from jobs import train as train_job
from jobs.engine.spark import SparkEngine, SparkUnavailableError, TaskFailedError, start_spark
from jobs.features import run as features_job
from lakehouse.catalog import (
    DAILY_STEPS,
    EXPLANATIONS,
    FEATURES,
    FORECASTS,
    JOB_RUNS,
    OUTLOOK,
    STEP_SAMPLES,
    TableSpec,
)
from lakehouse.storage import Lake
from synthetic.population import DEFAULT_END_DATE
from tests.test_cli import assert_one_line_error, mobility

NOW = datetime(2027, 1, 1, tzinfo=UTC)
PATIENTS = 8
SEED = 3
# Prophet's interval bounds may differ by this share of the local interval's width.
PROPHET_BOUND_TOLERANCE = 0.5

pytestmark = pytest.mark.skipif(
    shutil.which("java") is None, reason="Java 17 is not installed: the Spark engine needs it"
)


@pytest.fixture(scope="module")
def spark() -> Iterator[SparkEngine]:
    """One Spark session for the module; when it stops, nothing of it is left: no JVM, no
    socket, no thread."""
    process = psutil.Process()
    sockets = {c.laddr for c in process.net_connections(kind="inet")}
    engine = start_spark("local[2]")
    yield engine
    engine.stop()
    # the JVM, and with it Spark's Python workers, are gone
    assert not [c for c in process.children(recursive=True) if c.name() == "java"]
    assert {c.laddr for c in process.net_connections(kind="inet")} <= sockets
    assert not _spark_threads()


def _spark_threads() -> list[threading.Thread]:
    """Live threads of pyspark or py4j (the gateway's clients, callback server, finalizer)."""

    def module(thread: threading.Thread) -> str:
        target = getattr(thread, "_target", None)
        return str(getattr(target, "__module__", None) or type(thread).__module__)

    return [t for t in threading.enumerate() if module(t).startswith(("py4j", "pyspark"))]


def _population(folder: Path) -> Lake:
    lake = Lake(str(folder / "lake"))
    generate.run(lake, patients=PATIENTS, seed=SEED, years=2.0, end_date=DEFAULT_END_DATE)
    return lake


@pytest.fixture(scope="module")
def lakes(tmp_path_factory: pytest.TempPathFactory, spark: SparkEngine) -> tuple[Lake, Lake]:
    """The same population aggregated and featurized by each engine: (local, spark). Spark gets
    small groups and commits, so several groups and commits are exercised."""
    local = _population(tmp_path_factory.mktemp("local"))
    on_spark = _population(tmp_path_factory.mktemp("spark"))
    aggregate.run(local)
    features_job.run(local)
    aggregate.run(on_spark, batch_samples=60_000, engine=spark)
    features_job.run(on_spark, batch_days=700, commit_days=2_000, engine=spark)
    return local, on_spark


def _table(lake: Lake, table: TableSpec) -> pl.DataFrame:
    return lake.read(table).sort(list(table.keys))


def _new_samples(patients: list[str], first_day: datetime, days: int) -> pl.DataFrame:
    """Late-arriving samples: a watch's walks for a few days."""
    rng = np.random.default_rng(11)
    rows = []
    for patient in patients:
        for day in range(days):
            for _ in range(6):
                start = first_day + timedelta(days=day, minutes=int(rng.integers(0, 24 * 60)))
                rows.append(
                    {
                        "patient_id": patient,
                        "start_ts": start,
                        "end_ts": start + timedelta(minutes=int(rng.integers(1, 90))),
                        "utc_offset_minutes": 60,
                        "steps": float(rng.integers(0, 2_000)),
                        "source": "late watch",
                    }
                )
    return pl.DataFrame(rows).with_columns(
        pl.col("start_ts").cast(pl.Datetime("us", "UTC")),
        pl.col("end_ts").cast(pl.Datetime("us", "UTC")),
        pl.col("utc_offset_minutes").cast(pl.Int16),
        month=pl.col("start_ts").dt.strftime("%Y-%m"),
    )


def test_daily_steps_and_features_are_identical_on_both_engines(
    lakes: tuple[Lake, Lake],
) -> None:
    local, on_spark = lakes
    for table in (DAILY_STEPS, FEATURES):
        assert_frame_equal(_table(on_spark, table), _table(local, table))
    assert _table(on_spark, DAILY_STEPS)["patient_id"].n_unique() == PATIENTS
    runs = on_spark.read(JOB_RUNS).filter(pl.col("job").is_in(["aggregate", "features"]))
    assert set(runs["engine"]) == {"spark"}
    assert set(runs["status"]) == {"succeeded"}


def test_an_incremental_run_is_identical_on_both_engines(
    lakes: tuple[Lake, Lake], spark: SparkEngine
) -> None:
    """Late samples for one known patient and one new one: only their days are recomputed, on
    Spark as locally, and the tables stay identical."""
    local, on_spark = lakes
    late = _new_samples(["SYN3-000002", "SYN3-000100"], datetime(2026, 6, 1, tzinfo=UTC), 5)
    for lake in (local, on_spark):
        lake.append(STEP_SAMPLES, late)
    done_local = aggregate.run(local)
    done_spark = aggregate.run(on_spark, batch_samples=60_000, engine=spark)
    assert done_spark.mode == done_local.mode == "incremental"
    assert done_spark.samples_in == done_local.samples_in
    features_local = features_job.run(local)
    features_spark = features_job.run(on_spark, batch_days=700, engine=spark)
    assert features_spark.mode == features_local.mode == "incremental"
    assert features_spark.rows_out == features_local.rows_out
    for table in (DAILY_STEPS, FEATURES):
        assert_frame_equal(_table(on_spark, table), _table(local, table))
    # nothing left to do, on either engine
    assert aggregate.run(on_spark, engine=spark).mode == "up-to-date"
    assert features_job.run(on_spark, engine=spark).mode == "up-to-date"


def _forecasts_match(local: dict[str, pl.DataFrame], on_spark: dict[str, pl.DataFrame]) -> None:
    """Identical rows, except Prophet's bounds (within the tolerance of the module docstring)."""
    for path in (OUTLOOK.path, EXPLANATIONS.path):
        assert_frame_equal(on_spark[path], local[path])
    prophet = pl.col("model") == "prophet"
    local_rows, spark_rows = local[FORECASTS.path], on_spark[FORECASTS.path]
    assert_frame_equal(spark_rows.filter(~prophet), local_rows.filter(~prophet))
    bounds = ["yhat_lower", "yhat_upper"]
    assert_frame_equal(
        spark_rows.filter(prophet).drop(bounds), local_rows.filter(prophet).drop(bounds)
    )
    keys = list(FORECASTS.keys)
    paired = local_rows.filter(prophet).join(spark_rows, on=keys, suffix="_spark")
    width = paired["yhat_upper"] - paired["yhat_lower"]
    for bound in bounds:
        gap = (paired[bound] - paired[f"{bound}_spark"]).abs()
        assert (gap <= PROPHET_BOUND_TOLERANCE * width).all(), bound


def _forecast_tables(lake: Lake) -> dict[str, pl.DataFrame]:
    return {t.path: _table(lake, t) for t in (FORECASTS, OUTLOOK, EXPLANATIONS)}


def test_forecasts_match_on_both_engines_before_and_after_training(
    lakes: tuple[Lake, Lake], spark: SparkEngine
) -> None:
    """Before any training every model runs (Prophet too); after it, the registered EBMs with
    their explanations. Each engine forecasts the same origins, so the second run replaces the
    first one's rows."""
    _, lake = lakes
    batches = {"batch_patients": 3}  # three batches: cohorts of the cluster-level forecast
    forecast_job.run(lake, prophet_workers=1, **batches)
    local = _forecast_tables(lake)
    assert set(local[FORECASTS.path]["model"]) >= {"prophet", "seasonal_naive_7d"}
    forecast_job.run(lake, engine=spark, **batches)
    _forecasts_match(local, _forecast_tables(lake))

    train_job.run(lake, force=True, patients_per_cluster=4, origins=1, prophet_workers=1, now=NOW)
    forecast_job.run(lake, prophet_workers=1, **batches)
    local = _forecast_tables(lake)
    assert local[EXPLANATIONS.path].height
    forecast_job.run(lake, engine=spark, **batches)
    _forecasts_match(local, _forecast_tables(lake))
    runs = lake.read(JOB_RUNS).filter(pl.col("job") == "forecast").sort("started_at")
    engines = runs["engine"].to_list()
    assert engines == ["local", "spark", "local", "spark"]


def test_the_command_line_runs_a_stage_on_spark(tmp_path: Path) -> None:
    """``--engine spark`` with ``SPARK_MASTER``: the command starts its own session, stops it,
    and its rows equal the local engine's."""
    lake = _population(tmp_path)
    done = mobility(
        "--lake",
        lake.uri,
        "--engine",
        "spark",
        "aggregate",
        cwd=tmp_path,
        env={"SPARK_MASTER": "local[2]"},
    )
    assert done.returncode == 0, done.stderr
    reference = Lake(str(tmp_path / "reference" / "lake"))
    generate.run(reference, patients=PATIENTS, seed=SEED, years=2.0, end_date=DEFAULT_END_DATE)
    aggregate.run(reference)
    assert_frame_equal(_table(lake, DAILY_STEPS), _table(reference, DAILY_STEPS))
    assert lake.read(JOB_RUNS).filter(pl.col("job") == "aggregate")["engine"].to_list() == ["spark"]


def test_without_java_the_spark_engine_is_one_plain_line(tmp_path: Path) -> None:
    done = mobility(
        "--lake",
        str(tmp_path / "lake"),
        "--engine",
        "spark",
        "aggregate",
        cwd=tmp_path,
        env={"PATH": str(tmp_path)},
    )
    assert_one_line_error(done, "Java 17")


def test_without_pyspark_the_spark_engine_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "pyspark.sql", None)
    with pytest.raises(SparkUnavailableError, match=r"pip install -e '\.\[spark\]'"):
        start_spark("local[2]")


def test_staging_is_removed_after_every_run(lakes: tuple[Lake, Lake]) -> None:
    """Tasks stage their results in the lake; after the runs above nothing of it is left."""
    _, on_spark = lakes
    assert not (Path(on_spark.uri) / "_staging").exists()


def test_a_failing_task_fails_the_stage_cleanly(
    tmp_path: Path, spark: SparkEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A task that raises (after Spark's retries) fails the job in one error: no daily rows are
    committed, the run is recorded as failed, the staging area is gone."""
    lake = _population(tmp_path)
    lake.append(STEP_SAMPLES, _new_samples(["SYN3-000001"], datetime(2026, 6, 1, tzinfo=UTC), 1))
    # a data file of the version gone from storage once the tasks are planned: every attempt
    # of its task fails
    vanished = lake.file_stats(STEP_SAMPLES)["path"][-1]
    planned = aggregate._scope_tasks

    def plan_then_lose_a_file(*args: Any, **kwargs: Any) -> Any:
        tasks = planned(*args, **kwargs)
        (Path(lake.uri) / STEP_SAMPLES.path / vanished).unlink(missing_ok=True)
        return tasks

    monkeypatch.setattr(aggregate, "_scope_tasks", plan_then_lose_a_file)
    with pytest.raises(TaskFailedError) as failed:
        aggregate.run(lake, batch_samples=60_000, engine=spark)
    # one line: the task's own error, not Spark's Java stack
    message = str(failed.value)
    assert "\n" not in message and vanished.rsplit("/", 1)[-1] in message, message
    assert not lake.exists(DAILY_STEPS) or lake.read(DAILY_STEPS).is_empty()
    runs = lake.read(JOB_RUNS).filter(pl.col("job") == "aggregate")
    assert runs["status"].to_list() == ["failed"]
    assert not (Path(lake.uri) / "_staging").exists()
