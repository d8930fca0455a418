"""The dashboard's queries against the fixture lake, checked with values computed here."""

from __future__ import annotations

import math
import statistics
from dataclasses import replace
from datetime import date, timedelta

import numpy as np
import polars as pl
import pytest

from dashboard import data
from lakehouse.catalog import DAILY_STEPS, PATIENTS
from lakehouse.errors import InputError
from lakehouse.storage import Lake
from tests.dashboard.demo_lake import (
    BACKTEST_MAE,
    ORIGIN,
    P001_CHANGE,
    P001_EXPLANATIONS,
    P001_FORECAST,
    DemoLake,
    daily_rows,
)

PERIOD = data.CohortFilter(first_day=date(2024, 3, 1), last_day=date(2024, 3, 10))


def test_every_query_works_on_an_empty_lake(empty_lake: Lake) -> None:
    assert data.data_period(empty_lake) is None
    assert data.cohort_kpis(empty_lake, PERIOD) == data.CohortKpis(0, 0, None, None)
    assert data.cohort_steps_by_group(empty_lake, PERIOD).is_empty()
    assert data.cohort_weekly_trend(empty_lake, PERIOD).is_empty()
    assert data.declining_patients(empty_lake, PERIOD).is_empty()
    assert not data.has_forecasts(empty_lake)
    assert data.therapy_names(empty_lake) == []
    assert data.patient_ids(empty_lake) == []
    assert data.patient_profile(empty_lake, "P001") is None
    assert data.patient_daily_steps(empty_lake, "P001").is_empty()
    assert data.patient_therapies(empty_lake, "P001").is_empty()
    assert data.patient_side_effects(empty_lake, "P001").is_empty()
    assert data.patient_forecast(empty_lake, "P001").is_empty()
    assert data.patient_explanation(
        empty_lake, "P001", "ebm_global", ORIGIN, ORIGIN, ORIGIN
    ).is_empty()
    assert data.cluster_accuracy(empty_lake, "MS").is_empty()
    assert data.quarantine_by_reason(empty_lake).is_empty()
    assert data.recent_job_runs(empty_lake).is_empty()
    tables = data.lake_tables(empty_lake)
    assert not tables["exists"].any()
    assert tables["rows"].sum() == 0


def _expected_kpis(daily: pl.DataFrame, patients: list[str], first: date, last: date) -> tuple:
    """Median wear-day steps and share with enough wear, computed with plain Python."""
    wear_steps, enough = [], []
    for patient in patients:
        days = [
            r
            for r in daily.iter_rows(named=True)
            if r["patient_id"] == patient and first <= r["date"] <= last
        ]
        if not days:
            continue
        wear = [r for r in days if r["is_wear_day"]]
        wear_steps += [r["steps"] for r in wear]
        span = (max(r["date"] for r in days) - min(r["date"] for r in days)).days + 1
        enough.append(len(wear) >= data.ENOUGH_WEAR_SHARE * span)
    return statistics.median(wear_steps), sum(enough) / len(enough), len(enough)


def test_cohort_kpis_of_the_demo_lake(demo_lake: DemoLake) -> None:
    daily = demo_lake.daily_steps
    for first, last in [
        (date(2024, 3, 1), date(2024, 3, 10)),
        (date(2024, 3, 3), date(2024, 3, 8)),
    ]:
        kpis = data.cohort_kpis(demo_lake.lake, data.CohortFilter(first, last))
        median, share, with_data = _expected_kpis(daily, ["P001", "P002", "P003"], first, last)
        assert kpis.patients == 3
        assert kpis.patients_with_data == with_data == 2
        assert kpis.median_wear_day_steps == pytest.approx(median)
        assert kpis.enough_wear_share == pytest.approx(share)
    # 3-5 March: each wore 2 of the 3 days, under 70%; 3-8 March: 5 of 6 and 3 of 3
    narrow = data.CohortFilter(date(2024, 3, 3), date(2024, 3, 5))
    assert data.cohort_kpis(demo_lake.lake, narrow).enough_wear_share == 0.0


def test_cohort_filters_by_group_age_band_and_therapy_in_the_period(demo_lake: DemoLake) -> None:
    lake = demo_lake.lake

    def patients(**chosen: object) -> int:
        return data.cohort_kpis(lake, replace(PERIOD, **chosen)).patients  # type: ignore[arg-type]

    assert patients(disease_groups=("PD",)) == 1
    assert patients(disease_groups=("PD", "RA")) == 2
    # born 1975 and 1950: 49 and 74 on the period's last day; P003 has no birth year
    assert patients(age_bands=("40-49",)) == 1
    assert patients(age_bands=("70+", "unknown")) == 2
    assert patients(age_bands=("under 40",)) == 0
    assert patients(therapies=("ocrelizumab",)) == 1
    # ocrelizumab ran 3-6 March: not given in a period from the 7th
    assert patients(therapies=("ocrelizumab",), first_day=date(2024, 3, 7)) == 0
    assert patients(therapies=("physiotherapy",), first_day=date(2024, 3, 9)) == 1  # ongoing
    assert patients(disease_groups=("PD",), therapies=("ocrelizumab",)) == 0
    assert data.therapy_names(lake) == ["ocrelizumab", "physiotherapy"]
    assert data.data_period(lake) == (date(2024, 3, 1), date(2024, 3, 10))


def test_steps_by_group_and_week_use_wear_days_of_the_period_only(demo_lake: DemoLake) -> None:
    groups = data.cohort_steps_by_group(demo_lake.lake, PERIOD)

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

    trend = data.cohort_weekly_trend(demo_lake.lake, PERIOD)
    for row in trend.iter_rows(named=True):
        week = [
            r["steps"]
            for r in demo_lake.daily_steps.iter_rows(named=True)
            if r["is_wear_day"]
            and r["patient_id"] == ("P001" if row["disease_group"] == "MS" else "P002")
            and row["week"] <= r["date"] < row["week"] + timedelta(days=7)
        ]
        assert row["week"].weekday() == 0  # Mondays
        assert row["median_steps"] == pytest.approx(statistics.median(week))
    assert trend.height == 4  # 1-10 March 2024 touch two weeks, for each group


def test_declining_patients_are_the_champions_well_below_baseline(demo_lake: DemoLake) -> None:
    declining = data.declining_patients(demo_lake.lake, PERIOD)

    assert declining["patient_id"].to_list() == ["P001"]
    assert declining["year_end_change"].to_list() == [pytest.approx(P001_CHANGE)]
    assert declining["age_band"].to_list() == ["40-49"]
    assert data.declining_patients(
        demo_lake.lake, replace(PERIOD, disease_groups=("PD",))
    ).is_empty()
    assert data.has_forecasts(demo_lake.lake)
    links = data.with_patient_links(declining)["open"].to_list()
    assert links == ["patient?patient_id=P001"]
    assert data.with_patient_links(pl.DataFrame({"patient_id": ["a b/&c"]}))["open"][0] == (
        "patient?patient_id=a+b%2F%26c"
    )


def test_patient_forecast_marks_the_clusters_champion(demo_lake: DemoLake) -> None:
    forecast = data.patient_forecast(demo_lake.lake, "P001")

    assert forecast.height == 2 * 365
    by_model = forecast.group_by("model").agg(pl.col("champion").all(), pl.col("yhat").mean())
    assert dict(zip(by_model["model"], by_model["champion"], strict=True)) == {
        "ebm_global": True,
        "trailing_mean_28d": False,
    }
    assert dict(zip(by_model["model"], by_model["yhat"], strict=True)) == P001_FORECAST
    assert (forecast["origin_date"] == ORIGIN).all()
    assert data.patient_forecast(demo_lake.lake, "P002").is_empty()


def test_explanations_of_a_period_average_to_its_mean_forecast(demo_lake: DemoLake) -> None:
    """Two days: a feature missing from a day's rows counts 0 that day, so the averaged rows
    still add up to the mean of the two days' forecasts."""
    second = ORIGIN + timedelta(days=1)
    rows = data.patient_explanation(demo_lake.lake, "P001", "ebm_global", ORIGIN, ORIGIN, second)

    days = list(P001_EXPLANATIONS.values())
    expected = {
        f: math.fsum(day.get(f, 0.0) for day in days) / len(days) for day in days for f in day
    }
    assert dict(zip(rows["feature"], rows["contribution"], strict=True)) == pytest.approx(expected)
    assert rows["feature"].to_list() == [
        "baseline",
        "intercept",
        "cal_is_weekend",  # -200 before +150: by size
        "roll_mean_30d",
        "other_features",
    ]
    assert rows["label"][0] == "Patient's recent level (28-day weighted mean of steps)"
    assert math.fsum(rows["contribution"]) == pytest.approx(
        statistics.mean(math.fsum(day.values()) for day in days)
    )
    one_day = data.patient_explanation(demo_lake.lake, "P001", "ebm_global", ORIGIN, second, second)
    assert math.fsum(one_day["contribution"]) == pytest.approx(math.fsum(days[1].values()))


def test_cluster_accuracy_averages_the_latest_trainings_origins(demo_lake: DemoLake) -> None:
    accuracy = data.cluster_accuracy(demo_lake.lake, "MS")

    got = {(r["model"], r["horizon_days"]): r["mae"] for r in accuracy.iter_rows(named=True)}
    assert got == pytest.approx({key: statistics.mean(maes) for key, maes in BACKTEST_MAE.items()})
    assert set(accuracy["origins"]) == {2}
    assert data.cluster_accuracy(demo_lake.lake, "PD").is_empty()


def test_quarantine_is_grouped_by_reason_without_numbers(demo_lake: DemoLake) -> None:
    reasons = data.quarantine_by_reason(demo_lake.lake)

    assert reasons.select("reason", "rows", "files").rows() == [
        ("negative steps (-N)", 2, 1),
        ("end before start", 1, 1),
    ]


def test_analyst_queries_go_through_the_sandbox(demo_lake: DemoLake) -> None:
    result = data.run_analyst_query(
        demo_lake.lake, "SELECT disease_group, count(*) AS n FROM bronze.patients GROUP BY 1"
    )
    assert sorted(result.table.to_pylist(), key=str) == sorted(
        [{"disease_group": g, "n": 1} for g in ("MS", "PD", "RA")], key=str
    )
    for forbidden in (
        "COPY bronze.patients TO '/tmp/leak.csv'",
        "SELECT * FROM read_csv('/etc/passwd')",
        "DROP VIEW bronze.patients",
        "SELECT 1; SELECT 2",
    ):
        with pytest.raises(InputError):
            data.run_analyst_query(demo_lake.lake, forbidden)
    columns = data.table_columns()
    assert {"gold.outlook", "silver.features", "bronze.patients"} <= set(columns["table"])
    assert columns.filter(pl.col("table") == "gold.outlook")["column"].to_list()[:2] == [
        "patient_id",
        "model",
    ]


def test_horizon_months() -> None:
    months = data.horizon_months(date(2024, 3, 11), date(2025, 3, 10))
    assert months[0] == date(2024, 3, 1) and months[-1] == date(2025, 3, 1)
    assert len(months) == 13
    assert data.month_end(date(2024, 2, 1)) == date(2024, 2, 29)
    assert data.month_end(date(2024, 12, 1)) == date(2024, 12, 31)


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


def test_recent_history_keeps_the_last_days() -> None:
    daily = pl.DataFrame({"date": [date(2024, 1, d) for d in range(1, 21)], "steps": 1.0})

    recent = data.recent_history(daily, days=3)

    assert recent["date"].to_list() == [date(2024, 1, 18), date(2024, 1, 19), date(2024, 1, 20)]


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
    period = data.CohortFilter(first_day=date(2024, 3, 1), last_day=date(2024, 3, 31))
    assert data.cohort_kpis(empty_lake, period).median_wear_day_steps is None
    empty_lake.append(DAILY_STEPS, daily_rows("P9", [100.0, 200.0], [True, True]))
    empty_lake.append(
        PATIENTS,
        pl.DataFrame(
            {"patient_id": ["P9"], "disease_group": ["MS"], "timezone": ["UTC"]}
        ).with_columns(
            sex=pl.lit(None, pl.String),
            birth_year=pl.lit(None, pl.Int16),
            country=pl.lit(None, pl.String),
            enrolled_on=pl.lit(None, pl.Date),
        ),
    )
    # The version is re-read once its short TTL has passed; simulate that.
    data._version.clear()

    kpis = data.cohort_kpis(empty_lake, period)
    assert kpis.median_wear_day_steps == pytest.approx(150.0)


def test_monitoring_reads_the_latest_run_and_open_alerts_first(demo_lake: DemoLake) -> None:
    checks = data.latest_checks(demo_lake.lake)
    assert set(checks["checked_at"]) == {checks["checked_at"].max()}
    assert checks.height == 7  # accuracy, drift, job health, 3 cost categories and the total
    accuracy = checks.filter(pl.col("check") == "accuracy")
    assert accuracy["status"].to_list() == ["alert"]
    alerts = data.alerts(demo_lake.lake)
    assert alerts["resolved_at"].is_null().to_list() == [True, False]
    assert data.latest_checks(demo_lake.lake).filter(pl.col("subject") == "total")["value"][
        0
    ] == pytest.approx(0.71)
