"""Benchmark: render times of the dashboard's pages and the Cohort SQL example query.

Builds a lake of N synthetic patients (3 years) through the pipeline (``generate --seed 7``,
``aggregate``, ``features``, ``train --force --patients-per-cluster 200 --tune-seconds 0``,
``forecast``; each stage's time printed), unless ``--lake`` names a lake that already went through
it. Then measures server-side, in separate child processes (each peak RSS its own):

- ``pages``: ``dashboard/app.py`` run in-process by Streamlit's ``AppTest`` (the script run that
  builds the page: queries, charts, tables; no browser, no network). Each render is timed in a
  new session after its first, untimed run (the default page: AppTest's first run also scans the
  installed packages for components, which a server does once at start): the cohort page is run
  again, the patient page is reached by ``switch_page`` with ``patient_id`` in the address, as
  a link from the cohort page sets it. Modes, ``--runs`` times each (median, max):

  - ``cold``: every cache cleared first (Streamlit's, ``dashboard.data``'s, the settings): table
    versions read, DuckDB connection opened, every query run; a different patient each run;
  - ``warm``: the same page again in a new session right after (a second clinician): every
    result cached;
  - ``other patient`` (patient page only): caches filled, connection open, a patient not shown
    yet: the usual case of a clinician opening the next patient;
  - ``server warm-up`` (cohort page) and ``after the warm-up`` (both pages): every cache
    cleared, then the server's warm-up (``dashboard.warm_up.warm``, which a server runs at start
    and after each new table version; timed for the cohort page), then the page in a new session
    (a patient the warm-up did not open): what the first clinician after a pipeline run waits once
    the warm-up is done.

  The first render of each page in the process (cold, with the imports of plotly, the views'
  modules, ...; the cohort page's with AppTest's component scan too) is reported apart.
  Patients are taken from the outlook, largest forecast fall first (the cohort page's decline
  list), so they have forecasts and explanations.
- ``queries``: where the cold time goes: the ``dashboard.data`` calls of both pages one by one
  after the caches are cleared (table versions, DuckDB connection, then each query uncached);
- ``sql``: the Cohort SQL page's example query (``EXAMPLE`` in ``dashboard/sql_example.py``)
  through ``dashboard.data.run_analyst_query``;
  the first run (which opens the connection) apart, then the median of ``--runs``.

Prints the lake's size, the figures as a table and as JSON lines, and whether the targets are met
(median render: patient page under 0.5 s, cohort page under 1 s; cold and warm).

    python benchmarks/bench_dashboard.py [--patients 10000] [--runs 5] [--workdir DIR] [--keep]
    python benchmarks/bench_dashboard.py --lake /tmp/mobility-bench/dashboard-lake-10000 --runs 5
    python benchmarks/bench_dashboard.py --shape-lake --patients 10000 --keep  # no pipeline
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

from common import END_DATE, measure, mobility, print_table

# The benchmark's lake is synthetic: the dashboard runs as the local demo (no sign-in, the admin
# role), auditing every page and patient view as it does for a signed-in user.
os.environ.setdefault("MOBILITY_DEMO", "1")

ROOT = Path(__file__).resolve().parents[1]
APP = ROOT / "dashboard" / "app.py"
COHORT_PAGE = "views/cohort.py"
PATIENT_PAGE = "views/patient.py"
TARGETS = {"cohort page": 1.0, "patient page": 0.5}
TIMEOUT_SECONDS = 300.0


# ------------------------------------------------------------------------------- child: helpers


def _forget_caches() -> None:
    """Every cache of the dashboard process, as a restarted server or a new lake version."""
    import streamlit as st

    from dashboard import data
    from lakehouse.settings import get_settings

    st.cache_data.clear()
    st.cache_resource.clear()
    data.clear_caches()
    get_settings.cache_clear()


def _patients_with_forecasts(lake_uri: str, count: int) -> list[str]:
    """``count`` patients with a champion forecast, largest forecast fall first (repeated when
    the lake has fewer)."""
    import polars as pl

    from lakehouse.catalog import OUTLOOK, PATIENTS
    from lakehouse.storage import Lake

    lake = Lake(lake_uri)
    ids = []
    if lake.exists(OUTLOOK):
        ids = (
            lake.read(OUTLOOK)
            .filter(pl.col("champion"))
            .sort("year_end_change", "patient_id", nulls_last=True)
            .unique("patient_id", keep="first", maintain_order=True)["patient_id"]
            .to_list()
        )
    if not ids:  # no champion yet (e.g. too little history to train)
        ids = lake.read(PATIENTS)["patient_id"].sort().to_list()
    if not ids:
        raise SystemExit(f"no patients in {lake_uri}")
    return [ids[i % len(ids)] for i in range(count)]


def _summary(seconds: list[float]) -> dict[str, float]:
    return {"runs": len(seconds), "median_s": statistics.median(seconds), "max_s": max(seconds)}


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# --------------------------------------------------------------------------------- child: pages


def _timed_run(app: Any) -> float:
    """Seconds of one ``AppTest.run``; a page that raised or showed an error stops the benchmark."""
    start = time.perf_counter()
    app.run(timeout=TIMEOUT_SECONDS)
    seconds = time.perf_counter() - start
    problems = [str(e.value) for e in app.exception] + [str(e.value) for e in app.error]
    if problems:
        raise SystemExit(f"the page failed: {problems}")
    return seconds


def _session() -> Any:
    """A new session (``AppTest``) after its first, untimed run: the cohort page.

    An ``AppTest``'s first run also scans the installed packages for Streamlit components
    (0.1-0.2 s), which a server does once at start, not per session: it is never timed."""
    from streamlit.testing.v1 import AppTest

    app = AppTest.from_file(str(APP), default_timeout=TIMEOUT_SECONDS)
    app.run(timeout=TIMEOUT_SECONDS)
    return app


def _first_render() -> float:
    """The cohort page in the process's first session, cold, its first run timed: with the
    imports (plotly, the views' modules, ...) and AppTest's component scan."""
    from streamlit.testing.v1 import AppTest

    _forget_caches()
    return _timed_run(AppTest.from_file(str(APP), default_timeout=TIMEOUT_SECONDS))


def _cohort_render(*, cold: bool, warm_up: list[float] | None = None) -> float:
    """The cohort page (the default page) rendered again in a new session; with ``warm_up``,
    cold but after the server's warm-up (dashboard/warm_up.py), whose seconds go there."""
    from dashboard import data
    from dashboard import warm_up as server_warm_up

    app = _session()
    if cold:
        _forget_caches()
    if warm_up is not None:
        start = time.perf_counter()
        server_warm_up.warm(data.current_lake())
        warm_up.append(time.perf_counter() - start)
    seconds = _timed_run(app)
    if not app.metric:
        raise SystemExit("the cohort page showed no figures: is the lake empty?")
    return seconds


def _patient_render(patient_id: str, *, cold: bool, warmed: bool = False) -> float:
    """The patient page opened from a link (``?patient_id=``); only its own run is timed; with
    ``warmed``, cold but after the server's warm-up (untimed)."""
    from dashboard import data
    from dashboard import warm_up as server_warm_up

    app = _session()  # switch_page needs a first run
    if cold:
        _forget_caches()
    if warmed:
        server_warm_up.warm(data.current_lake())
    app.query_params["patient_id"] = patient_id
    app.switch_page(PATIENT_PAGE)
    seconds = _timed_run(app)
    shown = app.selectbox(key="patient_id").value
    if shown != patient_id:
        raise SystemExit(f"the patient page showed {shown}, not {patient_id}")
    return seconds


def _pages(lake_uri: str, runs: int) -> dict[str, Any]:
    patients = _patients_with_forecasts(lake_uri, 1 + 2 * runs)
    first, cold_ids, other_ids = patients[0], patients[1 : 1 + runs], patients[1 + runs :]
    cohort: dict[str, list[float]] = {
        "first in process": [_first_render()],
        "cold": [],
        "warm": [],
        "server warm-up": [],
        "after the warm-up": [],
    }
    patient = {
        "first in process": [_patient_render(first, cold=True)],
        "cold": [],
        "warm": [],
        "other patient": [],
        "after the warm-up": [],
    }
    for _ in range(runs):
        cohort["cold"].append(_cohort_render(cold=True))
        cohort["warm"].append(_cohort_render(cold=False))
        cohort["after the warm-up"].append(
            _cohort_render(cold=True, warm_up=cohort["server warm-up"])
        )
    for patient_id in cold_ids:
        patient["cold"].append(_patient_render(patient_id, cold=True))
        patient["warm"].append(_patient_render(patient_id, cold=False))
    for patient_id in other_ids:
        patient["other patient"].append(_patient_render(patient_id, cold=False))
        patient["after the warm-up"].append(_patient_render(patient_id, cold=True, warmed=True))
    return {
        "cohort page": {mode: _summary(seconds) for mode, seconds in cohort.items()},
        "patient page": {mode: _summary(seconds) for mode, seconds in patient.items()},
    }


# ------------------------------------------------------------------------------- child: queries


def _queries(lake_uri: str, runs: int) -> dict[str, Any]:
    """Seconds of each ``dashboard.data`` call of the two pages with the caches cleared (median
    and max over ``runs``, a different patient each run)."""
    from streamlit import logger

    from dashboard import data

    logger.set_log_level("error")  # "no runtime" warnings: the calls run outside Streamlit here
    _forget_caches()
    period = data.data_period(data.current_lake())
    if period is None:
        raise SystemExit(f"no daily steps in {lake_uri}")
    first_day, last_day = period
    # the cohort page's default filter: everyone, the last year of data
    cohort = data.CohortFilter(
        first_day=max(first_day, last_day - timedelta(days=364)), last_day=last_day
    )
    seconds: dict[str, list[float]] = {}
    for patient_id in _patients_with_forecasts(lake_uri, runs):
        _forget_caches()
        _query_round(cohort, patient_id, seconds)
    return {name: _summary(values) for name, values in seconds.items()}


def _query_round(cohort: Any, patient_id: str, seconds: dict[str, list[float]]) -> None:
    """One call of each, in the pages' order, caches cleared before: their seconds into
    ``seconds``."""
    import polars as pl

    from dashboard import data
    from jobs.recent_activity import as_of

    def timed(name: str, call: Callable[..., Any], *args: Any) -> Any:
        start = time.perf_counter()
        result = call(*args)
        seconds.setdefault(name, []).append(time.perf_counter() - start)
        return result

    lake = data.current_lake()
    timed("table versions (all tables)", data._all_versions, lake.uri, lake)
    timed("DuckDB connection", data._connection, lake.uri, lake)
    timed("cohort: data_period", data.data_period, lake)
    timed("cohort: therapy_names", data.therapy_names, lake)
    timed("cohort: cohort_kpis", data.cohort_kpis, lake, cohort)
    timed("cohort: declining_patients", data.declining_patients, lake, cohort)
    timed("cohort: cohort_steps_by_group", data.cohort_steps_by_group, lake, cohort)
    timed("cohort: cohort_weekly_trend", data.cohort_weekly_trend, lake, cohort)
    timed("cohort: worklist", data.worklist, lake, cohort, as_of())
    timed("patient: patient_ids", data.patient_ids, lake)
    profile = timed("patient: patient_profile", data.patient_profile, lake, patient_id)
    daily = timed("patient: patient_daily_steps", data.patient_daily_steps, lake, patient_id)
    therapies = timed("patient: patient_therapies", data.patient_therapies, lake, patient_id)
    timed(
        "patient: patient_summary",
        lambda: data.patient_summary(
            lake, patient_id, as_of(), daily_steps=daily, therapies=therapies
        ),
    )
    timed("patient: patient_side_effects", data.patient_side_effects, lake, patient_id)
    forecast = timed("patient: patient_forecast", data.patient_forecast, lake, patient_id)
    explained = sorted(m for m in forecast["model"].unique().to_list() if m.startswith("ebm_"))
    if explained:  # the page's default: the champion's explanation of the first month
        champion = forecast.filter(pl.col("champion"))["model"].unique().to_list()
        model = champion[0] if champion and champion[0] in explained else explained[0]
        origin = forecast["origin_date"][0]
        last = origin + timedelta(days=364)
        month = data.horizon_months(origin, last)[0]
        month_last = min(data.month_end(month), last)
        args = (lake, patient_id, model, origin, max(month, origin), month_last)
        timed("patient: patient_explanation", data.patient_explanation, *args)
    cluster = profile.disease_group if profile is not None else "OTHER"
    timed("patient: cluster_accuracy", data.cluster_accuracy, lake, cluster)


# ----------------------------------------------------------------------------------- child: sql


def example_query() -> str:
    """The Cohort SQL page's example query."""
    from dashboard.sql_example import EXAMPLE

    return EXAMPLE


def _sql(lake_uri: str, runs: int) -> dict[str, Any]:
    from streamlit import logger

    from dashboard import data

    logger.set_log_level("error")
    sql = example_query()
    _forget_caches()
    lake = data.current_lake()
    start = time.perf_counter()
    result = data.run_analyst_query(lake, sql)  # opens the connection
    first = time.perf_counter() - start
    seconds = []
    for _ in range(runs):
        start = time.perf_counter()
        data.run_analyst_query(lake, sql)
        seconds.append(time.perf_counter() - start)
    return {
        "cohort SQL example": {
            "first (opens connection)": _summary([first]),
            f"{result.table.num_rows} rows": _summary(seconds),
        }
    }


def _child(kind: str, lake_uri: str, runs: int) -> None:
    os.environ["LAKE_URI"] = lake_uri  # before the dashboard reads its settings
    start = time.perf_counter()
    if kind == "pages":
        out = _pages(lake_uri, runs)
    elif kind == "queries":
        out = _queries(lake_uri, runs)
    else:
        out = _sql(lake_uri, runs)
    out = {"result": out, "wall": time.perf_counter() - start, "rss_mb": _peak_rss_mb()}
    print(json.dumps(out))


# -------------------------------------------------------------------------------------- parent


def _build(lake_dir: Path, patients: int, seed: int) -> None:
    lake = str(lake_dir)
    stages: list[tuple[str, tuple[str, ...]]] = [
        (
            "generate",
            ("generate", "--patients", str(patients), "--seed", str(seed), "--end-date", END_DATE),
        ),
        ("aggregate", ("aggregate",)),
        ("features", ("features",)),
        ("train", ("train", "--force", "--patients-per-cluster", "200", "--tune-seconds", "0")),
        ("forecast", ("forecast",)),
    ]
    for name, args in stages:
        start = time.perf_counter()
        mobility("--lake", lake, *args)
        print(
            json.dumps({"build": name, "seconds": round(time.perf_counter() - start, 1)}),
            flush=True,
        )


def _build_shape(lake_dir: Path, patients: int, seed: int) -> None:
    """The cohort page's tables written directly, without the pipeline: ``bronze/patients``,
    3 years of ``silver/daily_steps`` ending yesterday (wear on about 85% of days; every 20th
    patient silent for the last 40 days, every 10th wearing on 1 day in 3) and one champion row
    per patient in ``gold/outlook``. For the cohort page and its worklist at scale in a minute
    or two; patient pages on it have no forecast."""
    from datetime import date

    import numpy as np
    import polars as pl

    from jobs.recent_activity import as_of
    from lakehouse.catalog import DAILY_STEPS, OUTLOOK, PATIENTS
    from lakehouse.storage import Lake

    start = time.perf_counter()
    rng = np.random.default_rng(seed)
    lake = Lake(str(lake_dir))
    ids = [f"P-{i:08d}" for i in range(patients)]
    groups = np.array(["MS", "PD", "RA", "OTHER"])[rng.integers(0, 4, patients)]
    lake.append(
        PATIENTS,
        pl.DataFrame(
            {
                "patient_id": ids,
                "disease_group": groups,
                "timezone": "UTC",
                "sex": np.array(["F", "M"])[rng.integers(0, 2, patients)],
                "birth_year": rng.integers(1940, 2000, patients).astype(np.int16),
                "country": "DE",
                "enrolled_on": date(2020, 1, 1),
            },
            schema_overrides={"birth_year": pl.Int16},
        ),
    )
    last = as_of()
    days = pl.date_range(last - timedelta(days=3 * 365 - 1), last, eager=True)
    n = len(days)
    index = np.arange(patients)
    wear_chance = np.where(index % 10 == 0, 1 / 3, 0.85)
    silent_from = np.where(index % 20 == 0, n - 40, n)
    level = rng.normal(6000, 2000, patients).clip(800, None)
    for first in range(0, patients, 2000):
        block = slice(first, min(first + 2000, patients))
        k = block.stop - block.start
        wear = rng.random((k, n)) < wear_chance[block, None]
        steps = np.where(wear, rng.normal(level[block, None], 1500, (k, n)).clip(0), 50.0)
        keep = np.arange(n)[None, :] < silent_from[block, None]
        patient, day = np.nonzero(keep)
        dates = days.gather(day)
        lake.append(
            DAILY_STEPS,
            pl.DataFrame(
                {
                    "patient_id": pl.Series(ids[block]).gather(patient),
                    "date": dates,
                    "steps": steps[patient, day],
                    "coverage_hours": np.where(wear[patient, day], 14, 3).astype(np.int16),
                    "n_samples": np.where(wear[patient, day], 60, 5).astype(np.int32),
                    "n_sources": np.ones(len(day), np.int16),
                    "is_wear_day": wear[patient, day],
                    "month": dates.dt.strftime("%Y-%m"),
                }
            ),
        )
    change = rng.normal(-0.02, 0.08, patients)
    lake.append(
        OUTLOOK,
        pl.DataFrame(
            {
                "patient_id": ids,
                "model": "trailing_mean_28d",
                "origin_date": last,
                "champion": True,
                "baseline_steps": level,
                "next_quarter_steps": level,
                "year_end_steps": level * (1 + change),
                "year_steps": level,
                "year_end_change": change,
                "origin_month": f"{last:%Y-%m}",
                "own_year_mae": None,
            },
            schema_overrides={"own_year_mae": pl.Float64},
        ),
    )
    seconds = round(time.perf_counter() - start, 1)
    print(json.dumps({"build": "shape lake", "seconds": seconds}), flush=True)


def _lake_size(lake_uri: str) -> dict[str, int]:
    from lakehouse.catalog import DAILY_STEPS, EXPLANATIONS, FORECASTS, PATIENTS
    from lakehouse.storage import Lake

    lake = Lake(lake_uri)
    return {
        table.path: lake.info(table).rows
        for table in (PATIENTS, DAILY_STEPS, FORECASTS, EXPLANATIONS)
    }


def _child_result(kind: str, lake_uri: str, runs: int) -> dict[str, Any]:
    try:
        out = measure(__file__, kind, lake_uri, f"--runs={runs}")
    except subprocess.CalledProcessError as err:
        print(err.stderr)
        raise
    print(json.dumps({kind: out}), flush=True)
    return out


def _report(
    pages: dict[str, Any], queries: dict[str, dict[str, float]], sql: dict[str, Any]
) -> None:
    """The render and query figures as JSON lines and tables."""
    rows = [
        {
            "measure": measure_name,
            "mode": mode,
            "runs": figures["runs"],
            "median_s": round(figures["median_s"], 3),
            "max_s": round(figures["max_s"], 3),
        }
        for measure_name, modes in {**pages, **sql}.items()
        for mode, figures in modes.items()
    ]
    for row in rows:
        print(json.dumps(row))
    print_table(rows)
    breakdown = [
        {
            "call (caches cleared before)": name,
            "median_ms": round(1000 * figures["median_s"], 1),
            "max_ms": round(1000 * figures["max_s"], 1),
        }
        for name, figures in queries.items()
    ]
    for row in breakdown:
        print(json.dumps(row))
    print_table(breakdown)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--patients", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--workdir", default="/tmp/mobility-bench")
    parser.add_argument("--lake", help="a lake that already went through the pipeline (no build)")
    parser.add_argument("--keep", action="store_true", help="keep the generated lake")
    parser.add_argument(
        "--shape-lake",
        action="store_true",
        help="write the cohort page's tables directly (patients, 3 years of daily steps to "
        "yesterday, a champion outlook) instead of running the pipeline: minutes at 10,000 "
        "patients; patient pages then have no forecast",
    )
    parser.add_argument("--child", choices=["pages", "queries", "sql"])
    args = parser.parse_args()
    if args.child:
        _child(args.child, args.lake, args.runs)
        return

    if args.lake:
        lake_dir = Path(args.lake)
    else:
        lake_dir = Path(args.workdir) / f"dashboard-lake-{args.patients}"
        shutil.rmtree(lake_dir, ignore_errors=True)
        build = _build_shape if args.shape_lake else _build
        build(lake_dir, args.patients, args.seed)
    lake_uri = str(lake_dir)
    size = _lake_size(lake_uri)
    print(json.dumps({"lake": lake_uri, "rows": size}), flush=True)

    children = {
        kind: _child_result(kind, lake_uri, args.runs) for kind in ("pages", "queries", "sql")
    }
    pages, queries, sql = children["pages"], children["queries"], children["sql"]

    print("\nlake: " + ", ".join(f"{table} {rows:,} rows" for table, rows in size.items()))
    _report(pages["result"], queries["result"], sql["result"])
    rss = ", ".join(f"{kind} {out['rss_mb']:.0f} MB" for kind, out in children.items())
    print(f"\npeak RSS: {rss}")
    print(f"\ntargets at {size['bronze/patients']:,} patients (median render; max in brackets):")
    for page, target in TARGETS.items():
        for mode, figures in pages["result"][page].items():
            if mode == "first in process":
                continue
            median, worst = figures["median_s"], figures["max_s"]
            verdict = "met" if median < target else "NOT met"
            print(f"  {page}, {mode}: {median:.3f} s ({worst:.3f} s) vs < {target:g} s: {verdict}")
    if not args.lake and not args.keep:
        shutil.rmtree(lake_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
