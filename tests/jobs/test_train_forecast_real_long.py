"""The pipeline on a lake of real people whose multi-year series cover different years (issue 19):
at the backtest origin some have had no wear day for years, and the training leaves them out of
it and says so instead of stopping; the forecast serves everyone from their own last day.

The series are read from ``../shared/realdata-long`` beside the project (never copied into it);
the test skips when they are absent.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from jobs.ingest import run as ingest
from lakehouse.catalog import BACKTESTS, DAILY_STEPS, EXPLANATIONS, FORECASTS, JOB_RUNS
from lakehouse.storage import Lake
from tests.realdata_long import REALDATA_LONG, four_series
from tests.test_cli import mobility

# the last two years of each series keep the test fast; their years still differ
DAYS_KEPT = 730


@pytest.mark.skipif(not REALDATA_LONG.exists(), reason="real long series not beside the project")
def test_the_pipeline_trains_and_forecasts_real_patients_of_different_years(
    tmp_path: Path,
) -> None:
    lake = Lake(str(tmp_path / "lake"))
    for name, series in four_series().items():
        worn = series.filter(pl.col("steps") > 0).sort("date")
        last = worn["date"].max()
        kept = worn.filter(pl.col("date") > pl.lit(last) - pl.duration(days=DAYS_KEPT))
        path = tmp_path / f"{name}.csv"
        kept.select(pl.col("date").cast(pl.String), "steps").write_csv(path)
        ingest.run(
            lake,
            path,
            format="generic",
            patient_id=f"real-{name}",
            columns={"start": "date", "steps": "steps"},
            period="day",
            timezone="UTC",
        )
    done = mobility(
        "--lake", lake.uri, "pipeline", cwd=tmp_path, env={"MOBILITY_QUICK_TRAINING": "1"}
    )
    assert done.returncode == 0, done.stderr
    assert "Warning" not in done.stderr, done.stderr
    # one backtest origin, a year before the newest day (2025-07-31): only the two people
    # still recording then are scored; the other two are left out of it, and the run says so
    assert "OTHER: 2 of 4 patient(s) left out (no level at the origin" in done.stdout
    backtests = lake.read(BACKTESTS)
    assert set(backtests["patients"]) == {2}
    assert {"ebm_cluster", "ebm_global", "trailing_mean_28d"} <= set(backtests["model"])
    train = lake.read(JOB_RUNS).filter(pl.col("job") == "train")
    assert train["status"].to_list() == ["succeeded"]
    # the forecast: everyone from their own last day, the EBMs included
    forecasts = lake.read(FORECASTS)
    patients = lake.read(DAILY_STEPS)["patient_id"].n_unique()
    assert patients == 4
    for model in ("trailing_mean_28d", "ebm_cluster", "ebm_global"):
        assert forecasts.filter(pl.col("model") == model)["patient_id"].n_unique() == patients
    keys = ["patient_id", "model", "origin_date", "target_date"]
    sums = lake.read(EXPLANATIONS).group_by(keys).agg(pl.col("contribution").sum())
    both = forecasts.join(sums, on=keys)
    assert both.height == forecasts.filter(pl.col("model").str.starts_with("ebm")).height
    assert (both["yhat"] - both["contribution"]).abs().max() < 1e-6  # type: ignore[operator]
