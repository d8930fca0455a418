"""``mobility sql`` and ``mobility export-forecast`` write CSV a spreadsheet opens as data: text
from the lake that starts like a formula gets a single quote, numbers stay numbers."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path

import polars as pl
import pytest
from typer.testing import CliRunner

from jobs.cli import app
from lakehouse import Lake, get_settings
from lakehouse.catalog import FORECASTS, OUTLOOK, PATIENTS

HOSTILE_COUNTRIES = ["=cmd|' /C calc'!A0", "+1", "-2+3", "@SUM(A1)", "\t=x"]


@pytest.fixture
def runner(monkeypatch: pytest.MonkeyPatch) -> Iterator[CliRunner]:
    monkeypatch.delenv("LAKE_URI", raising=False)
    monkeypatch.delenv("MOBILITY_ENGINE", raising=False)
    get_settings.cache_clear()
    yield CliRunner()
    get_settings.cache_clear()


def _patients(lake: Lake) -> None:
    lake.append(
        PATIENTS,
        pl.DataFrame(
            {
                "patient_id": [f"P00{i}" for i in range(len(HOSTILE_COUNTRIES))],
                "disease_group": "MS",
                "timezone": "UTC",
                "sex": None,
                "birth_year": [1950 + i for i in range(len(HOSTILE_COUNTRIES))],
                "country": HOSTILE_COUNTRIES,
                "enrolled_on": None,
            },
            schema_overrides={
                "sex": pl.String,
                "birth_year": pl.Int16,
                "enrolled_on": pl.Date,
            },
        ),
    )


def test_sql_output_neutralises_formulas_and_keeps_numbers(
    runner: CliRunner, tmp_path: Path
) -> None:
    lake = Lake(str(tmp_path / "lake"))
    _patients(lake)

    result = runner.invoke(
        app,
        [
            "--lake",
            lake.uri,
            "sql",
            "SELECT country, -birth_year AS minus_year, birth_year - 2000 AS offset_years "
            "FROM bronze.patients ORDER BY patient_id",
        ],
    )

    assert result.exit_code == 0, result.output
    rows = list(csv.reader(io.StringIO(result.stdout, newline="")))
    assert rows[0] == ["country", "minus_year", "offset_years"]
    assert [row[0] for row in rows[1:]] == ["'" + country for country in HOSTILE_COUNTRIES]
    # numbers (negative ones too) stay numbers
    assert [row[1] for row in rows[1:]] == [str(-1950 - i) for i in range(5)]
    assert [row[2] for row in rows[1:]] == [str(-50 + i) for i in range(5)]
    # the pipe is a separator somewhere: that cell is quoted as well
    assert result.stdout.splitlines()[1:3] == ["\"'=cmd|' /C calc'!A0\",-1950,-50", "'+1,-1951,-49"]


def test_export_forecast_neutralises_formulas_and_keeps_numbers(
    runner: CliRunner, tmp_path: Path
) -> None:
    lake = Lake(str(tmp_path / "lake"))
    _patients(lake)
    origin = date(2024, 3, 11)
    days = [origin + timedelta(days=i) for i in range(3)]
    models = ["=cmd|' /C calc'!A0", "-2+3"]
    lake.append(
        FORECASTS,
        pl.concat(
            pl.DataFrame(
                {
                    "patient_id": "P000",
                    "model": model,
                    "origin_date": origin,
                    "target_date": days,
                    "yhat": [-5.0, 0.0, 12.5],
                    "yhat_lower": [-10.0, -1.0, 2.0],
                    "yhat_upper": [1.0, 2.0, 30.0],
                    "origin_month": "2024-03",
                }
            )
            for model in models
        ),
    )
    lake.append(
        OUTLOOK,
        pl.DataFrame(
            {
                "patient_id": ["P000"],
                "model": [models[0]],
                "origin_date": [origin],
                "champion": [True],
                "baseline_steps": [100.0],
                "next_quarter_steps": [90.0],
                "year_end_steps": [80.0],
                "year_steps": [85.0],
                "year_end_change": [-0.2],
                "origin_month": ["2024-03"],
                "own_year_mae": [None],
            },
            schema_overrides={"own_year_mae": pl.Float64},
        ),
    )
    out = tmp_path / "forecast.csv"

    result = runner.invoke(
        app,
        ["--lake", lake.uri, "export-forecast", "--patient-id", "P000", "--out", str(out)],
    )

    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(io.StringIO(out.read_text(encoding="utf-8"), newline="")))
    assert {row["model"] for row in rows} == {"'=cmd|' /C calc'!A0", "'-2+3"}
    assert [row["yhat"] for row in rows] == ["-5.0", "0.0", "12.5"] * 2
    assert [row["yhat_lower"] for row in rows] == ["-10.0", "-1.0", "2.0"] * 2
    back = pl.read_csv(out, try_parse_dates=True)
    assert back["yhat"].dtype == pl.Float64 and back["champion"].dtype == pl.Boolean
    assert back.filter(pl.col("champion"))["model"].unique().to_list() == ["'=cmd|' /C calc'!A0"]
