"""Benchmark: the models on the real device exports, at the horizons a month of data allows.

The real series in ``../shared/realdata`` (an Apple Health export and the Fitabase hourly file:
35 people, about a month each) are too short to train on or to backtest a year ahead. So the
lake holds a synthetic population (the EBMs learn from it, as they would from a clinic's
patients) plus the real exports; after aggregate, features and ``train``, ``mobility backtest``
scores every model on the real patients' last weeks: the registered EBMs as trained, the
baselines and Prophet fitted per origin, all on the same patients and days. The same is printed
for the synthetic patients for comparison.

    python benchmarks/bench_real_series.py [--patients 1000] [--realdata ../shared/realdata]

``--intervals`` instead scores the calibrated 80% intervals (:mod:`models.intervals`) on the long
real series of ``../shared/realdata-long`` (read in place, never copied): each series is cut a
year before its end; the baselines and Prophet are backtested on the history before the cut
(rolling origins a year apart from each other's ends, the real patients only), which gives the
calibration (every series one patient, pooled); then each model forecasts the held-back year from
the cut, and the coverage and mean width of its calibrated interval on the worn days of that year
are printed beside those of its own interval, against the 75-85% goal. With
``--calibration-lake LAKE`` the calibration of that lake's registry (e.g. trained on a synthetic
population) is scored on the same cuts as well.

    python benchmarks/bench_real_series.py --intervals [--calibration-lake /tmp/lake]

``--year-ahead`` runs the product itself on the same long series: each series is cut 364 days
before its last worn day (the held-back year is its last 365 days) and up to twice more, 91 days
earlier each, while at least 240 days of history remain before the cut. Cut k of every series goes
into one lake (each patient's origin is the day after their own last day, so series of different
years share it), of two kinds: the real patients only, and the real patients beside a synthetic
population (``mobility generate --patients N --seed 7``). Each series' worn days before its cut
go in as a daily CSV through the generic ingest; ``mobility pipeline`` runs in a child process
(the real training; ``--quick`` sets MOBILITY_QUICK_TRAINING), under a random pseudonym and
artifact key unless the environment sets them. gold/forecasts (every model, each real patient's
latest origin, the pseudonyms mapped back through admin/reidentification) and the champion of the
patient's cluster (models/registry, newest version) are scored on the worn days of the 365 days
from the origin (the day after the last worn day before the cut): MAE, 80% coverage and mean
width. Beside them, as outside references, statsforecast's AutoETS and AutoARIMA (weekly season)
fitted on at most the last two years before the origin, the days without wear in between filled by
linear interpolation (the models need a gapless series), forecasts and bounds cut at zero. Per lake
kind, pooled over the cuts and per cut, it prints each model's MAE over the better of
trailing_mean_28d's and weekday_profile_8w's per series (a series' cuts averaged), with the median
and worst over the series, and the coverage (mean; worst and best: the series farthest from and
nearest to 80%) and mean width, against the targets: champion median ratio <= 0.95, worst <= 1.05,
coverage 75-85%. ``--out`` writes the figures as JSON.

    python benchmarks/bench_real_series.py --year-ahead [--synthetic-patients 200] [--quick]
        [--workdir /tmp/mobility-bench] [--keep] [--out figures.json]
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import polars as pl
from common import generate, mobility, run_pipeline

from models import intervals
from models.backtest import Panel, rolling_origins, run_backtest
from models.baselines import SeasonalNaive, TrailingMean, WeekdayProfile
from models.prophet_model import ProphetPerPatient

ROOT = Path(__file__).resolve().parents[1]


def _backtest(lake: Path, horizon: int, origins: int, patients: list[str]) -> None:
    command = [sys.executable, "-m", "jobs", "--lake", str(lake), "backtest"]
    command += ["--horizon", str(horizon), "--origins", str(origins)]
    command += [f"--patient-id={p}" for p in patients]
    started = time.perf_counter()
    done = subprocess.run(
        command,
        check=True,
        capture_output=True,
        text=True,
    )
    print(done.stdout, flush=True)
    print(f"({len(patients)} patients asked, {time.perf_counter() - started:.0f} s)\n", flush=True)


# A day under this many steps is a day the device was not worn (the exports write gaps as 0).
NON_WEAR_BELOW = 200
GOAL = (0.75, 0.85)


def _long_series(root: Path) -> pl.DataFrame:
    """``patient_id, date, steps`` of every long real series, non-wear and imputed days missing."""
    frames = []

    def add(name: str, frame: pl.DataFrame, date_col: str, steps_col: str) -> None:
        frames.append(
            frame.select(
                patient_id=pl.lit(name),
                date=pl.col(date_col).cast(pl.String).str.to_date(),
                steps=pl.col(steps_col).cast(pl.Float64),
            )
        )

    add("saulsjam", pl.read_csv(root / "saulsjam_apple" / "steps_daily.csv"), "date", "steps")
    add(
        "svmiller",
        pl.read_csv(root / "svmiller_fitbit" / "stevesteps_derived.csv"),
        "date",
        "value",
    )
    add("jaredbgo", pl.read_csv(root / "jaredbgo_apple" / "steps.csv"), "Date", "Steps")
    google = pl.read_csv(
        root / "pipstur_googlefit" / "daily_activity_metrics.csv", infer_schema_length=0
    )
    add("pipstur", google, "Date", "Step count")
    rachel = pl.read_csv(root / "rachelsebastian09_fitbit" / "daily_steps.csv")
    # the README: its missing days were imputed as 4014
    add("rachel", rachel.filter(pl.col("steps") != 4014), "date", "steps")
    people = json.loads((root / "danecollins_fitbit" / "db.json").read_text())
    for who, days in people.items():
        rows = [{"date": d, "steps": v.get("steps")} for d, v in days.items()]
        add(
            f"dane-{who}",
            pl.DataFrame(rows, schema={"date": pl.String, "steps": pl.Float64}),
            "date",
            "steps",
        )
    every = pl.concat(frames).group_by("patient_id", "date").agg(pl.col("steps").max())
    return every.with_columns(steps=pl.when(pl.col("steps") >= NON_WEAR_BELOW).then("steps")).sort(
        "patient_id", "date"
    )


def _panel(daily: pl.DataFrame) -> Panel:
    ids = daily["patient_id"].unique().sort()
    patients = pl.DataFrame({"patient_id": ids, "disease_group": "OTHER", "country": "XX"})
    therapies = pl.DataFrame(
        schema={
            "patient_id": pl.String,
            "therapy": pl.String,
            "start_date": pl.Date,
            "end_date": pl.Date,
        }
    )
    return Panel(daily, patients, therapies)


def intervals_on_long_series(root: Path, calibration_lake: str | None) -> None:
    """Coverage and width of every model's 80% interval on each series' held-back year."""
    from jobs.forecast import registered_intervals
    from lakehouse.storage import Lake

    daily = _long_series(root)
    cuts = daily.group_by("patient_id").agg(cut=pl.col("date").max() - pl.duration(days=364))
    before = daily.join(cuts, on="patient_id").filter(pl.col("date") < pl.col("cut"))
    held = daily.join(cuts, on="patient_id").filter(pl.col("date") >= pl.col("cut"))
    models = [SeasonalNaive(), TrailingMean(), WeekdayProfile(), ProphetPerPatient(workers=1)]
    # calibration: backtests of each series on its own earlier years (origins 91 days apart, the
    # latest a year before the cut), their residuals pooled over the series
    started = time.perf_counter()
    residuals = []
    for (patient,), mine in before.group_by("patient_id"):
        panel = _panel(mine.select("patient_id", "date", "steps"))
        span = mine.select((pl.col("date").max() - pl.col("date").min()).dt.total_days()).item()
        count = min(3, max(0, (span - 365 - 120) // 91 + 1))
        if not count:
            print(f"{patient}: too short before its cut for a year-ahead backtest")
            continue
        origins = rolling_origins(panel, count=count, spacing_days=91, horizon=365)
        residuals.append(run_backtest(models, panel, origins, horizon=365).residuals)
    calibration = intervals.calibrate(pl.concat(residuals))
    print(f"calibration backtests: {time.perf_counter() - started:.0f} s; pooled quantiles:")
    with pl.Config(tbl_rows=40):
        print(calibration.filter(pl.col("cluster") == "ALL"))
    calibrations = {"real series' own backtests": calibration}
    if calibration_lake:
        calibrations[f"registry of {calibration_lake}"] = registered_intervals(
            Lake(calibration_lake)
        )
    full = _panel(daily)
    rows = []
    for (patient, cut), _ in cuts.group_by("patient_id", "cut"):
        known = full.known_at(cut, patients=[patient])
        if not known.patients.height:
            continue
        actual = held.filter(pl.col("patient_id") == patient, pl.col("steps").is_not_null())
        scale = intervals.patient_scale(known)
        clusters = known.patients.select("patient_id", cluster="disease_group")
        for model in models:
            made = model.predict(known, horizon=365).with_columns(model=pl.lit(model.name))
            versions = {"own interval": made}
            for label, calibration in calibrations.items():
                versions[label] = intervals.apply_intervals(
                    made, calibration, scale, clusters, origin=cut
                )
            for label, frame in versions.items():
                scored = frame.join(
                    actual.select("patient_id", target_date="date", actual="steps"),
                    on=["patient_id", "target_date"],
                )
                rows.append(
                    scored.select(
                        series=pl.lit(patient),
                        model=pl.lit(model.name),
                        intervals=pl.lit(label),
                        coverage=pl.col("actual").is_between("yhat_lower", "yhat_upper").mean(),
                        width=(pl.col("yhat_upper") - pl.col("yhat_lower")).mean(),
                        mae=(pl.col("actual") - pl.col("yhat")).abs().mean(),
                        days=pl.len(),
                    )
                )
    table = pl.concat(rows).sort("intervals", "model", "series")
    with pl.Config(tbl_rows=200, tbl_cols=10, float_precision=2):
        print(table)
        summary = table.group_by("intervals", "model").agg(
            coverage=pl.col("coverage").mean(),
            worst=pl.col("coverage").min(),
            best=pl.col("coverage").max(),
            width=pl.col("width").mean(),
            in_goal=pl.col("coverage").is_between(*GOAL).sum(),
            series=pl.len(),
        )
        print(f"\n# per model: mean coverage over the series (goal {GOAL}), mean width\n")
        print(summary.sort("intervals", "model"))
        # accuracy against the patient's own baseline: the better of the flat 28-day mean and
        # the 8-week weekday profile on the same series and days (the point forecasts are the
        # same whatever the interval)
        point = table.filter(pl.col("intervals") == "own interval")
        baseline = (
            point.filter(pl.col("model").is_in(["trailing_mean_28d", "weekday_profile_8w"]))
            .group_by("series")
            .agg(baseline_mae=pl.col("mae").min())
        )
        ratios = point.join(baseline, on="series").with_columns(
            ratio=pl.col("mae") / pl.col("baseline_mae")
        )
        print("\n# per model: MAE on the held-back year / the better baseline's (per series)\n")
        print(ratios.pivot("series", index="model", values="ratio").sort("model"))
        print(
            ratios.group_by("model")
            .agg(median=pl.col("ratio").median(), worst=pl.col("ratio").max())
            .sort("model")
        )


# --year-ahead: the product's own pipeline on lakes of the real series cut a year before their end
YEAR = 365
CUT_SPACING_DAYS = 91
MAX_CUTS = 3
MIN_HISTORY_DAYS = 240
# the outside references are fitted on at most this many days before the origin (speed)
REFERENCE_HISTORY_DAYS = 730
REAL_PREFIX = "real-"
BASELINE_MODELS = ("trailing_mean_28d", "weekday_profile_8w")
CHAMPION = "champion"
COVERAGE_TARGET = 0.80
RATIO_TARGETS = {"median": 0.95, "worst": 1.05}
LAKE_KINDS = ("real only", "real + synthetic")


@dataclass(frozen=True)
class LakeRun:
    """One pipeline run: its lake kind, cut, wall time, and the error text when it failed."""

    kind: str
    cut: int
    seconds: float
    error: str | None = None


def year_ahead_cuts(daily: pl.DataFrame) -> pl.DataFrame:
    """``series, cut, cut_date, origin`` of every series' year-ahead cuts.

    Cut 0 is 364 days before the series' last worn day (the held-back year is its last 365
    days), each next cut 91 days earlier, up to three. The origin is the product's: the day after
    the last worn day before the cut; a cut is kept while at least :data:`MIN_HISTORY_DAYS` days
    lie between the series' first worn day and its origin.
    """
    worn = daily.filter(pl.col("steps").is_not_null())
    spans = worn.group_by("patient_id").agg(first=pl.col("date").min(), last=pl.col("date").max())
    rows = []
    for series, first, last in spans.sort("patient_id").iter_rows():
        for cut in range(MAX_CUTS):
            cut_date = last - timedelta(days=YEAR - 1 + CUT_SPACING_DAYS * cut)
            before = worn.filter(pl.col("patient_id") == series, pl.col("date") < cut_date)
            last_before = before["date"].max()
            if not isinstance(last_before, date):
                break
            origin = last_before + timedelta(days=1)
            if (origin - first).days < MIN_HISTORY_DAYS:
                break
            rows.append({"series": series, "cut": cut, "cut_date": cut_date, "origin": origin})
    schema = {"series": pl.String, "cut": pl.Int32, "cut_date": pl.Date, "origin": pl.Date}
    return pl.DataFrame(rows, schema=schema)


def _held_back(daily: pl.DataFrame, cuts: pl.DataFrame) -> pl.DataFrame:
    """``series, cut, target_date, actual``: the worn days of each cut's year from its origin."""
    return (
        daily.filter(pl.col("steps").is_not_null())
        .join(cuts, left_on="patient_id", right_on="series")
        .filter(
            pl.col("date") >= pl.col("origin"),
            pl.col("date") < pl.col("origin") + pl.duration(days=YEAR),
        )
        .select(series="patient_id", cut="cut", target_date="date", actual="steps")
    )


def _ingest_histories(lake_dir: Path, daily: pl.DataFrame, cuts: pl.DataFrame) -> None:
    """Each series' worn days before its cut, as a daily CSV through the product's generic
    ingest (the non-wear days are left out, as a device export without them would be)."""
    from jobs.ingest.run import run as ingest
    from lakehouse.storage import Lake

    lake = Lake(str(lake_dir))
    folder = lake_dir.parent / f"{lake_dir.name}-csv"
    folder.mkdir(parents=True, exist_ok=True)
    for series, cut_date in cuts.select("series", "cut_date").iter_rows():
        path = folder / f"{series}.csv"
        daily.filter(
            pl.col("patient_id") == series,
            pl.col("date") < cut_date,
            pl.col("steps").is_not_null(),
        ).select(pl.col("date").cast(pl.String), pl.col("steps").round().cast(pl.Int64)).write_csv(
            path
        )
        ingest(
            lake,
            path,
            format="generic",
            patient_id=REAL_PREFIX + series,
            columns={"start": "date", "steps": "steps"},
            period="day",
            timezone="UTC",
        )
    shutil.rmtree(folder)


def _product_forecasts(lake_dir: Path) -> pl.DataFrame:
    """``series, model, champion_of, origin_date, target_date, yhat, yhat_lower, yhat_upper`` of
    the real patients' latest origin in gold/forecasts, every model, plus the rows of their
    cluster's champion (newest registry version) as model ``champion``, ``champion_of`` naming it.

    The pseudonyms are mapped back to the series through the lake's re-identification table.
    """
    from jobs.forecast import champions
    from lakehouse.catalog import FORECASTS, PATIENTS, REIDENTIFICATION
    from lakehouse.storage import Lake

    lake = Lake(str(lake_dir))
    names = (
        lake.read(REIDENTIFICATION)
        .filter(pl.col("source_id").str.starts_with(REAL_PREFIX))
        .select("patient_id", series=pl.col("source_id").str.strip_prefix(REAL_PREFIX))
    )
    forecasts = (
        lake.scan(FORECASTS)
        .join(names.lazy(), on="patient_id")
        .filter(pl.col("origin_date") == pl.col("origin_date").max().over("patient_id"))
        .select("series", "model", "origin_date", "target_date", "yhat", "yhat_lower", "yhat_upper")
        .collect()
    )
    winners = champions(lake)
    clusters = (
        lake.read(PATIENTS)
        .join(names, on="patient_id")
        .select(
            "series",
            model=pl.col("disease_group").replace_strict(
                winners, default=None, return_dtype=pl.String
            ),
        )
    )
    champion_rows = forecasts.join(clusters, on=["series", "model"]).with_columns(
        champion_of=pl.col("model"), model=pl.lit(CHAMPION)
    )
    if champion_rows["series"].n_unique() < names.height:
        served = set(champion_rows["series"])
        missing = sorted(set(names["series"]) - served)
        print(f"no forecast of their cluster's champion for: {', '.join(missing)}", flush=True)
    return pl.concat(
        [forecasts.with_columns(champion_of=pl.lit(None, pl.String)), champion_rows],
        how="diagonal",
    )


def _reference_forecasts(daily: pl.DataFrame, cuts: pl.DataFrame) -> pl.DataFrame:
    """statsforecast's ``AutoETS`` and ``AutoARIMA`` (weekly season) per series and cut:
    ``series, cut, model, target_date, yhat, yhat_lower, yhat_upper`` (80% level), 365 days from
    the origin, fitted on the worn days of at most the last :data:`REFERENCE_HISTORY_DAYS`
    before it with the days between them filled by linear interpolation (the models need a
    gapless series); forecasts and bounds are cut at zero steps, as the product's are."""
    from statsforecast.models import AutoARIMA, AutoETS

    frames = []
    for series, cut, origin in cuts.select("series", "cut", "origin").iter_rows():
        worn = daily.filter(
            pl.col("patient_id") == series,
            pl.col("date") >= origin - timedelta(days=REFERENCE_HISTORY_DAYS),
            pl.col("date") < origin,
            pl.col("steps").is_not_null(),
        )
        first = worn["date"].min()
        assert isinstance(first, date)
        days = pl.DataFrame({"date": pl.date_range(first, origin, closed="left", eager=True)})
        history = days.join(worn, on="date", how="left")["steps"].interpolate().to_numpy()
        targets = pl.date_range(origin, origin + timedelta(days=YEAR - 1), eager=True)
        for model in (AutoETS(season_length=7), AutoARIMA(season_length=7)):
            made = model.forecast(y=history, h=YEAR, level=[80])
            frames.append(
                pl.DataFrame(
                    {
                        "series": series,
                        "cut": cut,
                        "model": model.alias,
                        "target_date": targets,
                        "yhat": made["mean"],
                        "yhat_lower": made["lo-80"],
                        "yhat_upper": made["hi-80"],
                    }
                ).with_columns(pl.col("yhat", "yhat_lower", "yhat_upper").clip(lower_bound=0))
            )
    return pl.concat(frames).with_columns(pl.col("cut").cast(pl.Int32))


def _scores(forecasts: pl.DataFrame, held: pl.DataFrame) -> pl.DataFrame:
    """Per ``kind, series, cut, model``: MAE, 80% coverage, mean width and days on the worn days
    of the held-back year, and ``ratio`` = MAE / the better baseline's MAE on the same series and
    cut."""
    per_model = (
        forecasts.join(held, on=["series", "cut", "target_date"])
        .group_by("kind", "series", "cut", "model")
        .agg(
            champion_of=pl.col("champion_of").first(),
            mae=(pl.col("actual") - pl.col("yhat")).abs().mean(),
            coverage=pl.col("actual").is_between("yhat_lower", "yhat_upper").mean(),
            width=(pl.col("yhat_upper") - pl.col("yhat_lower")).mean(),
            days=pl.len(),
        )
    )
    baseline = (
        per_model.filter(pl.col("model").is_in(BASELINE_MODELS))
        .group_by("kind", "series", "cut")
        .agg(baseline_mae=pl.col("mae").min())
    )
    return (
        per_model.join(baseline, on=["kind", "series", "cut"], how="left")
        .with_columns(ratio=pl.col("mae") / pl.col("baseline_mae"))
        .sort("kind", "cut", "series", "model")
    )


def _labelled(scores: pl.DataFrame) -> pl.DataFrame:
    """``scores`` with ``label``: the model, the champion as ``champion (its model names)``."""
    names = sorted(scores.filter(pl.col("model") == CHAMPION)["champion_of"].unique().to_list())
    champion = f"{CHAMPION} ({', '.join(names)})"
    return scores.with_columns(
        label=pl.when(pl.col("model") == CHAMPION).then(pl.lit(champion)).otherwise("model")
    )


def ratio_table(scores: pl.DataFrame) -> pl.DataFrame:
    """Ratio per model (rows) and series (columns), each series' cuts averaged, with the median
    and the worst (highest) over the series; best median first."""
    pooled = _labelled(scores).group_by("label", "series").agg(pl.col("ratio").mean())
    summary = pooled.group_by("label").agg(
        median=pl.col("ratio").median(), worst=pl.col("ratio").max()
    )
    wide = pooled.sort("series").pivot("series", index="label", values="ratio")
    return wide.join(summary, on="label").sort("median", "label", nulls_last=True)


def interval_table(scores: pl.DataFrame) -> pl.DataFrame:
    """Per model: the mean 80% coverage over the series (each series' cuts averaged), the
    series farthest from 80% (worst) and nearest to it (best), how many lie in 75-85%, and the
    mean width."""
    pooled = (
        _labelled(scores)
        .group_by("label", "series")
        .agg(pl.col("coverage").mean(), pl.col("width").mean())
        .with_columns(miss=(pl.col("coverage") - COVERAGE_TARGET).abs())
    )
    return (
        pooled.group_by("label")
        .agg(
            coverage=pl.col("coverage").mean(),
            worst=pl.col("coverage").sort_by("miss").last(),
            best=pl.col("coverage").sort_by("miss").first(),
            in_goal=pl.col("coverage").is_between(*GOAL).sum(),
            series=pl.len(),
            width=pl.col("width").mean(),
        )
        .sort("label")
    )


def _targets(ratios: pl.DataFrame, coverage: pl.DataFrame) -> dict[str, float | bool | None]:
    """The champion's figures beside the targets (median and worst ratio, mean coverage)."""
    champion_ratio = ratios.filter(pl.col("label").str.starts_with(CHAMPION))
    champion_coverage = coverage.filter(pl.col("label").str.starts_with(CHAMPION))
    if not champion_ratio.height:
        return {}
    median, worst = champion_ratio["median"].item(), champion_ratio["worst"].item()
    mean_coverage = champion_coverage["coverage"].item()
    return {
        "champion_median_ratio": median,
        "median_met": median is not None and median <= RATIO_TARGETS["median"],
        "champion_worst_ratio": worst,
        "worst_met": worst is not None and worst <= RATIO_TARGETS["worst"],
        "champion_coverage": mean_coverage,
        "coverage_met": mean_coverage is not None and GOAL[0] <= mean_coverage <= GOAL[1],
    }


def _print_tables(title: str, scores: pl.DataFrame) -> dict[str, Any]:
    """Print the ratio and interval tables of ``scores`` and the champion against the targets;
    returns them for the JSON output."""
    ratios, coverage = ratio_table(scores), interval_table(scores)
    targets = _targets(ratios, coverage)
    pooled = ", cuts averaged" if scores["cut"].n_unique() > 1 else ""
    with pl.Config(
        tbl_rows=60, tbl_cols=20, float_precision=3, tbl_width_chars=250, fmt_str_lengths=80
    ):
        print(f"\n## {title}: MAE / the better baseline's MAE (per series{pooled})\n")
        print(ratios)
        print(
            f"\n## {title}: 80% intervals (coverage over the series{pooled}; worst and best: "
            f"farthest from and nearest to 80%; in_goal: {GOAL[0]:.0%}-{GOAL[1]:.0%})\n"
        )
        print(coverage)
    if targets:
        print(
            f"champion: median ratio {targets['champion_median_ratio']:.3f} "
            f"(target <= {RATIO_TARGETS['median']}: {_verdict(targets['median_met'])}), "
            f"worst {targets['champion_worst_ratio']:.3f} "
            f"(target <= {RATIO_TARGETS['worst']}: {_verdict(targets['worst_met'])}), "
            f"coverage {targets['champion_coverage']:.1%} "
            f"(target {GOAL[0]:.0%}-{GOAL[1]:.0%}: {_verdict(targets['coverage_met'])})",
            flush=True,
        )
    return {
        "ratios": ratios.to_dicts(),
        "intervals": coverage.to_dicts(),
        "targets": targets,
    }


def _verdict(met: object) -> str:
    return "met" if met else "missed"


def _build_lake(
    lake_dir: Path,
    kind: str,
    daily: pl.DataFrame,
    cuts: pl.DataFrame,
    *,
    synthetic_patients: int,
    seed: int,
) -> None:
    """A fresh lake of the real series' histories before the cuts (and a synthetic population
    for the second kind)."""
    shutil.rmtree(lake_dir, ignore_errors=True)
    lake_dir.parent.mkdir(parents=True, exist_ok=True)
    if kind != LAKE_KINDS[0]:
        generate(lake_dir, synthetic_patients, seed)
    _ingest_histories(lake_dir, daily, cuts)


def year_ahead(
    root: Path,
    workdir: Path,
    *,
    synthetic_patients: int,
    seed: int,
    quick: bool,
    keep: bool,
    out: Path | None,
) -> None:
    """The ``--year-ahead`` mode (see the module docstring)."""
    # Throwaway lakes: training signs its artifacts with a key from the environment, a random one
    # per run unless the caller set it (never stored anywhere), as for the pseudonyms in common.
    os.environ.setdefault("MOBILITY_ARTIFACT_KEY", secrets.token_hex(32))
    daily = _long_series(root)
    cuts = year_ahead_cuts(daily)
    held = _held_back(daily, cuts)
    with pl.Config(tbl_rows=40):
        print("# cuts (origin: the day after the last worn day before the cut)\n")
        print(cuts)
    started = time.perf_counter()
    references = _reference_forecasts(daily, cuts)
    print(f"\nAutoETS and AutoARIMA fits: {time.perf_counter() - started:.0f} s", flush=True)
    runs: list[LakeRun] = []
    forecasts = []
    # --synthetic-patients 0: the real-only lakes alone
    kinds = LAKE_KINDS if synthetic_patients > 0 else LAKE_KINDS[:1]
    for kind in kinds:
        for cut in sorted(set(cuts["cut"])):
            mine = cuts.filter(pl.col("cut") == cut)
            label = "real-only" if kind == LAKE_KINDS[0] else "real-synthetic"
            lake_dir = workdir / "year-ahead" / f"{label}-cut{cut}"
            print(f"\n# {kind}, cut {cut}: {mine.height} series, lake {lake_dir}\n", flush=True)
            _build_lake(
                lake_dir, kind, daily, mine, synthetic_patients=synthetic_patients, seed=seed
            )
            seconds, error = run_pipeline(lake_dir, quick=quick)
            runs.append(LakeRun(kind, cut, seconds, error))
            print(f"pipeline ({kind}, cut {cut}): {seconds:.0f} s", flush=True)
            if error is not None:
                print(f"pipeline FAILED ({kind}, cut {cut}):\n{error}", flush=True)
                continue
            product = _product_forecasts(lake_dir)
            origins = product.select("series", "origin_date").unique().join(mine, on="series")
            moved = origins.filter(pl.col("origin_date") != pl.col("origin"))
            if moved.height:
                print(f"gold origins differ from the cuts' (scored where both cover):\n{moved}")
            reference = references.filter(pl.col("cut") == cut)
            forecasts.append(
                pl.concat(
                    [
                        product.drop("origin_date").with_columns(cut=pl.lit(cut, pl.Int32)),
                        reference,
                    ],
                    how="diagonal_relaxed",
                ).with_columns(kind=pl.lit(kind))
            )
            if not keep:
                shutil.rmtree(lake_dir)
    if not forecasts:
        sys.exit("no pipeline run succeeded: nothing to score")
    scores = _scores(pl.concat(forecasts, how="diagonal_relaxed"), held)
    figures: dict[str, Any] = {
        "quick_training": quick,
        "synthetic_patients": synthetic_patients,
        "cuts": cuts.to_dicts(),
        "pipeline_runs": [asdict(run) for run in runs],
        "lakes": {},
        "scores": scores.to_dicts(),
    }
    for kind in LAKE_KINDS:
        mine = scores.filter(pl.col("kind") == kind)
        print(f"\n\n# {kind}\n")
        for run in runs:
            if run.kind == kind:
                status = "ok" if run.error is None else "FAILED"
                print(f"pipeline cut {run.cut}: {run.seconds:.0f} s ({status})")
        if not mine.height:
            continue
        lake_figures = {"pooled": _print_tables(f"{kind}, cuts pooled", mine), "per_cut": {}}
        for cut in sorted(set(mine["cut"])):
            lake_figures["per_cut"][str(cut)] = _print_tables(
                f"{kind}, cut {cut}", mine.filter(pl.col("cut") == cut)
            )
        figures["lakes"][kind] = lake_figures
    if out is not None:
        out.write_text(json.dumps(figures, indent=1, default=str))
        print(f"\nfigures written to {out}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--intervals", action="store_true", help="score intervals (see above)")
    parser.add_argument(
        "--realdata-long", type=Path, default=ROOT.parent / "shared" / "realdata-long"
    )
    parser.add_argument("--calibration-lake", default=None)
    parser.add_argument("--patients", type=int, default=1000, help="synthetic patients")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--realdata", type=Path, default=ROOT.parent / "shared" / "realdata")
    parser.add_argument("--workdir", default="/tmp/mobility-bench")
    parser.add_argument("--tune-seconds", default="0")
    parser.add_argument("--year-ahead", action="store_true", help="the pipeline's lakes on cuts")
    parser.add_argument("--synthetic-patients", type=int, default=200)
    parser.add_argument("--quick", action="store_true", help="MOBILITY_QUICK_TRAINING")
    parser.add_argument("--keep", action="store_true", help="keep the --year-ahead lakes")
    parser.add_argument("--out", type=Path, default=None, help="--year-ahead figures as JSON")
    args = parser.parse_args()
    if args.year_ahead:
        if not args.realdata_long.is_dir():
            sys.exit(f"no long real series at {args.realdata_long}")
        year_ahead(
            args.realdata_long,
            Path(args.workdir),
            synthetic_patients=args.synthetic_patients,
            seed=args.seed,
            quick=args.quick,
            keep=args.keep,
            out=args.out,
        )
        return
    if args.intervals:
        if not args.realdata_long.is_dir():
            sys.exit(f"no long real series at {args.realdata_long}")
        intervals_on_long_series(args.realdata_long, args.calibration_lake)
        return
    if not args.realdata.is_dir():
        sys.exit(f"no real exports at {args.realdata}")
    lake = Path(args.workdir) / "real-series-lake"
    shutil.rmtree(lake, ignore_errors=True)
    generate(lake, args.patients, args.seed)
    synthetic = set(_patients(lake))
    apple = args.realdata / "apple-health" / "export.xml"
    fitabase = args.realdata / "fitabase" / "hourlySteps_merged.csv"
    mobility("--lake", str(lake), "ingest", str(apple), "--patient-id", "apple-1")
    mobility("--lake", str(lake), "ingest", str(fitabase), "--timezone", "America/Chicago")
    mobility("--lake", str(lake), "aggregate")
    mobility("--lake", str(lake), "features")
    started = time.perf_counter()
    mobility("--lake", str(lake), "train", "--force", "--tune-seconds", args.tune_seconds)
    print(f"train: {time.perf_counter() - started:.0f} s", flush=True)
    real = sorted(set(_patients(lake)) - synthetic)
    print(f"\n# real patients ({len(real)})\n", flush=True)
    _backtest(lake, 7, 3, real)
    _backtest(lake, 14, 1, real)
    print(f"\n# synthetic patients (first 200 of {len(synthetic)}), same settings\n", flush=True)
    _backtest(lake, 7, 3, sorted(synthetic)[:200])
    shutil.rmtree(lake, ignore_errors=True)


def _patients(lake: Path) -> list[str]:
    from lakehouse.catalog import PATIENTS
    from lakehouse.storage import Lake

    return list(Lake(str(lake)).read(PATIENTS)["patient_id"])


if __name__ == "__main__":
    main()
