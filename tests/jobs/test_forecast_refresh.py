"""The forecast refresh rule (jobs/forecast_refresh.py): a run forecasts the patients without a
forecast, those whose clinical rows or earlier days changed, those with new data whose forecast is
a week old or whose refresh day it is, and everyone when the models changed; the others keep
their forecast. Each case against the rule computed here from the pseudonyms and dates."""

from __future__ import annotations

import shutil
import zlib
from datetime import date, timedelta
from pathlib import Path

import polars as pl
import pytest

from jobs import aggregate, forecast, generate
from jobs.features import run as features
from jobs.features.changes import Inputs
from jobs.forecast_refresh import REFRESH_DAYS, plan_refresh
from lakehouse.catalog import DAILY_STEPS, FORECASTS, THERAPIES
from lakehouse.storage import Lake, sql_literal
from synthetic.population import DEFAULT_END_DATE

PATIENTS = 10
HELD_BACK = REFRESH_DAYS + 1  # days of data kept out of the first forecast run


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A lake forecast once (no training) with the last HELD_BACK days of daily steps held
    back in a Parquet file beside it."""
    root = tmp_path_factory.mktemp("refresh")
    lake = Lake(str(root / "lake"))
    generate.run(lake, patients=PATIENTS, seed=5, years=0.5, end_date=DEFAULT_END_DATE)
    aggregate.run(lake)
    daily = lake.read(DAILY_STEPS)
    cut = DEFAULT_END_DATE - timedelta(days=HELD_BACK)
    daily.filter(pl.col("date") > cut).write_parquet(root / "held_back.parquet")
    lake.delete(DAILY_STEPS, f"date > '{cut.isoformat()}'")
    features.run(lake)
    forecast.run(lake, prophet_workers=1)
    return root


@pytest.fixture
def lake(built: Path, tmp_path: Path) -> Lake:
    """A private copy of the built lake."""
    shutil.copytree(built, tmp_path / "copy")
    return Lake(str(tmp_path / "copy" / "lake"))


def _held_back(lake: Lake) -> pl.DataFrame:
    return pl.read_parquet(Path(lake.uri).parent / "held_back.parquet")


def _origins(lake: Lake) -> dict[str, date]:
    """Each patient's latest forecast origin."""
    rows = lake.read(FORECASTS).group_by("patient_id").agg(pl.col("origin_date").max())
    return dict(rows.iter_rows())


def _current_origins(lake: Lake) -> dict[str, date]:
    """Each patient's origin now: the day after their last day of data."""
    rows = lake.read(DAILY_STEPS).group_by("patient_id").agg(pl.col("date").max())
    return {p: last + timedelta(days=1) for p, last in rows.iter_rows()}


def _run(lake: Lake, **options: object) -> forecast.ForecastSummary:
    """The forecast job as on a large cohort (the weekly cadence applies whatever the number
    of patients with new data), after features."""
    features.run(lake)
    options = {"daily_up_to": 0, **options}
    return forecast.run(lake, prophet_workers=1, **options)  # type: ignore[arg-type]


def _refresh_day(patient_id: str, origin: date, every: int) -> bool:
    """Independently of the module: the patient's day among every ``every``."""
    return zlib.crc32(patient_id.encode()) % every == origin.toordinal() % every


def test_nothing_changed_nobody_is_forecast(lake: Lake) -> None:
    before = _origins(lake)
    version = lake.version(FORECASTS)
    summary = _run(lake)
    assert (summary.patients, summary.kept) == (0, len(before))
    assert lake.version(FORECASTS) == version  # nothing written
    assert "kept (forecast recent enough)" in summary.describe()


def test_one_new_day_refreshes_the_patients_whose_day_it_is(lake: Lake) -> None:
    before = _origins(lake)
    held = _held_back(lake)
    first = held["date"].min()
    assert isinstance(first, date)
    lake.append(DAILY_STEPS, held.filter(pl.col("date") == first))
    summary = _run(lake)
    after = _origins(lake)
    new_origin = first + timedelta(days=1)
    current = _current_origins(lake)
    today = {
        p for p in before if current[p] == new_origin and _refresh_day(p, new_origin, REFRESH_DAYS)
    }
    assert 0 < len(today) < PATIENTS  # the case is tested both ways
    assert {p for p in after if after[p] == new_origin} == today
    assert {p for p in after if after[p] != new_origin} == set(before) - today
    assert all(after[p] == before[p] for p in set(before) - today)  # kept as they were
    assert (summary.patients, summary.kept) == (len(today), len(before) - len(today))


def test_refreshing_every_day_forecasts_everyone_with_new_data(lake: Lake) -> None:
    held = _held_back(lake)
    first = held["date"].min()
    assert isinstance(first, date)
    lake.append(DAILY_STEPS, held.filter(pl.col("date") == first))
    summary = _run(lake, refresh_days=1)
    assert summary.patients == PATIENTS
    assert _origins(lake) == _current_origins(lake)


def test_a_forecast_a_week_old_is_refreshed_whatever_the_day(lake: Lake) -> None:
    lake.append(DAILY_STEPS, _held_back(lake))  # HELD_BACK > REFRESH_DAYS days at once
    summary = _run(lake)
    assert summary.patients == PATIENTS
    assert _origins(lake) == _current_origins(lake)


def _departed_by_hand(lake: Lake, stored: dict[str, date], until: date) -> set[str]:
    """Patients whose worn days in [stored origin, until) average outside the mean interval of
    their usual-level (or cluster-level) forecast on those days: plain Python over the rows."""
    days: dict[str, list[tuple[date, float]]] = {}
    for p, day, steps, worn in (
        lake.read(DAILY_STEPS).select("patient_id", "date", "steps", "is_wear_day").iter_rows()
    ):
        if worn and stored[p] <= day < until:
            days.setdefault(p, []).append((day, steps))
    bounds = {
        (p, m, day): (low, high)
        for p, m, origin, day, low, high in lake.read(FORECASTS)
        .select("patient_id", "model", "origin_date", "target_date", "yhat_lower", "yhat_upper")
        .iter_rows()
        if m in ("usual_level", "cluster_level") and origin == stored[p]
    }
    out = set()
    for p, worn in days.items():
        for model in ("usual_level", "cluster_level"):
            matched = [(s, bounds[(p, model, d)]) for d, s in worn if (p, model, d) in bounds]
            if len(matched) < 2:
                continue
            mean = sum(s for s, _ in matched) / len(matched)
            low = sum(b[0] for _, b in matched) / len(matched)
            high = sum(b[1] for _, b in matched) / len(matched)
            if mean < low or mean > high:
                out.add(p)
    return out


def test_days_far_from_the_forecast_refresh_it_whatever_the_day(lake: Lake) -> None:
    before = _origins(lake)
    held = _held_back(lake)
    first = held["date"].min()
    assert isinstance(first, date)
    new_days = held.filter(pl.col("date") <= first + timedelta(days=2))
    origin = first + timedelta(days=3)
    # a patient whose refresh day it is not, walking a tenth of their usual steps
    slowed = next(
        p
        for p in sorted(before)
        if not _refresh_day(p, origin, REFRESH_DAYS) and before[p] == first
    )
    new_days = new_days.with_columns(
        steps=pl.when(pl.col("patient_id") == slowed)
        .then(pl.col("steps") * 0.1)
        .otherwise(pl.col("steps"))
    )
    lake.append(DAILY_STEPS, new_days)
    departed = _departed_by_hand(lake, before, origin)
    assert slowed in departed
    current = _current_origins(lake)
    today = {p for p in before if current[p] == origin and _refresh_day(p, origin, REFRESH_DAYS)}
    summary = _run(lake)
    after = _origins(lake)
    assert {p for p in after if after[p] != before[p]} == today | departed
    assert summary.patients == len(today | departed)
    assert f"{len(departed):,} departed from their forecast" in summary.describe()


def test_a_clinical_change_refreshes_that_patient_only(lake: Lake) -> None:
    before = _origins(lake)
    patient = sorted(before)[3]
    course = {
        "patient_id": patient,
        "therapy": "Humira",
        "start_date": before[patient] + timedelta(days=10),
        "end_date": before[patient] + timedelta(days=100),
    }
    version = lake.version(FORECASTS)
    lake.upsert(THERAPIES, pl.DataFrame([course]))
    summary = _run(lake)
    assert (summary.patients, summary.kept) == (1, PATIENTS - 1)
    assert "1 changed" in summary.describe()
    assert lake.version(FORECASTS) > version
    assert _origins(lake) == before  # the same origin, forecast again


def test_late_data_before_the_origin_refreshes_that_patient_only(lake: Lake) -> None:
    before = _origins(lake)
    patient = sorted(before)[5]
    day = before[patient] - timedelta(days=40)
    where = f"patient_id = {sql_literal(patient)} AND date = '{day.isoformat()}'"
    row = lake.read(DAILY_STEPS).filter((pl.col("patient_id") == patient) & (pl.col("date") == day))
    assert row.height == 1
    lake.replace(DAILY_STEPS, row.with_columns(steps=pl.col("steps") + 2500), predicate=where)
    old = lake.read(FORECASTS).filter(pl.col("patient_id") == patient)
    summary = _run(lake)
    assert (summary.patients, summary.kept) == (1, PATIENTS - 1)
    new = lake.read(FORECASTS).filter(pl.col("patient_id") == patient)
    # the usual level moved with the corrected day
    assert not new.sort("model", "target_date")["yhat"].equals(
        old.sort("model", "target_date")["yhat"]
    )


def test_new_models_or_asking_forecast_everyone(lake: Lake) -> None:
    ends = (
        lake.read(DAILY_STEPS)
        .group_by("patient_id")
        .agg(origin=pl.col("date").max() + pl.duration(days=1))
    )
    inputs = Inputs.current(lake)
    same = plan_refresh(lake, ends, inputs, None, job=forecast.JOB)
    assert (same.due.height, same.everyone) == (0, "")
    trained = plan_refresh(lake, ends, inputs, 3, job=forecast.JOB)
    assert (trained.due.height, trained.everyone) == (PATIENTS, "models changed")
    asked = _run(lake, everyone=True)
    assert asked.patients == PATIENTS and asked.why == "everyone: asked"


def test_a_small_cohort_is_forecast_every_day(lake: Lake) -> None:
    # the cadence bounds the daily run of a large cohort; a few thousand cost minutes
    held = _held_back(lake)
    first = held["date"].min()
    assert isinstance(first, date)
    lake.append(DAILY_STEPS, held.filter(pl.col("date") == first))
    with_new_data = sum(o == first + timedelta(days=1) for o in _current_origins(lake).values())
    summary = _run(lake, daily_up_to=with_new_data)
    assert summary.patients == with_new_data
    assert _origins(lake) == _current_origins(lake)


def test_refresh_days_below_one_are_refused(lake: Lake) -> None:
    with pytest.raises(ValueError, match="refresh days must be 1 or more, not 0"):
        forecast.run(lake, refresh_days=0)
