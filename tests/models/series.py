"""Fixed synthetic step series for model tests (hand-made, seeded; no generator involved)."""

from __future__ import annotations

from datetime import date, timedelta

import numpy as np
import polars as pl

from models.base import ForecastInput

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
    therapies = pl.DataFrame(
        schema={
            "patient_id": pl.String,
            "therapy": pl.String,
            "start_date": pl.Date,
            "end_date": pl.Date,
        }
    )
    return ForecastInput(origin, known.sort("patient_id", "date"), patients, therapies)
