"""Never worse than the patient's own usual level without evidence: learned models as adjustments
of :class:`models.baselines.UsualLevel`, shrunk toward it.

A model that learns (Prophet, the EBMs) is served as the anchor (the patient's usual level and
weekday pattern) plus a share of the model's difference from it::

    served = anchor + weight * (model - anchor),   weight = shrinkage * guard

- **shrinkage** (per model and disease cluster, 0 to 1) is earned on the backtests: the share
  of the model's adjustment that gave the lowest mean absolute error over the year ahead on the
  backtest days (grid of tenths), times ``n / (n + PRIOR_PATIENTS)`` for the ``n`` patients
  behind it (a handful of patients is weak evidence). A cluster with fewer than
  :data:`MIN_PATIENTS` backtest patients takes the weight chosen on all clusters pooled. A model
  that never beat the anchor on its backtests gets 0: its forecast is the anchor's.
- **guard** (per patient and quarter of the forecast, 0 to 1): a quarter whose mean forecast
  would leave the patient's own range (below the 5th or above the 95th percentile of their worn
  days over the last year) in the direction of the adjustment has its adjustment cut so that the
  mean stops at that edge (to nothing when the anchor is already beyond it). No model may
  forecast a collapse, or a surge, the patient has never shown.

Backtests report the served forecasts with each patient's shrinkage chosen on the other patients
(:func:`cross_fitted`), so the champion is chosen on scores the choice never saw.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from datetime import date, timedelta

import polars as pl

from models.base import ForecastInput
from models.baselines import BASELINES, UsualLevel
from models.intervals import folds_of

ANCHOR = UsualLevel.name
# Models served as they are: the baselines are the patient's own recent steps already.
UNGUARDED = frozenset(model.name for model in BASELINES)
GRID = tuple(round(0.1 * k, 1) for k in range(11))
PRIOR_PATIENTS = 10
MIN_PATIENTS = 10
QUARTER_DAYS = 91
RANGE_DAYS = 365
LOW_QUANTILE, HIGH_QUANTILE = 0.05, 0.95
ALL = "ALL"


def patient_range(data: ForecastInput) -> pl.DataFrame:
    """``patient_id, range_low, range_high``: the 5th and 95th percentiles of each patient's worn
    days of the last year before the origin (all their worn days when none lie there)."""
    wear = data.wear_days()
    year = wear.filter(pl.col("date") >= data.origin - timedelta(days=RANGE_DAYS))
    seen = year.select("patient_id").unique()
    rest = wear.join(seen, on="patient_id", how="anti")
    return (
        pl.concat([year, rest])
        .group_by("patient_id")
        .agg(
            range_low=pl.col("steps").quantile(LOW_QUANTILE, "linear"),
            range_high=pl.col("steps").quantile(HIGH_QUANTILE, "linear"),
        )
    )


def quarter_of(origin: date | pl.Expr) -> pl.Expr:
    """The forecast quarter (0-3) of ``target_date``: days 1-91, 92-182, 183-273, 274 on."""
    days = (pl.col("target_date") - origin).dt.total_days()
    return (days // QUARTER_DAYS).clip(upper_bound=3).alias("quarter")


def quarter_means(
    forecast: pl.DataFrame, anchor: pl.DataFrame, origin: date, ranges: pl.DataFrame
) -> pl.DataFrame:
    """``patient_id, target_date, anchor, quarter_anchor, quarter_model, range_low,
    range_high``: per forecast day the anchor's forecast, and per patient and quarter
    the mean of the anchor's and of the model's forecast over all its days (what the guard
    compares with the patient's range)."""
    days = forecast.select("patient_id", "target_date", "yhat").join(
        anchor.select("patient_id", "target_date", anchor="yhat"),
        on=["patient_id", "target_date"],
    )
    days = days.with_columns(quarter_of(pl.lit(origin)))
    means = days.group_by("patient_id", "quarter").agg(
        quarter_anchor=pl.col("anchor").mean(), quarter_model=pl.col("yhat").mean()
    )
    return (
        days.join(means, on=["patient_id", "quarter"])
        .join(ranges, on="patient_id", how="left")
        .select(
            "patient_id",
            "target_date",
            "anchor",
            "quarter_anchor",
            "quarter_model",
            "range_low",
            "range_high",
        )
    )


def weight_expr(shrinkage: pl.Expr) -> pl.Expr:
    """The served weight of each day's adjustment: ``shrinkage`` times the guard of its patient's
    quarter (columns of :func:`quarter_means`)."""
    anchor, model = pl.col("quarter_anchor"), pl.col("quarter_model")
    shrunk = anchor + shrinkage * (model - anchor)
    step = shrunk - anchor
    low, high = pl.col("range_low"), pl.col("range_high")
    down = (shrunk < low) & (step < 0)
    up = (shrunk > high) & (step > 0)
    guard = (
        pl.when(down)
        .then(((low - anchor) / step).clip(0.0, 1.0))
        .when(up)
        .then(((high - anchor) / step).clip(0.0, 1.0))
        .otherwise(1.0)
    )
    # a patient without a range (no worn day in their history) is not guarded
    return (shrinkage * guard).fill_null(shrinkage)


def served_yhat(weight: pl.Expr) -> pl.Expr:
    """The served forecast of a day: ``anchor + weight * (yhat - anchor)``, never below 0."""
    return (pl.col("anchor") + weight * (pl.col("yhat") - pl.col("anchor"))).clip(lower_bound=0.0)


def served(days: pl.DataFrame, weight: pl.Expr) -> pl.DataFrame:
    """``days`` (a model's forecast rows with the columns of :func:`quarter_means`) as served
    (:func:`served_yhat`), the model's own interval moved with it; ``weight`` kept."""
    shift = pl.col("served") - pl.col("yhat")
    return (
        days.with_columns(weight=weight)
        .with_columns(served=served_yhat(pl.col("weight")))
        .with_columns(
            yhat_lower=(pl.col("yhat_lower") + shift).clip(lower_bound=0.0),
            yhat_upper=pl.col("yhat_upper") + shift,
        )
        .with_columns(
            yhat_lower=pl.min_horizontal("yhat_lower", "served"),
            yhat_upper=pl.max_horizontal("yhat_upper", "served"),
            yhat=pl.col("served"),
        )
        .drop("served")
    )


def _mae_by_weight(days: pl.DataFrame) -> pl.DataFrame:
    """``weight, mae`` of ``days`` (backtest days of one model with ``actual``) served at each
    weight of the grid."""
    rows = []
    for share in GRID:
        error = served_yhat(weight_expr(pl.lit(share))) - pl.col("actual")
        rows.append(days.select(weight=pl.lit(share), mae=error.abs().mean()))
    return pl.concat(rows)


def choose(days: pl.DataFrame) -> pl.DataFrame:
    """``model, cluster, shrinkage, best, patients``: per guarded model and cluster (and
    :data:`ALL`) the grid weight with the lowest backtest MAE (``best``) and that times the
    patients' evidence (``shrinkage``); which row a cluster is served with: :func:`share_of`.

    Args:
        days: backtest days of the guarded models: ``model, cluster, patient_id, yhat, actual``
            and the columns of :func:`quarter_means`.
    """
    schema = {
        "model": pl.String,
        "cluster": pl.String,
        "shrinkage": pl.Float64,
        "best": pl.Float64,
        "patients": pl.Int64,
    }
    if not days.height:
        return pl.DataFrame(schema=schema)
    rows = []
    for (model,), mine in days.group_by("model", maintain_order=True):
        groups = [(ALL, mine), *((str(k[0]), g) for k, g in mine.group_by("cluster"))]
        for cluster, group in groups:
            patients = group["patient_id"].n_unique()
            scores = _mae_by_weight(group).sort("mae", "weight")
            best = float(scores["weight"][0])
            shrinkage = best * patients / (patients + PRIOR_PATIENTS)
            rows.append(
                {
                    "model": str(model),
                    "cluster": cluster,
                    "shrinkage": round(shrinkage, 3),
                    "best": best,
                    "patients": patients,
                }
            )
    return pl.DataFrame(rows, schema=schema)


def cross_fitted(days: pl.DataFrame) -> pl.DataFrame:
    """``days`` of every model with the guarded models' forecasts served (``yhat``, interval,
    ``weight``), each patient's shrinkage chosen on the other patients' days (5 folds by
    patient), so that their scores are out of sample. Days of unguarded models keep weight 1."""
    guarded = days.filter(~pl.col("model").is_in(list(UNGUARDED)))
    rest = days.filter(pl.col("model").is_in(list(UNGUARDED))).with_columns(weight=pl.lit(1.0))
    if not guarded.height:
        return rest
    folds = folds_of(guarded["patient_id"].unique())
    guarded = guarded.join(folds, on="patient_id")
    out = []
    for fold in folds["fold"].unique().sort():
        others = guarded.filter(pl.col("fold") != fold)
        mine = guarded.filter(pl.col("fold") == fold)
        out.append(_serve_with(mine, choose(others)))
    return pl.concat([rest, pl.concat(out).drop("fold")], how="diagonal_relaxed")


def _serve_with(days: pl.DataFrame, chosen: pl.DataFrame) -> pl.DataFrame:
    """``days`` served with the share :func:`share_of` gives their model and cluster."""
    pairs = days.select("model", "cluster").unique()
    shares = pl.DataFrame(
        [
            {"model": m, "cluster": c, "shrinkage": share_of(chosen, m, c).shrinkage}
            for m, c in pairs.iter_rows()
        ],
        schema={"model": pl.String, "cluster": pl.String, "shrinkage": pl.Float64},
    )
    joined = days.join(shares, on=["model", "cluster"], how="left")
    return served(joined, weight_expr(pl.col("shrinkage"))).drop("shrinkage")


@dataclass(frozen=True)
class Share:
    """The share of a learned model's adjustment served for a cluster.

    Args:
        shrinkage: the share served (0 to 1).
        best: the share with the lowest backtest MAE, before the patients' evidence.
        patients: the backtest patients behind it.
        pooled: chosen on all clusters together (the cluster had too few patients of its own).
    """

    shrinkage: float
    best: float
    patients: int
    pooled: bool


def share_of(chosen: pl.DataFrame, model: str, cluster: str) -> Share:
    """The served share of ``model``'s adjustment for ``cluster`` from :func:`choose` rows: the
    cluster's own when it had :data:`MIN_PATIENTS` backtest patients, else that of all
    clusters, else 0 (no evidence: the model is served as the usual level)."""
    mine = chosen.filter((pl.col("model") == model) & (pl.col("cluster") == cluster))
    pooled = mine.height == 0 or int(mine["patients"][0]) < MIN_PATIENTS
    if pooled:
        mine = chosen.filter((pl.col("model") == model) & (pl.col("cluster") == ALL))
    if not mine.height:
        return Share(0.0, 0.0, 0, True)
    row = mine.row(0, named=True)
    return Share(float(row["shrinkage"]), float(row["best"]), int(row["patients"]), pooled)


def to_json(chosen: pl.DataFrame, model: str, cluster: str) -> str | None:
    """The registry's record of ``model``'s served share for ``cluster`` (:func:`share_of`);
    None for a model served as it forecasts (a baseline)."""
    if model in UNGUARDED:
        return None
    return json.dumps(asdict(share_of(chosen, model, cluster)), sort_keys=True)


def from_json(records: Mapping[tuple[str, str], str | None]) -> dict[tuple[str, str], float]:
    """``(model, cluster) -> shrinkage`` from the registry's records (none at all in versions
    trained before guarded forecasts: every model is then served as it forecasts)."""
    out = {}
    for key, text in records.items():
        if text:
            out[key] = float(json.loads(text)["shrinkage"])
    return out


def serve(
    forecast: pl.DataFrame,
    anchor: pl.DataFrame,
    data: ForecastInput,
    shrinkage: pl.DataFrame,
) -> pl.DataFrame:
    """A guarded model's forecast rows (the forecast schema) as served, with ``weight``.

    Args:
        forecast: the model's rows (``patient_id, target_date, yhat, yhat_lower, yhat_upper``).
        anchor: :class:`UsualLevel`'s rows of the same patients and days.
        data: what was known at the origin (the patients' range comes from it).
        shrinkage: ``patient_id, shrinkage`` (the registry's for their model and cluster; a
            patient without one: 0, no evidence, served as the usual level).
    """
    days = forecast.join(
        quarter_means(forecast, anchor, data.origin, patient_range(data)),
        on=["patient_id", "target_date"],
    ).join(shrinkage, on="patient_id", how="left")
    share = pl.col("shrinkage").fill_null(0.0)
    return served(days, weight_expr(share)).select(*forecast.columns, "anchor", "weight")


# the rows of the usual level in a served explanation
_USUAL_PARTS = ("baseline", "usual_weekday")


def explain_served(
    explained: pl.DataFrame, served_rows: pl.DataFrame, usual: pl.DataFrame
) -> pl.DataFrame:
    """A learned model's explanation rows (``patient_id, target_date, feature, contribution``,
    summing to its own forecast, its level in the row ``baseline``) turned into those of its
    served forecast, which they then sum to: ``baseline`` the patient's usual level,
    ``usual_weekday`` the day's weekday share of it, ``recent_level`` the served part of the
    model's level against the usual day, and every other row times the served weight.

    Args:
        explained: the model's explanation rows.
        served_rows: its served rows with ``anchor`` and ``weight`` (:func:`serve`).
        usual: ``patient_id, weekday, level, share`` (:func:`models.baselines.usual_days`).
    """
    keys = ["patient_id", "target_date"]
    # rows put in (patient, day, feature) order by integer keys (the day's position, the
    # feature's rank), not by sorting millions of strings
    per_day = served_rows.select(*keys, "anchor", "weight").sort(keys).with_row_index("day")
    features = pl.Enum(
        sorted({*explained["feature"].unique().to_list(), "recent_level", *_USUAL_PARTS})
    )
    scaled = explained.join(per_day, on=keys).with_columns(
        contribution=pl.when(pl.col("feature") == "baseline")
        .then(pl.col("weight") * (pl.col("contribution") - pl.col("anchor")))
        .otherwise(pl.col("weight") * pl.col("contribution")),
        feature=pl.when(pl.col("feature") == "baseline")
        .then(pl.lit("recent_level"))
        .otherwise(pl.col("feature"))
        .cast(features),
    )
    days = (
        per_day.with_columns(weekday=pl.col("target_date").dt.weekday().cast(pl.Int8))
        .join(usual.select("patient_id", "weekday", "level"), on=["patient_id", "weekday"])
        .select("day", *keys, baseline="level", usual_weekday=pl.col("anchor") - pl.col("level"))
        .unpivot(index=["day", *keys], variable_name="feature", value_name="contribution")
        .with_columns(pl.col("feature").cast(features))
    )
    return (
        pl.concat(
            [scaled.select("day", *keys, "feature", "contribution"), days], how="vertical_relaxed"
        )
        .sort("day", "feature")
        .select(*keys, pl.col("feature").cast(pl.String), "contribution")
    )
