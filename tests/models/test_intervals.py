"""Calibrated intervals (models/intervals.py): conformal quantiles against an independent
computation, coverage of fresh draws, widths that follow the patient's spread, the pooled
fallback of a tiny cluster, and backtests that report coverage and width."""

from __future__ import annotations

import math
from datetime import date, timedelta
from statistics import NormalDist

import numpy as np
import polars as pl
import pytest

from models import intervals
from models.backtest import Panel, run_backtest
from models.baselines import TrailingMean, WeekdayProfile
from tests.models.series import START, forecast_input, weekly_series

ORIGIN = date(2024, 1, 1)


def _residuals(model: str, cluster: str, patients: int, days: int, seed: int) -> pl.DataFrame:
    """Normalised residuals drawn from N(0.3, 1.2) for every band's days."""
    rng = np.random.default_rng(seed)
    ids = [f"{cluster}-{p}" for p in range(patients) for _ in range(days)]
    horizons = np.tile(np.arange(1, days + 1), patients)
    return pl.DataFrame(
        {
            "model": model,
            "cluster": cluster,
            "patient_id": ids,
            "horizon": horizons,
            "score": rng.normal(0.3, 1.2, len(ids)),
        }
    )


def test_conformal_quantiles_are_the_order_statistics_of_split_conformal() -> None:
    # n = 19: the 2nd smallest (floor(20 * 0.1)) and the 18th (ceil(20 * 0.9))
    scores = np.arange(19, 0, -1, dtype=float)
    assert intervals.conformal_quantiles(scores) == (2.0, 18.0)
    # n = 9: the sample's extremes
    assert intervals.conformal_quantiles(np.arange(1.0, 10.0)) == (1.0, 9.0)


def test_calibration_recovers_known_quantiles_and_fresh_draws_are_covered_80pct() -> None:
    residuals = _residuals("m", "MS", patients=40, days=365, seed=1)
    calibration = intervals.calibrate(residuals).filter(pl.col("cluster") == "MS")
    assert calibration["band_start"].to_list() == [s for s, _ in intervals.HORIZON_BANDS]
    assert not calibration["pooled"].any()
    truth = NormalDist(0.3, 1.2)
    for row in calibration.iter_rows(named=True):
        # the band of days 1-7 holds 280 residuals: the tolerance follows the sample size
        tolerance = 4 * 1.2 / math.sqrt(row["residuals"]) + 0.02
        assert row["q_lo"] == pytest.approx(truth.inv_cdf(0.1), abs=tolerance)
        assert row["q_hi"] == pytest.approx(truth.inv_cdf(0.9), abs=tolerance)
    # fresh patients with their own spreads: the intervals cover 80% of what they walk
    rng = np.random.default_rng(2)
    patients = [f"new-{p}" for p in range(200)]
    scale = pl.DataFrame({"patient_id": patients, "scale": rng.uniform(500, 3000, 200)})
    yhat = 6000.0
    forecasts = pl.DataFrame(
        {
            "model": "m",
            "patient_id": np.repeat(patients, 365),
            "target_date": [ORIGIN + timedelta(days=d) for d in range(365)] * 200,
            "yhat": yhat,
            "yhat_lower": yhat,
            "yhat_upper": yhat,
        }
    )
    clusters = pl.DataFrame({"patient_id": patients, "cluster": "MS"})
    out = intervals.apply_intervals(forecasts, calibration, scale, clusters, origin=ORIGIN)
    actual = out.join(scale, on="patient_id").with_columns(
        actual=yhat + pl.col("scale") * rng.normal(0.3, 1.2, out.height)
    )
    inside = actual.select(pl.col("actual").is_between("yhat_lower", "yhat_upper").mean()).item()
    assert inside == pytest.approx(0.8, abs=0.015)


def test_intervals_widen_with_the_patients_variability() -> None:
    calm = weekly_series("calm", 120, [8000.0] * 7, noise=1000, seed=3)
    restless = weekly_series("restless", 120, [8000.0] * 7, noise=3000, seed=4)
    known = forecast_input(pl.concat([calm, restless]), START + timedelta(days=120))
    scale = intervals.patient_scale(known)
    spread = dict(zip(scale["patient_id"], scale["scale"], strict=True))
    # 1.4826 x MAD of the last 8 weeks estimates the noise's standard deviation
    assert spread["calm"] == pytest.approx(1000, rel=0.3)
    assert spread["restless"] == pytest.approx(3000, rel=0.3)
    calibration = intervals.calibrate(_residuals("trailing_mean_28d", "MS", 20, 365, 4))
    forecasts = (
        TrailingMean().predict(known, horizon=30).with_columns(model=pl.lit(TrailingMean.name))
    )
    clusters = known.patients.select("patient_id", cluster="disease_group")
    out = intervals.apply_intervals(forecasts, calibration, scale, clusters, origin=known.origin)
    width = out.group_by("patient_id").agg((pl.col("yhat_upper") - pl.col("yhat_lower")).mean())
    widths = dict(zip(width["patient_id"], width["yhat_upper"], strict=True))
    assert widths["restless"] / widths["calm"] == pytest.approx(
        spread["restless"] / spread["calm"], rel=1e-6
    )
    assert (out["yhat_lower"] >= 0).all()
    assert (out["yhat_lower"] <= out["yhat"]).all() and (out["yhat"] <= out["yhat_upper"]).all()


def test_a_tiny_cluster_pools_with_all_and_says_so() -> None:
    residuals = pl.concat(
        [
            _residuals("m", "MS", patients=30, days=365, seed=5),
            # three patients with errors far wider than anyone's
            _residuals("m", "PD", patients=3, days=365, seed=6).with_columns(pl.col("score") * 5),
        ]
    )
    calibration = intervals.calibrate(residuals)
    pd_rows = calibration.filter(pl.col("cluster") == "PD").sort("band_start")
    everyone = calibration.filter(pl.col("cluster") == "ALL").sort("band_start")
    ms_rows = calibration.filter(pl.col("cluster") == "MS")
    assert pd_rows["pooled"].all() and not ms_rows["pooled"].any()
    assert pd_rows["q_lo"].to_list() == everyone["q_lo"].to_list()
    assert pd_rows["q_hi"].to_list() == everyone["q_hi"].to_list()
    assert pd_rows["patients"].to_list() == [3] * len(intervals.HORIZON_BANDS)
    text = intervals.to_json(calibration, "m", "PD")
    assert text is not None and '"pooled": true' in text
    back = intervals.from_json({("m", "PD"): text})
    assert back["q_hi"].to_list() == pytest.approx(pd_rows["q_hi"].to_list(), abs=1e-4)


def test_backtests_report_out_of_sample_coverage_and_width() -> None:
    histories = [
        weekly_series(f"p{i:02d}", 500, [5000.0 + 100 * i] * 7, noise=400 + 60 * i, seed=i)
        for i in range(24)
    ]
    daily = pl.concat(histories)
    patients = pl.DataFrame(
        {
            "patient_id": [f"p{i:02d}" for i in range(24)],
            "disease_group": ["MS"] * 24,
            "country": ["DE"] * 24,
        }
    )
    therapies = forecast_input(daily, START).therapies
    panel = Panel(daily, patients, therapies)
    origins = [START + timedelta(days=200), START + timedelta(days=300)]
    run = run_backtest([TrailingMean(), WeekdayProfile()], panel, origins, horizon=91)
    year = run.results.filter(pl.col("horizon_days") == 91)
    assert {"coverage", "width", "raw_coverage", "raw_width"} <= set(year.columns)
    assert (year["width"] > 0).all()
    # stationary noise: the calibrated intervals hold 80% out of sample
    for coverage in year["coverage"]:
        assert 0.7 <= coverage <= 0.9
    assert set(run.calibration["model"]) == {TrailingMean.name, WeekdayProfile.name}
    assert set(run.calibration["cluster"]) == {"ALL", "MS"}
