"""Year-ahead backtests on real people's multi-year series (issue 19; the full benchmark is
``benchmarks/bench_real_series.py --year-ahead``): the usual level holds its own against the
better of the two simple baselines on every series, and a model forecasting a collapse without
evidence is served as the usual level. Skips without ``../shared/realdata-long``."""

from __future__ import annotations

import statistics
from datetime import timedelta

import polars as pl
import pytest

from models.backtest import Panel, run_backtest
from models.baselines import TrailingMean, UsualLevel, WeekdayProfile
from tests.models.series import Collapse, no_therapies
from tests.realdata_long import REALDATA_LONG, four_series

pytestmark = pytest.mark.skipif(
    not REALDATA_LONG.exists(), reason="real long series not beside the project"
)
# a day under this many steps is a day the device was not worn (the exports write gaps as 0)
NON_WEAR_BELOW = 200


def _panel(name: str, series: pl.DataFrame) -> Panel:
    daily = series.select(
        patient_id=pl.lit(name),
        date="date",
        steps=pl.when(pl.col("steps") >= NON_WEAR_BELOW).then(pl.col("steps").cast(pl.Float64)),
    ).sort("date")
    patients = pl.DataFrame({"patient_id": [name], "disease_group": "OTHER", "country": "XX"})
    return Panel(daily, patients, no_therapies())


def test_the_usual_level_against_the_better_baseline_on_real_series() -> None:
    ratios = {}
    for name, series in four_series().items():
        panel = _panel(name, series)
        last, first = panel.daily["date"].max(), panel.daily["date"].min()
        origins = [last - timedelta(days=364 + 182 * k) for k in range(2)]
        origins = [o for o in origins if (o - first).days >= 240]
        run = run_backtest(
            [TrailingMean(), WeekdayProfile(), UsualLevel(), Collapse()],
            panel,
            origins,
            horizon=365,
        )
        year = run.results.filter(pl.col("horizon_days") == 365, pl.col("cluster") == "ALL")
        mae = {(m, o): v for m, o, v in year.select("model", "origin_date", "mae").iter_rows()}
        per_origin = [
            mae[("usual_level", o)]
            / min(mae[("trailing_mean_28d", o)], mae[("weekday_profile_8w", o)])
            for o in origins
        ]
        ratios[name] = statistics.fmean(per_origin)
        # the collapse never beat the usual level: served as it, to the step
        for origin in origins:
            assert mae[("collapse", origin)] == pytest.approx(mae[("usual_level", origin)])
    assert max(ratios.values()) <= 1.05, ratios
    assert statistics.median(ratios.values()) <= 1.0, ratios
