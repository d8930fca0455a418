"""The daily pipeline's one definition (jobs/pipeline.py): its stages in order, each recording its
run, under the caller's lease, which the stages re-enter."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import polars as pl
import pytest

from jobs import generate, pipeline, train
from jobs.pipeline import STAGES, Stage, StageSummary
from lakehouse import Lake, StorageError
from lakehouse.catalog import JOB_RUNS, LAKE_LOCK
from lakehouse.lock import lease
from lakehouse.settings import get_settings
from synthetic.population import DEFAULT_END_DATE

# Prophet fitted in this process: no worker processes to start
IN_PROCESS = pipeline.Options(training=pipeline.Training(prophet_workers=1), forecast_workers=1)


class Recorder:
    """A watcher that notes each stage as it starts and ends."""

    def __init__(self) -> None:
        self.events: list[str] = []

    @contextmanager
    def running(self, stage: Stage) -> Iterator[None]:
        self.events.append(f"start {stage}")
        yield None

    def done(self, stage: Stage, summary: StageSummary) -> None:
        self.events.append(f"done {stage}")


@pytest.fixture
def small_lake(lake: Lake) -> Lake:
    generate.run(lake, patients=2, seed=5, years=0.3, end_date=DEFAULT_END_DATE)
    return lake


def test_the_stages_run_in_order_under_the_callers_lease_and_record_their_runs(
    small_lake: Lake,
) -> None:
    lake = small_lake
    watcher = Recorder()
    with lease(lake, purpose="simulate advance"):
        done = pipeline.run(lake, IN_PROCESS, watcher=watcher)
    assert watcher.events == [f"{event} {stage}" for stage in STAGES for event in ("start", "done")]
    assert done.aggregate is not None and done.aggregate.mode == "full"
    assert done.train is not None and done.monitor is not None
    runs = lake.read(JOB_RUNS).filter(pl.col("job") != "generate").sort("started_at")
    assert runs["job"].to_list() == list(STAGES)
    assert set(runs["status"]) == {"succeeded"}
    # the stages re-entered the caller's lease: nobody else took it meanwhile
    purposes = {commit.get("purpose") for commit in lake.history(LAKE_LOCK)}
    assert purposes - {None} == {"simulate advance"}
    assert lake.read(LAKE_LOCK)["released_at"].is_not_null().all()


def test_only_the_stages_asked_for_run_in_the_pipelines_order(small_lake: Lake) -> None:
    watcher = Recorder()
    done = pipeline.run(small_lake, only=("monitor", "aggregate"), watcher=watcher)
    assert watcher.events == ["start aggregate", "done aggregate", "start monitor", "done monitor"]
    assert done.features is None and done.train is None and done.forecast is None
    # without a caller's lease each stage took it in turn
    purposes = [commit.get("purpose") for commit in small_lake.history(LAKE_LOCK)]
    assert {"aggregate", "monitor"} <= set(purposes)
    with pytest.raises(ValueError, match="unknown stages: ingest"):
        pipeline.run(small_lake, only=("ingest",))  # type: ignore[arg-type]


def test_a_lost_lease_stops_the_run_before_the_next_stage(lake: Lake) -> None:
    with lease(lake, purpose="pipeline") as lock:
        lock.lost = "taken over by a test"  # as a renewal finds it after a stall past the TTL
        with pytest.raises(StorageError, match="lost the lake lock"):
            pipeline.run(lake)
    assert not lake.exists(JOB_RUNS)  # no stage started


@pytest.mark.parametrize("quick", [False, True])
def test_quick_training_applies_to_every_caller_of_the_pipeline(
    lake: Lake, monkeypatch: pytest.MonkeyPatch, quick: bool
) -> None:
    """MOBILITY_QUICK_TRAINING reaches the train stage whoever runs it (a command, a simulated
    day): the one place that reads it is pipeline.run."""
    asked: dict[str, object] = {}

    def train_run(_lake: Lake, **options: object) -> train.TrainSummary:
        asked.update(options)
        return train.TrainSummary("not due")

    monkeypatch.setattr(train, "run", train_run)
    if quick:
        monkeypatch.setenv("MOBILITY_QUICK_TRAINING", "1")
    else:
        monkeypatch.delenv("MOBILITY_QUICK_TRAINING", raising=False)
    get_settings.cache_clear()
    try:
        pipeline.run(lake, pipeline.Options(training=pipeline.Training(origins=3)), only=("train",))
    finally:
        get_settings.cache_clear()
    expected = train.QUICK_TRAINING if quick else {"origins": 3, "tune_seconds": 0.0}
    assert {key: asked[key] for key in expected} == expected
