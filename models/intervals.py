"""Calibrated 80% intervals: split-conformal, per horizon band, scaled by the patient's spread.

Every model (baselines included) gets its interval the same way, from its own out-of-sample
errors: the rolling-origin backtests give, per model, disease cluster and horizon band, the
residuals ``actual - yhat`` of origins the model was not fitted on. Each residual is divided by
the patient's robust day-to-day spread at the origin (:func:`patient_scale`: 1.4826 x the median
absolute deviation of their worn days over the 8 weeks before it), so one calibration serves a
calm and a restless patient alike. The calibration keeps the 10th and 90th conformal quantiles of
these normalised residuals (``q_lo``, ``q_hi``); a forecast's interval is then
``yhat + q_lo * scale .. yhat + q_hi * scale``, floored at zero steps and never excluding ``yhat``
itself (:func:`apply_intervals`). This is statsforecast's ``ConformalIntervals`` (intervals from
cross-validation residuals per horizon) with a per-patient scale, as in normalised conformal
prediction.

A (cluster, model, band) with too few residuals (fewer than :data:`MIN_PATIENTS` patients or
:data:`MIN_RESIDUALS` wear days) takes the quantiles of all clusters pooled (``ALL``) and says so
(``pooled``).

Backtests report the coverage of these intervals out of sample: each patient's intervals come from
a calibration fitted on the other patients (:func:`cross_fitted`, K folds by patient), so the
coverage a backtest reports is the one a patient the calibration never saw would get.
"""

from __future__ import annotations

import json
import math
import zlib
from collections.abc import Mapping
from datetime import date, timedelta

import numpy as np
import polars as pl

from models.base import ForecastInput

COVERAGE = 0.8
# Days after the origin (first and last, inclusive) of each horizon band; a later day takes the
# last band.
HORIZON_BANDS: tuple[tuple[int, int], ...] = ((1, 7), (8, 28), (29, 91), (92, 182), (183, 365))
# The patient's spread: the worn days of this many days before the origin ...
SCALE_DAYS = 56
# ... or, with fewer worn days there than this, their last SCALE_FALLBACK_WEAR_DAYS worn days.
SCALE_MIN_WEAR_DAYS = 7
SCALE_FALLBACK_WEAR_DAYS = 28
# The spread never falls below this many steps, nor below this share of the patient's median
# (a run of identical or imputed days has no spread, but the future still varies).
SCALE_FLOOR_STEPS = 100.0
SCALE_FLOOR_SHARE = 0.1
# Below either, a (cluster, model, band) uses the calibration of all clusters pooled.
MIN_PATIENTS = 10
MIN_RESIDUALS = 200
POOLED = "ALL"
# Folds by patient for the out-of-sample coverage of the backtests.
FOLDS = 5
CALIBRATION_COLUMNS = (
    "model",
    "cluster",
    "band_start",
    "band_end",
    "q_lo",
    "q_hi",
    "residuals",
    "patients",
    "pooled",
)
_CALIBRATION_SCHEMA = pl.Schema(
    {
        "model": pl.String,
        "cluster": pl.String,
        "band_start": pl.Int32,
        "band_end": pl.Int32,
        "q_lo": pl.Float64,
        "q_hi": pl.Float64,
        "residuals": pl.Int64,
        "patients": pl.Int64,
        "pooled": pl.Boolean,
    }
)


def band_start(horizon: pl.Expr) -> pl.Expr:
    """The first day of the horizon band of ``horizon`` (days after the origin, from 1)."""
    expr = pl.lit(HORIZON_BANDS[-1][0], pl.Int32)
    for start, end in reversed(HORIZON_BANDS[:-1]):
        expr = pl.when(horizon <= end).then(pl.lit(start, pl.Int32)).otherwise(expr)
    return expr


def patient_scale(data: ForecastInput) -> pl.DataFrame:
    """``patient_id, scale``: each patient's robust spread of worn days before the origin, in
    steps (1.4826 x MAD, the standard deviation of a normal day-to-day spread), floored."""
    wear = data.wear_days()
    since = data.origin - timedelta(days=SCALE_DAYS)
    window = wear.filter(pl.col("date") >= since)
    enough = window.group_by("patient_id").len().filter(pl.col("len") >= SCALE_MIN_WEAR_DAYS)
    fallback = (
        wear.join(enough, on="patient_id", how="anti")
        .sort("date")
        .group_by("patient_id")
        .tail(SCALE_FALLBACK_WEAR_DAYS)
    )
    recent = pl.concat([window.join(enough.select("patient_id"), on="patient_id"), fallback])
    median = pl.col("steps").median()
    return recent.group_by("patient_id").agg(
        scale=pl.max_horizontal(
            1.4826 * (pl.col("steps") - median).abs().median(),
            SCALE_FLOOR_SHARE * median,
            pl.lit(SCALE_FLOOR_STEPS),
        ).cast(pl.Float64)
    )


def conformal_quantiles(scores: np.ndarray, coverage: float = COVERAGE) -> tuple[float, float]:
    """The lower and upper split-conformal quantiles of ``scores`` for an equal-tailed interval
    of ``coverage``: the k-th smallest with k = floor((n + 1) a) and the k-th with
    k = ceil((n + 1)(1 - a)), a = (1 - coverage) / 2, clipped to the sample."""
    ordered = np.sort(scores)
    n = ordered.size
    tail = (1 - coverage) / 2
    # the tolerance keeps (n + 1) * 0.1 an integer where it is one (0.2 / 2 is 0.0999...)
    low = min(max(math.floor((n + 1) * tail + 1e-9), 1), n)
    high = min(max(math.ceil((n + 1) * (1 - tail) - 1e-9), 1), n)
    return float(ordered[low - 1]), float(ordered[high - 1])


def calibrate(residuals: pl.DataFrame, *, coverage: float = COVERAGE) -> pl.DataFrame:
    """The calibration of every (model, cluster, band) of ``residuals``.

    Args:
        residuals: ``model, cluster, patient_id, horizon, score`` with ``score`` = (actual -
            yhat) / scale, one row per scored wear day of an out-of-sample forecast.
        coverage: the interval's nominal coverage.

    Returns:
        ``model, cluster, band_start, band_end, q_lo, q_hi, residuals, patients, pooled``, the
        clusters of ``residuals`` and ``ALL`` (every cluster pooled); a cluster's band with too
        few residuals holds the pooled quantiles, ``pooled`` true.
    """
    scored = residuals.filter(pl.col("score").is_finite()).with_columns(
        band_start=band_start(pl.col("horizon"))
    )
    rows = []
    everyone = scored.with_columns(cluster=pl.lit(POOLED))
    for frame in (everyone, scored.filter(pl.col("cluster") != POOLED)):
        for (model, cluster, start), group in frame.group_by(
            "model", "cluster", "band_start", maintain_order=True
        ):
            low, high = conformal_quantiles(group["score"].to_numpy(), coverage)
            rows.append(
                {
                    "model": model,
                    "cluster": cluster,
                    "band_start": start,
                    "q_lo": low,
                    "q_hi": high,
                    "residuals": group.height,
                    "patients": group["patient_id"].n_unique(),
                }
            )
    ends = pl.DataFrame(
        {"band_start": [s for s, _ in HORIZON_BANDS], "band_end": [e for _, e in HORIZON_BANDS]},
        schema={"band_start": pl.Int32, "band_end": pl.Int32},
    )
    if not rows:
        return pl.DataFrame(schema=_CALIBRATION_SCHEMA)
    own = pl.DataFrame(rows).cast({"band_start": pl.Int32}).join(ends, on="band_start")
    pooled = own.filter(pl.col("cluster") == POOLED)
    thin = (pl.col("patients") < MIN_PATIENTS) | (pl.col("residuals") < MIN_RESIDUALS)
    clusters = (
        own.filter(pl.col("cluster") != POOLED)
        .join(pooled, on=["model", "band_start"], how="left", suffix="_all")
        .with_columns(pooled=thin & pl.col("q_lo_all").is_not_null())
        .with_columns(
            q_lo=pl.when("pooled").then("q_lo_all").otherwise("q_lo"),
            q_hi=pl.when("pooled").then("q_hi_all").otherwise("q_hi"),
        )
    )
    return (
        pl.concat(
            [
                pooled.with_columns(pooled=pl.lit(False)).select(CALIBRATION_COLUMNS),
                clusters.select(CALIBRATION_COLUMNS),
            ]
        )
        .cast(_CALIBRATION_SCHEMA)
        .sort("model", "cluster", "band_start")
    )


def apply_intervals(
    forecasts: pl.DataFrame,
    calibration: pl.DataFrame,
    scale: pl.DataFrame,
    clusters: pl.DataFrame,
    *,
    origin: date | None,
) -> pl.DataFrame:
    """``forecasts`` with ``yhat_lower, yhat_upper`` from the calibration.

    Args:
        forecasts: forecast rows with ``model, patient_id, target_date, yhat`` (and
            ``origin_date`` when ``origin`` is None), any other columns kept.
        calibration: :func:`calibrate` rows (or those read back from the registry).
        scale: ``patient_id, scale`` (:func:`patient_scale` at the origin).
        clusters: ``patient_id, cluster``.
        origin: the forecasts' origin; None: each row's ``origin_date``.

    Rows without a calibration of their model and cluster, or without a scale, keep their
    model's own interval. Intervals are floored at zero steps and always hold ``yhat``.
    """
    if not calibration.height or not forecasts.height:
        return forecasts
    columns = forecasts.columns
    start = pl.col("origin_date") if origin is None else pl.lit(origin)
    horizon = (pl.col("target_date") - start).dt.total_days() + 1
    quantiles = calibration.select("model", "cluster", "band_start", "q_lo", "q_hi")
    joined = (
        forecasts.with_columns(_band=band_start(horizon))
        .join(clusters.select("patient_id", _cluster="cluster"), on="patient_id", how="left")
        .join(scale.select("patient_id", _scale="scale"), on="patient_id", how="left")
        .join(
            quantiles.rename({"cluster": "_cluster", "band_start": "_band"}),
            on=["model", "_cluster", "_band"],
            how="left",
        )
    )
    known = pl.col("q_lo").is_not_null() & pl.col("_scale").is_not_null()
    lower = pl.min_horizontal(
        pl.col("yhat"), (pl.col("yhat") + pl.col("q_lo") * pl.col("_scale")).clip(lower_bound=0)
    )
    upper = pl.max_horizontal(pl.col("yhat"), pl.col("yhat") + pl.col("q_hi") * pl.col("_scale"))
    return joined.with_columns(
        yhat_lower=pl.when(known).then(lower).otherwise("yhat_lower"),
        yhat_upper=pl.when(known).then(upper).otherwise("yhat_upper"),
    ).select(columns)


def folds_of(patient_ids: pl.Series, folds: int = FOLDS) -> pl.DataFrame:
    """``patient_id, fold``: a stable fold number per patient (CRC32 of the id), the same in
    every run."""
    ids = patient_ids.unique().sort().to_list()
    return pl.DataFrame(
        {"patient_id": ids, "fold": [zlib.crc32(p.encode()) % folds for p in ids]},
        schema={"patient_id": pl.String, "fold": pl.Int32},
    )


def cross_fitted(days: pl.DataFrame, *, folds: int = FOLDS) -> pl.DataFrame:
    """Out-of-sample calibrated intervals of backtest days: each patient's from a calibration
    fitted on the patients of the other folds.

    Args:
        days: ``model, cluster, patient_id, origin_date, horizon, yhat, actual, scale`` (one row
            per model and scored wear day; ``cluster`` the patient's own).
        folds: patient folds.

    Returns:
        ``days`` with ``yhat_lower, yhat_upper`` (null where no other fold had a calibration).
    """
    scored = days.with_columns(score=(pl.col("actual") - pl.col("yhat")) / pl.col("scale")).join(
        folds_of(days["patient_id"], folds), on="patient_id"
    )
    parts = []
    for fold in range(folds):
        held = scored.filter(pl.col("fold") == fold)
        if not held.height:
            continue
        calibration = calibrate(scored.filter(pl.col("fold") != fold))
        framed = held.with_columns(
            target_date=pl.col("origin_date") + pl.duration(days=pl.col("horizon") - 1),
            yhat_lower=pl.lit(None, pl.Float64),
            yhat_upper=pl.lit(None, pl.Float64),
        )
        parts.append(
            apply_intervals(
                framed,
                calibration,
                held.select("patient_id", "scale").unique("patient_id"),
                held.select("patient_id", "cluster").unique("patient_id"),
                origin=None,
            )
        )
    if not parts:
        return days.with_columns(
            yhat_lower=pl.lit(None, pl.Float64), yhat_upper=pl.lit(None, pl.Float64)
        )
    return pl.concat(parts).drop("score", "fold", "target_date")


def to_json(calibration: pl.DataFrame, model: str, cluster: str) -> str | None:
    """The calibration of one model and cluster as the registry keeps it (None: none)."""
    mine = calibration.filter((pl.col("model") == model) & (pl.col("cluster") == cluster))
    if not mine.height:
        return None
    bands = [
        {
            "days": [row["band_start"], row["band_end"]],
            "q_lo": round(row["q_lo"], 4),
            "q_hi": round(row["q_hi"], 4),
            "residuals": row["residuals"],
            "patients": row["patients"],
            "pooled": row["pooled"],
        }
        for row in mine.sort("band_start").iter_rows(named=True)
    ]
    return json.dumps(
        {
            "method": "split-conformal on backtest residuals / patient MAD scale",
            "coverage": COVERAGE,
            "scale_days": SCALE_DAYS,
            "bands": bands,
        },
        sort_keys=True,
    )


def from_json(rows: Mapping[tuple[str, str], str | None]) -> pl.DataFrame:
    """The calibration of registry rows: ``(model, cluster) -> intervals JSON``."""
    out = []
    for (model, cluster), text in rows.items():
        if not text:
            continue
        for band in json.loads(text)["bands"]:
            out.append(
                {
                    "model": model,
                    "cluster": cluster,
                    "band_start": band["days"][0],
                    "band_end": band["days"][1],
                    "q_lo": band["q_lo"],
                    "q_hi": band["q_hi"],
                    "residuals": band["residuals"],
                    "patients": band["patients"],
                    "pooled": band["pooled"],
                }
            )
    return pl.DataFrame(out, schema=_CALIBRATION_SCHEMA)
