"""The features job: full and incremental runs agree with one recomputation of the transform,
runs over unchanged inputs commit nothing, and a failing run leaves the table as it was."""

from __future__ import annotations

import shutil
from datetime import date, timedelta
from pathlib import Path

import polars as pl
import pytest
from deltalake import write_deltalake
from polars.testing import assert_frame_equal

from jobs import aggregate, generate
from jobs.features import changes
from jobs.features import run as features_job
from jobs.features.transform import features
from lakehouse.catalog import (
    DAILY_STEPS,
    DIAGNOSES,
    FEATURES,
    PATIENTS,
    SIDE_EFFECTS,
    THERAPIES,
)
from lakehouse.errors import StorageError
from lakehouse.storage import Lake, empty_frame
from synthetic.population import DEFAULT_END_DATE


@pytest.fixture(scope="module")
def source_lake(tmp_path_factory: pytest.TempPathFactory) -> Lake:
    lake = Lake(str(tmp_path_factory.mktemp("features") / "lake"))
    generate.run(lake, patients=6, seed=7, years=1.0, end_date=DEFAULT_END_DATE)
    aggregate.run(lake)
    return lake


def copy_lake(source: Lake, tmp_path: Path) -> Lake:
    """A private copy of the generated lake's input tables (tests change them)."""
    lake = Lake(str(tmp_path / "lake"))
    for table in (DAILY_STEPS, PATIENTS, THERAPIES, SIDE_EFFECTS, DIAGNOSES):
        lake.append(table, source.read(table))
    return lake


def recomputed(lake: Lake) -> pl.DataFrame:
    """silver/features as one recomputation of the transform over the current inputs."""
    return features(
        lake.scan(DAILY_STEPS),
        patients=lake.read(PATIENTS),
        therapies=lake.read(THERAPIES),
        side_effects=lake.read(SIDE_EFFECTS),
        diagnoses=lake.read(DIAGNOSES),
    ).collect()


def assert_features_current(lake: Lake) -> None:
    """silver/features equals one recomputation: the same rows (named when not), same values."""
    stored = lake.read(FEATURES).sort("patient_id", "date")
    want = recomputed(lake)
    keys = ["patient_id", "date"]
    missing = want.join(stored, on=keys, how="anti").select(keys).rows()
    stale = stored.join(want, on=keys, how="anti").select(keys).rows()
    assert (missing, stale) == ([], []), f"missing rows {missing}, stale rows {stale}"
    assert_frame_equal(stored, want, check_dtypes=False)


def test_full_run_then_nothing_to_do(source_lake: Lake, tmp_path: Path) -> None:
    lake = copy_lake(source_lake, tmp_path)
    first = features_job.run(lake, batch_days=400, commit_days=700)  # several batches, commits
    assert first.mode == "full"
    assert first.batches > 2
    assert lake.version(FEATURES) > 1
    assert first.days_in == lake.read(DAILY_STEPS).height
    assert first.rows_out == lake.read(FEATURES).height
    assert_features_current(lake)
    assert recomputed(lake).schema == empty_frame(FEATURES).schema  # exactly the catalog's types
    version = lake.version(FEATURES)
    again = features_job.run(lake)
    assert again.mode == "up-to-date"
    assert lake.version(FEATURES) == version


def test_a_run_in_many_commits_leaves_few_files_per_month(
    source_lake: Lake, tmp_path: Path
) -> None:
    # every commit writes a file into each month it covers: at 100,000 patients a full run left
    # 1,375 files (55 commits x 25 months) until the job merged them
    lake = copy_lake(source_lake, tmp_path)
    summary = features_job.run(lake, batch_days=300, commit_days=300)
    assert summary.commits >= 5
    per_month = lake.file_stats(FEATURES).group_by("partition.month").len()
    assert per_month["len"].max() < 4, per_month.sort("len").tail(3)
    assert_features_current(lake)


def test_new_days_recompute_from_the_first_changed_day(source_lake: Lake, tmp_path: Path) -> None:
    lake = copy_lake(source_lake, tmp_path)
    daily = lake.read(DAILY_STEPS)
    cut = daily["date"].max() - timedelta(days=20)  # type: ignore[operator]
    lake.delete(DAILY_STEPS, f"date > '{cut.isoformat()}'")
    features_job.run(lake, batch_days=700)
    lake.append(DAILY_STEPS, daily.filter(pl.col("date") > cut))
    summary = features_job.run(lake, batch_days=700)
    assert summary.mode == "incremental"
    # only the new days and the 'day after' rows were rewritten, not whole histories
    assert summary.rows_out < lake.read(FEATURES).height / 5
    assert_features_current(lake)


def test_late_data_in_the_middle_changes_later_days_too(source_lake: Lake, tmp_path: Path) -> None:
    lake = copy_lake(source_lake, tmp_path)
    features_job.run(lake)
    daily = lake.read(DAILY_STEPS)
    patient = daily.group_by("patient_id").len().sort("len", "patient_id")["patient_id"][-1]
    mid = daily.filter(pl.col("patient_id") == patient)["date"].sort()[150]
    changed = daily.filter((pl.col("patient_id") == patient) & (pl.col("date") == mid))
    lake.replace(
        DAILY_STEPS,
        changed.with_columns(steps=pl.col("steps") * 3, is_wear_day=pl.lit(True)),
        predicate=f"patient_id = '{patient}' AND date = '{mid.isoformat()}'",
    )
    before = lake.read(FEATURES)
    summary = features_job.run(lake)
    assert summary.mode == "incremental"
    assert_features_current(lake)
    after = lake.read(FEATURES)
    moved = (
        before.join(after, on=["patient_id", "date"], suffix="_new")
        .filter(pl.col("lag_1d").ne_missing(pl.col("lag_1d_new")))
        .select("patient_id", "date")
    )
    assert moved.rows() == [(patient, mid + timedelta(days=1))]


def test_clinical_change_recomputes_that_patient(source_lake: Lake, tmp_path: Path) -> None:
    lake = copy_lake(source_lake, tmp_path)
    features_job.run(lake)
    patient = lake.read(DAILY_STEPS)["patient_id"].unique().sort()[0]
    start = lake.read(DAILY_STEPS).filter(pl.col("patient_id") == patient)["date"].min()
    assert isinstance(start, date)
    course = {
        "patient_id": patient,
        "therapy": "Humira",  # brand name of adalimumab
        "start_date": start + timedelta(days=30),
        "end_date": start + timedelta(days=60),
    }
    lake.upsert(THERAPIES, pl.DataFrame([course]))
    lake.upsert(
        SIDE_EFFECTS,
        pl.DataFrame(
            [
                {
                    "patient_id": patient,
                    "date": start + timedelta(days=40),
                    "effect": "x",
                    "severity": 4,
                }
            ]
        ),
    )
    summary = features_job.run(lake)
    assert summary.mode == "incremental"
    assert summary.commits == 1
    assert_features_current(lake)
    rows = lake.read(FEATURES).filter(pl.col("patient_id") == patient)
    on = rows.filter(pl.col("date") == start + timedelta(days=45)).row(0, named=True)
    assert on["therapy_adalimumab_active"] is True
    assert on["therapy_adalimumab_days_since_start"] == 15
    assert on["side_effect_worst_severity_7d"] == 4


def test_deleted_patient_loses_their_rows(source_lake: Lake, tmp_path: Path) -> None:
    lake = copy_lake(source_lake, tmp_path)
    features_job.run(lake)
    patient = lake.read(DAILY_STEPS)["patient_id"].unique().sort()[3]
    lake.delete(DAILY_STEPS, f"patient_id = '{patient}'")
    features_job.run(lake)
    assert patient not in lake.read(FEATURES)["patient_id"].to_list()
    assert_features_current(lake)


def test_compaction_is_not_a_change(source_lake: Lake, tmp_path: Path) -> None:
    lake = copy_lake(source_lake, tmp_path)
    features_job.run(lake)
    lake.optimize(DAILY_STEPS)
    assert features_job.run(lake).mode == "up-to-date"


def test_a_new_feature_set_rebuilds_the_table(
    source_lake: Lake, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lake = copy_lake(source_lake, tmp_path)
    features_job.run(lake)
    monkeypatch.setattr(changes, "feature_set_id", lambda: "another feature set")
    assert features_job.run(lake).mode == "full"
    assert_features_current(lake)


def test_a_failing_run_leaves_each_patient_old_or_new_and_the_next_run_finishes(
    source_lake: Lake, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lake = copy_lake(source_lake, tmp_path)
    features_job.run(lake)
    old = lake.read(FEATURES)
    lake.replace(
        DAILY_STEPS, lake.read(DAILY_STEPS).with_columns(steps=pl.col("steps") * 2), predicate=None
    )
    new = recomputed(lake)
    calls = 0
    real = features_job._batch_features

    def failing(*args: object, **kwargs: object) -> pl.DataFrame:
        nonlocal calls
        calls += 1
        if calls == 3:
            raise OSError("disk went away")
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(features_job, "_batch_features", failing)
    with pytest.raises((StorageError, OSError)):
        features_job.run(lake, batch_days=300, commit_days=300)
    stored = lake.read(FEATURES)
    patients = sorted(set(old["patient_id"]))
    fresh = 0
    for patient in patients:
        mine = stored.filter(pl.col("patient_id") == patient).sort("date")
        before = old.filter(pl.col("patient_id") == patient).sort("date")
        after = new.filter(pl.col("patient_id") == patient).sort("date")
        if mine.equals(before):
            continue
        assert_frame_equal(mine, after, check_dtypes=False)
        fresh += 1
    assert 0 < fresh < len(patients)  # the run failed half-way
    monkeypatch.setattr(features_job, "_batch_features", real)
    assert features_job.run(lake).mode == "incremental"
    assert_features_current(lake)


def test_compaction_between_runs_keeps_the_next_change_narrow(
    source_lake: Lake, tmp_path: Path
) -> None:
    lake = copy_lake(source_lake, tmp_path)
    features_job.run(lake)
    lake.optimize(DAILY_STEPS)
    daily = lake.read(DAILY_STEPS)
    patient = daily["patient_id"].max()
    last = daily.filter(pl.col("patient_id") == patient).sort("date").tail(1)
    lake.append(
        DAILY_STEPS,
        last.with_columns(date=pl.col("date") + pl.duration(days=1)).with_columns(
            month=pl.col("date").dt.strftime("%Y-%m")
        ),
    )
    summary = features_job.run(lake)
    assert summary.mode == "incremental"
    assert summary.rows_out <= 2  # the new day and the day after it, not a full recompute
    assert_features_current(lake)


def test_many_scattered_clinical_changes_rewrite_only_those_patients(
    source_lake: Lake, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lake = copy_lake(source_lake, tmp_path)
    features_job.run(lake)
    patients = sorted(lake.read(DAILY_STEPS)["patient_id"].unique())
    changed = patients[::2]
    lake.upsert(
        PATIENTS,
        lake.read(PATIENTS)
        .filter(pl.col("patient_id").is_in(changed))
        .with_columns(country=pl.lit("FR")),
    )
    monkeypatch.setattr(changes, "MAX_RANGES", 1)  # as many patients as ranges allowed
    summary = features_job.run(lake)
    assert summary.mode == "incremental"
    stored = lake.read(FEATURES)
    assert summary.rows_out == stored.filter(pl.col("patient_id").is_in(changed)).height
    assert_features_current(lake)


def test_a_clinical_table_seen_for_the_first_time_is_an_incremental_change(
    source_lake: Lake, tmp_path: Path
) -> None:
    lake = Lake(str(tmp_path / "lake"))
    for table in (DAILY_STEPS, PATIENTS, THERAPIES, DIAGNOSES):
        lake.append(table, source_lake.read(table))
    features_job.run(lake)
    effects = source_lake.read(SIDE_EFFECTS)
    lake.append(SIDE_EFFECTS, effects)
    summary = features_job.run(lake)
    assert summary.mode == "incremental"
    with_effects = effects["patient_id"].unique()
    assert (
        summary.rows_out
        == lake.read(FEATURES).filter(pl.col("patient_id").is_in(with_effects.implode())).height
    )
    assert_features_current(lake)


def test_features_follow_daily_steps_being_dropped(source_lake: Lake, tmp_path: Path) -> None:
    lake = copy_lake(source_lake, tmp_path)
    features_job.run(lake)
    shutil.rmtree(Path(lake.table_uri(DAILY_STEPS)))
    summary = features_job.run(lake)
    assert summary.mode == "full"
    assert "run mobility aggregate" in summary.describe()
    assert lake.read(FEATURES).height == 0


def test_a_table_with_other_columns_is_rebuilt_with_the_catalog_schema(
    source_lake: Lake, tmp_path: Path
) -> None:
    lake = copy_lake(source_lake, tmp_path)
    features_job.run(lake)
    old = lake.read(FEATURES).drop("lag_28d").with_columns(retired=pl.lit(1.0))
    write_deltalake(
        lake.table_uri(FEATURES),
        old.to_arrow(),
        mode="overwrite",
        schema_mode="overwrite",
        partition_by=["month"],
    )
    assert not lake.schema_matches(FEATURES)
    summary = features_job.run(lake)
    assert (summary.mode, summary.commits) == ("full", 1)
    assert lake.schema_matches(FEATURES)
    assert_features_current(lake)


def test_a_new_day_rewrites_two_rows_per_patient_even_beside_a_stale_patient(
    source_lake: Lake, tmp_path: Path
) -> None:
    lake = copy_lake(source_lake, tmp_path)
    daily = lake.read(DAILY_STEPS)
    ends = daily.group_by("patient_id").agg(pl.col("date").max())
    # one patient stopped sharing 100 days before the others: the new days' file starts early
    stale = ends.sort("date")["patient_id"][0]
    stale_end = ends.filter(pl.col("patient_id") == stale)["date"][0]
    lake.delete(
        DAILY_STEPS,
        f"patient_id = '{stale}' AND date > '{(stale_end - timedelta(days=100)).isoformat()}'",
    )
    features_job.run(lake)
    last_rows = (
        lake.read(DAILY_STEPS)
        .sort("date")
        .group_by("patient_id")
        .agg(pl.all().last())
        .with_columns(date=pl.col("date") + pl.duration(days=1))
        .with_columns(month=pl.col("date").dt.strftime("%Y-%m"))
    )
    lake.append(DAILY_STEPS, last_rows)
    summary = features_job.run(lake)
    assert summary.mode == "incremental"
    assert summary.rows_out == 2 * last_rows.height  # the new day and the day after, each
    assert_features_current(lake)
