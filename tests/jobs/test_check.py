"""``mobility lake check``: a lake the jobs built passes; each kind of damage is reported in one
line naming its table, and the command exits 1."""

from __future__ import annotations

import shutil
from datetime import timedelta
from pathlib import Path

import polars as pl
import pytest

from jobs import aggregate, forecast, generate
from jobs import check as lake_check
from jobs.features import run as features
from jobs.forecast_refresh import REFRESH_DAYS
from lakehouse.catalog import DAILY_STEPS, FEATURES, FORECASTS, OUTLOOK
from lakehouse.storage import Lake, sql_literal
from synthetic.population import DEFAULT_END_DATE
from tests.test_cli import mobility


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A lake through aggregate, features and forecast (no training: baselines and Prophet)."""
    folder = tmp_path_factory.mktemp("checked") / "lake"
    lake = Lake(str(folder))
    generate.run(lake, patients=3, seed=11, years=0.5, end_date=DEFAULT_END_DATE)
    aggregate.run(lake)
    features.run(lake)
    forecast.run(lake, prophet_workers=1)
    return folder


@pytest.fixture
def lake(built: Path, tmp_path: Path) -> Lake:
    """A copy of the built lake for one test to damage."""
    return Lake(str(shutil.copytree(built, tmp_path / "lake")))


def _lines(lake: Lake) -> list[str]:
    return [str(problem) for problem in lake_check.run(lake).problems]


def test_a_lake_the_jobs_built_passes(lake: Lake) -> None:
    report = lake_check.run(lake)
    assert report.ok, [str(p) for p in report.problems]
    assert report.forecast_patients == 3 and report.sampled_patients == 3
    assert report.sampled_days == lake.info(DAILY_STEPS).rows


def test_duplicated_rows_are_reported(lake: Lake) -> None:
    days = lake.read(DAILY_STEPS).head(2)
    lake.append(DAILY_STEPS, days)
    (line,) = _lines(lake)
    assert line.startswith("silver/daily_steps: 2 keys (patient_id, date) occur more than once")


def test_daily_totals_that_differ_from_bronze_are_reported(lake: Lake) -> None:
    day = lake.read(DAILY_STEPS).row(5, named=True)
    where = f"patient_id = {sql_literal(day['patient_id'])} AND date = '{day['date']}'"
    changed = pl.DataFrame([{**day, "steps": day["steps"] + 1000}])
    lake.replace(DAILY_STEPS, changed, predicate=where)
    (line,) = _lines(lake)
    assert "1 of" in line and "differ from their bronze samples" in line
    assert line.endswith("run `mobility aggregate`")


def test_missing_days_and_stale_features_are_reported(lake: Lake) -> None:
    last = lake.read(DAILY_STEPS).sort("date").row(-1, named=True)
    lake.delete(DAILY_STEPS, f"patient_id = {sql_literal(last['patient_id'])}")
    assert any("patient-days with bronze samples are missing" in line for line in _lines(lake))


def test_incomplete_forecasts_are_reported(lake: Lake) -> None:
    row = lake.read(FORECASTS).sort("patient_id", "model").row(0, named=True)
    cut = row["origin_date"] + timedelta(days=300)
    lake.delete(
        FORECASTS,
        f"patient_id = {sql_literal(row['patient_id'])} AND model = {sql_literal(row['model'])} "
        f"AND target_date >= '{cut}'",
    )
    lines = _lines(lake)
    assert any("forecasts from the latest origin lack some of the 365 days" in x for x in lines)


@pytest.mark.parametrize(("days_back", "reported"), [(3, False), (REFRESH_DAYS + 1, True)])
def test_a_forecast_older_than_the_refresh_period_is_reported(
    lake: Lake, days_back: int, reported: bool
) -> None:
    # the forecast job refreshes a patient's forecast at least weekly while data arrives
    patient = lake.read(FORECASTS)["patient_id"].min()
    mine = f"patient_id = {sql_literal(patient)}"
    for table in (FORECASTS, OUTLOOK):
        older = lake.read(table).filter(pl.col("patient_id") == patient)
        shift = [pl.col("origin_date") - timedelta(days=days_back)]
        if "target_date" in older.columns:
            shift.append(pl.col("target_date") - timedelta(days=days_back))
        older = older.with_columns(shift).with_columns(
            origin_month=pl.col("origin_date").dt.strftime("%Y-%m")
        )
        lake.delete(table, mine)
        lake.append(table, older)
    lines = _lines(lake)
    stale = [x for x in lines if "have no forecast from the last" in x]
    assert bool(stale) == reported, lines
    if not reported:
        assert lines == []
    else:
        assert stale[0].startswith(
            f"gold/forecasts: 1 patients have no forecast from the last {REFRESH_DAYS} days"
        )


def test_features_behind_the_data_are_reported(lake: Lake) -> None:
    patient = lake.read(FEATURES)["patient_id"].min()
    until = lake.read(FEATURES).filter(pl.col("patient_id") == patient)["date"].max()
    lake.delete(FEATURES, f"patient_id = {sql_literal(patient)} AND date = '{until}'")
    (line,) = _lines(lake)
    assert line.startswith("silver/features: 1 patients' features end before")


def test_a_lost_data_file_makes_its_table_unreadable(lake: Lake) -> None:
    lost = lake.delta(OUTLOOK).file_uris()[0].removeprefix("file://")
    Path(lost).unlink()
    (line,) = _lines(lake)
    assert line.startswith("gold/outlook: unreadable (")


def test_the_command_prints_a_line_per_problem_and_exits_1(lake: Lake, tmp_path: Path) -> None:
    lake.append(DAILY_STEPS, lake.read(DAILY_STEPS).head(1))
    Path(lake.delta(OUTLOOK).file_uris()[0].removeprefix("file://")).unlink()
    done = mobility("--lake", lake.uri, "lake", "check", cwd=tmp_path)
    assert done.returncode == 1, done.stderr
    lines = done.stdout.splitlines()
    assert [line.split(":")[0] for line in lines] == ["gold/outlook", "silver/daily_steps"]
    assert "lake check: 2 problem(s)" in done.stderr


def test_the_command_says_all_is_well(lake: Lake, tmp_path: Path) -> None:
    done = mobility("--lake", lake.uri, "lake", "check", "--sample-patients", "2", cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.startswith("lake check: ")
    assert "tables readable with unique keys; daily totals of 2 sampled patients" in done.stdout


def test_a_forecast_with_a_day_twice_and_a_day_missing_is_reported(lake: Lake) -> None:
    # as many rows as the horizon has days, the first and last day right: one day twice
    row = lake.read(FORECASTS).sort("patient_id", "model").row(0, named=True)
    mine = f"patient_id = {sql_literal(row['patient_id'])} AND model = {sql_literal(row['model'])}"
    day = row["origin_date"] + timedelta(days=100)
    lake.delete(FORECASTS, f"{mine} AND target_date = '{day}'")
    twice = lake.read(FORECASTS).filter(
        (pl.col("patient_id") == row["patient_id"])
        & (pl.col("model") == row["model"])
        & (pl.col("target_date") == day + timedelta(days=1))
    )
    lake.append(FORECASTS, twice)

    lines = _lines(lake)

    assert any("forecasts from the latest origin lack some of the 365 days" in x for x in lines)
