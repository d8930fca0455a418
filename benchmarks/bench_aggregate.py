"""Benchmark: cold daily aggregation of a synthetic population, against a plain Polars reference.

For each population size: generate N patients straight into bronze, then time in separate child
processes (so each peak RSS is its own):

- ``aggregate``: ``jobs.aggregate.run`` cold (empty silver), end to end: read bronze, split, de-
  duplicate, write silver/daily_steps, record the run;
- ``reference``: a plain Polars ``group_by(patient_id, date).sum()`` over the same bronze table
  (local date from each sample's offset; no splitting, no de-duplication, nothing written).

Prints the bronze table's bytes on disk per sample and its files, then samples/s, wall time and
peak RSS for both and the ratio aggregate/reference.

    python benchmarks/bench_aggregate.py --patients 100 1000 [--workdir /tmp/mobility-bench]
"""

from __future__ import annotations

import json
import resource
import shutil
import time
from pathlib import Path

from common import arguments, generate, measure, print_table


def _child(kind: str, lake_uri: str) -> None:
    import polars as pl

    from jobs import aggregate
    from lakehouse.catalog import STEP_SAMPLES
    from lakehouse.storage import Lake

    lake = Lake(lake_uri)
    info = lake.info(STEP_SAMPLES)
    samples = info.rows
    start = time.perf_counter()
    if kind == "aggregate":
        summary = aggregate.run(lake, full=True)
        days = summary.days_out
    else:
        local_date = (
            pl.col("start_ts") + pl.duration(minutes=pl.col("utc_offset_minutes"))
        ).dt.date()
        days = (
            lake.scan(STEP_SAMPLES)
            .group_by("patient_id", local_date.alias("date"))
            .agg(pl.col("steps").sum())
            .collect()
            .height
        )
    wall = time.perf_counter() - start
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        json.dumps(
            {
                "samples": samples,
                "days": days,
                "wall": wall,
                "rss_mb": rss_mb,
                "bronze_bytes": info.size_bytes,
                "bronze_files": info.files,
            }
        )
    )


def main() -> None:
    args = arguments(__doc__, ["aggregate", "reference"])
    if args.child:
        _child(args.child, args.lake)
        return

    rows = []
    for n in args.patients:
        lake_dir = Path(args.workdir) / f"lake-{n}"
        shutil.rmtree(lake_dir, ignore_errors=True)
        start = time.perf_counter()
        generate(lake_dir, n, args.seed)
        generate_wall = time.perf_counter() - start
        aggregate_run = measure(__file__, "aggregate", str(lake_dir))
        reference_run = measure(__file__, "reference", str(lake_dir))
        samples = aggregate_run["samples"]
        row = {
            "patients": n,
            "samples": int(samples),
            "generate_s": round(generate_wall, 1),
            "bronze_bytes_per_sample": round(aggregate_run["bronze_bytes"] / samples, 2),
            "bronze_files": aggregate_run["bronze_files"],
            "aggregate_s": round(aggregate_run["wall"], 2),
            "aggregate_samples_per_s": round(samples / aggregate_run["wall"]),
            "aggregate_peak_rss_mb": round(aggregate_run["rss_mb"]),
            "reference_s": round(reference_run["wall"], 2),
            "reference_samples_per_s": round(samples / reference_run["wall"]),
            "reference_peak_rss_mb": round(reference_run["rss_mb"]),
            "ratio_aggregate_to_reference": round(aggregate_run["wall"] / reference_run["wall"], 2),
            "patient_days": int(aggregate_run["days"]),
        }
        rows.append(row)
        print(json.dumps(row), flush=True)
        if not args.keep:
            shutil.rmtree(lake_dir, ignore_errors=True)
    print_table(rows)


if __name__ == "__main__":
    main()
