"""Benchmark: training and batch forecasts on a synthetic population.

Generates N patients (3 years) straight into bronze, runs aggregate and features (not timed), then
times in separate child processes (each peak RSS its own):

- ``prophet``: Prophet fit + 365-day predict for 50 patients, one at a time (median, p90);
- ``train``: ``mobility train --force`` (EBM tuning within ``--tune-seconds``, 120 s as in the
  pipeline; backtests of every model on up to 200 patients per cluster, 3 origins, then the final
  EBM fits); prints the league table and the tuned parameters;
- ``forecast``: the whole ``forecast`` stage for every patient (patients/s on 2 cores);
- ``on-demand``: one patient's forecast from the registered models, 100 patients 3 times
  (median, p95).

Prints the figures and the projection of a 100,000-patient forecast refresh on 2 cores.

    python benchmarks/bench_forecast.py --patients 1000 [--workdir /tmp/mobility-bench]
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import statistics
import time
from pathlib import Path

from common import generate, measure, mobility


def _prophet(lake_uri: str) -> dict[str, float]:
    from datetime import timedelta

    import polars as pl

    from jobs.panel import load_panel
    from lakehouse.catalog import PATIENTS
    from lakehouse.storage import Lake
    from models.prophet_model import fit_and_forecast

    lake = Lake(lake_uri)
    ids = lake.read(PATIENTS)["patient_id"].sort().head(50).to_list()
    panel = load_panel(lake, patients=ids)
    seconds = []
    for patient in ids:
        history = panel.daily.filter(pl.col("patient_id") == patient, pl.col("steps").is_not_null())
        if history.height < 28:
            continue
        last = history["date"].max()
        courses = panel.therapies.filter(pl.col("patient_id") == patient).to_dicts()
        start = time.perf_counter()
        origin = last + timedelta(days=1)  # type: ignore[operator]
        fit_and_forecast(patient, history.to_dicts(), courses, origin, 365)
        seconds.append(time.perf_counter() - start)
    seconds.sort()
    return {
        "fits": len(seconds),
        "median_s": statistics.median(seconds),
        "p90_s": seconds[int(0.9 * (len(seconds) - 1))],
    }


def _on_demand(lake_uri: str) -> dict[str, float]:
    from jobs.forecast import OnDemandForecaster
    from lakehouse.catalog import PATIENTS
    from lakehouse.storage import Lake

    lake = Lake(lake_uri)
    forecaster = OnDemandForecaster(lake)  # loads the registered models once
    ids = lake.read(PATIENTS)["patient_id"].sort().head(100).to_list()
    from lakehouse.errors import InputError

    forecaster.forecast(ids[0])  # warm-up
    seconds = []
    for _ in range(3):
        for patient in ids:
            start = time.perf_counter()
            try:
                forecaster.forecast(patient)
            except InputError:  # too little history: the dashboard shows the batch forecast
                continue
            seconds.append(time.perf_counter() - start)
    seconds.sort()
    return {
        "patients": len(seconds),
        "median_ms": 1000 * statistics.median(seconds),
        "p95_ms": 1000 * seconds[int(0.95 * (len(seconds) - 1))],
    }


def _child(kind: str, lake_uri: str, tune_seconds: float) -> None:
    start = time.perf_counter()
    out: dict[str, object] = {}
    if kind == "prophet":
        out.update(_prophet(lake_uri))
    elif kind == "train":
        from jobs import train
        from lakehouse.storage import Lake

        summary = train.run(Lake(lake_uri), force=True, tune_seconds=tune_seconds)
        out["league"] = summary.describe()
        out["tuned"] = summary.tuned
        out["patients"] = summary.patients
    elif kind == "forecast":
        from jobs import forecast
        from lakehouse.storage import Lake

        done = forecast.run(Lake(lake_uri))
        out.update(patients=done.patients, rows=done.forecast_rows, explained=done.explanation_rows)
    else:
        out.update(_on_demand(lake_uri))
    out["wall"] = time.perf_counter() - start
    out["rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(out))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--patients", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--workdir", default="/tmp/mobility-bench")
    parser.add_argument("--keep", action="store_true", help="keep the generated lake")
    parser.add_argument("--child", choices=["prophet", "train", "forecast", "on-demand"])
    parser.add_argument("--lake")
    parser.add_argument("--tune-seconds", type=float, default=120.0)
    args = parser.parse_args()
    if args.child:
        _child(args.child, args.lake, args.tune_seconds)
        return
    lake_dir = Path(args.workdir) / f"forecast-lake-{args.patients}"
    shutil.rmtree(lake_dir, ignore_errors=True)
    generate(lake_dir, args.patients, args.seed)
    mobility("--lake", str(lake_dir), "aggregate")
    mobility("--lake", str(lake_dir), "features")
    prophet = measure(__file__, "prophet", str(lake_dir))
    print(json.dumps({"prophet_fit_predict": prophet}), flush=True)
    tune = f"--tune-seconds={args.tune_seconds}"
    trained = measure(__file__, "train", str(lake_dir), tune)
    print(trained.pop("league"))
    print(json.dumps({"train": trained}), flush=True)
    forecast = measure(__file__, "forecast", str(lake_dir))
    print(json.dumps({"forecast": forecast}), flush=True)
    on_demand = measure(__file__, "on-demand", str(lake_dir))
    print(json.dumps({"on_demand": on_demand}), flush=True)
    per_second = forecast["patients"] / forecast["wall"]
    print(
        f"\nforecast stage: {per_second:.1f} patients/s on 2 cores -> 100,000 patients in "
        f"{100_000 / per_second / 3600:.2f} h (projected, linear)"
    )
    if not args.keep:
        shutil.rmtree(lake_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
