"""Prophet per patient: weekly and yearly seasonality, therapies as extra regressors.

Fast settings (DESIGN.md): the default optimizer, no MCMC, Stan logging off, a bounded number of
uncertainty samples for the 80% interval. The trend is damped (a small changepoint prior) and fit
on the last two years, because a freely bending trend extrapolated a year ahead is what makes
default Prophet lose to flat baselines on individual step series.

Therapies: each therapy with both active and inactive days in the patient's fitted history is a
0/1 regressor; in the horizon a course counts as planned as recorded at the origin (ongoing until
its end date, or to the end of the horizon when it has none). Patients are fitted in parallel
worker processes (spawned: Stan and delta-rs threads do not survive a fork).
"""

from __future__ import annotations

import logging
import multiprocessing
import warnings
import zlib
from concurrent.futures import ProcessPoolExecutor
from datetime import date, timedelta
from typing import Any

import numpy as np
import polars as pl

from models.base import FORECAST_SCHEMA, Forecaster, ForecastInput

FIT_DAYS = 730
MIN_YEARLY_DAYS = 365
UNCERTAINTY_SAMPLES = 200
CHANGEPOINT_PRIOR = 0.01


def _quiet() -> None:
    for name in ("cmdstanpy", "prophet", "prophet.plot"):
        logger = logging.getLogger(name)
        logger.setLevel(logging.ERROR)
        logger.propagate = False
        logger.disabled = name == "cmdstanpy"


def _therapy_days(
    courses: list[dict[str, Any]], days: list[date], until: date
) -> dict[str, list[int]]:
    """0/1 per day for each therapy of the courses (a course without end runs to ``until``)."""
    out: dict[str, list[int]] = {}
    for course in courses:
        name = "therapy_" + "".join(c if c.isalnum() else "_" for c in course["therapy"].lower())
        end = course["end_date"] or until
        flags = out.setdefault(name, [0] * len(days))
        for index, day in enumerate(days):
            if course["start_date"] <= day <= end:
                flags[index] = 1
    return out


def fit_and_forecast(
    patient_id: str,
    history: list[dict[str, Any]],
    courses: list[dict[str, Any]],
    origin: date,
    horizon: int,
) -> list[dict[str, Any]]:
    """One patient's Prophet forecast rows (``patient_id, target_date, yhat, yhat_lower,
    yhat_upper``) from their wear-day history (dicts with ``date, steps``)."""
    import pandas as pd
    from prophet import Prophet

    _quiet()
    first_fit = origin - timedelta(days=FIT_DAYS)
    fitted = [row for row in history if row["date"] >= first_fit] or history
    span = (origin - fitted[0]["date"]).days
    model = Prophet(
        growth="linear",
        weekly_seasonality=True,
        yearly_seasonality=span >= MIN_YEARLY_DAYS,
        daily_seasonality=False,
        changepoint_prior_scale=CHANGEPOINT_PRIOR,
        interval_width=0.8,
        uncertainty_samples=UNCERTAINTY_SAMPLES,
    )
    past_days = [row["date"] for row in fitted]
    future_days = [origin + timedelta(days=k) for k in range(horizon)]
    until = future_days[-1]
    past_flags = _therapy_days(courses, past_days, until)
    future_flags = _therapy_days(courses, future_days, until)
    frame = pd.DataFrame({"ds": pd.to_datetime(past_days), "y": [row["steps"] for row in fitted]})
    for name, flags in past_flags.items():
        if 0 < sum(flags) < len(flags):  # a regressor needs both states in the fitted history
            model.add_regressor(name, standardize=False)
            frame[name] = flags
    future = pd.DataFrame({"ds": pd.to_datetime(future_days)})
    for name in model.extra_regressors:
        future[name] = future_flags[name]
    with warnings.catch_warnings():
        # Prophet still uses pandas idioms newer pandas deprecates; nothing for us to act on
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", FutureWarning)
        model.fit(frame)
        # Prophet draws its interval's trend samples from NumPy's global generator: seeded per
        # patient and origin (and put back after), the same history gives the same interval.
        saved = np.random.get_state()
        np.random.seed(zlib.crc32(f"{patient_id}|{origin.isoformat()}".encode()))
        try:
            predicted = model.predict(future)
        finally:
            np.random.set_state(saved)
    rows = []
    for day, yhat, low, high in zip(
        future_days,
        predicted["yhat"],
        predicted["yhat_lower"],
        predicted["yhat_upper"],
        strict=True,
    ):
        point = max(float(yhat), 0.0)
        rows.append(
            {
                "patient_id": patient_id,
                "target_date": day,
                "yhat": point,
                "yhat_lower": min(max(float(low), 0.0), point),
                "yhat_upper": max(float(high), point),
            }
        )
    return rows


def _run_batch(
    jobs: list[tuple[str, list[dict[str, Any]], list[dict[str, Any]], date, int]],
) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for job in jobs:
        out += fit_and_forecast(*job)
    return out


class ProphetPerPatient(Forecaster):
    """Prophet fitted on each patient's own history at the origin.

    Args:
        workers: worker processes (1: fit in this process).
    """

    name = "prophet"

    def __init__(self, *, workers: int = 2) -> None:
        self.workers = workers

    def _predict(self, data: ForecastInput, horizon: int) -> pl.DataFrame:
        wear = data.wear_days()
        histories = {
            key[0]: frame.select("date", "steps").to_dicts()
            for key, frame in wear.group_by("patient_id")
        }
        courses = {
            key[0]: frame.select("therapy", "start_date", "end_date").to_dicts()
            for key, frame in data.therapies.group_by("patient_id")
        }
        jobs = [
            (
                patient,
                sorted(histories[patient], key=lambda r: r["date"]),
                courses.get(patient, []),
                data.origin,
                horizon,
            )
            for patient in data.patients["patient_id"].to_list()
            if patient in histories
        ]
        if self.workers <= 1 or len(jobs) < 2:
            rows = _run_batch(jobs)
        else:
            chunks = [jobs[i :: self.workers * 4] for i in range(self.workers * 4)]
            context = multiprocessing.get_context("spawn")
            with ProcessPoolExecutor(self.workers, mp_context=context) as pool:
                rows = [
                    row for chunk in pool.map(_run_batch, [c for c in chunks if c]) for row in chunk
                ]
        return pl.DataFrame(rows, schema=FORECAST_SCHEMA)
