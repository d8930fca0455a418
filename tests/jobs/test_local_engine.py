"""The local engine: cpu-bound tasks in worker processes (one per core), with the same results
as on threads in this process; everything else on threads."""

from __future__ import annotations

import os
import runpy
import sys
import time
import types
from datetime import date
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from jobs import aggregate, generate
from jobs import forecast as forecast_job
from jobs.engine.base import Staging
from jobs.engine.local import PROCESSES_ENV, LocalEngine, default_processes
from jobs.features import run as features_job
from lakehouse.catalog import DAILY_STEPS, EXPLANATIONS, FORECASTS, OUTLOOK
from lakehouse.errors import InputError
from lakehouse.storage import Lake
from synthetic.population import DEFAULT_END_DATE


def where_and_what(shared: dict[str, int], description: int, staging: Staging) -> dict[str, Any]:
    """A task: its process, the shared value and its own description, staged and summarised."""
    if description < 0:
        raise ValueError(f"task {description} failed")
    staging.write("rows", pl.DataFrame({"value": [shared["base"] + description]}))
    return {"pid": os.getpid(), "description": description}


def _run(engine: LocalEngine, descriptions: list[int], *, cpu_bound: bool) -> list[Any]:
    with engine.map_tasks(
        Lake("/nowhere"),
        "test",
        where_and_what,
        descriptions,
        shared={"base": 100},
        in_flight=1,
        cpu_bound=cpu_bound,
    ) as results:
        return [
            (r.index, r.summary["pid"], r.summary["description"], r.staged.read("rows"))
            for r in results
        ]


def test_cpu_bound_tasks_run_in_worker_processes_in_order() -> None:
    done = _run(LocalEngine(processes=2), list(range(6)), cpu_bound=True)

    assert [index for index, *_ in done] == list(range(6))
    assert [description for _, _, description, _ in done] == list(range(6))
    assert {pid for _, pid, _, _ in done} - {os.getpid()}
    assert os.getpid() not in {pid for _, pid, _, _ in done}
    assert [rows["value"][0] for *_, rows in done] == [100 + i for i in range(6)]


@pytest.mark.parametrize(
    ("processes", "descriptions", "cpu_bound"),
    [(1, [0, 1, 2], True), (2, [0], True), (2, [0, 1, 2], False)],
)
def test_other_tasks_run_in_this_process(
    processes: int, descriptions: list[int], cpu_bound: bool
) -> None:
    done = _run(LocalEngine(processes=processes), descriptions, cpu_bound=cpu_bound)

    assert {pid for _, pid, _, _ in done} == {os.getpid()}


def test_a_failing_task_in_a_worker_raises_its_own_error() -> None:
    with pytest.raises(ValueError, match="task -1 failed"):
        _run(LocalEngine(processes=2), [0, -1, 2], cpu_bound=True)


@pytest.mark.parametrize("value", ["0", "two", "-1", "1.5"])
def test_a_bad_process_count_is_one_line(value: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(PROCESSES_ENV, value)
    with pytest.raises(InputError, match=f"{PROCESSES_ENV} must be a whole number") as error:
        default_processes()
    assert "\n" not in str(error.value)


def test_the_process_count_defaults_to_the_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(PROCESSES_ENV, raising=False)
    assert default_processes() == max(1, os.cpu_count() or 1)
    monkeypatch.setenv(PROCESSES_ENV, "3")
    assert default_processes() == 3


def _tables(lake: Lake) -> dict[str, pl.DataFrame]:
    tables = {}
    for table in (FORECASTS, OUTLOOK, EXPLANATIONS):
        rows = lake.read(table) if lake.exists(table) else pl.DataFrame()
        if table is FORECASTS:
            # Prophet draws its interval from unseeded random samples: two runs differ
            prophet = pl.col("model") == "prophet"
            rows = rows.with_columns(
                pl.when(prophet).then(None).otherwise(pl.col(c)).alias(c)
                for c in ("yhat_lower", "yhat_upper")
            )
        tables[table.path] = rows.sort(list(table.keys)) if rows.height else rows
    return tables


def test_forecasts_in_worker_processes_equal_those_made_in_this_process(tmp_path: Path) -> None:
    lake = Lake(str(tmp_path / "lake"))
    generate.run(lake, patients=6, seed=5, years=1.0, end_date=DEFAULT_END_DATE)
    aggregate.run(lake)
    features_job.run(lake)
    batches = {"batch_patients": 2, "prophet_workers": 1}

    forecast_job.run(lake, engine=LocalEngine(processes=1), **batches)
    here = _tables(lake)
    forecast_job.run(lake, engine=LocalEngine(processes=2), everyone=True, **batches)
    in_workers = _tables(lake)

    assert here[FORECASTS.path].height > 0
    for path, rows in here.items():
        assert_frame_equal(in_workers[path], rows, check_exact=True)


def test_python_m_jobs_imported_by_a_worker_runs_nothing() -> None:
    # a spawned worker imports the parent's main module as __mp_main__: were the command line
    # to run again there, it would wait for the lake's lease its parent holds
    namespace = runpy.run_module("jobs.__main__", run_name="__mp_main__")

    assert "main" in namespace


def started_at(shared: None, description: int, staging: Staging) -> dict[str, Any]:
    """A task of 0.3 s: when it started."""
    start = time.time()
    time.sleep(0.3)
    return {"started": start}


def test_workers_keep_computing_while_the_caller_commits_a_result() -> None:
    # the caller's commit of one batch overlaps the next batches on every worker
    with LocalEngine(processes=2).map_tasks(
        Lake("/nowhere"), "test", started_at, list(range(4)), in_flight=1, cpu_bound=True
    ) as results:
        first = next(results)
        time.sleep(1.0)  # committing the first batch
        committed = time.time()
        rest = list(results)

    assert first.index == 0
    assert rest[1].summary["started"] < committed  # the third task ran during the commit


def _one_more_day(lake: Lake) -> None:
    """Each patient's last daily row again, a day later (a day of new data for everyone)."""
    last = lake.read(DAILY_STEPS).sort("date").group_by("patient_id").last()
    lake.append(
        DAILY_STEPS,
        last.with_columns(date=pl.col("date") + pl.duration(days=1)).with_columns(
            month=pl.col("date").dt.strftime("%Y-%m")
        ),
    )
    features_job.run(lake)


def test_a_run_in_several_batches_retires_the_origins_it_supersedes(tmp_path: Path) -> None:
    lake = Lake(str(tmp_path / "lake"))
    generate.run(lake, patients=6, seed=8, years=1.0, end_date=DEFAULT_END_DATE)
    aggregate.run(lake)
    features_job.run(lake)
    batches = {"batch_patients": 2, "prophet_workers": 1, "everyone": True}
    runs: list[dict[str, date]] = []  # each run's origin per patient
    for day in range(3):
        if day:
            _one_more_day(lake)
        forecast_job.run(lake, engine=LocalEngine(processes=2), **batches)
        latest = lake.read(FORECASTS).group_by("patient_id").agg(pl.col("origin_date").max())
        runs.append(dict(latest.iter_rows()))

    # each patient keeps their first origin (the first of its month) and the latest; the second
    # is superseded unless it opened a month of its own
    for table in (FORECASTS, OUTLOOK):  # (no training here: no explanations)
        stored = lake.read(table).group_by("patient_id").agg(pl.col("origin_date").unique())
        assert stored.height == 6
        for patient, kept in stored.iter_rows():
            first, second, third = (run[patient] for run in runs)
            expected = {first, third} | ({second} if second.month != first.month else set())
            assert set(kept) == expected, (table.path, patient)


def test_workers_never_run_the_parents_main_script(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Streamlit installs the page it runs as __main__ (AppTest too); spawn would run it again in
    # each worker
    page = tmp_path / "page.py"
    page.write_text("raise SystemExit('the page ran in a worker')\n", encoding="utf-8")
    main = types.ModuleType("__main__")
    main.__file__ = str(page)
    monkeypatch.setitem(sys.modules, "__main__", main)

    done = _run(LocalEngine(processes=2), [0, 1, 2], cpu_bound=True)

    assert [rows["value"][0] for *_, rows in done] == [100, 101, 102]
    assert sys.modules["__main__"] is main
