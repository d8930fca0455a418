"""Baselines on hand-made series: exact where the rule is exact, honest intervals, guarded input."""

from __future__ import annotations

from datetime import timedelta

import polars as pl
import pytest

from models.base import ForecastError
from models.baselines import SeasonalNaive, TrailingMean, WeekdayProfile
from tests.models.series import START, forecast_input, weekly_series

PATTERN = [8000.0, 7000.0, 7500.0, 6000.0, 9000.0, 12000.0, 3000.0]


def test_a_pure_weekly_pattern_is_forecast_exactly_by_the_weekday_models() -> None:
    history = weekly_series("P1", 120, PATTERN)
    origin = START + timedelta(days=120)
    for model in (SeasonalNaive(), WeekdayProfile()):
        out = model.predict(forecast_input(history, origin), horizon=21)
        assert out.height == 21
        want = [PATTERN[d.weekday()] for d in out["target_date"]]
        assert out["yhat"].to_list() == pytest.approx(want)
        # a perfect in-sample fit: the interval has no width
        assert (out["yhat_upper"] - out["yhat_lower"]).max() == pytest.approx(0)


def test_trailing_mean_is_the_mean_of_the_last_28_days_wear_days() -> None:
    history = weekly_series("P1", 70, PATTERN, nonwear_every=5)
    origin = START + timedelta(days=70)
    out = TrailingMean().predict(forecast_input(history, origin), horizon=3)
    last = history.filter(pl.col("date") >= origin - timedelta(days=28))["steps"].drop_nulls()
    assert out["yhat"].to_list() == pytest.approx([last.mean()] * 3)
    assert (out["yhat_lower"] <= out["yhat"]).all() and (out["yhat"] <= out["yhat_upper"]).all()
    assert out["yhat_lower"].min() >= 0


def test_seasonal_naive_skips_a_non_worn_weekday_to_the_week_before() -> None:
    history = weekly_series("P1", 28, PATTERN).with_columns(
        steps=pl.when(pl.col("date") == START + timedelta(days=21))
        .then(None)
        .otherwise(pl.col("steps"))
    )
    history = history.with_columns(  # make the earlier Monday distinguishable
        steps=pl.when(pl.col("date") == START + timedelta(days=14))
        .then(111.0)
        .otherwise(pl.col("steps"))
    )
    out = SeasonalNaive().predict(forecast_input(history, START + timedelta(days=28)), horizon=1)
    assert out["yhat"].to_list() == [111.0]


def test_models_refuse_history_on_or_after_the_origin_and_patients_without_data() -> None:
    history = weekly_series("P1", 30, PATTERN)
    data = forecast_input(history, START + timedelta(days=30))
    leaky = type(data)(START + timedelta(days=10), data.history, data.patients, data.therapies)
    with pytest.raises(ForecastError, match="on or after the origin"):
        TrailingMean().predict(leaky)
    empty = weekly_series("P2", 30, PATTERN).with_columns(steps=pl.lit(None, pl.Float64))
    with pytest.raises(ForecastError, match="without any wear day"):
        WeekdayProfile().predict(forecast_input(pl.concat([history, empty]), data.origin))


def test_every_explanation_row_has_a_plain_language_label() -> None:
    from models.direct import FEATURE_COLUMNS, SPECIAL_LABELS, feature_label

    for name in (*FEATURE_COLUMNS, *SPECIAL_LABELS):
        label = feature_label(name)
        assert label and label[0].isupper() and "_" not in label, (name, label)
    assert feature_label("roll_mean_30d") == "Average steps, last 30 days"
    # the EBM's pair interactions, as they appear in gold/explanations
    assert feature_label("roll_mean_30d & horizon_days") == (
        f"Average steps, last 30 days × {feature_label('horizon_days')}"
    )
    with pytest.raises(KeyError):
        feature_label("no_such_feature")
