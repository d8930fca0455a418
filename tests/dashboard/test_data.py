"""The dashboard's queries against the fixture lake, checked with values computed here."""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from dashboard import data
from jobs.features.clinical import THERAPY_SLUGS
from lakehouse.catalog import DAILY_STEPS, EXPLANATIONS, FORECASTS, PATIENTS, REGISTRY
from lakehouse.errors import InputError
from lakehouse.feature_dictionary import (
    EXPLANATION_FAMILIES,
    EXPLANATION_FAMILY,
    FEATURE_NAMES,
    explanation_family,
)
from lakehouse.storage import Lake
from tests.dashboard.conftest import forget_caches
from tests.dashboard.demo_lake import (
    BACKTEST_MAE,
    K_CHAMPIONS,
    K_LEVODOPA_STOP,
    K_ORIGIN,
    K_PHYSIO_START,
    ORIGIN,
    P001_CHANGE,
    P001_EXPLANATIONS,
    P001_FORECAST,
    P001_STEPS,
    P001_WEAR,
    P002_CHANGE,
    DemoLake,
    build_champions_lake,
    daily_rows,
    k_daily_steps,
    k_prophet_yhat,
)

PERIOD = data.CohortFilter(first_day=date(2024, 3, 1), last_day=date(2024, 3, 10))


def test_every_query_works_on_an_empty_lake(empty_lake: Lake) -> None:
    assert data.data_period(empty_lake) is None
    assert data.cohort_kpis(empty_lake, PERIOD) == data.CohortKpis(0, 0, None)
    assert data.worklist(empty_lake, PERIOD, date(2024, 3, 10)).is_empty()
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
    """Median wear-day steps and patients with data, computed with plain Python."""
    wear_steps, with_data = [], 0
    for patient in patients:
        days = [
            r
            for r in daily.iter_rows(named=True)
            if r["patient_id"] == patient and first <= r["date"] <= last
        ]
        if not days:
            continue
        with_data += 1
        wear_steps += [r["steps"] for r in days if r["is_wear_day"]]
    return statistics.median(wear_steps), with_data


def test_cohort_kpis_of_the_demo_lake(demo_lake: DemoLake) -> None:
    daily = demo_lake.daily_steps
    for first, last in [
        (date(2024, 3, 1), date(2024, 3, 10)),
        (date(2024, 3, 3), date(2024, 3, 8)),
    ]:
        kpis = data.cohort_kpis(demo_lake.lake, data.CohortFilter(first, last))
        median, with_data = _expected_kpis(daily, ["P001", "P002", "P003"], first, last)
        assert kpis.patients == 3
        assert kpis.patients_with_data == with_data == 2
        assert kpis.median_wear_day_steps == pytest.approx(median)


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
    assert dict(zip(rows["feature"], rows["family"], strict=True)) == {
        "baseline": "level",
        "intercept": "disease",
        "cal_is_weekend": "weekday",
        "roll_mean_30d": "level",
        "other_features": "other",
    }
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


# ------------------------------------------------------ the explanation of the forecast shown

# K-EBM's stored inputs by the family a clinician reads them in, written out here (not taken
# from the feature dictionary): levodopa's and physiotherapy's rows are theirs only while the
# therapy changes in the days explained, pramipexole (ongoing) is always among the others
K_EBM_FAMILIES = {
    "baseline": "level",
    "roll_mean_30d": "level",
    "baseline_deviation_7d": "level",
    "intercept": "disease",
    "dx_years_since_diagnosis": "disease",
    "cal_doy_sin_1": "season",
    "cal_origin_doy_cos_1": "season",
    "cal_day_of_week": "weekday",
    "weekday_offset": "weekday",
    "trend_slope_90d": "trend",
    "horizon_days": "trend",
    "therapy_levodopa_change": "therapy:levodopa",
    "therapy_other_change": "therapy:other",
    "therapy_pramipexole_change": "other",
    "side_effect_count_30d": "side_effects",
    "coverage_nonwear_share_30d": "other",
    "roll_mean_7d & horizon_days": "other",
    "other_features": "other",
}
LEVODOPA_STOPS = f"Sinemet (levodopa) stops after {K_LEVODOPA_STOP.day}\u00a0Jun\u00a02024"
PHYSIO_STARTS = f"physiotherapy starts {K_PHYSIO_START.day}\u00a0Jul\u00a02024"
# what explanation rows were called before: data-science terms, never a row of the page now
OLD_TERMS = ("sin", "cos", "order", "Days ahead", "spread", "_", "…", "Season (")


@pytest.fixture(scope="module")
def champions_root(tmp_path_factory: pytest.TempPathFactory) -> Lake:
    return build_champions_lake(tmp_path_factory.mktemp("champions") / "lake")


@pytest.fixture
def champions(champions_root: Lake, monkeypatch: pytest.MonkeyPatch) -> Iterator[Lake]:
    monkeypatch.setenv("LAKE_URI", champions_root.uri)
    forget_caches()
    yield champions_root
    forget_caches()


def _explain(lake: Lake, patient_id: str, first: date, last: date) -> data.ForecastExplanation:
    forecast = data.patient_forecast(lake, patient_id)
    shown = data.shown_model(forecast)
    assert shown is not None
    explained = data.forecast_explanation(
        lake,
        patient_id,
        forecast,
        data.patient_daily_steps(lake, patient_id),
        data.patient_therapies(lake, patient_id),
        model=shown,
        first_day=first,
        last_day=last,
    )
    assert explained is not None
    return explained


def _stored_mean(lake: Lake, patient_id: str, model: str, first: date, last: date) -> float:
    """The mean forecast of the days as gold/forecasts holds it."""
    rows = lake.read(FORECASTS).filter(
        (pl.col("patient_id") == patient_id)
        & (pl.col("model") == model)
        & pl.col("target_date").is_between(first, last)
    )
    return math.fsum(rows["yhat"]) / rows.height


def _rows(explained: data.ForecastExplanation) -> dict[str, float]:
    return dict(zip(explained.rows["label"], explained.rows["contribution"], strict=True))


def _worn_before(patient_id: str) -> list[tuple[date, float]]:
    return [
        (row["date"], row["steps"])
        for row in k_daily_steps(patient_id).iter_rows(named=True)
        if row["is_wear_day"] and row["date"] < K_ORIGIN
    ]


def test_the_page_explains_each_patients_champion(champions: Lake) -> None:
    for patient_id, (_, champion) in K_CHAMPIONS.items():
        forecast = data.patient_forecast(champions, patient_id)
        assert data.shown_model(forecast) == (champion or "cluster_level"), patient_id
        explained = _explain(champions, patient_id, K_ORIGIN, K_ORIGIN)
        assert explained.model == (champion or "cluster_level")
        assert explained.from_model == (champion == "ebm_cluster")


def test_every_explanation_sums_to_the_forecast_in_clinical_rows(champions: Lake) -> None:
    """Every patient, every month and some days: at most 8 rows in a clinician's words that add
    up to the mean of the forecast rows as stored."""
    last = K_ORIGIN + timedelta(days=364)
    periods = [
        (max(m, K_ORIGIN), min(data.month_end(m), last))
        for m in data.horizon_months(K_ORIGIN, last)
    ]
    periods += [(K_ORIGIN + timedelta(days=d),) * 2 for d in (0, 5, 9, 10, 40, 200, 364)]
    families = set(EXPLANATION_FAMILY) | {"therapy:levodopa", "therapy:other"}
    for patient_id in K_CHAMPIONS:
        for first, period_last in periods:
            explained = _explain(champions, patient_id, first, period_last)
            expected = _stored_mean(champions, patient_id, explained.model, first, period_last)
            assert explained.forecast == pytest.approx(expected, rel=1e-12)
            assert math.fsum(explained.rows["contribution"]) == pytest.approx(expected, rel=1e-9)
            assert explained.rows.height <= 8
            assert set(explained.rows["family"]) <= families
            assert explained.rows["contribution"][0] > 0  # where the forecast starts
            for label in explained.rows["label"]:
                assert not any(term in label for term in OLD_TERMS), label
            assert "Rest of the stored forecast" not in explained.rows["label"]


def _expected_by_family(lake: Lake, first: date, last: date, changed: set[str]) -> dict[str, float]:
    """K-EBM's raw gold/explanations rows of the days, summed by the families above and
    averaged per day; a therapy that does not change counts among the others."""
    raw = lake.read(EXPLANATIONS).filter(
        (pl.col("patient_id") == "K-EBM") & pl.col("target_date").is_between(first, last)
    )
    days = raw["target_date"].n_unique()
    totals: dict[str, float] = {}
    for feature, contribution in raw.select("feature", "contribution").iter_rows():
        family = K_EBM_FAMILIES[feature]
        if family.startswith("therapy:") and family not in changed:
            family = "other"
        totals[family] = totals.get(family, 0.0) + contribution / days
    return totals


def test_an_ebm_forecast_is_its_stored_contributions_by_family(champions: Lake) -> None:
    june = (K_ORIGIN, date(2024, 6, 30))  # levodopa stops on the 10th
    explained = _explain(champions, "K-EBM", *june)
    expected = _expected_by_family(champions, *june, {"therapy:levodopa"})

    got = dict(zip(explained.rows["family"], explained.rows["contribution"], strict=True))
    assert got == pytest.approx(expected)
    assert explained.rows["family"][0] == "level" and explained.rows["family"][-1] == "other"
    assert explained.rows.filter(pl.col("family") == "therapy:levodopa")["label"].to_list() == [
        LEVODOPA_STOPS
    ]
    labels = explained.rows["label"].to_list()
    assert labels[0] == "Recent level" and "Time of year" in labels and "Trend" in labels
    assert "Disease course, similar patients" in labels and "Side effects" in labels
    assert "Weekday pattern" in labels and labels[-1] == "Other, smaller influences"
    assert f"{got['level']:,.0f} steps/day" in explained.summary

    # a day before the stop: levodopa does not change yet, so it has no row
    before = _explain(
        champions, "K-EBM", K_ORIGIN + timedelta(days=3), K_ORIGIN + timedelta(days=3)
    )
    assert "therapy:levodopa" not in before.rows["family"]


def test_more_families_than_rows_go_into_the_others_first(champions: Lake) -> None:
    """In July levodopa has stopped and physiotherapy starts: nine families, the smallest of the
    non-therapy ones joins the others, both therapies keep their rows."""
    day = K_PHYSIO_START + timedelta(days=2)
    explained = _explain(champions, "K-EBM", day, day)
    expected = _expected_by_family(champions, day, day, {"therapy:levodopa", "therapy:other"})
    assert len(expected) == 9
    movable = {f: v for f, v in expected.items() if f not in ("level", "other") and ":" not in f}
    smallest = min(movable, key=lambda f: abs(movable[f]))
    expected["other"] += expected.pop(smallest)

    got = dict(zip(explained.rows["family"], explained.rows["contribution"], strict=True))
    assert got == pytest.approx(expected)
    assert explained.rows.height == 8
    assert {LEVODOPA_STOPS, PHYSIO_STARTS} <= set(explained.rows["label"])


def test_the_usual_level_is_explained_as_the_13_week_median_by_weekday(champions: Lake) -> None:
    worn = _worn_before("K-USUAL")
    recent = [steps for day, steps in worn if day >= K_ORIGIN - timedelta(days=91)]
    level = statistics.median(recent)
    year = [(day, steps) for day, steps in worn if day >= K_ORIGIN - timedelta(days=364)]
    overall = statistics.median(steps for _, steps in year)

    def usual(weekday: int) -> float:
        mine = [steps for day, steps in year if day.weekday() == weekday]
        share = 1 + (statistics.median(mine) / overall - 1) * len(mine) / (len(mine) + 10)
        return level * share

    june = (K_ORIGIN, date(2024, 6, 30))
    by_hand = [usual((K_ORIGIN + timedelta(days=i)).weekday()) for i in range(30)]
    stored = _stored_mean(champions, "K-USUAL", "usual_level", *june)
    assert stored == pytest.approx(math.fsum(by_hand) / 30)

    explained = _explain(champions, "K-USUAL", *june)
    rows = _rows(explained)
    assert rows["Usual level"] == pytest.approx(level)
    assert rows["Weekday pattern"] == pytest.approx(stored - level)
    assert (
        f"the {len(recent)} worn days of the 91 days before 1\u00a0Jun\u00a02024 "
        f"({level:,.0f} steps/day)"
    ) in explained.summary
    saturday = _explain(champions, "K-USUAL", date(2024, 6, 1), date(2024, 6, 1))
    assert saturday.forecast == pytest.approx(usual(5))


def test_the_28_day_average_is_explained_as_the_average_of_the_worn_days(champions: Lake) -> None:
    worn = [steps for day, steps in _worn_before("K-MEAN") if day >= K_ORIGIN - timedelta(days=28)]
    average = math.fsum(worn) / len(worn)
    june = (K_ORIGIN, date(2024, 6, 30))

    explained = _explain(champions, "K-MEAN", *june)

    # the model's own forecast (models/baselines.py wrote it) is that average
    assert _stored_mean(champions, "K-MEAN", "trailing_mean_28d", *june) == pytest.approx(average)
    assert _rows(explained) == pytest.approx({"Recent level": average, LEVODOPA_STOPS: 0.0})
    assert (
        f"the {len(worn)} worn days of the 28 days before 1\u00a0Jun\u00a02024: "
        f"{average:,.0f} steps/day"
    ) in explained.summary


def test_after_a_gap_in_wearing_the_28_day_average_is_of_the_last_28_worn_days(
    champions: Lake,
) -> None:
    worn = _worn_before("K-GAP")
    assert sum(day >= K_ORIGIN - timedelta(days=28) for day, _ in worn) < 7
    last_28 = [steps for _, steps in worn[-28:]]

    explained = _explain(champions, "K-GAP", K_ORIGIN, K_ORIGIN)

    assert _rows(explained) == pytest.approx({"Recent level": math.fsum(last_28) / 28})
    assert "the last 28 worn days" in explained.summary


def test_the_weekday_pattern_is_its_level_plus_the_weekdays_difference(champions: Lake) -> None:
    worn = [(d, s) for d, s in _worn_before("K-WEEK") if d >= K_ORIGIN - timedelta(days=56)]
    level = math.fsum(s for _, s in worn) / len(worn)
    for day in (K_ORIGIN + timedelta(days=offset) for offset in range(7)):
        same = [s for d, s in worn if d.weekday() == day.weekday()]
        explained = _explain(champions, "K-WEEK", day, day)
        assert _rows(explained) == pytest.approx(
            {"Recent level": level, "Weekday pattern": math.fsum(same) / len(same) - level}
        )
        assert math.fsum(explained.rows["contribution"]) == pytest.approx(
            _stored_mean(champions, "K-WEEK", "weekday_profile_8w", day, day)
        )


def test_same_weekday_last_week_is_the_last_worn_day_of_each_weekday(champions: Lake) -> None:
    worn = _worn_before("K-NAIVE")
    last_of = {d.weekday(): s for d, s in worn}  # in date order: the latest wins
    level = math.fsum(last_of.values()) / 7
    day = K_ORIGIN + timedelta(days=100)

    explained = _explain(champions, "K-NAIVE", day, day)

    assert _rows(explained) == pytest.approx(
        {"Recent level": level, "Weekday pattern": last_of[day.weekday()] - level}
    )


def test_prophet_is_the_28_day_average_plus_what_the_model_adds(champions: Lake) -> None:
    worn = [s for d, s in _worn_before("K-PROPHET") if d >= K_ORIGIN - timedelta(days=28)]
    day = K_ORIGIN + timedelta(days=50)
    week = [K_ORIGIN + timedelta(days=7 * 7 + i) for i in range(7)]  # day 50 is in week 7

    explained = _explain(champions, "K-PROPHET", day, day)

    level = math.fsum(worn) / len(worn)
    week_mean = math.fsum(k_prophet_yhat(d) for d in week) / 7
    assert _rows(explained) == pytest.approx(
        {
            "Recent level": level,
            "Weekday pattern": k_prophet_yhat(day) - week_mean,
            "Time of year, trend and therapies": week_mean - level,
        }
    )
    # Prophet takes the therapies in: no row of their own at 0
    june = _explain(champions, "K-PROPHET", K_ORIGIN, date(2024, 6, 30))
    assert LEVODOPA_STOPS not in june.rows["label"]
    assert LEVODOPA_STOPS in june.rows["detail"][1] + june.rows["detail"][2]


def test_too_little_history_is_explained_by_the_group_forecast(champions: Lake) -> None:
    day = K_ORIGIN + timedelta(days=2)  # a Monday
    explained = _explain(champions, "K-SHORT", day, day)

    typical = statistics.mean(2500.0 + 100 * weekday for weekday in range(7))
    assert _rows(explained) == pytest.approx(
        {
            "Patients of the same disease group": typical,
            "Weekday pattern": 2500.0 + 100 * day.weekday() - typical,
        }
    )


def test_a_stored_breakdown_that_misses_the_forecast_says_by_how_much(demo_lake: DemoLake) -> None:
    """P001's explanations cover two days (5,450 and 4,720 steps) of a forecast of 5,000 a day."""
    forecast = data.patient_forecast(demo_lake.lake, "P001")
    last = date(2024, 3, 31)

    explained = data.forecast_explanation(
        demo_lake.lake,
        "P001",
        forecast,
        data.patient_daily_steps(demo_lake.lake, "P001"),
        data.patient_therapies(demo_lake.lake, "P001"),
        model="ebm_global",
        first_day=ORIGIN,
        last_day=last,
    )

    assert explained is not None
    rows = _rows(explained)
    stored = statistics.mean(math.fsum(day.values()) for day in P001_EXPLANATIONS.values())
    assert math.fsum(rows.values()) == pytest.approx(P001_FORECAST["ebm_global"])
    assert rows["Rest of the stored forecast"] == pytest.approx(
        P001_FORECAST["ebm_global"] - stored
    )
    assert rows["Other, smaller influences"] == pytest.approx((50 + 20) / 2)


def test_a_therapy_row_says_how_many_patients_its_effect_rests_on() -> None:
    contributions = pl.DataFrame(
        {
            "feature": ["baseline", "therapy_levodopa_change", "therapy_other_change"],
            "family": ["level", "therapy:levodopa", "therapy:other"],
            "contribution": [4000.0, 150.0, -40.0],
        }
    )
    changes = {"levodopa": LEVODOPA_STOPS, "other": PHYSIO_STARTS}
    rows = data.group_by_family(contributions, changes, {"levodopa": 12, "other": 2})
    labels = dict(zip(rows["family"], rows["label"], strict=True))
    assert labels["therapy:levodopa"] == f"{LEVODOPA_STOPS} (learned from 12 patients)"
    assert labels["therapy:other"] == f"{PHYSIO_STARTS} (learned from 2 patients: uncertain)"
    detail = dict(zip(rows["family"], rows["detail"], strict=True))["therapy:other"]
    assert "too few to be sure" in detail
    # without a record of the evidence (older trainings), the labels are as before
    plain = data.group_by_family(contributions, changes)
    assert set(plain["label"]) >= {LEVODOPA_STOPS, PHYSIO_STARTS}
    assert math.fsum(rows["contribution"]) == pytest.approx(4110.0)


def _registry_row(cluster: str, metrics: str, shrinkage: str) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "model_id": [f"ebm_cluster:{cluster}:v1"],
            "kind": ["ebm"],
            "cluster": [cluster],
            "version": [1],
            "trained_at": [datetime(2024, 5, 25, tzinfo=UTC)],
            "params": ["{}"],
            "metrics": [metrics],
            "artifact_uri": [None],
            "status": ["champion"],
            "intervals": [None],
            "shrinkage": [shrinkage],
        },
        schema_overrides={"version": pl.Int32, "artifact_uri": pl.String, "intervals": pl.String},
    )


JUNE = (K_ORIGIN, date(2024, 6, 30))  # levodopa stops on the 10th


def test_the_therapy_evidence_and_served_share_come_from_the_registry(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lake = build_champions_lake(tmp_path / "lake")
    metrics = '{"therapy_patients": {"therapy_levodopa_change": 12, "therapy_other_change": 2}}'
    share = '{"best": 0.5, "patients": 40, "pooled": false, "shrinkage": 0.4}'
    lake.upsert(REGISTRY, _registry_row("PD", metrics, share))
    monkeypatch.setenv("LAKE_URI", lake.uri)
    forget_caches()
    explained = _explain(lake, "K-EBM", *JUNE)
    assert f"{LEVODOPA_STOPS} (learned from 12 patients)" in explained.rows["label"].to_list()
    choice = data.forecast_choice(lake, "K-EBM", "PD", "ebm_cluster")
    assert "at most 40% of the way" in choice and "40 patients" in choice
    forget_caches()


@pytest.mark.parametrize(
    ("metrics", "shrinkage"),
    [
        ("not json", "not json"),
        ('["a list"]', "[0.4]"),
        (
            '{"therapy_patients": {"therapy_levodopa_change": "<img src=x onerror=alert(1)>"}}',
            '{"shrinkage": "=HYPERLINK(\\"http://evil.test\\")", "patients": 40}',
        ),
        (
            '{"therapy_patients": {"therapy_levodopa_change": -5}}',
            '{"shrinkage": 7.5, "patients": -1}',
        ),
        (
            '{"therapy_patients": {"therapy_levodopa_change": true}}',
            '{"shrinkage": NaN, "patients": 40}',
        ),
        ('{"therapy_patients": "everyone"}', '{"shrinkage": 0.4, "patients": 1e400}'),
    ],
)
def test_a_registry_row_not_written_by_training_claims_nothing_and_breaks_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, metrics: str, shrinkage: str
) -> None:
    """A tampered or foreign registry row: the page shows the forecast and its explanation as
    without a record (no evidence, no share), never a wrong figure or a failed page."""
    lake = build_champions_lake(tmp_path / "lake")
    lake.upsert(REGISTRY, _registry_row("PD", metrics, shrinkage))
    monkeypatch.setenv("LAKE_URI", lake.uri)
    forget_caches()
    explained = _explain(lake, "K-EBM", *JUNE)
    labels = explained.rows["label"].to_list()
    assert LEVODOPA_STOPS in labels  # as without a record
    assert not any("learned from" in label or "<img" in label for label in labels)
    assert math.fsum(explained.rows["contribution"]) == pytest.approx(explained.forecast)
    choice = data.forecast_choice(lake, "K-EBM", "PD", "ebm_cluster")
    assert choice.startswith("Chosen for disease group PD")
    assert "moves" not in choice and "HYPERLINK" not in choice
    forget_caches()


def test_therapy_changes_between_the_origin_and_the_days_explained() -> None:
    therapies = pl.DataFrame(
        {
            "therapy": ["Sinemet", "pramipexole", "physiotherapy", "natalizumab"],
            "start_date": [date(2023, 1, 1), date(2023, 1, 1), date(2024, 7, 1), date(2023, 1, 1)],
            "end_date": [date(2024, 6, 10), None, date(2024, 7, 31), date(2024, 5, 1)],
        }
    )
    origin = date(2024, 6, 1)

    def changes(first: date, last: date) -> dict[str, str]:
        return data.therapy_changes(therapies, origin, first, last)

    assert changes(origin, date(2024, 6, 10)) == {}  # still taken on the 10th
    assert changes(date(2024, 6, 11), date(2024, 6, 11)) == {
        "levodopa": "Sinemet (levodopa) stops after 10\u00a0Jun\u00a02024"
    }
    assert changes(date(2024, 7, 1), date(2024, 8, 31)) == {
        "levodopa": "Sinemet (levodopa) stops after 10\u00a0Jun\u00a02024",
        "other": "physiotherapy starts 1\u00a0Jul\u00a02024 and stops after 31\u00a0Jul\u00a02024",
    }
    # after its course physiotherapy is not taken, as at the origin: no change that day
    assert "other" not in changes(date(2024, 8, 5), date(2024, 8, 5))
    assert data.therapy_changes(therapies.clear(), origin, origin, origin) == {}


def test_every_model_input_belongs_to_a_clinical_family() -> None:
    """The model inputs, feature columns and special rows of gold/explanations: each in one of
    the 8 families (a therapy's by name); only device wear and the therapy count are 'other'."""
    from models.direct import FEATURE_COLUMNS

    keys = set(EXPLANATION_FAMILY)
    assert len(keys) == 8
    names = {*FEATURE_COLUMNS, *FEATURE_NAMES, "baseline", "intercept", "disease_group"}
    for name in names:
        family = explanation_family(name)
        assert family in keys or family.removeprefix("therapy:") in THERAPY_SLUGS, name
        if family == "other":
            assert name.startswith("coverage_") or name == "therapy_active_count", name
    assert explanation_family("therapy_interferon_beta_1a_change") == "therapy:interferon_beta_1a"
    assert explanation_family("roll_mean_7d & ewm_mean_7d") == "level"
    assert explanation_family("roll_mean_7d & horizon_days") == "other"
    assert explanation_family("something_new") == "other"
    for declared in EXPLANATION_FAMILIES:
        assert not any(term in declared.label for term in OLD_TERMS), declared.label


def test_models_have_plain_names_and_the_page_draws_the_champion() -> None:
    for model in (
        "cluster_level",
        "ebm_cluster",
        "ebm_global",
        "seasonal_naive_7d",
        "trailing_mean_28d",
        "weekday_profile_8w",
        "prophet",
    ):
        assert "_" not in data.model_name(model), model
    assert data.model_name("trailing_mean_28d") == "28-day average"
    assert data.model_name("prophet") == "seasonal model (Prophet)"
    assert data.model_name("ebm_global").startswith("ML model")

    def forecast(models: dict[str, bool]) -> pl.DataFrame:
        return pl.DataFrame({"model": list(models), "champion": list(models.values())})

    assert data.shown_model(forecast({"ebm_global": False, "prophet": True})) == "prophet"
    # before the first training, or the champion could not forecast the patient
    assert data.shown_model(forecast({"ebm_global": False, "trailing_mean_28d": False})) == (
        "trailing_mean_28d"
    )
    assert data.shown_model(forecast({"cluster_level": False})) == "cluster_level"
    assert data.shown_model(forecast({})) is None


def test_worklist_lists_every_patient_with_the_reasons_to_look_at_them(demo_lake: DemoLake) -> None:
    """Against the demo lake's rows worked out by hand: P001 wore 8 of the last 28 days up to
    10 March and is forecast 20% down; P002's last day is 5 March, 4 worn days, 5% down; P003 has
    no daily steps at all."""
    reference = date(2024, 3, 10)
    rows = data.worklist(demo_lake.lake, PERIOD, reference)
    by_id = {row["patient_id"]: row for row in rows.iter_rows(named=True)}
    assert rows["patient_id"].to_list() == ["P001", "P003", "P002"]  # most reasons first

    p001 = by_id["P001"]
    wear = [s for s, w in zip(P001_STEPS, P001_WEAR, strict=True) if w]
    assert (p001["last_day"], p001["days_without_data"], p001["worn_days"]) == (
        reference,
        0,
        len(wear),
    )
    assert p001["wear"] == pytest.approx(len(wear) / 28)
    assert p001["recent_mean"] is None  # 8 worn days: fewer than the 10 a 30-day mean needs
    assert p001["forecast_change"] == pytest.approx(P001_CHANGE)
    assert p001["reasons"] == "wear 29% · decline expected (-20%)"
    assert p001["attention"] == 2

    p002 = by_id["P002"]
    assert (p002["last_day"], p002["days_without_data"], p002["worn_days"]) == (
        date(2024, 3, 5),
        5,
        4,
    )
    assert not p002["no_data"] and p002["low_wear"] and not p002["decline_expected"]
    assert p002["reasons"] == "wear 14%"

    p003 = by_id["P003"]
    assert p003["last_day"] is None and p003["no_data"] and p003["worn_days"] == 0
    assert p003["reasons"] == "no data yet"  # low wear is not repeated for a silent patient

    # a week later P002 has been silent for 12 days
    later = data.worklist(demo_lake.lake, PERIOD, date(2024, 3, 17), order="longest without data")
    assert later["patient_id"].to_list()[:2] == ["P003", "P002"]
    assert later.filter(pl.col("patient_id") == "P002")["reasons"].item() == ("no data for 12 days")
    # filters apply as everywhere on the page
    assert data.worklist(demo_lake.lake, replace(PERIOD, disease_groups=("PD",)), reference)[
        "patient_id"
    ].to_list() == ["P002"]


def test_the_decline_list_falls_back_to_the_patients_nearest_the_threshold(
    demo_lake: DemoLake,
) -> None:
    pd_only = replace(PERIOD, disease_groups=("PD", "RA"))
    assert data.declining_patients(demo_lake.lake, pd_only).is_empty()
    nearest = data.declining_patients(
        demo_lake.lake, pd_only, limit=data.NEAREST_DECLINES, threshold=math.inf
    )
    assert nearest["patient_id"].to_list() == ["P002"]
    assert nearest["year_end_change"].to_list() == [pytest.approx(P002_CHANGE)]


def _random_days(seed: int) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    days, steps, wear = [], [], []
    day = date(2025, 1, 1)
    for _ in range(200):
        day += timedelta(days=int(rng.choice([1, 1, 1, 1, 2, 4, 5, 9])))
        days.append(day)
        steps.append(float(rng.integers(0, 9000)))
        wear.append(bool(rng.random() < 0.8))
    return pl.DataFrame({"date": days, "steps": steps, "is_wear_day": wear})


def test_the_7_day_average_is_the_mean_of_the_wear_days_of_each_week() -> None:
    daily = _random_days(1)
    smooth = data.rolling_mean(daily)
    by_day = {r["date"]: r for r in daily.iter_rows(named=True)}
    first, last = daily["date"].min(), daily["date"].max()
    assert smooth.height == (last - first).days + 1  # every calendar day
    for day, value in smooth.iter_rows():
        week = [
            by_day[d]["steps"]
            for d in (day - timedelta(days=k) for k in range(7))
            if d in by_day and by_day[d]["is_wear_day"]
        ]
        if len(week) >= 3:
            assert value == pytest.approx(statistics.mean(week)), day
        else:
            assert value is None, day


def test_runs_of_more_than_3_days_without_data_are_the_gaps() -> None:
    daily = _random_days(2)
    present = set(daily["date"].to_list())
    expected, run = [], []
    day = daily["date"].min()
    while day <= daily["date"].max():
        if day in present:
            if len(run) > 3:
                expected.append((run[0], run[-1], len(run)))
            run = []
        else:
            run.append(day)
        day += timedelta(days=1)
    gaps = data.data_gaps(daily)
    assert expected and gaps.rows() == expected
    # a non-wear day is data (it shows as a hollow marker), not a gap
    assert data.data_gaps(daily.with_columns(is_wear_day=False)).rows() == expected


def test_patient_summary_as_of_a_day(demo_lake: DemoLake) -> None:
    reference = date(2024, 3, 9)
    summary = data.patient_summary(demo_lake.lake, "P001", reference)
    assert summary is not None
    assert (summary.age, summary.disease_group) == (2024 - 1975, "MS")
    assert summary.diagnoses.rows() == [
        ("G35", "Multiple sclerosis", date(2015, 5, 1)),
        ("f329", "Major depressive disorder, single episode, unspecified", date(2020, 1, 10)),
        ("Q99.X9", "**a local code**", date(2021, 2, 3)),  # shown as text by the page
    ]
    # ocrelizumab ran 3-6 March, physiotherapy from 8 March on
    assert summary.current_therapies.rows() == [("physiotherapy", date(2024, 3, 8))]
    # 1-9 March: 7 worn days in the 28 up to the reference; a day after it (10 March, a partial
    # day) is still the last day with data, so nothing is missing
    activity = summary.activity
    assert (activity["last_day"], activity["days_without_data"], activity["worn_days"]) == (
        date(2024, 3, 10),
        0,
        7,
    )
    assert activity["recent_mean"] is None and activity["baseline"] is None  # too few days
    assert data.patient_summary(demo_lake.lake, "nobody", reference) is None
    assert data.patient_summary(demo_lake.lake, "P003", reference).activity["no_data"]  # type: ignore[union-attr]


def test_icd10_names_come_from_the_bundled_tabular_list() -> None:
    from lakehouse.icd10 import icd10_name

    assert icd10_name("M17.9") == icd10_name("m179") == "Osteoarthritis of knee, unspecified"
    assert icd10_name("G20.A1") == (
        "Parkinson's disease without dyskinesia, without mention of fluctuations"
    )
    for not_a_code in (
        "",
        "XX",
        "<name>G35</name>",
        "G35</name><desc>x",
        "M17.99999",
        ".*",
        "G3.",
        "G35|M17",
    ):
        assert icd10_name(not_a_code) is None
