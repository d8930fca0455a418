"""Crash safety and concurrent runs of ``mobility pipeline`` (docs/reliability.md).

The pipeline runs as a child process on a small synthetic lake with quick training
(``MOBILITY_QUICK_TRAINING``: one backtest origin, short boosting), SIGKILLed at random moments;
the reference is one uninterrupted run of the same lake. The longer campaign is
``benchmarks/bench_reliability.py``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import polars as pl
import pytest

from jobs import check as lake_check
from jobs import generate
from lakehouse import Lake
from lakehouse.catalog import ALERTS, JOB_RUNS, LAKE_LOCK, REGISTRY
from synthetic.population import DEFAULT_END_DATE
from tests.reliability import (
    STAGES,
    comparable,
    copy_lake,
    differences,
    environment,
    kill_campaign,
    run,
    start,
)

PATIENTS, SEED, YEARS = 4, 7, 1.6
KILLS = 20


@dataclass(frozen=True)
class Reference:
    """One uninterrupted pipeline run of the pristine lake."""

    tables: dict[str, pl.DataFrame]
    seconds: float


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Bronze tables of a small population (enough history for a training)."""
    folder = tmp_path_factory.mktemp("pristine") / "lake"
    generate.run(
        Lake(str(folder)), patients=PATIENTS, seed=SEED, years=YEARS, end_date=DEFAULT_END_DATE
    )
    return folder


@pytest.fixture(scope="module")
def reference(pristine: Path, tmp_path_factory: pytest.TempPathFactory) -> Reference:
    folder = copy_lake(pristine, tmp_path_factory.mktemp("reference") / "lake")
    seconds = run(str(folder), "pipeline")
    lake = Lake(str(folder))
    report = lake_check.run(lake)
    assert report.ok, [str(p) for p in report.problems]
    assert lake.exists(REGISTRY), "the reference lake must train models"
    return Reference(comparable(lake), seconds)


@pytest.mark.parametrize("kills", [KILLS, pytest.param(100, marks=pytest.mark.slow)])
def test_pipeline_killed_at_random_moments_recovers_to_the_same_tables(
    pristine: Path, reference: Reference, tmp_path: Path, kills: int
) -> None:
    campaign = kill_campaign(
        pristine,
        tmp_path / "lake",
        reference.tables,
        kills=kills,
        max_delay=reference.seconds,
        seed=kills,
    )
    assert campaign.kills == kills
    assert campaign.damaged_after_kill == []
    assert campaign.different_after_completion == []
    report = lake_check.run(Lake(str(tmp_path / "lake")))
    assert report.ok, [str(p) for p in report.problems]


def test_two_pipelines_started_at_once_end_as_one_run(
    pristine: Path, reference: Reference, tmp_path: Path
) -> None:
    folder = copy_lake(pristine, tmp_path / "lake")
    logs = [tmp_path / "first.log", tmp_path / "second.log"]
    env = environment({"MOBILITY_LOCK_WAIT": "600"})
    pipelines = [start(str(folder), "pipeline", env=env, log=log) for log in logs]
    statuses = [process.wait(timeout=600) for process in pipelines]
    assert statuses == [0, 0], [log.read_text(errors="replace")[-2000:] for log in logs]
    lake = Lake(str(folder))
    assert differences(reference.tables, comparable(lake)) == []
    # one of them waited for the other's lease, then found its work done
    waited = [log for log in logs if "waiting for the lake lock" in log.read_text()]
    assert len(waited) == 1
    runs = lake.read(JOB_RUNS)
    assert runs.filter(pl.col("job").is_in(STAGES))["status"].unique().to_list() == ["succeeded"]
    per_stage = dict(runs.group_by("job").len().iter_rows())
    assert all(per_stage[stage] == 2 for stage in STAGES)
    trainings = [json.loads(d)["status"] for d in runs.filter(pl.col("job") == "train")["details"]]
    assert sorted(trainings) == ["not due", "trained"]
    assert lake.read(REGISTRY)["version"].unique().to_list() == [1]
    if lake.exists(ALERTS):
        open_alerts = lake.read(ALERTS).filter(pl.col("resolved_at").is_null())
        assert open_alerts.select("check", "subject").is_unique().all()
    # each pipeline held the lease in turn and gave it back
    holders = {h["holder"] for h in lake.history(LAKE_LOCK) if h.get("purpose") == "pipeline"}
    assert len(holders) == 2
    assert lake.read(LAKE_LOCK)["released_at"].is_not_null().all()
    assert lake_check.run(lake).ok
