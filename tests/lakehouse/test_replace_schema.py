"""A table written before the catalog gave it a column gains it on a replace, as on an append or a
merge: gold/outlook gained ``own_year_mae``, and the forecast job of every existing lake replaces
its rows (it stopped with "Cannot cast schema, number of fields does not match: 11 vs 10")."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import polars as pl
from deltalake import write_deltalake

from lakehouse.catalog import OUTLOOK
from lakehouse.storage import Lake, conform


def _outlook(patient: str, steps: float, own: float | None) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "patient_id": [patient],
            "model": ["usual_level"],
            "origin_date": [date(2026, 5, 1)],
            "champion": [True],
            "baseline_steps": [5000.0],
            "next_quarter_steps": [steps],
            "year_end_steps": [steps],
            "year_steps": [steps],
            "year_end_change": [0.0],
            "origin_month": ["2026-05"],
            "own_year_mae": [own],
        }
    )


def test_an_outlook_from_before_own_year_mae_gains_it_on_replace(tmp_path: Path) -> None:
    lake = Lake(str(tmp_path / "lake"))
    old = conform(OUTLOOK, pl.concat([_outlook("P1", 4000.0, None), _outlook("P2", 6000.0, None)]))
    write_deltalake(
        lake.table_uri(OUTLOOK),
        old.drop("own_year_mae"),
        mode="overwrite",
        partition_by=list(OUTLOOK.partition_by),
    )
    assert not lake.schema_matches(OUTLOOK)

    lake.replace(OUTLOOK, _outlook("P1", 4100.0, 950.0), predicate="patient_id = 'P1'")

    rows = lake.read(OUTLOOK).sort("patient_id")
    assert lake.schema_matches(OUTLOOK)
    assert rows["year_steps"].to_list() == [4100.0, 6000.0]
    assert rows["own_year_mae"].to_list() == [950.0, None]
