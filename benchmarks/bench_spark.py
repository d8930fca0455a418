"""Benchmark: the local engine against the Spark engine, stage by stage, on the same lakes.

For each population size: generate N patients (3 years) straight into bronze, then in separate
child processes (each with its own peak RSS):

- ``local``: full ``aggregate``, full ``features``, then (untimed) a small ``train`` so the
  registry has EBMs, then ``forecast`` of every patient; each stage runs twice and the second
  run, which replaces the rows of the first, is timed;
- ``spark``: a Spark session on the master (timed on its own), then the same three stages on
  Spark (``aggregate --full``, ``features --full``, ``forecast``: the same rows, replaced), so
  both engines are timed doing the same work, commits included.

Two shapes:

- default: Spark on ``--master`` (``local[2]``: driver and executors in one JVM), the lake in a
  local folder;
- ``--cluster W``: a standalone master and W workers of one core each, started from pyspark's
  launcher on loopback (tests/spark_cluster.py), the lake on an S3 server on loopback (moto's),
  the workers knowing only its endpoint and credentials: the production shape, measured on one
  machine.

Per stage and engine: wall seconds, samples/s (the population's raw bronze samples per second of
the stage), patients/s, on Spark the part of the wall time the driver spent committing through
delta-rs (the serial part a bigger cluster does not shorten), and CPU seconds: those
ops/job_runs recorded for the run (this process and its children: on ``local[2]`` Spark's JVM and
its Python workers), plus, on a cluster, the CPU the master, workers, executors and their Python
workers spent during the stage (their process trees, measured around it). The ratio Spark/local
of CPU per stage is the cost of the engine (targets: aggregate <= 2x, features and forecast
<= 1.5x).

    python benchmarks/bench_spark.py --patients 100 1000 [--master local[2]]
    python benchmarks/bench_spark.py --patients 1000 --cluster 2
"""

from __future__ import annotations

import json
import os
import resource
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from common import END_DATE, measure, mobility, print_table

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


def _tree_cpu_seconds(pids: list[int]) -> float:
    """CPU seconds (user + system) of the processes ``pids`` and everything running under them."""
    import psutil

    total = 0.0
    for pid in pids:
        try:
            root = psutil.Process(pid)
            processes = [root, *root.children(recursive=True)]
        except psutil.Error:
            continue
        for process in processes:
            try:
                times = process.cpu_times()
            except psutil.Error:
                continue
            total += times.user + times.system + times.children_user + times.children_system
    return total


def _run_stage(stage: str, lake: Any, engine: Any) -> None:
    from jobs import aggregate, forecast
    from jobs.features import run as features

    if stage == "aggregate":
        aggregate.run(lake, full=True, engine=engine)
    elif stage == "features":
        features.run(lake, full=True, engine=engine)
    else:
        forecast.run(lake, engine=engine)


def _child(kind: str, lake_uri: str, master: str, cluster_pids: list[int]) -> None:
    from jobs import aggregate, forecast
    from jobs.features import run as features
    from lakehouse.settings import get_settings
    from lakehouse.storage import Lake

    lake = Lake(lake_uri, storage_options=get_settings().storage_options())
    commits = _timed_commits()
    out: dict[str, Any] = {}
    spark = None
    if kind == "spark":
        from jobs.engine.spark import start_spark

        start = time.perf_counter()
        spark = start_spark(master)
        out["session_s"] = time.perf_counter() - start
    for stage in STAGES:
        if kind == "local":
            # both engines are timed replacing rows that exist (the Spark child runs after this
            # one on the same lake), so the local engine makes them first, untimed
            _run_stage(stage, lake, None)
        commits["seconds"] = 0.0
        cluster_cpu = _tree_cpu_seconds(cluster_pids)
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
        if cluster_pids:  # the cluster's processes are not this process's children
            out[f"{stage}_cluster_cpu_s"] = _tree_cpu_seconds(cluster_pids) - cluster_cpu
            out[f"{stage}_cpu_s"] += out[f"{stage}_cluster_cpu_s"]
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
                    "cpu spark/local": round(spark[f"{stage}_cpu_s"] / local[f"{stage}_cpu_s"], 2)
                    if engine == "spark"
                    else "-",
                }
            )
    return rows


ROOT = Path(__file__).resolve().parents[1]


@contextmanager
def _object_store_lake(workdir: Path, workers: int) -> Iterator[tuple[str, str, list[int]]]:
    """moto's S3 server and a standalone cluster of ``workers`` one-core workers on loopback,
    the environment of this process (and so of its children) set for a new bucket. Yields the
    lake's URI, the master's URL and the cluster's process ids."""
    import boto3

    sys.path.insert(0, str(ROOT))  # the cluster launcher of the tests
    from tests.spark_cluster import free_port, standalone_cluster, wait_until

    port = free_port()
    moto = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"
    credentials = {
        "AWS_ACCESS_KEY_ID": "bench-key",
        "AWS_SECRET_ACCESS_KEY": "bench-secret",  # moto accepts any: secrets-scan: allow
        "AWS_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ALLOW_HTTP": "true",
    }
    try:
        wait_until(lambda: _answers(endpoint), "moto's S3 server")
        os.environ.update(credentials, PYSPARK_PYTHON=sys.executable)
        # model artifacts on an object store are signed with a key from the environment
        os.environ.setdefault("MOBILITY_ARTIFACT_KEY", secrets.token_urlsafe(32))
        boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(
            Bucket="bench-lake"
        )
        with standalone_cluster(
            workdir / "cluster", workers=workers, memory="4g", worker_env=credentials
        ) as cluster:
            pids = [cluster.master.pid, *(w.process.pid for w in cluster.workers)]
            yield "s3://bench-lake/lake", cluster.master_url, pids
    finally:
        moto.kill()
        moto.wait(timeout=30)


def _answers(url: str) -> bool:
    import urllib.error
    import urllib.request

    try:
        urllib.request.urlopen(url, timeout=1).close()
    except urllib.error.HTTPError:
        return True
    except OSError:
        return False
    return True


def _measure_population(
    lake_uri: str, patients: int, seed: int, master: str, cluster_pids: list[int]
) -> tuple[dict[str, Any], dict[str, Any]]:
    mobility(
        "--lake",
        lake_uri,
        "generate",
        "--patients",
        str(patients),
        "--seed",
        str(seed),
        "--end-date",
        END_DATE,
    )
    local = measure(__file__, "local", lake_uri)
    print(json.dumps({"patients": patients, "local": local}), flush=True)
    pids = ["--cluster-pids", *map(str, cluster_pids)] if cluster_pids else []
    spark = measure(__file__, "spark", lake_uri, "--master", master, *pids)
    print(json.dumps({"patients": patients, "spark": spark}), flush=True)
    return local, spark


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--patients", type=int, nargs="+", default=[100, 1000])
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--master", default="local[2]")
    parser.add_argument(
        "--cluster",
        type=int,
        metavar="WORKERS",
        help="a standalone cluster of this many one-core workers and a lake on S3 (moto's "
        "server), all on loopback, instead of --master and a local folder",
    )
    parser.add_argument("--workdir", default="/tmp/mobility-bench")
    parser.add_argument("--keep", action="store_true", help="keep the generated lakes")
    parser.add_argument("--child", choices=["local", "spark"])
    parser.add_argument("--lake")
    parser.add_argument("--cluster-pids", type=int, nargs="*", default=[])
    args = parser.parse_args()
    if args.child:
        _child(args.child, args.lake, args.master, args.cluster_pids)
        return
    rows: list[dict[str, Any]] = []
    walls: dict[tuple[int, str, str], float] = {}
    workdir = Path(args.workdir)
    for patients in args.patients:
        if args.cluster:
            shutil.rmtree(workdir / "cluster", ignore_errors=True)
            with _object_store_lake(workdir, args.cluster) as (lake_uri, master, pids):
                print(json.dumps({"lake": lake_uri, "master": master}), flush=True)
                local, spark = _measure_population(lake_uri, patients, args.seed, master, pids)
        else:
            lake_dir = workdir / f"spark-lake-{patients}"
            shutil.rmtree(lake_dir, ignore_errors=True)
            local, spark = _measure_population(str(lake_dir), patients, args.seed, args.master, [])
            if not args.keep:
                shutil.rmtree(lake_dir, ignore_errors=True)
        rows += _rows(patients, local, spark)
        for stage in STAGES:
            walls[(patients, stage, "local")] = local[f"{stage}_s"]
            walls[(patients, stage, "spark")] = spark[f"{stage}_s"]
    print_table(rows)
    targets = {"aggregate": 2.0, "features": 1.5, "forecast": 1.5}
    print("\nCPU of the Spark engine against the local engine, per stage (target):")
    for row in rows:
        if row["engine"] == "spark":
            ratio, target = row["cpu spark/local"], targets[row["stage"]]
            verdict = "met" if ratio <= target else "NOT met"
            print(
                f"  {row['patients']:,} patients, {row['stage']}: {ratio}x (<= {target}x) {verdict}"
            )
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
