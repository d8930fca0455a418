"""Training and batch forecasts on a small synthetic lake: backtests, champions, registry,
artifacts, forecasts for every patient and explanations that add up."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import polars as pl
import pytest

from jobs import aggregate, generate, recent_accuracy
from jobs import forecast as forecast_job
from jobs import train as train_job
from jobs.features import run as features_job
from lakehouse.catalog import (
    BACKTESTS,
    DAILY_STEPS,
    EXPLANATIONS,
    FEATURES,
    FORECASTS,
    JOB_RUNS,
    OUTLOOK,
    PATIENTS,
    REGISTRY,
)
from lakehouse.errors import InputError
from lakehouse.storage import Lake
from synthetic.population import DEFAULT_END_DATE
from tests.test_cli import assert_one_line_error, mobility

NOW = datetime(2027, 1, 1, tzinfo=UTC)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Lake, train_job.TrainSummary]:
    lake = Lake(str(tmp_path_factory.mktemp("train") / "lake"))
    generate.run(lake, patients=40, seed=5, years=2.0, end_date=DEFAULT_END_DATE)
    aggregate.run(lake)
    features_job.run(lake)
    summary = train_job.run(
        lake, force=True, patients_per_cluster=6, origins=2, prophet_workers=1, now=NOW
    )
    return lake, summary


def test_training_backtests_every_model_and_registers_champions(
    trained: tuple[Lake, train_job.TrainSummary],
) -> None:
    lake, summary = trained
    assert summary.status == "trained"
    assert summary.version == 1
    backtests = lake.read(BACKTESTS)
    assert set(backtests["model"]) == set(train_job.KINDS)
    assert set(backtests["origin_date"]) == set(summary.origins)
    # the champion of each cluster is its lowest mean MAE over the year among the usual level
    # and the EBMs (the per-cluster one with 10 backtest patients of the cluster), recomputed
    year = backtests.filter(pl.col("horizon_days") == 365, pl.col("cluster") != "ALL")
    means = year.group_by("cluster", "model").agg(pl.col("mae").mean(), pl.col("patients").max())
    # ... and never a learned model served at a share of 0 (it is the usual level then), the
    # usual level on a tie
    registry = lake.read(REGISTRY)
    shares = {
        (model_id.split(":")[0], cluster): json.loads(text)["shrinkage"]
        for model_id, cluster, text in registry.select("model_id", "cluster", "shrinkage")
        .drop_nulls()
        .iter_rows()
    }
    best = {}
    for (cluster,), group in means.group_by("cluster"):
        eligible = [
            (mae, model != "usual_level", model)
            for model, mae, patients in group.select("model", "mae", "patients").iter_rows()
            if model == "usual_level"
            or (model == "ebm_global" and shares[(model, cluster)] > 0)
            or (model == "ebm_cluster" and patients >= 10 and shares[(model, cluster)] > 0)
        ]
        best[cluster] = min(eligible)[2]
    assert set(best.values()) <= {"usual_level", "ebm_global", "ebm_cluster"}
    assert summary.champions == best
    champions = registry.filter(pl.col("status") == "champion")
    assert dict(
        zip(champions["cluster"], champions["model_id"].str.split(":").list.first(), strict=True)
    ) == {c: m for c, m in best.items() if c in train_job.CLUSTERS}
    for uri in registry["artifact_uri"].drop_nulls().unique():
        assert lake.read_object(uri.removeprefix(lake.uri + "/"))


def test_the_registry_says_how_many_patients_each_therapy_effect_rests_on(
    trained: tuple[Lake, train_job.TrainSummary],
) -> None:
    from models.direct import THERAPY_FEATURES

    lake, summary = trained
    registry = lake.read(REGISTRY).filter(pl.col("model_id").str.starts_with("ebm_global"))
    for text in registry["metrics"]:
        counts = json.loads(text)["therapy_patients"]
        assert set(counts) == set(THERAPY_FEATURES)
        assert all(0 <= n <= summary.patients for n in counts.values())
    assert any(n > 0 for n in json.loads(registry["metrics"][0])["therapy_patients"].values())


def test_training_waits_a_week_unless_asked(trained: tuple[Lake, train_job.TrainSummary]) -> None:
    lake, _ = trained
    assert not train_job.is_due(lake, NOW + timedelta(days=6))
    assert train_job.is_due(lake, NOW + timedelta(days=7))


def test_forecasts_cover_every_patient_and_explanations_add_up(
    trained: tuple[Lake, train_job.TrainSummary],
) -> None:
    lake, _ = trained
    first = forecast_job.run(lake, prophet_workers=1, everyone=True)
    patients = lake.read(DAILY_STEPS)["patient_id"].n_unique()
    assert first.patients == patients
    forecasts = lake.read(FORECASTS)
    per_patient = forecasts.group_by("patient_id", "model").len()
    assert set(per_patient["len"]) == {365}
    assert forecasts["patient_id"].n_unique() == patients
    assert (forecasts["yhat_lower"] >= 0).all()
    assert (
        (forecasts["yhat_lower"] <= forecasts["yhat"])
        & (forecasts["yhat"] <= forecasts["yhat_upper"])
    ).all()
    # each patient's origin is the day after their last day with data
    ends = lake.read(DAILY_STEPS).group_by("patient_id").agg(pl.col("date").max())
    origins = forecasts.group_by("patient_id").agg(pl.col("origin_date").first())
    joined = ends.join(origins, on="patient_id")
    assert (joined["origin_date"] == joined["date"] + timedelta(days=1)).all()
    # EBM explanations: baseline + intercept + terms (+ other_features) = yhat
    explained = lake.read(EXPLANATIONS)
    keys = ["patient_id", "model", "origin_date", "target_date"]
    sums = explained.group_by(keys).agg(pl.col("contribution").sum())
    both = forecasts.join(sums, on=keys)
    assert both.height == forecasts.filter(pl.col("model").str.starts_with("ebm")).height
    assert (both["yhat"] - both["contribution"]).abs().max() < 1e-6  # type: ignore[operator]
    # running again replaces the same rows
    forecast_job.run(lake, prophet_workers=1, everyone=True)
    assert lake.read(FORECASTS).height == forecasts.height
    assert lake.read(EXPLANATIONS).height == explained.height


def test_patients_with_too_little_history_get_a_labelled_cluster_forecast(
    trained: tuple[Lake, train_job.TrainSummary],
) -> None:
    lake, _ = trained
    daily = lake.read(DAILY_STEPS)
    newcomer = daily["patient_id"].unique().sort()[0]
    last = daily.filter(pl.col("patient_id") == newcomer)["date"].max()
    assert last is not None
    keep_from = (last - timedelta(days=9)).isoformat()  # type: ignore[operator]
    lake.delete(DAILY_STEPS, f"patient_id = '{newcomer}' AND date < '{keep_from}'")
    forecast_job.run(lake, prophet_workers=1, everyone=True)
    mine = lake.read(FORECASTS).filter(
        pl.col("patient_id") == newcomer,
        pl.col("origin_date") == last + timedelta(days=1),  # type: ignore[operator]
    )
    assert set(mine["model"]) == {"cluster_level"}
    assert mine.height == 365
    assert (mine["yhat"] > 0).all()


def test_export_forecast_writes_the_latest_year_with_the_champion_marked(
    trained: tuple[Lake, train_job.TrainSummary], tmp_path: Path
) -> None:
    lake, _ = trained
    if not lake.exists(FORECASTS):
        forecast_job.run(lake, prophet_workers=1, everyone=True)
    patient = lake.read(FORECASTS).filter(pl.col("model") == "ebm_cluster")["patient_id"][0]
    out = tmp_path / "forecast.csv"
    done = mobility(
        "--lake",
        lake.uri,
        "export-forecast",
        "--patient-id",
        patient,
        "--out",
        str(out),
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    rows = pl.read_csv(out, try_parse_dates=True)
    assert rows.group_by("model").len()["len"].to_list() == [365] * rows["model"].n_unique()
    assert rows["origin_date"].n_unique() == 1
    assert rows.filter(pl.col("champion"))["model"].n_unique() == 1
    assert_one_line_error(
        mobility(
            "--lake",
            lake.uri,
            "export-forecast",
            "--patient-id",
            "nobody",
            "--out",
            str(out),
            cwd=tmp_path,
        ),
        "no forecast for patient 'nobody'",
    )


def test_on_demand_forecast_equals_the_batch_forecast(
    trained: tuple[Lake, train_job.TrainSummary],
) -> None:
    lake, _ = trained
    if not lake.exists(FORECASTS):
        forecast_job.run(lake, prophet_workers=1, everyone=True)
    batch = lake.read(FORECASTS).filter(pl.col("model").is_in(["ebm_cluster", "trailing_mean_28d"]))
    patient = batch["patient_id"].sort()[-1]
    latest = batch.filter(pl.col("patient_id") == patient).filter(
        pl.col("origin_date") == pl.col("origin_date").max()
    )
    online = forecast_job.OnDemandForecaster(lake).forecast(patient)
    keys = ["model", "target_date"]
    both = latest.join(online, on=keys, suffix="_online")
    assert both.height == latest.height == 2 * 365
    assert (both["yhat"] - both["yhat_online"]).abs().max() < 1e-6  # type: ignore[operator]
    with pytest.raises(InputError, match="no daily steps"):
        forecast_job.OnDemandForecaster(lake).forecast("nobody")


def test_short_backtests_score_every_model_on_the_same_patients_and_days(
    trained: tuple[Lake, train_job.TrainSummary],
) -> None:
    lake, _ = trained
    rows = recent_accuracy.run(lake, horizon=7, origins=2, spacing_days=7, prophet_workers=1)
    everyone = rows.filter(pl.col("cluster") == "ALL")
    assert set(everyone["model"]) == {
        "seasonal_naive_7d",
        "trailing_mean_28d",
        "weekday_profile_8w",
        "prophet",
        "ebm_cluster",
        "ebm_global",
    }
    assert everyone["origin_date"].n_unique() >= 2  # two per last day of a record
    same = everyone.group_by("origin_date").agg(pl.col("patients", "days").n_unique())
    assert set(same["patients"]) == set(same["days"]) == {1}
    assert (everyone["horizon_days"] == 7).all() and everyone["patients"].max() > 20


def test_short_backtest_of_the_trailing_mean_equals_a_hand_computation(
    trained: tuple[Lake, train_job.TrainSummary],
) -> None:
    """MAE of the 28-day mean over the next 7 days, recomputed with dicts and math.fsum."""
    import math
    from datetime import timedelta

    lake, _ = trained
    patient = lake.read(PATIENTS)["patient_id"].sort()[3]
    rows = recent_accuracy.run(
        lake, horizon=7, origins=2, spacing_days=7, patients=[patient], prophet_workers=1
    ).filter((pl.col("model") == "trailing_mean_28d") & (pl.col("cluster") == "ALL"))
    mine = lake.read(DAILY_STEPS).filter(pl.col("patient_id") == patient)
    wear = {r["date"]: r["steps"] for r in mine.iter_rows(named=True) if r["is_wear_day"]}
    last = mine["date"].max()
    assert isinstance(last, date)
    for k in range(2):
        origin = last - timedelta(days=6 + 7 * k)
        window = [s for d, s in wear.items() if origin - timedelta(days=28) <= d < origin]
        assert len(window) >= 7  # the 28-day window, not the fallback, is the definition
        level = math.fsum(window) / len(window)
        ahead = [origin + timedelta(days=h) for h in range(7)]
        errors = [abs(level - wear[d]) for d in ahead if d in wear]
        scored = rows.filter(pl.col("origin_date") == origin)
        assert scored["days"].item() == len(errors)
        assert scored["mae"].item() == pytest.approx(math.fsum(errors) / len(errors), rel=1e-9)


def test_a_short_backtest_nobody_can_pass_is_one_plain_line(
    trained: tuple[Lake, train_job.TrainSummary], tmp_path: Path
) -> None:
    lake, _ = trained
    assert_one_line_error(
        mobility("--lake", lake.uri, "backtest", "--min-history-days", "5000", cwd=tmp_path),
        "no patient has 5000 wear days before an origin",
    )


def test_the_outlook_sums_up_each_forecast_against_the_patients_baseline(
    trained: tuple[Lake, train_job.TrainSummary],
) -> None:
    """Quarter and year-end means recomputed from gold/forecasts with math.fsum, the baseline
    from silver/features at the origin; one champion per patient and origin."""
    import math

    lake, summary = trained
    if not lake.exists(FORECASTS):
        forecast_job.run(lake, prophet_workers=1, everyone=True)
    forecasts, outlook = lake.read(FORECASTS), lake.read(OUTLOOK)
    keys = ["patient_id", "model", "origin_date"]
    assert outlook.height == forecasts.select(keys).unique().height
    assert outlook.select(keys).is_duplicated().sum() == 0
    features = lake.read(FEATURES).select("patient_id", "date", "baseline_mean_180d")
    for row in outlook.filter(pl.col("model") == "ebm_global").head(3).iter_rows(named=True):
        days = forecasts.filter(
            (pl.col("patient_id") == row["patient_id"])
            & (pl.col("model") == "ebm_global")
            & (pl.col("origin_date") == row["origin_date"])
        )
        ahead = [
            ((r["target_date"] - r["origin_date"]).days + 1, r["yhat"])
            for r in days.iter_rows(named=True)
        ]
        quarter = [y for d, y in ahead if d <= 91]
        year_end = [y for d, y in ahead if 274 <= d <= 365]
        assert row["next_quarter_steps"] == pytest.approx(math.fsum(quarter) / 91, rel=1e-9)
        assert row["year_end_steps"] == pytest.approx(math.fsum(year_end) / 92, rel=1e-9)
        baseline = features.filter(
            (pl.col("patient_id") == row["patient_id"]) & (pl.col("date") == row["origin_date"])
        )["baseline_mean_180d"].item()
        assert row["baseline_steps"] == baseline
        assert row["year_end_change"] == pytest.approx(row["year_end_steps"] / baseline - 1)
    champions = outlook.filter(pl.col("champion"))
    assert set(champions["model"]) <= set(summary.champions.values())
    assert champions.select("patient_id", "origin_date").is_duplicated().sum() == 0


def test_registered_ebms_carry_their_global_term_importances(
    trained: tuple[Lake, train_job.TrainSummary],
) -> None:
    import json

    from models.direct import FEATURE_COLUMNS

    lake, _ = trained
    ebm_rows = lake.read(REGISTRY).filter(pl.col("kind") == "ebm")
    assert ebm_rows.height == 8  # two EBM models x four clusters
    for metrics in ebm_rows["metrics"]:
        importances = json.loads(metrics)["importances"]
        assert len(importances) >= 10
        assert min(importances.values()) >= 0 < max(importances.values())
        assert set(importances) <= {*FEATURE_COLUMNS, "disease_group"}


def test_training_calibrates_intervals_that_the_forecasts_use(
    trained: tuple[Lake, train_job.TrainSummary],
) -> None:
    import json

    from models.intervals import HORIZON_BANDS

    lake, _ = trained
    backtests = lake.read(BACKTESTS)
    assert backtests["width"].null_count() == 0 and (backtests["width"] > 0).all()
    assert backtests["coverage"].is_between(0, 1).all()
    assert backtests["raw_coverage"].null_count() == 0
    registry = lake.read(REGISTRY).filter(pl.col("version") == 1)
    assert registry["intervals"].null_count() == 0
    for text in registry["intervals"]:
        bands = json.loads(text)["bands"]
        assert [tuple(b["days"]) for b in bands] == list(HORIZON_BANDS)
        # six sampled patients per cluster: too few of their own, every band pooled with ALL
        assert all(b["pooled"] for b in bands)
    if not lake.exists(FORECASTS):
        forecast_job.run(lake, prophet_workers=1, everyone=True)
    calibration = forecast_job.registered_intervals(lake)
    model = "trailing_mean_28d"
    rows = lake.read(FORECASTS).filter(pl.col("model") == model)
    patient = rows["patient_id"].sort()[0]
    mine = rows.filter(pl.col("patient_id") == patient).filter(
        pl.col("origin_date") == pl.col("origin_date").max()
    )
    cluster = lake.read(PATIENTS).filter(pl.col("patient_id") == patient)["disease_group"][0]
    q_hi = dict(
        calibration.filter(model=model, cluster=cluster).select("band_start", "q_hi").iter_rows()
    )
    origin = mine["origin_date"][0]
    # the patient's scale, from the first band; every band is q_hi x that same scale above yhat
    above = mine.with_columns(
        band=pl.col("target_date").sub(origin).dt.total_days().add(1),
        above=pl.col("yhat_upper") - pl.col("yhat"),
    )
    scale = above["above"][0] / q_hi[1]
    for start, end in HORIZON_BANDS:
        band = above.filter(pl.col("band").is_between(start, end))
        assert band["above"].to_list() == pytest.approx([q_hi[start] * scale] * band.height)


REALDATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "realdata"


@pytest.mark.skipif(not REALDATA.exists(), reason="real device exports not beside the project")
def test_the_pipeline_forecasts_every_real_patient(tmp_path: Path) -> None:
    """The real Apple Health export and Fitabase hourly file (a month each): too short to train
    on, so every patient gets the baselines (and Prophet) or, with under 28 wear days, the
    cluster-level forecast; nobody is left without one."""
    from jobs.ingest import run as ingest

    lake = Lake(str(tmp_path / "lake"))
    ingest.run(lake, REALDATA / "apple-health" / "export.xml", patient_id="apple-1")
    ingest.run(lake, REALDATA / "fitabase" / "hourlySteps_merged.csv", timezone="America/Chicago")
    done = mobility("--lake", lake.uri, "pipeline", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "train: too little history" in done.stdout
    forecasts = lake.read(FORECASTS)
    assert forecasts["patient_id"].n_unique() == lake.read(DAILY_STEPS)["patient_id"].n_unique()
    assert set(forecasts.group_by("patient_id", "model").len()["len"]) == {365}
    wear = lake.read(DAILY_STEPS).filter(pl.col("is_wear_day")).group_by("patient_id").len()
    newcomers = set(wear.filter(pl.col("len") < 28)["patient_id"])
    assert newcomers == set(forecasts.filter(pl.col("model") == "cluster_level")["patient_id"])
    # a week ahead is what a month of data can score: every model on the same real patients
    scored = mobility("--lake", lake.uri, "backtest", "--horizon", "7", cwd=tmp_path)
    assert scored.returncode == 0, scored.stderr
    for model in ("seasonal_naive_7d", "trailing_mean_28d", "weekday_profile_8w", "prophet"):
        assert model in scored.stdout


def test_superseded_origins_keep_the_first_of_each_month_and_the_latest() -> None:
    from datetime import date

    stored = pl.DataFrame(
        {
            "patient_id": ["A"] * 5 + ["B"],
            "origin_date": [
                date(2026, 1, 3),  # first of January: kept
                date(2026, 1, 9),
                date(2026, 2, 1),  # first of February: kept
                date(2026, 2, 2),
                date(2026, 2, 9),  # after this run's origin (data withdrawn): deleted
                date(2026, 2, 5),  # B's only origin, this run's: kept
            ],
        }
    )
    latest = pl.DataFrame(
        {"patient_id": ["A", "B"], "origin": [date(2026, 2, 3), date(2026, 2, 5)]}
    )
    gone = forecast_job.superseded(stored, latest).sort("origin_date")
    assert gone.rows() == [
        ("A", date(2026, 1, 9)),
        ("A", date(2026, 2, 2)),
        ("A", date(2026, 2, 9)),
    ]


def test_a_new_training_retires_the_earlier_version(tmp_path: Path) -> None:
    lake = Lake(str(tmp_path / "lake"))
    generate.run(lake, patients=12, seed=9, years=1.6, end_date=DEFAULT_END_DATE)
    aggregate.run(lake)
    features_job.run(lake)
    for day in (NOW, NOW + timedelta(days=8)):
        summary = train_job.run(lake, patients_per_cluster=2, origins=1, prophet_workers=1, now=day)
        assert summary.status == "trained"
    registry = lake.read(REGISTRY)
    assert set(registry.filter(pl.col("version") == 1)["status"]) == {"retired"}
    assert set(registry.filter(pl.col("version") == 2)["status"]) == {"champion", "candidate"}
    assert forecast_job.champions(lake)  # from the newest version only


def test_training_with_a_tuning_budget_registers_the_tuned_parameters(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import json

    lake = Lake(str(tmp_path / "lake"))
    generate.run(lake, patients=16, seed=4, years=1.6, end_date=DEFAULT_END_DATE)
    aggregate.run(lake)
    features_job.run(lake)
    monkeypatch.setattr(train_job, "MIN_PATIENTS_TO_TUNE", 1)
    summary = train_job.run(
        lake,
        force=True,
        patients_per_cluster=4,
        origins=1,
        prophet_workers=1,
        tune_seconds=8,
        now=NOW,
    )
    assert summary.status == "trained"
    details = json.loads(lake.read(JOB_RUNS).filter(pl.col("job") == "train")["details"][0])
    assert set(details["tuning_mae"]) == {"ebm_cluster", "ebm_global"}
    assert "ebm_global ALL" in summary.tuned
    assert summary.tuned["ebm_global ALL"]["validation_mae"] > 0
    assert "tuned ebm_global ALL" in summary.describe()
    ebm = lake.read(REGISTRY).filter(pl.col("kind") == "ebm")
    for params in ebm["params"]:
        tuned = json.loads(params)
        assert {"learning_rate", "max_bins", "max_leaves", "interactions", "outer_bags"} <= set(
            tuned
        )


def test_patients_of_a_cluster_without_an_ebm_still_get_their_other_forecasts(
    trained: tuple[Lake, train_job.TrainSummary], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A cluster nobody of the training sample belonged to has no EBM: its patients get the
    other models, not a failed run."""
    lake, _ = trained
    ebms = forecast_job.registered_ebms(lake)
    clustered = next(ebm for ebm in ebms if ebm.clustered)
    dropped = sorted(clustered.fitted)[0]
    del clustered.fitted[dropped]
    monkeypatch.setattr(forecast_job, "registered_ebms", lambda _lake: ebms)
    # other models under the same registry version: everyone forecast again, as after a
    # training (jobs/forecast_refresh.py)
    forecast_job.run(lake, prophet_workers=1, everyone=True)
    groups = lake.read(PATIENTS).select("patient_id", "disease_group")
    forecasts = lake.read(FORECASTS).join(groups, on="patient_id")
    latest = forecasts.filter(
        pl.col("origin_date") == pl.col("origin_date").max().over("patient_id")
    )
    mine = latest.filter(pl.col("disease_group") == dropped)
    assert mine.height and "ebm_cluster" not in set(mine["model"])
    assert {"ebm_global", "trailing_mean_28d"} <= set(mine["model"])
    assert "ebm_cluster" in set(latest.filter(pl.col("disease_group") != dropped)["model"])
