"""Forecast accuracy drift: stored forecasts scored on the days that have since happened, against
the backtest accuracy of the latest training.

A forecast day is scored once its actual is a wear day (non-wear days are missing, not zero);
only days of the last :data:`RECENT_DAYS` days of data count, so the check follows the present.
For each model, disease cluster (and ``ALL``) and cumulative horizon (the first 7, 28, 91, 182,
365 days ahead) the MAE and RMSE are compared with the backtests' mean at the same horizon: more
than :data:`DRIFT_RATIO` times the reference MAE raises an alert; fewer than
:data:`MIN_SCORED_DAYS` scored days give "too little data".
"""

from __future__ import annotations

import polars as pl

from models.backtest import ALL_CLUSTERS
from models.metrics import HORIZONS, scored_days, summarise

RECENT_DAYS = 28
DRIFT_RATIO = 1.10
MIN_SCORED_DAYS = 50


def matured_accuracy(
    forecasts: pl.DataFrame, actuals: pl.DataFrame, clusters: pl.DataFrame
) -> pl.DataFrame:
    """``model, cluster, horizon_days, mae, rmse, patients, days`` of ``forecasts`` (gold/forecasts
    rows) scored on ``actuals`` (``patient_id, date, steps``, steps missing on non-wear days);
    ``clusters``: ``patient_id, cluster``."""
    none = pl.DataFrame(schema={"patient_id": pl.String, "scale": pl.Float64})
    scored = [
        scored_days(rows, actuals, None, none).with_columns(model=pl.lit(model))
        for (model,), rows in forecasts.group_by("model")
    ]
    days = pl.concat(scored).join(clusters, on="patient_id") if scored else pl.DataFrame()
    if not days.height:
        return _empty()
    out = []
    for model in sorted(days["model"].unique()):
        mine = days.filter(pl.col("model") == model)
        for cluster in [ALL_CLUSTERS, *sorted(mine["cluster"].unique())]:
            chosen = mine if cluster == ALL_CLUSTERS else mine.filter(pl.col("cluster") == cluster)
            horizons = tuple(h for h in HORIZONS if chosen.filter(pl.col("horizon") <= h).height)
            if horizons:
                out.append(
                    summarise(chosen, horizons).with_columns(
                        model=pl.lit(model), cluster=pl.lit(cluster)
                    )
                )
    if not out:
        return _empty()
    return pl.concat(out).select(
        "model", "cluster", "horizon_days", "mae", "rmse", "patients", "days"
    )


def accuracy_checks(matured: pl.DataFrame, reference: pl.DataFrame) -> pl.DataFrame:
    """One check row per model, cluster and horizon with a backtest reference: ``subject,
    metric, value, reference, threshold, status, details``.

    Args:
        matured: :func:`matured_accuracy` rows.
        reference: ``model, cluster, horizon_days, mae`` (the backtests' mean over origins).
    """
    joined = matured.join(
        reference.select("model", "cluster", "horizon_days", reference_mae="mae"),
        on=["model", "cluster", "horizon_days"],
    )
    ratio = pl.col("mae") / pl.col("reference_mae")
    return joined.sort("model", "cluster", "horizon_days").select(
        subject=pl.concat_str(
            "model",
            pl.lit(" · "),
            "cluster",
            pl.lit(" · first "),
            pl.col("horizon_days").cast(pl.String),
            pl.lit(" days"),
        ),
        metric=pl.lit("mae"),
        value=pl.col("mae"),
        reference=pl.col("reference_mae"),
        threshold=pl.col("reference_mae") * DRIFT_RATIO,
        status=pl.when(pl.col("days") < MIN_SCORED_DAYS)
        .then(pl.lit("too little data"))
        .when(ratio > DRIFT_RATIO)
        .then(pl.lit("alert"))
        .otherwise(pl.lit("ok")),
        details=pl.struct(
            rmse=pl.col("rmse").round(1),
            days="days",
            patients="patients",
            ratio=ratio.round(3),
        ).struct.json_encode(),
    )


def _empty() -> pl.DataFrame:
    return pl.DataFrame(
        schema={
            "model": pl.String,
            "cluster": pl.String,
            "horizon_days": pl.Int32,
            "mae": pl.Float64,
            "rmse": pl.Float64,
            "patients": pl.Int32,
            "days": pl.Int32,
        }
    )
