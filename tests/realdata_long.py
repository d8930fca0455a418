"""Real people's multi-year daily steps from ``../shared/realdata-long`` beside the project (read
in place, never copied into it); tests using them skip when it is absent."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl

REALDATA_LONG = Path(__file__).resolve().parents[1] / ".." / "shared" / "realdata-long"


def four_series() -> dict[str, pl.DataFrame]:
    """``date, steps`` of four people, each ending in a different year (2016, 2021, 2024, 2025);
    rachel's imputed days (4014, as its README says) left out."""
    root = REALDATA_LONG
    db = json.loads((root / "danecollins_fitbit" / "db.json").read_text())
    dane = pl.DataFrame(
        [(day, values.get("steps")) for day, values in db["dane"].items()],
        schema={"date": pl.String, "steps": pl.Float64},
        orient="row",
    ).with_columns(pl.col("date").str.to_date())
    return {
        "dane": dane,
        "jaredbgo": pl.read_csv(root / "jaredbgo_apple" / "steps.csv", try_parse_dates=True).rename(
            {"Date": "date", "Steps": "steps"}
        ),
        "rachel": pl.read_csv(
            root / "rachelsebastian09_fitbit" / "daily_steps.csv", try_parse_dates=True
        ).filter(pl.col("steps") != 4014),
        "svmiller": pl.read_csv(
            root / "svmiller_fitbit" / "stevesteps_derived.csv", try_parse_dates=True
        ).rename({"value": "steps"}),
    }
