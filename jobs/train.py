"""The training job: backtest every model, choose each cluster's champion, register the models.

``mobility train`` runs when due (no model yet, or the last training is a week old) or when
asked. On a sample of patients per disease cluster it runs rolling-origin backtests of every
model (baselines, Prophet, EBM per cluster, global EBM; the learned ones served as guarded
adjustments of the patient's usual level, :mod:`models.guard`) into gold/backtests, chooses each
cluster's champion among the usual level and the EBMs by mean MAE over the whole year ahead
(never by assumption; :func:`champions`), calibrates every
model's 80% intervals on the backtest residuals (:mod:`models.intervals`), fits the EBMs on
the sample's full history and stores them in the lake's storage, each signed under
``MOBILITY_ARTIFACT_KEY`` (:mod:`lakehouse.artifacts`), and appends one row per model and cluster
to models/registry (status ``champion`` or ``candidate``, with the interval calibration of that
model and cluster; earlier versions become ``retired`` in the same commit).
"""

from __future__ import annotations

import json
import pickle
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

import polars as pl

from jobs.panel import load_panel
from jobs.runs import job_run
from lakehouse.artifacts import signer_from_settings
from lakehouse.catalog import ALERTS, BACKTESTS, DAILY_STEPS, PATIENTS, REGISTRY
from lakehouse.settings import get_settings
from lakehouse.storage import Lake
from models import guard, intervals
from models.backtest import (
    ALL_CLUSTERS,
    LeftOut,
    Panel,
    league_table,
    rolling_origins,
    run_backtest,
)
from models.base import Forecaster
from models.baselines import BASELINES
from models.ebm import DEFAULT_PARAMS, ClusterEBM
from models.prophet_model import ProphetPerPatient

JOB = "train"
RETRAIN_EVERY = timedelta(days=7)
CLUSTERS = ("MS", "PD", "RA", "OTHER")
# Days of daily steps a patient needs to take part in backtests (a year ahead plus some past).
MIN_DAYS_FOR_BACKTEST = 365 + 120
# Below this many sampled patients tuning would fit noise: the defaults are used.
MIN_PATIENTS_TO_TUNE = 100
# A training in seconds instead of minutes, for tests and demos (MOBILITY_QUICK_TRAINING): one
# backtest origin, no tuning, short boosting with one outer bag, Prophet fitted in this process.
QUICK_TRAINING: dict[str, Any] = {
    "origins": 1,
    "tune_seconds": 0.0,
    "prophet_workers": 1,
    "ebm_params": {**DEFAULT_PARAMS, "max_rounds": 200, "outer_bags": 1},
}
KINDS = {
    "seasonal_naive_7d": "baseline",
    "trailing_mean_28d": "baseline",
    "weekday_profile_8w": "baseline",
    "usual_level": "baseline",
    "prophet": "prophet",
    "ebm_cluster": "ebm",
    "ebm_global": "ebm",
}


@dataclass(frozen=True)
class TrainSummary:
    """What one training run did."""

    status: str  # "trained", "not due" or "too little history"
    version: int | None = None
    patients: int = 0
    origins: list[date] = field(default_factory=list)
    champions: dict[str, str] = field(default_factory=dict)
    league: pl.DataFrame = field(default_factory=pl.DataFrame)
    fits: dict[str, dict[str, float]] = field(default_factory=dict)  # "model cluster" -> cost
    # "model cluster" -> tuned parameters and their validation MAE (steps); empty: defaults
    tuned: dict[str, dict[str, Any]] = field(default_factory=dict)
    # backtest origins and clusters with patients left out (:class:`models.backtest.LeftOut`)
    left_out: list[str] = field(default_factory=list)
    # guarded models' shrinkage toward the usual level (:func:`models.guard.choose` rows)
    shrinkage: pl.DataFrame = field(default_factory=pl.DataFrame)

    def describe(self) -> str:
        """Lines for the command line."""
        if self.status != "trained":
            return f"train: {self.status}"
        chosen = ", ".join(f"{c} {m}" for c, m in sorted(self.champions.items()))
        lines = [
            f"train: version {self.version}, {self.patients} patients, "
            f"{len(self.origins)} origins; champions: {chosen}"
        ]
        for key, cost in sorted(self.fits.items()):
            lines.append(
                f"  fit {key:<26} {cost.get('rows', 0):>9,.0f} rows "
                f"{cost.get('fit_seconds', 0):7.1f} s"
            )
        for key, tuned in sorted(self.tuned.items()):
            lines.append(f"  tuned {key:<24} {json.dumps(tuned, sort_keys=True)}")
        for note in self.left_out:
            lines.append(f"  backtest {note}")
        for model, cluster in self.shrinkage.select("model", "cluster").iter_rows():
            share = guard.share_of(self.shrinkage, model, cluster)
            why = (
                "all clusters' share: too few backtest patients of its own"
                if share.pooled and cluster != guard.ALL
                else f"best on backtests {share.best:.0%}, {share.patients} patients"
            )
            lines.append(
                f"  served {model:<12} {cluster:<6} {share.shrinkage:>4.0%} of its adjustment "
                f"of the usual level ({why})"
            )
        for row in self.league.iter_rows(named=True):
            # a figure is missing where no day of the cluster could be scored
            lines.append(
                f"  {row['cluster']:<6} {row['model']:<20} MAE {_figure(row['mae'], '8.0f')}  "
                f"MASE {_figure(row['mase'], '.3f')}  coverage {_figure(row['coverage'], '.2f')}  "
                f"width {_figure(row.get('width'), '6.0f')}"
            )
        return "\n".join(lines)


def _figure(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def latest_version(lake: Lake) -> int | None:
    """The registry's newest version, None when nothing was trained yet."""
    if not lake.exists(REGISTRY):
        return None
    version = lake.scan(REGISTRY).select(pl.col("version").max()).collect().item()
    return None if version is None else int(version)


def is_due(lake: Lake, now: datetime) -> bool:
    """No model yet, the newest is at least a week old, or monitoring raised an accuracy alert
    (matured forecasts more than 10% worse than their backtests) since it was trained."""
    if latest_version(lake) is None:
        return True
    trained = lake.scan(REGISTRY).select(pl.col("trained_at").max()).collect().item()
    if trained is None or now - trained >= RETRAIN_EVERY:
        return True
    if not lake.exists(ALERTS):
        return False
    drift = lake.scan(ALERTS).filter(
        (pl.col("check") == "accuracy")
        & pl.col("resolved_at").is_null()
        & (pl.col("raised_at") > pl.lit(trained))
    )
    return bool(drift.select(pl.len()).collect().item())


def _sample(lake: Lake, per_cluster: int, seed: int) -> list[str]:
    """Up to ``per_cluster`` patients per disease cluster with enough history, drawn at random
    (seeded) so that every run of the same lake trains on the same patients."""
    days = (
        lake.scan(DAILY_STEPS)
        .group_by("patient_id")
        .agg(span=(pl.col("date").max() - pl.col("date").min()).dt.total_days())
        .filter(pl.col("span") >= MIN_DAYS_FOR_BACKTEST)
        .collect()
    )
    groups = lake.read(PATIENTS).select("patient_id", "disease_group").join(days, on="patient_id")
    chosen: list[str] = []
    for _, group in groups.sort("patient_id").group_by("disease_group", maintain_order=True):
        take = min(per_cluster, group.height)
        chosen += group.sample(take, seed=seed)["patient_id"].to_list()
    return sorted(chosen)


def model_set(
    *, prophet_workers: int, horizon: int, seed: int, ebm_params: dict[str, Any] | None = None
) -> list[Forecaster]:
    """Every model the product knows, baselines included (EBMs with ``ebm_params``, else their
    defaults)."""
    params = dict(ebm_params or DEFAULT_PARAMS)
    return [
        *(baseline() for baseline in BASELINES),
        ProphetPerPatient(workers=prophet_workers),
        ClusterEBM(clustered=True, horizon=horizon, seed=seed, params=dict(params)),
        ClusterEBM(clustered=False, horizon=horizon, seed=seed, params=dict(params)),
    ]


# The models a clinician may be shown as the forecast: the patient's usual level and the EBMs
# served on top of it, whose forecasts are explained by clinical family (each therapy by name).
# Prophet fits therapies only from the patient's own past (a therapy new to them moves nothing)
# and its parts are not stored: it is backtested for comparison, never the forecast shown.
CHAMPION_MODELS = (guard.ANCHOR, "ebm_cluster", "ebm_global")


def champions(league: pl.DataFrame, shrinkage: pl.DataFrame | None = None) -> dict[str, str]:
    """Each cluster's model of :data:`CHAMPION_MODELS` with the lowest mean MAE over the year
    ahead, the usual level on a tie. The per-cluster EBM needs :data:`models.guard.MIN_PATIENTS`
    backtest patients of the cluster to be chosen (a smaller group pools with the others: the
    global EBM, or keeps the usual level), and a learned model served at a share of 0 in the
    cluster (``shrinkage``, :func:`models.guard.choose` rows) is the usual level under another
    name: never chosen."""
    rows = []
    for cluster, model, mae, patients in (
        league.filter(pl.col("cluster") != ALL_CLUSTERS)
        .select("cluster", "model", "mae", "patients")
        .iter_rows()
    ):
        if model not in CHAMPION_MODELS or mae is None:
            continue
        if model == "ebm_cluster" and patients < guard.MIN_PATIENTS:
            continue
        if (
            model != guard.ANCHOR
            and shrinkage is not None
            and guard.share_of(shrinkage, model, cluster).shrinkage == 0
        ):
            continue
        rows.append((cluster, mae, model != guard.ANCHOR, model))
    best: dict[str, str] = {}
    for cluster, _, _, model in sorted(rows):
        best.setdefault(cluster, model)
    return best


def _registry_rows(
    version: int,
    trained_at: datetime,
    models: list[Forecaster],
    league: pl.DataFrame,
    winners: dict[str, str],
    artifacts: dict[str, str],
    calibration: pl.DataFrame,
    shrinkage: pl.DataFrame,
) -> pl.DataFrame:
    rows = []
    for model in models:
        for cluster in CLUSTERS:
            scores = league.filter((pl.col("cluster") == cluster) & (pl.col("model") == model.name))
            metrics = scores.select("mae", "rmse", "mase", "coverage", "width").to_dicts()
            if isinstance(model, ClusterEBM):
                summary = metrics[0] if metrics else {}
                metrics = [
                    {
                        **summary,
                        **model.fit_cost(cluster),
                        "importances": model.importances(cluster),
                        "therapy_patients": model.therapy_evidence(cluster),
                    }
                ]
            params = model.params_for(cluster) if isinstance(model, ClusterEBM) else None
            rows.append(
                {
                    "model_id": f"{model.name}:{cluster}:v{version}",
                    "kind": KINDS[model.name],
                    "cluster": cluster,
                    "version": version,
                    "trained_at": trained_at,
                    "params": json.dumps(params or {}, sort_keys=True),
                    "metrics": json.dumps(metrics[0] if metrics else {}, sort_keys=True),
                    "artifact_uri": artifacts.get(model.name),
                    "status": "champion" if winners.get(cluster) == model.name else "candidate",
                    "intervals": intervals.to_json(calibration, model.name, cluster),
                    "shrinkage": guard.to_json(shrinkage, model.name, cluster),
                }
            )
    return pl.DataFrame(rows)


def run(
    lake: Lake,
    *,
    force: bool = False,
    patients_per_cluster: int = 200,
    origins: int = 3,
    spacing_days: int = 91,
    horizon: int = 365,
    seed: int = 0,
    prophet_workers: int = 2,
    tune_seconds: float = 0.0,
    ebm_params: dict[str, Any] | None = None,
    now: datetime | None = None,
) -> TrainSummary:
    """Train when due (or ``force``); see the module docstring.

    With ``tune_seconds``, the EBMs' parameters are first tuned by successive halving within that
    budget (split between the two EBM models), on what was known at the earliest backtest origin
    so the backtests stay honest. ``ebm_params`` replaces the EBMs' default parameters (see
    :data:`QUICK_TRAINING`).
    """
    now = now or datetime.now(UTC)
    with job_run(lake, JOB) as record:
        if not force and not is_due(lake, now):
            record.details.update(status="not due")
            return TrainSummary("not due")
        sample = _sample(lake, patients_per_cluster, seed) if lake.exists(DAILY_STEPS) else []
        if not sample:
            record.details.update(status="too little history")
            return TrainSummary("too little history")
        # the key signs the artifacts at the end: a missing one fails before the backtests
        signer = signer_from_settings(get_settings(), lake_uri=lake.uri)
        panel: Panel = load_panel(lake, patients=sample)
        chosen_origins = rolling_origins(
            panel, count=origins, spacing_days=spacing_days, horizon=horizon
        )
        models = model_set(
            prophet_workers=prophet_workers, horizon=horizon, seed=seed, ebm_params=ebm_params
        )
        tuning: dict[str, dict[str, float]] = {}
        if tune_seconds > 0 and len(sample) >= MIN_PATIENTS_TO_TUNE:
            earliest = panel.known_at(min(chosen_origins))
            ebms = [m for m in models if isinstance(m, ClusterEBM)]
            for ebm in ebms:
                tuning[ebm.name] = ebm.tune(earliest, budget_seconds=tune_seconds / len(ebms))
        left_out: list[LeftOut] = []
        tested = run_backtest(models, panel, chosen_origins, horizon=horizon, left_out=left_out)
        notes = [note.describe() for note in left_out]
        results = tested.results
        if not results.height:
            record.details.update(status="too little history")
            return TrainSummary("too little history")
        lake.upsert(BACKTESTS, results.with_columns(trained_at=pl.lit(now)))
        league = league_table(results)
        winners = champions(league, tested.shrinkage)
        version = (latest_version(lake) or 0) + 1
        # the registered EBMs learn from the sample's whole history
        last = panel.daily["date"].max()
        assert isinstance(last, date)
        everything = panel.known_at(last + timedelta(days=1))
        artifacts: dict[str, str] = {}
        for model in models:
            if isinstance(model, ClusterEBM):
                model.fit(everything)
                artifacts[model.name] = signer.write(
                    lake, model=model.name, version=version, payload=pickle.dumps(model)
                )
        rows = _registry_rows(
            version, now, models, league, winners, artifacts, tested.calibration, tested.shrinkage
        )
        if lake.exists(REGISTRY):
            # one commit: the new version in, every earlier one retired (diagonal: versions
            # registered before a column was added lack it)
            earlier = lake.read(REGISTRY).filter(pl.col("status") != "retired")
            rows = pl.concat(
                [rows, earlier.with_columns(status=pl.lit("retired"))], how="diagonal_relaxed"
            )
        lake.upsert(REGISTRY, rows)
        record.rows_in, record.rows_out = panel.daily.height, results.height
        record.details.update(
            status="trained",
            version=version,
            patients=len(sample),
            origins=[o.isoformat() for o in chosen_origins],
            champions=winners,
            tuning_mae=tuning,
            left_out=notes,
            shrinkage=tested.shrinkage.to_dicts(),
        )
        fits = {
            f"{model.name} {cluster}": model.fit_cost(cluster)
            for model in models
            if isinstance(model, ClusterEBM)
            for cluster in (CLUSTERS if model.clustered else ("ALL",))
            if model.fit_cost(cluster)
        }
        tuned = {
            f"{model.name} {cluster}": {**model.tuned[cluster], "validation_mae": round(mae)}
            for model in models
            if isinstance(model, ClusterEBM)
            for cluster, mae in tuning.get(model.name, {}).items()
        }
        return TrainSummary(
            "trained",
            version,
            len(sample),
            chosen_origins,
            winners,
            league,
            fits,
            tuned,
            notes,
            tested.shrinkage,
        )
