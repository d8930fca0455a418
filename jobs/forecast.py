"""The batch forecast job: 365 days ahead for every patient and model, with EBM explanations.

Each patient's origin is the day after their last day with data. The models forecast from it:
the baselines (the usual level among them), the EBMs registered by the last training (loaded
from the lake's storage), and Prophet before the first training only (it is backtested for
comparison but never a champion, :data:`jobs.train.CHAMPION_MODELS`). Once a training chose
them, the EBMs are served as guarded adjustments of the patient's usual level
(:mod:`models.guard`, the shares in models/registry). A patient with too little history of
their own (fewer than 28 wear days, or no wear day in the last 112 days for the EBMs) gets the
``cluster_level`` forecast instead of the models that cannot serve them, so every patient has a
forecast and the rows say which kind.

gold/explanations keeps, per EBM forecast row, the rows of the served forecast: the usual level
(``baseline``), its weekday share (``usual_weekday``), the served part of the EBM's recent level
against it (``recent_level``), the ``intercept``, the 10 largest contributions (a therapy that
starts or stops always among them) and their remainder as ``other_features``, each times the
served weight: the rows still sum to the forecast, and the table stays proportional to
forecasts, not to inputs. gold/outlook sums each forecast up against the patient's baseline for
the cohort views (:mod:`jobs.outlook`); where a cluster's champion is an EBM, each patient's own
last year decides whether they are shown it or their usual level (:func:`own_backtest`).

Rows of a (patient, origin) are replaced when the job runs again. Of a patient's earlier origins,
the first of each calendar month is kept (monitoring scores matured forecasts against what
happened) and the others are deleted, so the tables grow by a month's forecast per patient and
month, not by one per day.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any, cast

import polars as pl

from jobs.daily import wear_steps
from jobs.engine import Engine, LocalEngine, Staging, task_lake
from jobs.features.changes import Inputs
from jobs.forecast_refresh import DAILY_UP_TO, REFRESH_DAYS, plan_refresh
from jobs.outlook import BASELINE, OWN_BACKTEST_SCHEMA, outlook_rows
from jobs.panel import load_panel
from jobs.runs import job_run
from jobs.scopes import files_of_patients
from jobs.train import latest_version
from lakehouse.artifacts import ArtifactSigner, signer_from_settings
from lakehouse.catalog import (
    DAILY_STEPS,
    EXPLANATIONS,
    FEATURES,
    FORECASTS,
    OUTLOOK,
    PATIENTS,
    REGISTRY,
    THERAPIES,
    TableSpec,
)
from lakehouse.errors import InputError, StorageError
from lakehouse.settings import get_settings
from lakehouse.storage import Lake, empty_frame, in_list_predicate, sql_literal
from models import guard
from models.backtest import Panel
from models.base import Forecaster, ForecastError, ForecastInput
from models.baselines import BASELINES, UsualLevel, usual_days
from models.cluster_level import NAME as CLUSTER_LEVEL
from models.cluster_level import cluster_level_forecast
from models.direct import LEVEL, STATE_FEATURES
from models.ebm import ClusterEBM
from models.intervals import apply_intervals, from_json, patient_scale
from models.prophet_model import ProphetPerPatient

JOB = "forecast"
TOP_CONTRIBUTIONS = 10
# The patient's own backtest: their champion and usual level forecast from this many days before
# the origin, scored on the worn days since, when at least OWN_BACKTEST_WORN_DAYS of them.
OWN_BACKTEST_DAYS = 365
OWN_BACKTEST_WORN_DAYS = 60


@dataclass(frozen=True)
class ForecastSummary:
    """What one forecast run did."""

    patients: int
    cluster_level: int
    forecast_rows: int
    explanation_rows: int
    models: tuple[str, ...]
    without_forecast: int = 0
    kept: int = 0  # not due: their latest forecast is recent enough (jobs.forecast_refresh)
    why: str = ""  # the refresh rule's reasons for this run's patients

    def describe(self) -> str:
        """One line for the command line."""
        missing = (
            f", {self.without_forecast:,} without any wear day yet (no forecast)"
            if self.without_forecast
            else ""
        )
        kept = f", {self.kept:,} kept (forecast recent enough)" if self.kept else ""
        why = f" [{self.why}]" if self.why else ""
        return (
            f"forecast: {self.patients:,} patients{why}{kept} "
            f"({self.cluster_level:,} cluster-level{missing}), "
            f"{self.forecast_rows:,} forecast rows, {self.explanation_rows:,} explanation rows; "
            f"models: {', '.join(self.models)}"
        )


def registered_ebms(lake: Lake, *, signer: ArtifactSigner | None = None) -> list[ClusterEBM]:
    """The EBMs of the newest registry version, loaded from their artifacts once their
    signatures are checked (:mod:`lakehouse.artifacts`).

    Args:
        lake: the lake.
        signer: checks the artifacts; default: the one of ``MOBILITY_ARTIFACT_KEY``.

    Raises:
        StorageError: an artifact outside the artifacts folder, not the one of its model and
            version, unsigned or with a signature that does not match (nothing is loaded).
        InputError: no artifact key is set.
    """
    version = latest_version(lake)
    if version is None:
        return []
    named = (
        lake.scan(REGISTRY)
        .filter((pl.col("version") == version) & pl.col("artifact_uri").is_not_null())
        .select(pl.col("model_id").str.split(":").list.first().alias("model"), "artifact_uri")
        .unique()
        .sort("artifact_uri", "model")
        .collect()
    )
    if not named.height:
        return []
    signer = signer or signer_from_settings(get_settings(), lake_uri=lake.uri)
    # every signature first: one refused artifact loads none
    payloads = [
        (model, signer.read(lake, uri, model=model, version=version))
        for model, uri in named.iter_rows()
    ]
    models = []
    for name, payload in payloads:
        model = pickle.loads(payload)  # signed by this pipeline's training, checked above
        if not isinstance(model, ClusterEBM) or model.name != name:
            raise StorageError(f"the artifact of {name!r} version {version} holds another model")
        models.append(model)
    return models


def superseded(stored: pl.DataFrame, latest: pl.DataFrame) -> pl.DataFrame:
    """``patient_id, origin_date`` of stored forecasts to delete: an origin is kept when it is
    this run's, or an earlier one that is the first of its calendar month (what monitoring scores
    once the forecast days have passed). The others were replaced by a newer forecast, or lie
    after this run's origin because data was withdrawn since.

    Args:
        stored: ``patient_id, origin_date`` pairs in gold/forecasts.
        latest: ``patient_id, origin`` of this run.
    """
    firsts = stored.group_by("patient_id", pl.col("origin_date").dt.strftime("%Y-%m")).agg(
        pl.col("origin_date").min().alias("first")
    )
    monthly = firsts.select("patient_id", pl.col("first").alias("origin_date"), keep=pl.lit(True))
    return (
        stored.join(latest, on="patient_id")
        .join(monthly, on=["patient_id", "origin_date"], how="left")
        .filter(
            (pl.col("origin_date") != pl.col("origin"))
            & ~(pl.col("keep").fill_null(False) & (pl.col("origin_date") < pl.col("origin")))
        )
        .select("patient_id", "origin_date")
    )


# patients whose superseded origins one delete removes
RETIRE_PATIENTS = 5_000


def _retire_superseded(lake: Lake, batch: pl.DataFrame) -> int:
    """Delete the forecasts (and explanations) of the batch's superseded origins."""
    stored = (
        lake.scan(FORECASTS)
        .filter(pl.col("patient_id").is_in(batch["patient_id"].implode()))
        .select("patient_id", "origin_date")
        .unique()
        .collect()
    )
    gone = superseded(stored, batch.select("patient_id", "origin"))
    if not gone.height:
        return 0
    terms = [
        f"(origin_month = {sql_literal(day.strftime('%Y-%m'))} "
        f"AND origin_date = {sql_literal(day.isoformat())} "
        f"AND {in_list_predicate('patient_id', sorted(group['patient_id']))})"
        for (day,), group in gone.group_by("origin_date")
        if isinstance(day, date)
    ]
    predicate = " OR ".join(terms)
    for table in (FORECASTS, EXPLANATIONS, OUTLOOK):
        lake.delete(table, predicate)
    return gone.height


def _forecast_origin(
    known: ForecastInput,
    cohort: ForecastInput,
    everyone: pl.DataFrame,
    ebms: list[ClusterEBM],
    *,
    horizon: int,
    prophet_workers: int,
    prophet_clusters: set[str] | None,
    calibration: pl.DataFrame | None = None,
    shrinkage: Shrinkage | None = None,
) -> tuple[list[pl.DataFrame], list[pl.DataFrame], int]:
    """Forecasts (and EBM explanations) of the patients of one origin; ``cohort`` (every patient
    of the batch known at the origin) sets the cluster-level forecast of the others. With
    ``shrinkage`` (registered), the learned models are served as guarded adjustments of the
    patient's usual level (:mod:`models.guard`), their explanations with them."""
    origin = known.origin
    forecasts: list[pl.DataFrame] = []
    explanations: list[pl.DataFrame] = []
    anchor: pl.DataFrame | None = None
    if known.patients.height:
        for baseline in BASELINES:
            model = baseline()
            made = model.predict(known, horizon=horizon)
            if model.name == guard.ANCHOR:
                anchor = made
            forecasts.append(made.with_columns(model=pl.lit(model.name)))
        # Prophet (a fit per patient, the costliest model) only where it is the champion
        wanted = known.patients.filter(
            pl.col("disease_group").is_in(list(prophet_clusters))
            if prophet_clusters is not None
            else pl.lit(True)
        ).select("patient_id")
        if wanted.height:
            subset = known.only(wanted)
            # only before the first training (Prophet is never a champion): as it forecasts
            prophet = ProphetPerPatient(workers=prophet_workers)
            forecasts.append(
                prophet.predict(subset, horizon=horizon).with_columns(model=pl.lit(prophet.name))
            )
    # the usual level's parts, for the served EBMs' explanations (once per origin)
    usual = usual_days(known).drop("yhat") if shrinkage and anchor is not None else None
    levelled = known.features.filter(
        (pl.col("date") == origin) & pl.col(LEVEL).is_not_null()
    ).select("patient_id")
    ready = known.only(levelled)
    for ebm in ebms:
        served = ready.only(ebm.covered(ready.patients))
        if not served.patients.height:
            continue
        made, reasons = ebm.predict_explained(served, horizon=horizon, top=TOP_CONTRIBUTIONS)
        if shrinkage and anchor is not None and usual is not None:
            made = shrinkage.serve(ebm.name, made, anchor, served)
            reasons = guard.explain_served(reasons, made, usual)
            made = made.drop("anchor", "weight")
        forecasts.append(made.with_columns(model=pl.lit(ebm.name)))
        explanations.append(reasons.with_columns(model=pl.lit(ebm.name)))
    if calibration is not None and calibration.height and forecasts:
        forecasts = [calibrated(known, frame, calibration) for frame in forecasts]
    # patients the models could not serve, each for the models they miss: too little history
    # for any, or (once EBMs are registered) no level at the origin for the EBMs
    short = everyone.join(known.patients, on="patient_id", how="anti")
    if ebms:
        short = pl.concat([short, known.patients.join(levelled, on="patient_id", how="anti")])
    if short.height:
        forecasts.append(
            cluster_level_forecast(cohort, short, horizon=horizon).with_columns(
                model=pl.lit(CLUSTER_LEVEL)
            )
        )
    stamped = [f.with_columns(origin_date=pl.lit(origin)) for f in forecasts]
    explained = [e.with_columns(origin_date=pl.lit(origin)) for e in explanations]
    return stamped, explained, short.height


def own_backtest(
    panel: Panel,
    origin: date,
    ids: list[str],
    ebms: list[ClusterEBM],
    winners: dict[str, str],
    shrinkage: Shrinkage,
) -> pl.DataFrame:
    """``patient_id, model, own_mae, usual_mae, own_days, loses``: for the patients ``ids`` of an
    origin whose cluster's champion is an EBM, that EBM (served as the forecast job serves it)
    and the usual level forecast from :data:`OWN_BACKTEST_DAYS` before the origin, their mean
    absolute errors on the worn days since (patients with fewer than
    :data:`OWN_BACKTEST_WORN_DAYS` of them, or no level then, are left out), and whether the EBM
    lost beyond chance: the one-sided 95% lower bound of the mean daily difference of absolute
    errors is above 0.

    The registered EBMs learned from the training sample's whole history, and the therapy plan
    is the one recorded now: for a patient of that sample, or one whose course was recorded
    during that year, the check favours the EBM, never the usual level.
    """
    by_model: dict[str, list[str]] = {}
    for cluster, winner in winners.items():
        if winner not in guard.UNGUARDED:
            by_model.setdefault(winner, []).append(cluster)
    earlier = origin - timedelta(days=OWN_BACKTEST_DAYS)
    actual = panel.daily.filter(
        pl.col("patient_id").is_in(ids)
        & (pl.col("date") >= earlier)
        & (pl.col("date") < origin)
        & pl.col("steps").is_not_null()
    ).select("patient_id", target_date="date", actual="steps")
    enough = actual.group_by("patient_id").len().filter(pl.col("len") >= OWN_BACKTEST_WORN_DAYS)
    known = panel.known_at(earlier, patients=enough["patient_id"].to_list())
    if not by_model or not known.patients.height:
        return pl.DataFrame(schema=OWN_BACKTEST_SCHEMA)
    anchor = UsualLevel().predict(known, horizon=OWN_BACKTEST_DAYS)
    scored = []
    for ebm in ebms:
        clusters = by_model.get(ebm.name)
        if not clusters:
            continue
        group = known.only(known.patients.filter(pl.col("disease_group").is_in(clusters)))
        if not group.patients.height:
            continue
        servable = group.only(ebm.servable(group))
        if not servable.patients.height:
            continue
        forecast = ebm.predict(servable, horizon=OWN_BACKTEST_DAYS)
        scored.append(
            shrinkage.serve(ebm.name, forecast, anchor, servable).select(
                "patient_id", "target_date", "yhat", "anchor", model=pl.lit(ebm.name)
            )
        )
    if not scored:
        return pl.DataFrame(schema=OWN_BACKTEST_SCHEMA)
    days = pl.concat(scored).join(actual, on=["patient_id", "target_date"])
    model_error = (pl.col("yhat") - pl.col("actual")).abs()
    usual_error = (pl.col("anchor") - pl.col("actual")).abs()
    difference = model_error - usual_error
    return (
        days.group_by("patient_id", "model")
        .agg(
            own_mae=model_error.mean(),
            usual_mae=usual_error.mean(),
            own_days=pl.len(),
            loses=(difference.mean() - 1.645 * difference.std() / pl.len().sqrt()) > 0,
        )
        .cast(OWN_BACKTEST_SCHEMA)
        .sort("patient_id", "model")
    )


@dataclass(frozen=True)
class BatchForecast:
    """One batch's rows, ready to commit.

    Args:
        forecasts: gold/forecasts rows (with ``origin_month``), None when nobody got one.
        outlook: gold/outlook rows of those forecasts.
        explanations: gold/explanations rows, None when no EBM served the batch.
        predicate: the rows of the batch's (patient, origin) pairs these rows replace.
        cluster_level: patients who got the cluster-level forecast.
        unforecastable: patients without a single wear day in the batch before their origin.
    """

    forecasts: pl.DataFrame | None
    outlook: pl.DataFrame | None
    explanations: pl.DataFrame | None
    predicate: str
    cluster_level: int
    unforecastable: list[str]


def forecast_batch(
    panel: Panel,
    batch: pl.DataFrame,
    ebms: list[ClusterEBM],
    winners: dict[str, str],
    *,
    horizon: int,
    prophet_workers: int,
    calibration: pl.DataFrame | None = None,
    shrinkage: Shrinkage | None = None,
) -> BatchForecast:
    """The forecasts of one batch of patients. Pure, shared by every engine.

    Args:
        panel: the batch's patients' panel (:func:`jobs.panel.load_panel`).
        batch: ``patient_id, origin`` of the batch, sorted by patient.
        ebms: the registered EBMs.
        winners: each cluster's champion model (empty before the first training).
        horizon: days forecast.
        prophet_workers: processes fitting Prophet (1: in this process).
        calibration: the registered models' interval calibration (:func:`registered_intervals`);
            None or empty: each model's own interval.
        shrinkage: the registered learned models' shrinkage toward the usual level
            (:func:`registered_shrinkage`); None or empty: served as they forecast.
    """
    # before any training every model runs; after, Prophet only where it won
    prophet_clusters = {c for c, m in winners.items() if m == "prophet"} if winners else None
    forecasts: list[pl.DataFrame] = []
    explanations: list[pl.DataFrame] = []
    terms = []
    short_total = 0
    unforecastable: list[str] = []
    own_checks: list[pl.DataFrame] = []
    for (origin,), group in batch.group_by("origin", maintain_order=True):
        assert isinstance(origin, date)
        ids = group["patient_id"].to_list()
        known = panel.known_at(origin, patients=ids)
        # everyone's history before the origin, however short, for cluster-level rows
        cohort = ForecastInput(
            origin,
            panel.daily.filter(pl.col("date") < origin),
            panel.patients,
            panel.therapies.clear(),
        )
        everyone = panel.patients.filter(pl.col("patient_id").is_in(ids))
        if not known.patients.height:
            # nobody of this origin has history of their own
            try:
                made = cluster_level_forecast(cohort, everyone, horizon=horizon)
            except ForecastError:
                # not a single wear day in the batch before this origin: recorded,
                # and these patients get their forecast once a wear day arrives
                unforecastable += everyone["patient_id"].to_list()
                continue
            forecasts.append(
                made.with_columns(model=pl.lit(CLUSTER_LEVEL), origin_date=pl.lit(origin))
            )
            short_total += everyone.height
        else:
            made_f, made_e, short = _forecast_origin(
                known,
                cohort,
                everyone,
                ebms,
                horizon=horizon,
                prophet_workers=prophet_workers,
                prophet_clusters=prophet_clusters,
                calibration=calibration,
                shrinkage=shrinkage,
            )
            forecasts += made_f
            explanations += made_e
            short_total += short
            if winners and shrinkage:
                own_checks.append(own_backtest(panel, origin, ids, ebms, winners, shrinkage))
        terms.append(
            f"(origin_month = {sql_literal(origin.strftime('%Y-%m'))} "
            f"AND origin_date = {sql_literal(origin.isoformat())} "
            f"AND {in_list_predicate('patient_id', sorted(ids))})"
        )
    month = pl.col("origin_date").dt.strftime("%Y-%m").alias("origin_month")
    frame = pl.concat(forecasts, how="diagonal_relaxed").with_columns(month) if forecasts else None
    outlook = (
        None
        if frame is None
        else outlook_rows(
            frame,
            panel.features.select("patient_id", "date", BASELINE),
            panel.patients,
            winners,
            pl.concat(own_checks) if own_checks else None,
        ).with_columns(month)
    )
    explained = (
        pl.concat(explanations, how="diagonal_relaxed").with_columns(month)
        if explanations
        else None
    )
    return BatchForecast(frame, outlook, explained, " OR ".join(terms), short_total, unforecastable)


@dataclass
class _Totals:
    patients: int = 0
    cluster_level: int = 0
    rows_out: int = 0
    explained_out: int = 0
    retired_origins: int = 0
    unforecastable: list[str] = field(default_factory=list)
    models: set[str] = field(default_factory=set)


@dataclass(frozen=True)
class ForecastContext:
    """What every forecast task reads besides its own patients (shipped once per worker)."""

    patients: pl.DataFrame
    therapies: pl.DataFrame
    ebms: list[ClusterEBM]
    winners: dict[str, str]
    calibration: pl.DataFrame | None
    shrinkage: Shrinkage | None
    horizon: int
    prophet_workers: int


@dataclass(frozen=True)
class ForecastTask:
    """One batch of patients, as a task gets it.

    Args:
        lake_uri: the lake (the task opens it with its own credentials).
        daily_files: silver/daily_steps data files that can hold the batch's days.
        feature_files: silver/features data files that can hold the batch's rows; None before
            the features job made the table.
        batch: ``patient_id, origin`` of each patient of the batch.
    """

    lake_uri: str
    daily_files: tuple[str, ...]
    feature_files: tuple[str, ...] | None
    batch: pl.DataFrame


class _TaskTables:
    """The lake as a task sees it: its own files of daily_steps and features, the shared
    patients and therapies; scanned like the lake's tables, so :func:`jobs.panel.load_panel`
    builds the batch's panel with the same code as from the lake."""

    def __init__(self, task: ForecastTask, context: ForecastContext) -> None:
        self._lake = task_lake(task.lake_uri)
        self._task = task
        self._context = context

    def scan(self, table: TableSpec, *, version: int | None = None) -> pl.LazyFrame:
        if table is DAILY_STEPS:
            return self._lake.scan_files(DAILY_STEPS, self._task.daily_files)
        if table is FEATURES:
            if self._task.feature_files is None:
                return empty_frame(FEATURES).lazy()
            return self._lake.scan_files(FEATURES, self._task.feature_files)
        if table is PATIENTS:
            return self._context.patients.lazy()
        if table is THERAPIES:
            return self._context.therapies.lazy()
        raise KeyError(table.path)


_OUTPUTS = ("forecasts", "outlook", "explanations")


def forecast_task(context: ForecastContext, task: ForecastTask, staging: Staging) -> dict[str, Any]:
    """A task: one batch's forecasts, outlook and explanations from its own files, staged."""
    panel = load_panel(
        cast(Lake, _TaskTables(task, context)), patients=task.batch["patient_id"].to_list()
    )
    made = forecast_batch(
        panel,
        task.batch,
        context.ebms,
        context.winners,
        horizon=context.horizon,
        prophet_workers=context.prophet_workers,
        calibration=context.calibration,
        shrinkage=context.shrinkage,
    )
    for name, rows in zip(_OUTPUTS, (made.forecasts, made.outlook, made.explanations), strict=True):
        if rows is not None:
            staging.write(name, rows)
    return {
        "predicate": made.predicate,
        "cluster_level": made.cluster_level,
        "unforecastable": made.unforecastable,
    }


def _commit_batches(
    engine: Engine,
    lake: Lake,
    batches: list[pl.DataFrame],
    tasks: list[ForecastTask],
    context: ForecastContext,
) -> _Totals:
    """Run the batches on the engine and commit their rows as it delivers them, in order."""
    totals = _Totals()
    with engine.map_tasks(
        lake, JOB, forecast_task, tasks, shared=context, in_flight=1, cpu_bound=True
    ) as results:
        for batch, result in zip(batches, results, strict=True):
            predicate = str(result.summary["predicate"])
            forecasts = result.staged.read("forecasts")
            outlook = result.staged.read("outlook")
            explanations = result.staged.read("explanations")
            if forecasts is not None and outlook is not None:
                lake.replace(FORECASTS, forecasts, predicate=predicate, metadata={"job": JOB})
                totals.rows_out += forecasts.height
                totals.models.update(forecasts["model"].unique().to_list())
                lake.replace(OUTLOOK, outlook, predicate=predicate, metadata={"job": JOB})
            if explanations is not None:
                lake.replace(EXPLANATIONS, explanations, predicate=predicate, metadata={"job": JOB})
                totals.explained_out += explanations.height
            totals.patients += batch.height
            totals.cluster_level += int(result.summary["cluster_level"])
            totals.unforecastable += list(result.summary["unforecastable"])
    # Superseded origins go once the run's rows are in, a few thousand patients a delete: each
    # delete rewrites the files that hold those patients' older rows, which a delete per batch
    # rewrote again and again (at 100,000 patients that made the driver's commits the forecast's
    # bottleneck). A run stopped before this leaves older origins beside the new ones, which
    # every reader passes over (they read each patient's latest origin) until the next run.
    forecast = (
        pl.concat(
            [batch.select("patient_id", "origin") for batch in batches],
            how="vertical_relaxed",
        ).sort("patient_id")
        if batches
        else pl.DataFrame()
    )
    for start in range(0, forecast.height, RETIRE_PATIENTS):
        totals.retired_origins += _retire_superseded(lake, forecast.slice(start, RETIRE_PATIENTS))
    return totals


def run(
    lake: Lake,
    *,
    horizon: int = 365,
    prophet_workers: int = 2,
    batch_patients: int = 250,
    engine: Engine | None = None,
    everyone: bool = False,
    refresh_days: int = REFRESH_DAYS,
    daily_up_to: int = DAILY_UP_TO,
) -> ForecastSummary:
    """Forecast the patients due (:mod:`jobs.forecast_refresh`: new, changed, or with new data
    and a forecast ``refresh_days`` old or their refresh day; everyone after a training) from the
    day after their last day with data.

    Args:
        lake: the lake.
        everyone: forecast every patient.
        refresh_days: how often a patient with new data is forecast again, at least.
        daily_up_to: while no more patients than this have new data, each is forecast daily.
        horizon: days forecast.
        prophet_workers: processes fitting Prophet in each task of the local engine (a
            distributed engine's task fits its own patients one after another).
        batch_patients: patients forecast together (the cluster-level forecast of a patient
            with too little history comes from the recent days of their batch's cluster).
        engine: where the batches are forecast (default: this process); the rows are committed
            here whatever the engine.
    """
    engine = engine or LocalEngine()
    with job_run(lake, JOB, engine=engine.name) as record:
        if not lake.exists(DAILY_STEPS):
            return ForecastSummary(0, 0, 0, 0, ())
        inputs = Inputs.current(lake)
        daily_version = inputs.version(DAILY_STEPS)
        models = latest_version(lake)
        refresh = plan_refresh(
            lake,
            lake.scan(DAILY_STEPS, version=daily_version)
            .group_by("patient_id")
            .agg(origin=pl.col("date").max() + pl.duration(days=1))
            .collect(),
            inputs,
            models,
            job=JOB,
            refresh_days=refresh_days,
            everyone=everyone,
            daily_up_to=daily_up_to,
        )
        ends = refresh.due
        batches = [
            ends.slice(start, batch_patients) for start in range(0, ends.height, batch_patients)
        ]
        context = ForecastContext(
            patients=lake.read(PATIENTS),
            therapies=lake.read(THERAPIES),
            ebms=registered_ebms(lake),
            winners=champions(lake),
            calibration=registered_intervals(lake),
            shrinkage=registered_shrinkage(lake),
            horizon=horizon,
            prophet_workers=1 if engine.distributed else prophet_workers,
        )
        daily_files = lake.file_stats(DAILY_STEPS, version=daily_version)
        feature_files = lake.file_stats(FEATURES) if lake.exists(FEATURES) else None
        tasks = []
        for batch in batches:
            first, last = batch["patient_id"][0], batch["patient_id"][-1]  # sorted
            features = (
                None if feature_files is None else files_of_patients(feature_files, first, last)
            )
            tasks.append(
                ForecastTask(lake.uri, files_of_patients(daily_files, first, last), features, batch)
            )
        totals = _commit_batches(engine, lake, batches, tasks, context)
        # a commit per batch of patients adds a file per table: merged, so the patient page
        # opens a few files per month instead of one per batch
        compacted = sum(lake.compact(table) for table in (FORECASTS, EXPLANATIONS, OUTLOOK))
        record.rows_in, record.rows_out = totals.patients, totals.rows_out
        record.details.update(
            inputs=inputs.as_details(),
            registry_version=models,
            refresh=refresh.as_details(),
            compacted_files=compacted,
            patients=totals.patients,
            cluster_level=totals.cluster_level,
            without_forecast=totals.unforecastable[:100],
            retired_origins=totals.retired_origins,
            explanation_rows=totals.explained_out,
            models=sorted(totals.models),
            horizon=horizon,
        )
        return ForecastSummary(
            totals.patients,
            totals.cluster_level,
            totals.rows_out,
            totals.explained_out,
            tuple(sorted(totals.models)),
            kept=refresh.current,
            why=refresh.describe(),
        )


def champions(lake: Lake) -> dict[str, str]:
    """Each cluster's champion model of the newest registry version (empty before training)."""
    version = latest_version(lake)
    if version is None:
        return {}
    rows = (
        lake.scan(REGISTRY)
        .filter((pl.col("version") == version) & (pl.col("status") == "champion"))
        .select("cluster", model=pl.col("model_id").str.split(":").list.first())
        .collect()
    )
    return dict(zip(rows["cluster"], rows["model"], strict=True))


def registered_intervals(lake: Lake) -> pl.DataFrame:
    """The interval calibration of the newest registry version's models
    (:func:`models.intervals.calibrate` rows; empty before the first calibrated training)."""
    return from_json(_registered(lake, "intervals"))


def _registered(lake: Lake, column: str) -> dict[tuple[str, str], str | None]:
    """``(model, cluster) -> column`` (a JSON text) of the newest registry version; empty before
    the first training, or when that version's registry has no such column yet (it was written
    before the column was added)."""
    version = latest_version(lake)
    registry = lake.scan(REGISTRY)
    if version is None or column not in registry.collect_schema().names():
        return {}
    rows = (
        registry.filter(pl.col("version") == version)
        .select(
            model=pl.col("model_id").str.split(":").list.first(),
            cluster="cluster",
            text=column,
        )
        .collect()
    )
    return {(m, c): t for m, c, t in rows.iter_rows()}


@dataclass(frozen=True)
class Shrinkage:
    """The registered learned models' shrinkage toward the patient's usual level, per model and
    cluster (:mod:`models.guard`).

    Args:
        shares: ``(model, cluster) -> shrinkage``; empty for versions trained before guarded
            forecasts (every model is then served as it forecasts).
    """

    shares: dict[tuple[str, str], float]

    def __bool__(self) -> bool:
        return bool(self.shares)

    def serve(
        self, model: str, forecast: pl.DataFrame, anchor: pl.DataFrame, data: ForecastInput
    ) -> pl.DataFrame:
        """``model``'s rows of the patients of ``data`` as served (:func:`models.guard.serve`),
        with ``anchor`` and ``weight``; a cluster without a recorded share gets 0."""
        mine = {c: v for (m, c), v in self.shares.items() if m == model}
        shares = pl.DataFrame(
            {"disease_group": list(mine), "shrinkage": list(mine.values())},
            schema={"disease_group": pl.String, "shrinkage": pl.Float64},
        )
        per_patient = data.patients.join(shares, on="disease_group", how="left").select(
            "patient_id", "shrinkage"
        )
        return guard.serve(forecast, anchor, data, per_patient)


def registered_shrinkage(lake: Lake) -> Shrinkage:
    """The shrinkage of the newest registry version's learned models (empty before the first
    training that chose one)."""
    return Shrinkage(guard.from_json(_registered(lake, "shrinkage")))


def calibrated(
    known: ForecastInput, forecasts: pl.DataFrame, calibration: pl.DataFrame
) -> pl.DataFrame:
    """``forecasts`` (with ``model``) of the patients of ``known`` with calibrated intervals:
    the calibration of their model, cluster and horizon band times their own spread at the
    origin (:mod:`models.intervals`)."""
    return apply_intervals(
        forecasts,
        calibration,
        patient_scale(known),
        known.patients.select("patient_id", cluster="disease_group"),
        origin=known.origin,
    )


def patient_forecast(lake: Lake, patient_id: str) -> pl.DataFrame:
    """The patient's forecasts from their latest origin, every model, the champion marked:
    ``target_date, model, champion, yhat, yhat_lower, yhat_upper, origin_date``.

    Raises:
        InputError: the patient has no forecast (unknown, or no forecast run yet).
    """
    from lakehouse.query import PATIENT_FORECAST_SQL, connect, run_query

    con = connect(lake, tables=(FORECASTS, OUTLOOK))
    result = run_query(con, PATIENT_FORECAST_SQL, [patient_id, patient_id], row_cap=10**6)
    rows = pl.from_arrow(result.table)
    assert isinstance(rows, pl.DataFrame)
    if not rows.height:
        raise InputError(f"no forecast for patient {patient_id!r} (run mobility forecast first)")
    return rows


class OnDemandForecaster:
    """One patient's forecast from the registered models, for the dashboard.

    The EBMs are loaded and the tables opened once; each call reads only that patient's rows and
    runs the baselines and the EBMs (Prophet, a fit per call, is left to the batch forecast).
    """

    def __init__(self, lake: Lake) -> None:
        self.ebms = registered_ebms(lake)
        self.calibration = registered_intervals(lake)
        self.shrinkage = registered_shrinkage(lake)
        self.daily = lake.scan(DAILY_STEPS)
        self.features = lake.scan(FEATURES)
        self.patients = lake.read(PATIENTS)
        self.therapies = lake.read(THERAPIES)

    def forecast(self, patient_id: str, *, horizon: int = 365) -> pl.DataFrame:
        """``model, target_date, yhat, yhat_lower, yhat_upper, origin_date`` of every model that
        can serve the patient, from the day after their last day with data.

        Raises:
            InputError: the patient is unknown or has too little history of their own.
        """
        mine = pl.col("patient_id") == patient_id
        daily = (
            self.daily.filter(mine)
            .select("patient_id", "date", steps=wear_steps())
            .sort("date")
            .collect()
        )
        if not daily.height:
            raise InputError(f"no daily steps for patient {patient_id!r}")
        origin = daily["date"][-1] + timedelta(days=1)
        features = (
            self.features.filter(mine & (pl.col("date") == origin))
            .select("patient_id", "date", LEVEL, *STATE_FEATURES)
            .collect()
        )
        panel = Panel(
            daily,
            self.patients.filter(mine).select("patient_id", "disease_group", "country"),
            self.therapies.filter(mine),
            features,
        )
        known = panel.known_at(origin)
        if not known.patients.height:
            raise InputError(
                f"patient {patient_id!r} has too little history for an own forecast "
                "(the batch forecast gives a cluster-level one)"
            )
        models: list[Forecaster] = [baseline() for baseline in BASELINES]
        if features.height and features[LEVEL][0] is not None:
            models += [ebm for ebm in self.ebms if ebm.covered(known.patients).height]
        frames = {m.name: m.predict(known, horizon=horizon) for m in models}
        anchor = frames[guard.ANCHOR]
        made = pl.concat(
            [
                (
                    self.shrinkage.serve(name, frame, anchor, known).drop("anchor", "weight")
                    if self.shrinkage and name not in guard.UNGUARDED
                    else frame
                ).with_columns(model=pl.lit(name))
                for name, frame in frames.items()
            ]
        )
        return calibrated(known, made, self.calibration).select(
            "model", "target_date", "yhat", "yhat_lower", "yhat_upper", origin_date=pl.lit(origin)
        )
