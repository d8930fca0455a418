"""Backtest origins with patients whose data ends long before them (issue 19: real lakes hold
series of different years): those patients are left out of the origin for every model, a cluster
with nobody left is skipped there, and the notes say how many, instead of a failed training."""

from __future__ import annotations

from datetime import date, timedelta

import numpy as np
import polars as pl
import pytest

from jobs.features.transform import features
from lakehouse.catalog import DIAGNOSES, SIDE_EFFECTS, THERAPIES
from models.backtest import LeftOut, Panel, backtest
from models.baselines import TrailingMean
from models.direct import LEVEL, STATE_FEATURES
from models.ebm import DEFAULT_PARAMS, ClusterEBM

START = date(2021, 1, 4)
ORIGIN = date(2023, 7, 3)
HORIZON = 91
# patient -> (disease group, first day, last day, days without any sample inside the record)
RECORDS: dict[str, tuple[str, date, date, tuple[date, date] | None]] = {
    "ms-recent-1": ("MS", START, ORIGIN + timedelta(days=HORIZON), None),
    "ms-recent-2": ("MS", START, ORIGIN + timedelta(days=HORIZON), None),
    # ended 400 days before the origin
    "ms-gone": ("MS", START, ORIGIN - timedelta(days=400), None),
    # away for the 200 days before the origin, then back: actual days to score, but no level
    "ms-away": ("MS", START, ORIGIN + timedelta(days=HORIZON), (ORIGIN - timedelta(200), ORIGIN)),
    # the only PD patient, ended a year before the origin: PD has nobody at the origin
    "pd-gone": ("PD", START, ORIGIN - timedelta(days=365), None),
}
QUICK_EBM = {**DEFAULT_PARAMS, "max_rounds": 100, "outer_bags": 1}


def _daily() -> pl.DataFrame:
    """silver/daily_steps rows: a weekday pattern with noise, one level per patient."""
    rng = np.random.default_rng(3)
    rows = []
    for number, (patient, (_, first, last, away)) in enumerate(sorted(RECORDS.items())):
        level = 5000 + 1000 * number
        day = first
        while day <= last:
            if away is None or not away[0] <= day < away[1]:
                steps = level * (0.8 if day.weekday() >= 5 else 1.05) + rng.normal(0, 600)
                rows.append((patient, day, max(steps, 100.0)))
            day += timedelta(days=1)
    return pl.DataFrame(rows, schema=["patient_id", "date", "steps"], orient="row").with_columns(
        coverage_hours=pl.lit(16, pl.Int16),
        is_wear_day=pl.lit(True),
    )


def _panel(daily: pl.DataFrame) -> Panel:
    """The panel of ``daily`` (each patient's group the start of their id) with the features the
    feature job computes from it."""
    patients = (
        daily.select("patient_id")
        .unique()
        .sort("patient_id")
        .with_columns(
            disease_group=pl.col("patient_id").str.split("-").list.first().str.to_uppercase(),
            timezone=pl.lit("UTC"),
            country=pl.lit("GB"),
        )
    )
    rows = features(
        daily.lazy(),
        patients=patients,
        therapies=pl.DataFrame(THERAPIES.schema.empty_table()),
        side_effects=pl.DataFrame(SIDE_EFFECTS.schema.empty_table()),
        diagnoses=pl.DataFrame(DIAGNOSES.schema.empty_table()),
    ).collect()
    return Panel(
        daily.select("patient_id", "date", "steps"),
        patients.select("patient_id", "disease_group", "country"),
        pl.DataFrame(THERAPIES.schema.empty_table()),
        rows.select("patient_id", "date", LEVEL, *STATE_FEATURES),
    )


@pytest.fixture(scope="module")
def panel() -> Panel:
    return _panel(_daily())


def _models() -> list[ClusterEBM | TrailingMean]:
    return [
        TrailingMean(),
        ClusterEBM(clustered=True, horizon=HORIZON, params=dict(QUICK_EBM)),
        ClusterEBM(clustered=False, horizon=HORIZON, params=dict(QUICK_EBM)),
    ]


def test_the_panel_has_patients_without_a_level_at_the_origin(panel: Panel) -> None:
    known = panel.known_at(ORIGIN)
    assert set(known.patients["patient_id"]) == set(RECORDS)  # all with enough history
    at_origin = known.features.filter(pl.col("date") == ORIGIN, pl.col(LEVEL).is_not_null())
    assert set(at_origin["patient_id"]) == {"ms-recent-1", "ms-recent-2"}


def test_a_backtest_origin_leaves_out_patients_without_a_level(panel: Panel) -> None:
    """On the code before issue 19 this failed: ``ebm_cluster: 3 patient(s) without a level at
    2023-07-03 (no wear day in the last 112 days)``."""
    results = backtest(_models(), panel, [ORIGIN], horizon=HORIZON, horizons=(28, HORIZON))
    assert set(results["model"]) == {"trailing_mean_28d", "ebm_cluster", "ebm_global"}
    # PD: nobody has a level at the origin, so no row; MS: the two recent patients only, for
    # every model (the trailing mean could forecast ms-away, but models are compared on the
    # same patients)
    assert set(results["cluster"]) == {"ALL", "MS"}
    assert set(results["patients"]) == {2}
    days = results.filter(pl.col("horizon_days") == HORIZON)["days"]
    assert days.n_unique() == 1


def test_the_backtest_notes_say_who_was_left_out(panel: Panel) -> None:
    notes: list[LeftOut] = []
    backtest(_models(), panel, [ORIGIN], horizon=HORIZON, horizons=(HORIZON,), left_out=notes)
    assert notes == [LeftOut(ORIGIN, "MS", 2, 4), LeftOut(ORIGIN, "PD", 1, 1)]
    assert "2 of 4 patient(s) left out" in notes[0].describe()
    assert "skipped" in notes[1].describe()


def test_an_origin_where_nobody_has_a_level_is_skipped(panel: Panel) -> None:
    late = ORIGIN + timedelta(days=HORIZON + 200)  # after every record ended
    notes: list[LeftOut] = []
    earlier = ORIGIN - timedelta(days=91)
    results = backtest(
        _models(), panel, [earlier, late], horizon=HORIZON, horizons=(HORIZON,), left_out=notes
    )
    assert set(results["origin_date"]) == {earlier}
    assert {(n.origin, n.cluster, n.patients == n.known) for n in notes if n.origin == late} == {
        (late, "MS", True),
        (late, "PD", True),
    }


def test_what_the_ebm_serves_at_an_origin_reads_nothing_after_it(panel: Panel) -> None:
    """The patients the EBM serves at the origin, their forecasts and the explanations (which
    sum to them) are the same when the lake never held a day from the origin on."""
    cut = _panel(_daily().filter(pl.col("date") < ORIGIN))
    ebm = ClusterEBM(clustered=True, horizon=HORIZON, params=dict(QUICK_EBM))
    ebm.fit(panel.known_at(ORIGIN))
    made = []
    for source in (panel, cut):
        known = source.known_at(ORIGIN)
        served = known.only(ebm.servable(known))
        forecast = ebm.predict(served, horizon=HORIZON)
        explained = ebm.explain(served, horizon=HORIZON)
        sums = explained.group_by("patient_id", "target_date").agg(pl.col("contribution").sum())
        both = forecast.join(sums, on=["patient_id", "target_date"])
        assert both.height == forecast.height
        assert (both["yhat"] - both["contribution"]).abs().max() < 1e-6  # type: ignore[operator]
        made.append(forecast)
    assert set(made[0]["patient_id"]) == {"ms-recent-1", "ms-recent-2"}
    assert made[0].equals(made[1])
