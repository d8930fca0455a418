"""The batch forecast of a patient with history but no level at their origin (their last 130 days
recorded as non-wear): the EBMs cannot serve them, so they get the ``cluster_level`` forecast
beside their baselines and are counted among the cluster-level patients (issue 19)."""

from __future__ import annotations

from datetime import timedelta

import polars as pl

from jobs.forecast import forecast_batch
from models.direct import LEVEL
from models.ebm import ClusterEBM
from tests.models.test_backtest_left_out import HORIZON, ORIGIN, QUICK_EBM, _daily, _panel

QUIET_DAYS = 130


def test_a_patient_without_a_level_gets_the_cluster_level_instead_of_the_ebms() -> None:
    daily = _daily().filter(pl.col("date") < ORIGIN)
    recent = daily.filter(pl.col("patient_id") == "ms-recent-1")
    quiet = recent.with_columns(
        patient_id=pl.lit("ms-quiet"),
        steps=pl.when(pl.col("date") < ORIGIN - timedelta(days=QUIET_DAYS))
        .then(pl.col("steps"))
        .otherwise(0.0),
        is_wear_day=pl.col("date") < ORIGIN - timedelta(days=QUIET_DAYS),
    )
    panel = _panel(pl.concat([daily, quiet]))
    # the feature job sees no level for the quiet patient at the origin
    at_origin = panel.features.filter(pl.col("date") == ORIGIN)
    assert at_origin.filter(pl.col(LEVEL).is_null())["patient_id"].to_list() == ["ms-quiet"]
    known = panel.known_at(ORIGIN)
    ebms = [
        ClusterEBM(clustered=clustered, horizon=HORIZON, params=dict(QUICK_EBM)).fit(known)
        for clustered in (True, False)
    ]
    batch = pl.DataFrame({"patient_id": ["ms-quiet", "ms-recent-1"], "origin": [ORIGIN] * 2})
    made = forecast_batch(
        panel, batch, ebms, {"MS": "ebm_cluster"}, horizon=HORIZON, prophet_workers=1
    )
    assert made.forecasts is not None
    models = made.forecasts.group_by("patient_id").agg(pl.col("model").unique().sort())
    assert dict(models.iter_rows()) == {
        "ms-quiet": [
            "cluster_level",
            "seasonal_naive_7d",
            "trailing_mean_28d",
            "usual_level",
            "weekday_profile_8w",
        ],
        "ms-recent-1": [
            "ebm_cluster",
            "ebm_global",
            "seasonal_naive_7d",
            "trailing_mean_28d",
            "usual_level",
            "weekday_profile_8w",
        ],
    }
    assert made.cluster_level == 1
    assert set(made.forecasts.group_by("patient_id", "model").len()["len"]) == {HORIZON}
