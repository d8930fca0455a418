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
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
from common import generate, mobility

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
    args = parser.parse_args()
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
