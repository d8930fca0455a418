"""The model panel read from the lake: what training, backtests and forecasts see.

Daily steps with non-wear days missing, the patients' disease group and country, the therapy plan
and the silver/features columns the models read, all from one snapshot of each table.
"""

from __future__ import annotations

from collections.abc import Sequence

import polars as pl

from jobs.daily import wear_steps
from lakehouse.catalog import DAILY_STEPS, FEATURES, PATIENTS, THERAPIES
from lakehouse.storage import Lake
from models.backtest import Panel
from models.direct import LEVEL, STATE_FEATURES


def load_panel(lake: Lake, *, patients: Sequence[str] | None = None) -> Panel:
    """The panel of all patients (or of ``patients``)."""

    def chosen(frame: pl.LazyFrame) -> pl.LazyFrame:
        if patients is None:
            return frame
        return frame.filter(pl.col("patient_id").is_in(pl.Series(list(patients)).implode()))

    daily = (
        chosen(lake.scan(DAILY_STEPS))
        .select("patient_id", "date", steps=wear_steps())
        .sort("patient_id", "date")
        .collect()
    )
    features = (
        chosen(lake.scan(FEATURES)).select("patient_id", "date", LEVEL, *STATE_FEATURES).collect()
    )
    return Panel(
        daily,
        chosen(lake.scan(PATIENTS)).select("patient_id", "disease_group", "country").collect(),
        chosen(lake.scan(THERAPIES)).collect(),
        features,
    )
