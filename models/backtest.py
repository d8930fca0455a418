"""Rolling-origin backtests: every model forecasts from several past origins, using only what was
known then, and is scored on the wear days that followed.

At each origin every model is scored on the same patients: those with enough history that
every model can forecast (the EBMs need a level at the origin, a wear day in the last 112 days);
the others are left out of that origin, a cluster with nobody left is skipped there, and the
:class:`LeftOut` notes say how many.

Rows (gold/backtests): ``model, cluster, origin_date, horizon_days, mae, rmse, mase, coverage,
width, raw_coverage, raw_width, patients, days`` per model, disease cluster (and ``ALL``), origin
and cumulative horizon. ``coverage`` and ``width`` (steps) are those of the calibrated 80%
intervals the forecast job serves (:mod:`models.intervals`), each patient's from a calibration
fitted on other patients' residuals; ``raw_`` those of the model's own interval.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta

import polars as pl

from models import guard, intervals
from models.base import Forecaster, ForecastInput
from models.metrics import HORIZONS, naive_scale, summarise

# Wear days a patient needs before an origin to get a forecast of their own.
MIN_HISTORY_WEAR_DAYS = 28
ALL_CLUSTERS = "ALL"


@dataclass(frozen=True)
class Panel:
    """Every patient's daily steps and clinical data, to be cut at forecast origins.

    Args:
        daily: ``patient_id, date, steps`` with ``steps`` missing on non-wear days.
        patients: ``patient_id, disease_group, country``.
        therapies: ``patient_id, therapy, start_date, end_date``.
        features: silver/features rows (the columns the models use), or an empty frame.
        min_history_wear_days: wear days a patient needs before an origin to be forecast.
    """

    daily: pl.DataFrame
    patients: pl.DataFrame
    therapies: pl.DataFrame
    features: pl.DataFrame = field(default_factory=pl.DataFrame)
    min_history_wear_days: int = MIN_HISTORY_WEAR_DAYS

    def known_at(self, origin: date, *, patients: Sequence[str] | None = None) -> ForecastInput:
        """What was known at ``origin`` about the patients with enough history then."""
        history = self.daily.filter(pl.col("date") < origin)
        if patients is not None:
            history = history.filter(pl.col("patient_id").is_in(list(patients)))
        enough = (
            history.filter(pl.col("steps").is_not_null())
            .group_by("patient_id")
            .len()
            .filter(pl.col("len") >= self.min_history_wear_days)
            .select("patient_id")
        )
        return ForecastInput(
            origin=origin,
            history=history.join(enough, on="patient_id").sort("patient_id", "date"),
            patients=self.patients.join(enough, on="patient_id").sort("patient_id"),
            # the therapy plan: courses as recorded, planned starts and ends included
            therapies=self.therapies.join(enough, on="patient_id"),
            features=self.features.filter(pl.col("date") <= origin).join(enough, on="patient_id")
            if self.features.width
            else self.features,
        )

    def actuals(self, origin: date, horizon: int) -> pl.DataFrame:
        """Daily rows of the ``horizon`` days from ``origin``."""
        end = origin + timedelta(days=horizon)
        return self.daily.filter((pl.col("date") >= origin) & (pl.col("date") < end))


@dataclass(frozen=True)
class LeftOut:
    """Patients of a cluster known at a backtest origin (with enough history) whom not every
    model can forecast there, so that no model is scored on them at that origin.

    Args:
        origin: the backtest origin.
        cluster: their disease cluster.
        patients: how many were left out.
        known: the cluster's patients with enough history at the origin.
    """

    origin: date
    cluster: str
    patients: int
    known: int

    def describe(self) -> str:
        """One line for the command line and the job's record."""
        why = "no level at the origin: no wear day in the last 112 days"
        where = f"{self.origin} {self.cluster}"
        if self.patients >= self.known:
            return f"{where}: skipped, none of its {self.known} patient(s) ({why})"
        return f"{where}: {self.patients} of {self.known} patient(s) left out ({why})"


def servable(
    models: Sequence[Forecaster], known: ForecastInput
) -> tuple[pl.DataFrame, list[LeftOut]]:
    """``patient_id`` of the patients of ``known`` every model (as fitted) can forecast, and a
    :class:`LeftOut` per cluster with patients none of them is scored on."""
    ready = known.patients.select("patient_id")
    for model in models:
        ready = ready.join(model.servable(known), on="patient_id", how="semi")
    missing = known.patients.join(ready, on="patient_id", how="anti")
    counts = (
        known.patients.group_by("disease_group")
        .agg(known=pl.len())
        .join(missing.group_by("disease_group").agg(patients=pl.len()), on="disease_group")
        .sort("disease_group")
    )
    notes = [
        LeftOut(known.origin, str(cluster), int(patients), int(total))
        for cluster, total, patients in counts.iter_rows()
    ]
    return ready, notes


def rolling_origins(panel: Panel, *, count: int, spacing_days: int, horizon: int) -> list[date]:
    """``count`` origins ``spacing_days`` apart, the latest one a full horizon before the data
    ends, so every origin is scored on a whole horizon."""
    last = panel.daily["date"].max()
    assert isinstance(last, date)
    latest = last - timedelta(days=horizon - 1)
    return sorted(latest - timedelta(days=spacing_days * k) for k in range(count))


@dataclass(frozen=True)
class BacktestRun:
    """Backtest scores and the interval calibration the backtest residuals give.

    Args:
        results: gold/backtests rows (without ``trained_at``).
        calibration: :func:`models.intervals.calibrate` of every model's residuals.
        residuals: those residuals (:func:`residuals_of`), to calibrate backtests pooled.
        shrinkage: :func:`models.guard.choose` of the guarded models' backtest days (each
            learned model's share of its adjustment of the patient's usual level).
    """

    results: pl.DataFrame
    calibration: pl.DataFrame
    residuals: pl.DataFrame
    shrinkage: pl.DataFrame


def backtest(
    models: Sequence[Forecaster],
    panel: Panel,
    origins: Sequence[date],
    *,
    horizon: int = 365,
    horizons: tuple[int, ...] = HORIZONS,
    refit: bool = True,
    left_out: list[LeftOut] | None = None,
) -> pl.DataFrame:
    """Score every model at every origin; each model is fitted on what was known at the origin,
    or with ``refit=False`` scored as it is (registered models on series they never saw).
    Patients not every model can forecast at an origin are left out of it; ``left_out``, when
    given, gets a :class:`LeftOut` per origin and cluster with any.
    ``coverage`` and ``width`` are those of the calibrated intervals (:mod:`models.intervals`),
    out of sample; ``raw_coverage`` and ``raw_width`` those of the model's own."""
    return run_backtest(
        models, panel, origins, horizon=horizon, horizons=horizons, refit=refit, left_out=left_out
    ).results


def run_backtest(
    models: Sequence[Forecaster],
    panel: Panel,
    origins: Sequence[date],
    *,
    horizon: int = 365,
    horizons: tuple[int, ...] = HORIZONS,
    refit: bool = True,
    left_out: list[LeftOut] | None = None,
) -> BacktestRun:
    """:func:`backtest`, with the interval calibration of all its residuals."""
    clusters = panel.patients.select("patient_id", cluster="disease_group")
    scored = []
    for origin in origins:
        known = panel.known_at(origin)
        if not known.patients.height:
            continue
        actuals = panel.actuals(origin, horizon)
        naive = naive_scale(known.history).rename({"scale": "mase_scale"})
        spread = intervals.patient_scale(known)
        wear = actuals.filter(pl.col("steps").is_not_null()).select(
            "patient_id", target_date="date", actual="steps"
        )
        fitted = [model.fit(known) if refit else model for model in models]
        ready, notes = servable(fitted, known)
        if left_out is not None:
            left_out += notes
        if not ready.height:
            continue
        scorable = known.only(ready)
        made = {model.name: model.predict(scorable, horizon=horizon) for model in fitted}
        anchor = made.get(guard.ANCHOR)
        ranges = guard.patient_range(scorable) if anchor is not None else None
        for name, forecasts in made.items():
            if anchor is not None and ranges is not None and name not in guard.UNGUARDED:
                forecasts = forecasts.join(
                    guard.quarter_means(forecasts, anchor, origin, ranges),
                    on=["patient_id", "target_date"],
                )
            scored.append(
                forecasts.join(wear, on=["patient_id", "target_date"])
                .join(naive, on="patient_id", how="left")
                .join(spread, on="patient_id", how="left")
                .join(clusters, on="patient_id")
                .with_columns(
                    model=pl.lit(name),
                    origin_date=pl.lit(origin),
                    horizon=(pl.col("target_date") - pl.lit(origin)).dt.total_days() + 1,
                )
                .drop("target_date")
            )
    columns = ["model", "cluster", "origin_date", "horizon_days", "mae", "rmse", "mase"]
    columns += ["coverage", "width", "raw_coverage", "raw_width", "patients", "days"]
    if not scored:
        empty = pl.DataFrame(schema={c: pl.String for c in columns}).clear()
        none = residuals_of(pl.DataFrame())
        return BacktestRun(empty, intervals.calibrate(none), none, guard.choose(pl.DataFrame()))
    days = pl.concat(scored, how="diagonal_relaxed")
    guarded = (
        days.filter(pl.col("quarter_model").is_not_null())
        if "quarter_model" in days.columns
        else days.clear()
    )
    shrinkage = guard.choose(guarded)
    if guarded.height:
        days = guard.cross_fitted(days)
    error = pl.col("yhat") - pl.col("actual")
    every = days.select(
        "patient_id",
        "cluster",
        "model",
        "origin_date",
        "horizon",
        "yhat",
        "actual",
        "scale",
        error=error,
        scaled_error=error.abs() / pl.col("mase_scale"),
        raw_inside=pl.col("actual").is_between("yhat_lower", "yhat_upper"),
        raw_width=pl.col("yhat_upper") - pl.col("yhat_lower"),
    )
    calibrated = intervals.cross_fitted(every).with_columns(
        inside=pl.col("actual").is_between("yhat_lower", "yhat_upper"),
        width=pl.col("yhat_upper") - pl.col("yhat_lower"),
    )
    rows = []
    for (name, origin), days in calibrated.group_by("model", "origin_date", maintain_order=True):
        for cluster in [ALL_CLUSTERS, *sorted(days["cluster"].unique())]:
            chosen = days if cluster == ALL_CLUSTERS else days.filter(cluster=cluster)
            if not chosen.height:
                continue
            rows.append(
                summarise(chosen, horizons).with_columns(
                    model=pl.lit(name), cluster=pl.lit(cluster), origin_date=pl.lit(origin)
                )
            )
    results = pl.concat(rows).select(columns).sort("model", "cluster", "origin_date")
    residuals = residuals_of(every)
    return BacktestRun(results, intervals.calibrate(residuals), residuals, shrinkage)


def residuals_of(days: pl.DataFrame) -> pl.DataFrame:
    """``model, cluster, patient_id, horizon, score`` of backtest days (none: an empty frame)."""
    if not days.height:
        return pl.DataFrame(
            schema={
                "model": pl.String,
                "cluster": pl.String,
                "patient_id": pl.String,
                "horizon": pl.Int64,
                "score": pl.Float64,
            }
        )
    return days.select(
        "model",
        "cluster",
        "patient_id",
        "horizon",
        score=(pl.col("actual") - pl.col("yhat")) / pl.col("scale"),
    )


def league_table(results: pl.DataFrame, *, horizon_days: int = 365) -> pl.DataFrame:
    """Mean MAE, RMSE, MASE, interval coverage and width per cluster and model over the origins,
    best MAE first."""
    return (
        results.filter(pl.col("horizon_days") == horizon_days)
        .group_by("cluster", "model")
        .agg(
            pl.col("mae", "rmse", "mase", "coverage", "width").mean(),
            origins=pl.len(),
            patients=pl.col("patients").max(),
        )
        .sort("cluster", "mae")
    )
