"""Forecast accuracy drift: stored forecasts scored on the days that have since happened, against
the backtest accuracy of the latest training.

A forecast day is scored once its actual is a wear day (non-wear days are missing, not zero);
only days of the last :data:`RECENT_DAYS` days of data count, so the check follows the present.
For each model, disease cluster (and ``ALL``) and cumulative horizon (the first 7, 28, 91, 182,
365 days ahead; a horizon without scored days beyond the next shorter one is left out, it would
repeat it) the MAE and RMSE are compared with the backtests' mean at the same horizon.

A horizon is an ``alert`` when its MAE is :data:`DRIFT_RATIO` times the reference or more (the
threshold, inclusive) and the difference is more than chance: the MAE's lower 95% confidence
bound (one-sided, z = 1.645) is still above the reference. The standard error treats patients
as the independent units (the mean absolute error of each patient, their spread over the square
root of their number), since one patient's days are not independent. Only a cluster's champion
alerts (its forecasts are the ones clinicians see, and an alert makes training due); another
model past the same bar is a ``warning``. Fewer than :data:`MIN_SCORED_DAYS` scored days or
:data:`MIN_PATIENTS` patients give "too little data".
"""

from __future__ import annotations

import polars as pl

from models.backtest import ALL_CLUSTERS
from models.metrics import HORIZONS, scored_days, summarise

RECENT_DAYS = 28
DRIFT_RATIO = 1.10
MIN_SCORED_DAYS = 50
MIN_PATIENTS = 5
Z_95 = 1.6449


def matured_accuracy(
    forecasts: pl.DataFrame, actuals: pl.DataFrame, clusters: pl.DataFrame
) -> pl.DataFrame:
    """``model, cluster, horizon_days, mae, mae_se, rmse, patients, days`` of ``forecasts``
    (gold/forecasts rows) scored on ``actuals`` (``patient_id, date, steps``, steps missing on
    non-wear days); ``clusters``: ``patient_id, cluster``. ``mae_se``: the standard error of the
    MAE with patients as the units."""
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
            horizons = _distinct_horizons(chosen["horizon"])
            if horizons:
                out.append(
                    summarise(chosen, horizons).with_columns(
                        model=pl.lit(model),
                        cluster=pl.lit(cluster),
                        mae_se=pl.Series([_mae_se(chosen, h) for h in horizons]),
                    )
                )
    if not out:
        return _empty()
    return pl.concat(out).select(
        "model", "cluster", "horizon_days", "mae", "mae_se", "rmse", "patients", "days"
    )


def _distinct_horizons(horizons: pl.Series) -> tuple[int, ...]:
    """The cumulative horizons with scored days beyond the next shorter one (a horizon without
    any would repeat that one's figures)."""
    return tuple(
        h
        for i, h in enumerate(HORIZONS)
        if horizons.is_between(HORIZONS[i - 1] + 1 if i else 1, h).any()
    )


def _mae_se(days: pl.DataFrame, horizon: int) -> float | None:
    """Standard error of the MAE within ``horizon``: the spread of the patients' own mean
    absolute errors over the square root of their number (None under two patients)."""
    per_patient = (
        days.filter(pl.col("horizon") <= horizon)
        .group_by("patient_id")
        .agg(pl.col("error").abs().mean())["error"]
    )
    if per_patient.len() < 2:
        return None
    spread = per_patient.std()
    return float(spread) / per_patient.len() ** 0.5 if isinstance(spread, float) else None


def accuracy_checks(
    matured: pl.DataFrame, reference: pl.DataFrame, champions: dict[str, str]
) -> pl.DataFrame:
    """One check row per model, cluster and horizon with a backtest reference: ``subject,
    metric, value, reference, threshold, status, details``.

    Args:
        matured: :func:`matured_accuracy` rows.
        reference: ``model, cluster, horizon_days, mae`` (the backtests' mean over origins).
        champions: each cluster's champion model; ``ALL`` rows count as a champion's when that
            model is the champion of every cluster scored.
    """
    joined = matured.join(
        reference.select("model", "cluster", "horizon_days", reference_mae="mae"),
        on=["model", "cluster", "horizon_days"],
    )
    scored = set(matured["cluster"].unique()) - {ALL_CLUSTERS}
    champion_rows = [
        (model, cluster)
        for model in set(champions.values())
        for cluster in [ALL_CLUSTERS, *scored]
        if champions.get(cluster) == model
        or (cluster == ALL_CLUSTERS and all(champions.get(c) == model for c in scored))
    ]
    keys = [f"{model}|{cluster}" for model, cluster in champion_rows]
    is_champion = pl.concat_str("model", pl.lit("|"), "cluster").is_in(
        pl.lit(keys, dtype=pl.List(pl.String))
    )
    ratio = pl.col("mae") / pl.col("reference_mae")
    lower = pl.col("mae") - Z_95 * pl.col("mae_se")
    worse = (ratio >= DRIFT_RATIO) & (lower > pl.col("reference_mae"))
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
        status=pl.when(
            (pl.col("days") < MIN_SCORED_DAYS)
            | (pl.col("patients") < MIN_PATIENTS)
            | pl.col("mae_se").is_null()
        )
        .then(pl.lit("too little data"))
        .when(worse & is_champion)
        .then(pl.lit("alert"))
        .when(worse)
        .then(pl.lit("warning"))
        .otherwise(pl.lit("ok")),
        details=pl.struct(
            rmse=pl.col("rmse").round(1),
            days="days",
            patients="patients",
            ratio=ratio.round(3),
            mae_lower_95=lower.round(1),
            champion=is_champion,
        ).struct.json_encode(),
    )


def _empty() -> pl.DataFrame:
    return pl.DataFrame(
        schema={
            "model": pl.String,
            "cluster": pl.String,
            "horizon_days": pl.Int32,
            "mae": pl.Float64,
            "mae_se": pl.Float64,
            "rmse": pl.Float64,
            "patients": pl.Int32,
            "days": pl.Int32,
        }
    )
