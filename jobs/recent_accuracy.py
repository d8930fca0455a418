"""Short-horizon backtests on the lake's own recent data: how the registered models and the
baselines do on each patient's last weeks.

The training backtests (gold/backtests) need a year of data after each origin, so a patient who
has shared a few weeks (every real export we have) never appears in them. This job scores them:
origins ``spacing_days`` apart, the latest a full ``horizon`` before the patient's own last day,
each with at least ``min_history_wear_days`` wear days before it, so every patient is scored at
the end of their own record (patients who share an origin are scored together).

The registered EBMs are scored as they are, never refitted (they learnt from other patients);
the baselines and Prophet are fitted per patient and origin as in the batch forecast. At every
origin all models are scored on the same patients: those with a level at the origin (the EBMs
need it) and a model in every registered EBM, or everyone with enough history when nothing is
registered yet. Nothing is written: the rows are returned (and printed by ``mobility backtest``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import date, timedelta

import polars as pl

from jobs.forecast import registered_ebms
from jobs.panel import load_panel
from lakehouse.errors import InputError
from lakehouse.storage import Lake
from models.backtest import Panel, backtest
from models.base import Forecaster
from models.baselines import SeasonalNaive, TrailingMean, WeekdayProfile
from models.direct import LEVEL
from models.ebm import ClusterEBM
from models.prophet_model import ProphetPerPatient


def run(
    lake: Lake,
    *,
    horizon: int = 7,
    origins: int = 3,
    spacing_days: int = 7,
    min_history_wear_days: int = 14,
    patients: Sequence[str] | None = None,
    prophet_workers: int = 1,
) -> pl.DataFrame:
    """Backtest rows (the gold/backtests columns) at the cumulative ``horizon``.

    Raises:
        InputError: the settings are impossible, or no patient can be scored with them.
    """
    if horizon < 1 or origins < 1 or spacing_days < 1 or min_history_wear_days < 1:
        raise InputError("horizon, origins, spacing and minimum history must be at least 1")
    panel = replace(
        load_panel(lake, patients=patients), min_history_wear_days=min_history_wear_days
    )
    ebms = registered_ebms(lake)
    own: list[Forecaster] = [
        SeasonalNaive(),
        TrailingMean(),
        WeekdayProfile(),
        ProphetPerPatient(workers=prophet_workers),
    ]
    # every patient's origins, counted back from their own last day; patients sharing an
    # origin are scored together
    last_days = panel.daily.group_by("patient_id").agg(last=pl.col("date").max())
    scheduled: dict[date, list[str]] = {}
    for patient, last in last_days.sort("patient_id").iter_rows():
        for k in range(origins):
            origin = last - timedelta(days=horizon - 1 + spacing_days * k)
            scheduled.setdefault(origin, []).append(patient)
    results = []
    for origin, ids in sorted(scheduled.items()):
        known = panel.known_at(origin, patients=ids)
        scored = _scorable(known.patients, known.features, origin, ebms)
        if not scored.height:
            continue
        part = _only(panel, scored)
        served = [ebm for ebm in ebms if ebm.covered(scored).height]
        results.append(backtest(own, part, [origin], horizon=horizon, horizons=(horizon,)))
        if served:
            results.append(
                backtest(served, part, [origin], horizon=horizon, horizons=(horizon,), refit=False)
            )
    if not results:
        raise InputError(
            f"no patient has {min_history_wear_days} wear days before an origin "
            f"{horizon} days before the end of their record"
        )
    return pl.concat(results)


def _scorable(
    patients: pl.DataFrame, features: pl.DataFrame, origin: date, ebms: Sequence[ClusterEBM]
) -> pl.DataFrame:
    """The known ``patients`` every model can serve at ``origin``: with a level there, and in a
    cluster of every registered EBM."""
    if not ebms:
        return patients
    levelled = features.filter((pl.col("date") == origin) & pl.col(LEVEL).is_not_null())
    chosen = patients.join(levelled.select("patient_id"), on="patient_id")
    for ebm in ebms:
        chosen = ebm.covered(chosen)
    return chosen


def _only(panel: Panel, patients: pl.DataFrame) -> Panel:
    ids = patients.select("patient_id")
    return replace(
        panel,
        **{
            name: getattr(panel, name).join(ids, on="patient_id")
            for name in ("daily", "patients", "therapies", "features")
        },
    )
