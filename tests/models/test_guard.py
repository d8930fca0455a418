"""The guarded forecast (issue 19, item 1): a learned model is served as the patient's usual level
plus the share of its adjustment that its backtests earned, and never leaves the patient's own
range without evidence. Each figure is checked against a computation by hand."""

from __future__ import annotations

import statistics
from datetime import date, timedelta
from typing import ClassVar

import numpy as np
import polars as pl
import pytest

from models import guard
from models.backtest import Panel, run_backtest
from models.base import Forecaster, ForecastInput, target_days
from models.baselines import TrailingMean, UsualLevel, WeekdayProfile, usual_days
from tests.models.series import START, Collapse, forecast_input, no_therapies, weekly_series


class Oracle(Forecaster):
    """Knows the future: forecasts the true steps (a model with all the evidence there is)."""

    name: ClassVar[str] = "oracle"
    truth: ClassVar[pl.DataFrame]

    def _predict(self, data: ForecastInput, horizon: int) -> pl.DataFrame:
        days = target_days(data.patients, data.origin, horizon)
        truth = self.truth.select("patient_id", target_date="date", yhat="steps")
        return days.join(truth, on=["patient_id", "target_date"], how="left").select(
            "patient_id",
            "target_date",
            yhat=pl.col("yhat").fill_null(5000.0),
            yhat_lower=pl.col("yhat").fill_null(5000.0) * 0.9,
            yhat_upper=pl.col("yhat").fill_null(5000.0) * 1.1,
        )


def _panel(patients: int, days: int, *, trend: float = 0.0) -> Panel:
    frames = []
    for k in range(patients):
        series = weekly_series(
            f"P{k:03d}",
            days,
            [6000 + 100 * k, 6500, 7000, 6800, 7200, 9000, 4000],
            noise=800,
            seed=k,
        )
        frames.append(series.with_columns(steps=pl.col("steps") + trend * pl.int_range(pl.len())))
    daily = pl.concat(frames)
    ids = daily["patient_id"].unique().sort()
    people = pl.DataFrame({"patient_id": ids, "disease_group": "MS", "country": "DE"})
    return Panel(daily, people, no_therapies())


def test_usual_level_is_the_13_week_median_times_shrunk_weekday_shares() -> None:
    history = weekly_series("P1", 400, [5000, 6000, 7000, 8000, 9000, 3000, 2000], noise=500)
    origin = START + timedelta(days=400)
    data = forecast_input(history, origin)
    usual = usual_days(data).sort("weekday")
    wear = history.drop_nulls("steps")
    recent = wear.filter(pl.col("date") >= origin - timedelta(days=91))["steps"].to_list()
    level = statistics.median(recent)
    year = wear.filter(pl.col("date") >= origin - timedelta(days=364))
    overall = statistics.median(year["steps"].to_list())
    for weekday in range(1, 8):
        days = year.filter(pl.col("date").dt.weekday() == weekday)["steps"].to_list()
        n = len(days)
        share = 1 + (statistics.median(days) / overall - 1) * n / (n + 10)
        got = usual.filter(pl.col("weekday") == weekday).row(0, named=True)
        assert got["level"] == pytest.approx(level)
        assert got["yhat"] == pytest.approx(level * share)
    forecast = UsualLevel().predict(data, horizon=14)
    monday = forecast.filter(pl.col("target_date").dt.weekday() == 1)["yhat"]
    assert monday.to_list() == pytest.approx([usual["yhat"][0]] * 2)


def test_a_collapse_without_evidence_is_served_as_the_patients_usual_level() -> None:
    # the collapse loses every backtest: its earned share is 0 and it is served as the anchor
    panel = _panel(12, 800)
    origins = [START + timedelta(days=400), START + timedelta(days=430)]
    run = run_backtest([UsualLevel(), Collapse(), TrailingMean()], panel, origins, horizon=365)
    chosen = run.shrinkage.filter(pl.col("model") == "collapse")
    assert chosen["shrinkage"].to_list() == [0.0, 0.0]
    league = run.results.filter(pl.col("horizon_days") == 365, pl.col("cluster") == "ALL")
    mae = dict(league.group_by("model").agg(pl.col("mae").mean()).iter_rows())
    # served as the anchor, it scores as the anchor does (to the last step)
    assert mae["collapse"] == pytest.approx(mae["usual_level"])


def test_even_fully_trusted_a_quarter_never_falls_below_the_patients_5th_percentile() -> None:
    history = weekly_series("P1", 500, [6000] * 7, noise=1000, seed=3)
    origin = START + timedelta(days=500)
    data = forecast_input(history, origin)
    collapse = Collapse().predict(data, horizon=365)
    anchor = UsualLevel().predict(data, horizon=365)
    shares = pl.DataFrame({"patient_id": ["P1"], "shrinkage": [1.0]})
    served = guard.serve(collapse, anchor, data, shares)
    year = history.drop_nulls("steps").filter(pl.col("date") >= origin - timedelta(days=365))
    p5 = float(np.quantile(year["steps"].to_numpy(), 0.05))
    quarters = served.group_by(guard.quarter_of(pl.lit(origin))).agg(pl.col("yhat").mean())
    assert quarters.height == 4
    for mean in quarters["yhat"]:
        assert mean == pytest.approx(p5, rel=1e-9)
    # the adjustment is cut, not replaced: the weight is the share of it that reaches p5
    day = served.row(0, named=True)
    assert day["yhat"] == pytest.approx(day["anchor"] + day["weight"] * (600 - day["anchor"]), 0.2)
    assert 0 < day["weight"] < 1
    # its interval moved with it and still holds the forecast
    assert served.filter(
        (pl.col("yhat_lower") > pl.col("yhat")) | (pl.col("yhat") > pl.col("yhat_upper"))
    ).is_empty()


def test_a_model_with_real_evidence_keeps_its_adjustment_shrunk_by_the_patients_behind_it() -> None:
    # every patient's steps climb 8 steps a day: the oracle knows, the anchor does not
    panel = _panel(15, 900, trend=8.0)
    Oracle.truth = panel.daily
    origins = [date(2024, 3, 1), date(2024, 4, 1)]
    run = run_backtest([UsualLevel(), Oracle(), WeekdayProfile()], panel, origins, horizon=182)
    chosen = run.shrinkage.filter(pl.col("model") == "oracle", pl.col("cluster") == "MS")
    row = chosen.row(0, named=True)
    assert row["best"] == 1.0
    assert row["patients"] == 15
    assert row["shrinkage"] == pytest.approx(15 / 25)
    # served at that share, cross-fitted on the other patients, it beats the usual level
    league = run.results.filter(pl.col("horizon_days") == 182, pl.col("cluster") == "MS")
    mae = dict(league.group_by("model").agg(pl.col("mae").mean()).iter_rows())
    assert mae["oracle"] < 0.9 * mae["usual_level"]


def test_served_explanation_rows_sum_to_the_served_forecast() -> None:
    history = weekly_series("P1", 500, [6000, 6100, 6200, 6300, 8000, 9000, 3000], noise=900)
    origin = START + timedelta(days=500)
    data = forecast_input(history, origin)
    anchor = UsualLevel().predict(data, horizon=120)
    model = anchor.with_columns(yhat=pl.col("yhat") * 0.7 + 900.0)
    # the model's own explanation: its level, an intercept and two inputs summing to it
    own = model.select(
        "patient_id",
        "target_date",
        baseline=pl.lit(5000.0),
        intercept=pl.col("yhat") - 5600.0,
        trend_slope_30d=pl.lit(400.0),
        therapy_levodopa_change=pl.lit(200.0),
    ).unpivot(
        index=["patient_id", "target_date"], variable_name="feature", value_name="contribution"
    )
    shares = pl.DataFrame({"patient_id": ["P1"], "shrinkage": [0.4]})
    served = guard.serve(model, anchor, data, shares)
    rows = guard.explain_served(own, served, usual_days(data).drop("yhat"))
    sums = rows.group_by("target_date").agg(pl.col("contribution").sum())
    check = served.join(sums, on="target_date")
    assert check.height == 120
    assert (check["yhat"] - check["contribution"]).abs().max() < 1e-6  # type: ignore[operator]
    # the therapy's row keeps its sign and is the served share of the model's
    therapy = rows.filter(pl.col("feature") == "therapy_levodopa_change").join(
        served.select("target_date", "weight"), on="target_date"
    )
    assert (therapy["contribution"] - 200.0 * therapy["weight"]).abs().max() < 1e-9  # type: ignore[operator]
    assert {"baseline", "usual_weekday", "recent_level"} <= set(rows["feature"])
