"""The worker's daily run: landing files ingested and moved aside, failed runs retried."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import polars as pl
import pytest

from jobs import generate, schedule
from lakehouse import audit
from lakehouse.catalog import AUDIT_LOG, DAILY_STEPS, JOB_RUNS, STEP_SAMPLES, table_by_path
from lakehouse.storage import Lake
from synthetic.population import DEFAULT_END_DATE


def test_landing_files_go_in_once_and_are_moved_to_processed(tmp_path: Path) -> None:
    landing = tmp_path / "landing"
    generate.run(
        Lake(str(tmp_path / "unused")),
        patients=3,
        seed=8,
        years=0.2,
        landing=landing,
        end_date=DEFAULT_END_DATE,
    )
    (landing / "notes.txt").write_text("not an export\n")  # unknown: left where it is
    waiting = sorted(p.relative_to(landing) for p in landing.rglob("*") if p.is_file())
    lake = Lake(str(tmp_path / "lake"))
    day = datetime(2026, 11, 26, tzinfo=UTC)

    ingested, failed = schedule.ingest_landing(lake, landing, now=day)

    assert (ingested, failed) == (len(waiting) - 1, 0)
    processed = landing / "processed" / "2026-11-26"
    moved = sorted(p.relative_to(processed) for p in processed.rglob("*") if p.is_file())
    assert moved == [p for p in waiting if p.name != "notes.txt"]
    assert (landing / "notes.txt").exists()
    samples = lake.read(STEP_SAMPLES).height
    assert samples > 0
    # the next day nothing is read twice
    assert schedule.ingest_landing(lake, landing, now=day) == (0, 0)
    assert lake.read(STEP_SAMPLES).height == samples


def test_a_failing_run_is_retried_then_given_up(monkeypatch: pytest.MonkeyPatch) -> None:
    outcomes = iter([1, 1, 0])
    calls: list[tuple[str, ...]] = []

    def fake(lake: Lake, *args: str) -> int:
        calls.append(args)
        return next(outcomes)

    monkeypatch.setattr(schedule, "mobility", fake)
    lake = Lake("/nowhere")
    assert schedule.with_retries(lake, "pipeline", retries=3, delay_seconds=0) == 0
    assert calls == [("pipeline",)] * 3

    outcomes = iter([2, 2, 2])
    calls.clear()
    assert schedule.with_retries(lake, "pipeline", retries=2, delay_seconds=0) == 2
    assert len(calls) == 3


def test_a_failed_stage_leaves_nothing_and_the_retry_completes_it(tmp_path: Path) -> None:
    """In child processes: the first attempt fails (a bad setting, one line, exit 2) without
    writing daily steps; the retry, with the setting fixed, aggregates once."""
    lake = Lake(str(tmp_path / "lake"))
    generate.run(lake, patients=2, seed=3, years=0.3, end_date=DEFAULT_END_DATE)
    import os

    os.environ["MOBILITY_AGGREGATE_BATCH"] = "0"  # invalid: the stage fails with one line
    try:
        assert schedule.mobility(lake, "aggregate") == 2
        assert not lake.exists(DAILY_STEPS)
    finally:
        del os.environ["MOBILITY_AGGREGATE_BATCH"]
    assert schedule.with_retries(lake, "aggregate", retries=1, delay_seconds=0) == 0
    runs = lake.read(JOB_RUNS).filter(pl.col("job") == "aggregate")
    assert runs["status"].to_list().count("succeeded") == 1


def test_the_weekly_compaction_leaves_one_file_and_every_row(
    tmp_path: Path,
) -> None:
    """In child processes, as the scheduler runs it: the audit log's one file per view is
    compacted, its rows kept; tables not created yet are passed over."""
    lake = Lake(str(tmp_path / "lake"))
    for user in ("a", "b", "c"):
        audit.record(
            lake,
            audit.AuditEvent(user=user, roles="ops", client="cli", action="sql", page="sql"),
        )
    before = lake.read(AUDIT_LOG).sort("user")
    assert lake.info(AUDIT_LOG).files == 3
    assert {table_by_path(path).path for path in schedule.COMPACTED_WEEKLY} == set(
        schedule.COMPACTED_WEEKLY
    )

    assert schedule.compact_small_files(lake) == 0

    assert lake.info(AUDIT_LOG).files == 1
    assert lake.read(AUDIT_LOG).sort("user").equals(before)
