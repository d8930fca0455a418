"""Each forecast summed up for the cohort views: where the patient is expected to be in the next
quarter and at the end of the year ahead, against their own baseline.

- ``baseline_steps``: the mean daily steps of the wear days in the 180 days before the origin
  (the ``baseline_mean_180d`` feature; missing with fewer than 60 wear days there);
- ``next_quarter_steps``, ``year_end_steps``, ``year_steps``: the mean forecast over days 1-91,
  274-365 and 1-365 of the horizon;
- ``year_end_change``: ``year_end_steps / baseline_steps - 1`` (missing without a baseline);
- ``champion``: the model is the patient's champion: their cluster's in the registry the forecast
  ran with, unless the patient's own last year says it loses to their usual level beyond
  chance (``own``: the served champion and the usual level forecast from a year before the
  origin, scored on the worn days of that year), then the usual level;
- ``own_year_mae``: that own backtest's mean absolute error of the model (the cluster's
  champion and the usual level only; missing where it was not run).

A patient is in the "mobility decline expected" list when the champion's ``year_end_change`` is
at or below ``-DECLINE_SHARE`` (a fall of 15% or more from their own baseline).
"""

from __future__ import annotations

import polars as pl

from models.guard import ANCHOR

DECLINE_SHARE = 0.15
NEXT_QUARTER_DAYS = (1, 91)
YEAR_END_DAYS = (274, 365)
BASELINE = "baseline_mean_180d"
# A patient's own backtest of their cluster's champion against their usual level
# (:func:`jobs.forecast.own_backtest`).
OWN_BACKTEST_SCHEMA = pl.Schema(
    {
        "patient_id": pl.String,
        "model": pl.String,
        "own_mae": pl.Float64,
        "usual_mae": pl.Float64,
        "own_days": pl.UInt32,
        "loses": pl.Boolean,
    }
)


def outlook_rows(
    forecasts: pl.DataFrame,
    baselines: pl.DataFrame,
    patients: pl.DataFrame,
    winners: dict[str, str],
    own: pl.DataFrame | None = None,
) -> pl.DataFrame:
    """One row per patient, model and origin of ``forecasts``.

    Args:
        forecasts: ``patient_id, model, origin_date, target_date, yhat`` (365 days each).
        baselines: feature rows ``patient_id, date, baseline_mean_180d`` (any dates; the one at
            each forecast's origin is used).
        patients: ``patient_id, disease_group``.
        winners: each cluster's champion model.
        own: the patients' own backtests (``patient_id, model, own_mae, usual_mae, loses``:
            the cluster's champion and the usual level on the patient's last year, and whether
            the champion lost beyond chance), or None.
    """
    day = (pl.col("target_date") - pl.col("origin_date")).dt.total_days() + 1

    def mean_over(days: tuple[int, int]) -> pl.Expr:
        return pl.col("yhat").filter(day.is_between(*days)).mean()

    champions = pl.DataFrame(
        {"disease_group": list(winners), "champion_model": list(winners.values())},
        schema={"disease_group": pl.String, "champion_model": pl.String},
    )
    if own is None:
        own = pl.DataFrame(schema=OWN_BACKTEST_SCHEMA)
    loses = own.filter(pl.col("loses")).select("patient_id", own_champion=pl.lit(ANCHOR))
    scores = pl.concat(
        [
            own.select("patient_id", "model", own_year_mae="own_mae"),
            own.select("patient_id", model=pl.lit(ANCHOR), own_year_mae="usual_mae"),
        ]
    )
    at_origin = baselines.select(
        "patient_id", origin_date=pl.col("date"), baseline_steps=pl.col(BASELINE)
    )
    return (
        forecasts.group_by("patient_id", "model", "origin_date")
        .agg(
            next_quarter_steps=mean_over(NEXT_QUARTER_DAYS),
            year_end_steps=mean_over(YEAR_END_DAYS),
            year_steps=pl.col("yhat").mean(),
        )
        .join(at_origin, on=["patient_id", "origin_date"], how="left")
        .join(patients.select("patient_id", "disease_group"), on="patient_id", how="left")
        .join(champions, on="disease_group", how="left")
        .join(loses, on="patient_id", how="left")
        .join(scores, on=["patient_id", "model"], how="left")
        .with_columns(champion_model=pl.coalesce("own_champion", "champion_model"))
        .select(
            "patient_id",
            "model",
            "origin_date",
            (pl.col("model") == pl.col("champion_model")).fill_null(False).alias("champion"),
            "baseline_steps",
            "next_quarter_steps",
            "year_end_steps",
            "year_steps",
            year_end_change=pl.when(pl.col("baseline_steps") > 0).then(
                pl.col("year_end_steps") / pl.col("baseline_steps") - 1
            ),
            own_year_mae="own_year_mae",
        )
        .sort("patient_id", "model", "origin_date")
    )
