"""Benchmark: the features job on synthetic populations of growing size.

For each population size: generate N patients (3 years) straight into bronze and aggregate them
(not timed), then time in separate child processes (so each peak RSS is its own):

- ``full``: ``jobs.features.run`` cold (no silver/features yet), end to end: read daily_steps and
  the clinical tables, compute every feature, stream the rows into one commit, record the run;
- ``daily``: the next day's incremental run, after one more day of daily_steps per patient was
  appended (what the daily pipeline does).

Prints feature rows/s, wall time, peak RSS and how the cost per patient grows from the first size
to the last (1.0 = linear).

    python benchmarks/bench_features.py --patients 100 1000 [--workdir /tmp/mobility-bench]
"""

from __future__ import annotations

import json
import resource
import shutil
import time
from pathlib import Path

from common import arguments, generate, measure, mobility, print_table


def _child(kind: str, lake_uri: str) -> None:
    import polars as pl

    from jobs.features import run as features_job
    from lakehouse.catalog import DAILY_STEPS
    from lakehouse.storage import Lake

    lake = Lake(lake_uri)
    if kind == "daily":
        daily = lake.read(DAILY_STEPS)
        last = daily.group_by("patient_id").agg(pl.all().sort_by("date").last())
        next_day = last.with_columns(date=pl.col("date") + pl.duration(days=1)).with_columns(
            month=pl.col("date").dt.strftime("%Y-%m")
        )
        lake.append(DAILY_STEPS, next_day)
        del daily, last, next_day
    start = time.perf_counter()
    summary = features_job.run(lake, full=kind == "full")
    wall = time.perf_counter() - start
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        json.dumps(
            {
                "mode": summary.mode,
                "days_in": summary.days_in,
                "rows_out": summary.rows_out,
                "wall": wall,
                "rss_mb": rss_mb,
            }
        )
    )


def main() -> None:
    args = arguments(__doc__, ["full", "daily"])
    if args.child:
        _child(args.child, args.lake)
        return

    rows = []
    for n in args.patients:
        lake_dir = Path(args.workdir) / f"features-lake-{n}"
        shutil.rmtree(lake_dir, ignore_errors=True)
        start = time.perf_counter()
        generate(lake_dir, n, args.seed)
        mobility("--lake", str(lake_dir), "aggregate")
        prepare = time.perf_counter() - start
        full = measure(__file__, "full", str(lake_dir))
        daily = measure(__file__, "daily", str(lake_dir))
        row = {
            "patients": n,
            "prepare_s": round(prepare, 1),
            "patient_days_in": int(full["days_in"]),
            "feature_rows": int(full["rows_out"]),
            "full_s": round(full["wall"], 2),
            "full_rows_per_s": round(full["rows_out"] / full["wall"]),
            "full_peak_rss_mb": round(full["rss_mb"]),
            "full_ms_per_patient": round(1000 * full["wall"] / n, 2),
            "daily_mode": daily["mode"],
            "daily_rows": int(daily["rows_out"]),
            "daily_s": round(daily["wall"], 2),
            "daily_peak_rss_mb": round(daily["rss_mb"]),
        }
        rows.append(row)
        print(json.dumps(row), flush=True)
        if not args.keep:
            shutil.rmtree(lake_dir, ignore_errors=True)
    print_table(rows)
    if len(rows) > 1:
        first, last = rows[0], rows[-1]
        growth = (last["full_s"] / first["full_s"]) / (last["patients"] / first["patients"])
        print(
            f"\ncost per patient at {last['patients']} vs {first['patients']} patients: "
            f"{growth:.2f} (1.0 = linear)"
        )


if __name__ == "__main__":
    main()
