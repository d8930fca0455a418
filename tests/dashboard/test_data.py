"""The dashboard's queries against the fixture lake, checked with values computed here."""

from __future__ import annotations

import statistics
from datetime import date

import numpy as np
import polars as pl
import pytest

from dashboard import data
from lakehouse.catalog import DAILY_STEPS
from lakehouse.storage import Lake
from tests.dashboard.demo_lake import DemoLake, daily_rows


def test_kpis_of_an_empty_lake(empty_lake: Lake) -> None:
    kpis = data.overview_kpis(empty_lake)

    assert kpis == data.OverviewKpis(0, 0, None, None)
    assert kpis.is_empty


def test_every_query_works_on_an_empty_lake(empty_lake: Lake) -> None:
    assert data.steps_by_disease_group(empty_lake).is_empty()
    assert data.patient_ids(empty_lake) == []
    assert data.patient_profile(empty_lake, "P001") is None
    assert data.patient_daily_steps(empty_lake, "P001").is_empty()
    assert data.patient_therapies(empty_lake, "P001").is_empty()
    assert data.patient_side_effects(empty_lake, "P001").is_empty()
    assert data.recent_job_runs(empty_lake).is_empty()
    tables = data.lake_tables(empty_lake)
    assert not tables["exists"].any()
    assert tables["rows"].sum() == 0


def test_kpis_of_the_demo_lake(demo_lake: DemoLake) -> None:
    daily = demo_lake.daily_steps
    wear_steps = daily.filter(pl.col("is_wear_day"))["steps"].to_list()

    kpis = data.overview_kpis(demo_lake.lake)

    assert kpis.patients == demo_lake.patients.height
    assert kpis.patient_days == daily.height
    assert kpis.median_wear_day_steps == pytest.approx(statistics.median(wear_steps))
    assert kpis.wear_day_share == pytest.approx(len(wear_steps) / daily.height)
    assert not kpis.is_empty


def test_steps_by_disease_group_uses_wear_days_only(demo_lake: DemoLake) -> None:
    groups = data.steps_by_disease_group(demo_lake.lake)

    assert groups["disease_group"].to_list() == ["MS", "PD"]
    for row, patient_id in zip(groups.iter_rows(named=True), ["P001", "P002"], strict=True):
        days = demo_lake.daily_steps.filter(
            (pl.col("patient_id") == patient_id) & pl.col("is_wear_day")
        )
        steps = np.array(days["steps"].to_list())
        assert row["wear_days"] == len(steps)
        assert row["patients"] == 1
        for column, q in [("p05", 5), ("p25", 25), ("median", 50), ("p75", 75), ("p95", 95)]:
            assert row[column] == pytest.approx(np.percentile(steps, q)), column
        assert row["mean"] == pytest.approx(steps.mean())


def test_patient_ids_filter_and_limit(demo_lake: DemoLake) -> None:
    lake = demo_lake.lake

    assert data.patient_ids(lake) == ["P001", "P002", "P003"]
    assert data.patient_ids(lake, disease_group="RA") == ["P003"]
    assert data.patient_ids(lake, search="p00") == ["P001", "P002", "P003"]
    assert data.patient_ids(lake, search=" 2 ") == ["P002"]
    assert data.patient_ids(lake, search="   ") == ["P001", "P002", "P003"]
    assert data.patient_ids(lake, limit=2) == ["P001", "P002"]
    assert data.patient_ids(lake, disease_group="MS", search="P002") == []


def test_search_text_is_bound_not_spliced_into_sql(demo_lake: DemoLake) -> None:
    assert data.patient_ids(demo_lake.lake, search="' OR 1=1 --") == []
    assert data.patient_profile(demo_lake.lake, "x' OR '1'='1") is None


def test_one_patients_rows(demo_lake: DemoLake) -> None:
    lake = demo_lake.lake
    expected = demo_lake.daily_steps.filter(pl.col("patient_id") == "P001").sort("date")

    daily = data.patient_daily_steps(lake, "P001")
    assert daily["date"].to_list() == expected["date"].to_list()
    assert daily["steps"].to_list() == expected["steps"].to_list()
    assert daily["is_wear_day"].to_list() == expected["is_wear_day"].to_list()

    therapies = data.patient_therapies(lake, "P001")
    assert therapies.rows() == [
        ("ocrelizumab", date(2024, 3, 3), date(2024, 3, 6)),
        ("physiotherapy", date(2024, 3, 8), None),
    ]
    assert data.patient_side_effects(lake, "P001").rows() == [(date(2024, 3, 4), "fatigue", 2)]
    assert data.patient_therapies(lake, "P002").is_empty()

    profile = data.patient_profile(lake, "P002")
    assert profile is not None
    assert (profile.disease_group, profile.timezone, profile.birth_year) == (
        "PD",
        "America/New_York",
        1950,
    )


def test_recent_days_are_the_latest_first() -> None:
    daily = pl.DataFrame({"date": [date(2024, 1, d) for d in range(1, 21)], "steps": 1.0})

    recent = data.recent_days(daily, days=3)

    assert recent["date"].to_list() == [date(2024, 1, 20), date(2024, 1, 19), date(2024, 1, 18)]


def test_recent_job_runs(demo_lake: DemoLake) -> None:
    runs = data.recent_job_runs(demo_lake.lake)

    assert runs["run_id"].to_list() == ["run-2", "run-1"]
    assert runs["duration_seconds"].to_list() == pytest.approx([3.0, 12.5])
    assert runs["error"].to_list() == ["StorageError: commit conflict persisted", None]
    assert data.recent_job_runs(demo_lake.lake, limit=1)["run_id"].to_list() == ["run-2"]


def test_lake_tables_match_what_was_written(demo_lake: DemoLake) -> None:
    tables = data.lake_tables(demo_lake.lake)
    by_path = {row["table"]: row for row in tables.iter_rows(named=True)}

    assert by_path["silver/daily_steps"]["rows"] == demo_lake.daily_steps.height
    assert by_path["silver/daily_steps"]["partitioned_by"] == "month"
    assert by_path["bronze/patients"]["rows"] == 3
    assert by_path["bronze/step_samples"]["exists"] is False


def test_a_new_table_version_invalidates_cached_results(empty_lake: Lake) -> None:
    assert data.overview_kpis(empty_lake).patient_days == 0
    empty_lake.append(DAILY_STEPS, daily_rows("P9", [100.0, 200.0], [True, True]))
    # The version is re-read once its short TTL has passed; simulate that.
    data._all_versions.clear()

    kpis = data.overview_kpis(empty_lake)
    assert kpis.patient_days == 2
    assert kpis.median_wear_day_steps == pytest.approx(150.0)
