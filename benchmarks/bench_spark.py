"""Benchmark: the local engine against Spark ``local[2]``, stage by stage, on the same lakes.

For each population size: generate N patients (3 years) straight into bronze, then in separate
child processes (each with its own peak RSS):

- ``local``: cold full ``aggregate``, full ``features``, then (untimed) a small ``train`` so the
  registry has EBMs, then ``forecast`` of every patient;
- ``spark``: a Spark session on ``--master`` (default ``local[2]``, timed on its own), then the
  same three stages on Spark (``aggregate --full``, ``features --full``, ``forecast``: the same
  rows, replaced).

Per stage and engine: wall seconds, samples/s (the population's raw bronze samples per second of
the stage: one measure of population size for every stage), patients/s, and, on Spark, the part
of the wall time the driver spent committing through delta-rs (the serial part that a bigger
cluster does not shorten), and the CPU seconds ops/job_runs recorded for the run (this process,
Spark's JVM and its Python workers: less sensitive than wall time to other work on a shared
machine). Then how each grows with patients and the ratio Spark/local.

    python benchmarks/bench_spark.py --patients 100 1000 [--master local[2]]
"""

from __future__ import annotations

import json
import resource
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from common import generate, measure, mobility, print_table

STAGES = ("aggregate", "features", "forecast")


def _timed_commits() -> dict[str, float]:
    """Count the seconds spent in the lake's commits (patched in this benchmark process only)."""
    from lakehouse.storage import Lake

    spent = {"seconds": 0.0}
    for name in ("replace", "replace_stream"):
        original = getattr(Lake, name)

        def timed(*args: Any, _original: Any = original, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return _original(*args, **kwargs)
            finally:
                spent["seconds"] += time.perf_counter() - start

        setattr(Lake, name, timed)
    return spent


def _last_cpu_seconds(lake: Any, job: str) -> float:
    import polars as pl

    from lakehouse.catalog import JOB_RUNS

    runs = lake.read(JOB_RUNS).filter(pl.col("job") == job).sort("started_at")
    return float(runs["cpu_seconds"][-1])


def _child(kind: str, lake_uri: str, master: str) -> None:
    from jobs import aggregate, forecast
    from jobs.features import run as features
    from lakehouse.storage import Lake

    lake = Lake(lake_uri)
    commits = _timed_commits()
    out: dict[str, Any] = {}
    spark = None
    if kind == "spark":
        from jobs.engine.spark import start_spark

        start = time.perf_counter()
        spark = start_spark(master)
        out["session_s"] = time.perf_counter() - start
    for stage in STAGES:
        commits["seconds"] = 0.0
        start = time.perf_counter()
        if stage == "aggregate":
            done = aggregate.run(lake, full=True, engine=spark)
            out["samples"] = done.samples_in
        elif stage == "features":
            made = features.run(lake, full=True, engine=spark)
            out["patient_days"] = made.days_in
        else:
            forecasted = forecast.run(lake, engine=spark)
            out["patients"] = forecasted.patients
        out[f"{stage}_s"] = time.perf_counter() - start
        out[f"{stage}_commit_s"] = commits["seconds"]
        # CPU seconds of the run (this process, Spark's JVM and its Python workers), as
        # ops/job_runs recorded them: less sensitive than wall time to other work on the machine
        out[f"{stage}_cpu_s"] = _last_cpu_seconds(lake, stage)
        if stage == "features" and kind == "local":
            # untrained lakes forecast with every model, Prophet too: train as the pipeline
            # would (smaller, untimed) so the forecast runs the registered EBMs
            train_start = time.perf_counter()
            mobility(
                "--lake",
                lake_uri,
                "train",
                "--force",
                "--patients-per-cluster",
                "25",
                "--origins",
                "1",
                "--tune-seconds",
                "0",
            )
            out["train_untimed_s"] = time.perf_counter() - train_start
    if spark is not None:
        spark.stop()
    out["rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(out))


def _rows(patients: int, local: dict[str, Any], spark: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for stage in STAGES:
        for engine, figures in (("local", local), ("spark", spark)):
            wall = figures[f"{stage}_s"]
            rows.append(
                {
                    "patients": patients,
                    "stage": stage,
                    "engine": engine,
                    "wall_s": round(wall, 2),
                    "cpu_s": round(figures[f"{stage}_cpu_s"], 1),
                    "commit_s": round(figures[f"{stage}_commit_s"], 2)
                    if engine == "spark"
                    else "-",
                    "samples_per_s": f"{local['samples'] / wall:,.0f}",
                    "patients_per_s": round(local["patients"] / wall, 1),
                    "cpu_ms_per_patient": round(
                        1000 * figures[f"{stage}_cpu_s"] / local["patients"]
                    ),
                    "spark/local": round(spark[f"{stage}_s"] / local[f"{stage}_s"], 2)
                    if engine == "spark"
                    else "-",
                }
            )
    return rows


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--patients", type=int, nargs="+", default=[100, 1000])
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--master", default="local[2]")
    parser.add_argument("--workdir", default="/tmp/mobility-bench")
    parser.add_argument("--keep", action="store_true", help="keep the generated lakes")
    parser.add_argument("--child", choices=["local", "spark"])
    parser.add_argument("--lake")
    args = parser.parse_args()
    if args.child:
        _child(args.child, args.lake, args.master)
        return
    rows: list[dict[str, Any]] = []
    walls: dict[tuple[int, str, str], float] = {}
    for patients in args.patients:
        lake_dir = Path(args.workdir) / f"spark-lake-{patients}"
        shutil.rmtree(lake_dir, ignore_errors=True)
        generate(lake_dir, patients, args.seed)
        local = measure(__file__, "local", str(lake_dir))
        print(json.dumps({"patients": patients, "local": local}), flush=True)
        spark = measure(__file__, "spark", str(lake_dir), "--master", args.master)
        print(json.dumps({"patients": patients, "spark": spark}), flush=True)
        rows += _rows(patients, local, spark)
        for stage in STAGES:
            walls[(patients, stage, "local")] = local[f"{stage}_s"]
            walls[(patients, stage, "spark")] = spark[f"{stage}_s"]
        if not args.keep:
            shutil.rmtree(lake_dir, ignore_errors=True)
    print_table(rows)
    if len(args.patients) > 1:
        low, high = min(args.patients), max(args.patients)
        print(f"\ngrowth of wall time from {low:,} to {high:,} patients ({high / low:.0f}x):")
        for stage in STAGES:
            for engine in ("local", "spark"):
                growth = walls[(high, stage, engine)] / walls[(low, stage, engine)]
                print(f"  {stage:9} {engine:5} x{growth:.1f}")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
