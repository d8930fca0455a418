"""The aggregation job: incremental, idempotent, and equal to a full recomputation."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import numpy as np
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from jobs import aggregate
from jobs.daily import daily_steps
from lakehouse.bulk import BulkAppend
from lakehouse.catalog import DAILY_STEPS, JOB_RUNS, STEP_SAMPLES
from lakehouse.storage import Lake


def _samples(patients: list[str], first_day: datetime, days: int, seed: int) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for patient in patients:
        for day in range(days):
            for _ in range(int(rng.integers(3, 12))):
                start = first_day + timedelta(days=day, minutes=int(rng.integers(0, 24 * 60)))
                rows.append(
                    {
                        "patient_id": patient,
                        "start_ts": start,
                        "end_ts": start + timedelta(seconds=int(rng.integers(0, 1800))),
                        "utc_offset_minutes": int(rng.choice([-300, 60, 330])),
                        "steps": float(rng.integers(0, 800)),
                        "source": str(rng.choice(["phone", "watch"])),
                    }
                )
    return pl.DataFrame(rows).with_columns(
        pl.col("start_ts").cast(pl.Datetime("us", "UTC")),
        pl.col("end_ts").cast(pl.Datetime("us", "UTC")),
        pl.col("utc_offset_minutes").cast(pl.Int16),
        month=pl.col("start_ts").dt.strftime("%Y-%m"),
    )


def _silver(lake: Lake) -> pl.DataFrame:
    return lake.read(DAILY_STEPS).sort("patient_id", "date")


def _expected(lake: Lake) -> pl.DataFrame:
    """Daily steps recomputed from all of bronze in one go."""
    bronze = lake.read(STEP_SAMPLES)
    return daily_steps(bronze).sort("patient_id", "date")


def _same(actual: pl.DataFrame, expected: pl.DataFrame) -> None:
    assert actual.height == expected.height
    assert_frame_equal(actual.select(expected.columns), expected, check_dtypes=False, abs_tol=1e-6)


@pytest.fixture
def lake(tmp_path) -> Lake:
    return Lake(str(tmp_path / "lake"))


START = datetime(2024, 1, 25, tzinfo=UTC)


def test_first_run_is_full_and_matches_independent_recompute(lake: Lake) -> None:
    lake.append(STEP_SAMPLES, _samples(["P1", "P2", "P3"], START, 20, seed=1))
    summary = aggregate.run(lake, batch_samples=150)  # small batches: several batches
    assert summary.mode == "full"
    assert summary.batches > 1
    _same(_silver(lake), _expected(lake))


def test_rerun_is_a_no_op(lake: Lake) -> None:
    lake.append(STEP_SAMPLES, _samples(["P1", "P2"], START, 10, seed=2))
    aggregate.run(lake)
    version = lake.version(DAILY_STEPS)
    summary = aggregate.run(lake)
    assert summary.mode == "up-to-date"
    assert lake.version(DAILY_STEPS) == version
    runs = lake.read(JOB_RUNS).filter(pl.col("job") == "aggregate")
    assert runs.height == 2
    assert (runs["status"] == "succeeded").all()
    assert json.loads(runs.sort("finished_at")["details"][-1])["mode"] == "up-to-date"


def test_new_batch_recomputes_only_the_patient_days_it_touches(lake: Lake) -> None:
    lake.append(STEP_SAMPLES, _samples(["P1", "P2", "P3"], START, 30, seed=3))
    aggregate.run(lake)
    before = _silver(lake)
    # late data for P2 over 3 days inside the history, plus a brand-new patient P9
    late = _samples(["P2"], START + timedelta(days=10), 3, seed=4)
    lake.append(STEP_SAMPLES, pl.concat([late, _samples(["P9"], START, 5, seed=5)]))
    summary = aggregate.run(lake)
    assert summary.mode == "incremental"
    after = _silver(lake)
    _same(after, _expected(lake))
    # P1's days were outside every scope and P3 is beyond the scope's patient range: untouched
    assert summary.days_out < after.height
    for patient in ("P1",):
        assert_frame_equal(
            before.filter(pl.col("patient_id") == patient),
            after.filter(pl.col("patient_id") == patient),
        )


def test_deleted_samples_disappear_from_daily_steps(lake: Lake) -> None:
    lake.append(STEP_SAMPLES, _samples(["P1"], START, 5, seed=6))
    lake.append(STEP_SAMPLES, _samples(["P2"], START, 5, seed=7))
    aggregate.run(lake)
    lake.delete(STEP_SAMPLES, "patient_id = 'P2'")
    summary = aggregate.run(lake)
    assert summary.mode == "incremental"
    silver = _silver(lake)
    assert set(silver["patient_id"]) == {"P1"}
    _same(silver, _expected(lake))


def test_compaction_of_bronze_needs_no_recompute(lake: Lake) -> None:
    for seed in range(3):
        lake.append(STEP_SAMPLES, _samples([f"P{seed}"], START, 3, seed=seed))
    aggregate.run(lake)
    lake.optimize(STEP_SAMPLES, vacuum_hours=168)
    assert aggregate.run(lake).mode == "up-to-date"


def test_compaction_between_runs_keeps_the_next_change_narrow(lake: Lake) -> None:
    for seed in range(3):
        lake.append(STEP_SAMPLES, _samples([f"P{seed}"], START, 3, seed=seed))
    aggregate.run(lake)
    lake.optimize(STEP_SAMPLES, vacuum_hours=168)
    lake.append(STEP_SAMPLES, _samples(["P9"], START, 3, seed=9))
    summary = aggregate.run(lake)
    assert summary.mode == "incremental"
    assert summary.samples_in == lake.read(STEP_SAMPLES).filter(pl.col("patient_id") == "P9").height
    _same(_silver(lake), _expected(lake))


def test_full_flag_recomputes_and_leaves_the_same_content(lake: Lake) -> None:
    lake.append(STEP_SAMPLES, _samples(["P1", "P2"], START, 8, seed=8))
    aggregate.run(lake)
    first = _silver(lake)
    summary = aggregate.run(lake, full=True, batch_samples=50)
    assert summary.mode == "full"
    assert_frame_equal(_silver(lake), first)


def test_empty_lake_records_a_run_and_writes_nothing(lake: Lake) -> None:
    summary = aggregate.run(lake)
    assert summary.mode == "up-to-date"
    assert not lake.exists(DAILY_STEPS)
    assert lake.read(JOB_RUNS).height == 1


def test_commits_in_several_groups_give_the_same_content(lake: Lake, monkeypatch) -> None:
    lake.append(STEP_SAMPLES, _samples(["P1", "P2", "P3", "P4"], START, 12, seed=9))
    monkeypatch.setattr(aggregate, "_COMMIT_DAYS", 10)  # commit after every batch or two
    before = lake.version(DAILY_STEPS)
    summary = aggregate.run(lake, batch_samples=100)
    assert summary.batches >= 3
    assert lake.version(DAILY_STEPS) - (before or 0) >= 2  # several commits
    _same(_silver(lake), _expected(lake))


def test_the_files_of_many_commits_are_merged_at_the_end(lake: Lake, monkeypatch) -> None:
    lake.append(STEP_SAMPLES, _samples([f"P{n}" for n in range(8)], START, 12, seed=4))
    monkeypatch.setattr(aggregate, "_COMMIT_DAYS", 10)  # a commit (a file per month) per batch
    aggregate.run(lake, batch_samples=100)

    per_month = lake.file_stats(DAILY_STEPS).group_by("partition.month").len()
    assert per_month["len"].max() < 4  # lakehouse.storage.Lake.compact's min_files
    compaction = lake.history(DAILY_STEPS, limit=1)[0]
    assert compaction["operation"] == "OPTIMIZE"
    details = json.loads(lake.read(JOB_RUNS)["details"][0])
    assert details["compacted_files"] > 0
    _same(_silver(lake), _expected(lake))


def test_batches_follow_file_boundaries(lake: Lake) -> None:
    # two appends = two files per month whose patient ranges do not overlap: one batch each
    lake.append(STEP_SAMPLES, _samples(["A1", "A2"], START, 3, seed=10))
    lake.append(STEP_SAMPLES, _samples(["B1", "B2"], START, 3, seed=11))
    per_file = lake.file_stats(STEP_SAMPLES)["num_records"].max()
    bronze = aggregate.Bronze(lake.scan(STEP_SAMPLES), lake.file_stats(STEP_SAMPLES))
    batches = aggregate._scope_batches(lake, bronze, aggregate.Scope(), int(per_file) + 1)
    assert [first for first, _ in batches] == [None, "B1"]


def test_large_files_are_cut_at_their_row_groups_without_reading_samples(lake: Lake) -> None:
    # a bulk load: one file per month holding every patient, a row group per loaded batch
    groups = [["A1", "A2"], ["B1", "B2"], ["C1", "C2"]]
    with BulkAppend(lake, STEP_SAMPLES) as load:
        for seed, group in enumerate(groups):
            load.add(_samples(group, START, 12, seed=20 + seed).sort("month", maintain_order=True))
    stats = lake.file_stats(STEP_SAMPLES)
    assert stats.height == stats["partition.month"].n_unique()  # one segment of all patients

    class Unread:
        def __getattr__(self, name: str) -> object:
            raise AssertionError("planning read samples")

    bronze = aggregate.Bronze(Unread(), stats)  # type: ignore[arg-type]
    per_group = lake.info(STEP_SAMPLES).rows // 3
    batches = aggregate._scope_batches(lake, bronze, aggregate.Scope(), per_group + 50)
    assert [first for first, _ in batches] == [None, "B1", "C1"]
    aggregate.run(lake, batch_samples=per_group + 50)
    _same(_silver(lake), _expected(lake))


def test_a_run_reads_one_bronze_snapshot(lake: Lake, monkeypatch) -> None:
    # samples committed while a run is under way belong to the next run, not half to this one
    lake.append(STEP_SAMPLES, _samples(["P1", "P2", "P3"], START, 6, seed=12))
    original = aggregate.daily_steps

    def daily_then_late_commit(samples: pl.DataFrame) -> pl.DataFrame:
        if lake.version(STEP_SAMPLES) == 0:
            lake.append(STEP_SAMPLES, _samples(["P3"], START + timedelta(days=30), 2, seed=13))
        return original(samples)

    monkeypatch.setattr(aggregate, "daily_steps", daily_then_late_commit)
    first = aggregate.run(lake, batch_samples=60)
    assert first.bronze_version == 0
    assert _silver(lake)["date"].max() < (START + timedelta(days=30)).date()
    monkeypatch.setattr(aggregate, "daily_steps", original)
    assert aggregate.run(lake).mode == "incremental"
    _same(_silver(lake), _expected(lake))
