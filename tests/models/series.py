"""Fixed synthetic step series for model tests (hand-made, seeded; no generator involved)."""

from __future__ import annotations

from datetime import date, timedelta
from typing import ClassVar

import numpy as np
import polars as pl

from models.base import Forecaster, ForecastInput, target_days

START = date(2023, 1, 2)  # a Monday


def weekly_series(
    patient: str,
    days: int,
    weekday_steps: list[float],
    *,
    noise: float = 0.0,
    seed: int = 0,
    nonwear_every: int = 0,
) -> pl.DataFrame:
    """``patient_id, date, steps``: a weekday pattern, optional noise, optional non-wear days."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(days):
        day = START + timedelta(days=i)
        steps: float | None = weekday_steps[day.weekday()] + (rng.normal(0, noise) if noise else 0)
        if nonwear_every and i % nonwear_every == nonwear_every - 1:
            steps = None
        rows.append({"patient_id": patient, "date": day, "steps": steps})
    return pl.DataFrame(
        rows, schema={"patient_id": pl.String, "date": pl.Date, "steps": pl.Float64}
    )


def forecast_input(history: pl.DataFrame, origin: date, group: str = "MS") -> ForecastInput:
    known = history.filter(pl.col("date") < origin)
    patients = (
        known.select("patient_id")
        .unique()
        .sort("patient_id")
        .with_columns(disease_group=pl.lit(group))
    )
    return ForecastInput(origin, known.sort("patient_id", "date"), patients, no_therapies())


def no_therapies() -> pl.DataFrame:
    """An empty therapy plan."""
    return pl.DataFrame(
        schema={
            "patient_id": pl.String,
            "therapy": pl.String,
            "start_date": pl.Date,
            "end_date": pl.Date,
        }
    )


class Collapse(Forecaster):
    """Forecasts a fall to a tenth of the patient's last worn day: what the EBMs did on a real
    series, with no evidence for it."""

    name: ClassVar[str] = "collapse"

    def _predict(self, data: ForecastInput, horizon: int) -> pl.DataFrame:
        last = data.wear_days().group_by("patient_id").agg(level=pl.col("steps").last())
        return (
            target_days(data.patients, data.origin, horizon)
            .join(last, on="patient_id")
            .select(
                "patient_id",
                "target_date",
                yhat=pl.col("level") * 0.1,
                yhat_lower=pl.col("level") * 0.05,
                yhat_upper=pl.col("level") * 0.2,
            )
        )
