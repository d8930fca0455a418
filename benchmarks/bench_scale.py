"""Benchmark: the whole product at scale, stage by stage, on one machine (issue 22).

For a synthetic population of ``--patients`` (``--years`` each, seed 7, ending on the fixed
benchmark date), in order, each stage in its own process (``mobility ...``) so its peak RSS and
CPU are its own:

``generate`` (straight into bronze), ``aggregate``, ``features``, ``train`` (forced, the
defaults), ``forecast``, ``monitor``, ``check`` (``lake check``), ``dashboard`` (cold renders of
the cohort and patient pages and the Cohort SQL example, by ``bench_dashboard.py``'s children),
then ``new-day`` (one more day of samples for every patient appended to bronze: each patient's
samples of the same weekday a week before, moved 7 days on) and ``daily`` (``mobility pipeline``
on it: the incremental daily run).

Per stage: wall seconds, CPU seconds (user + system of the process and the processes it waited
for), peak RSS, and after it the data files of every table (active in the Delta log) and bytes
on disk (each table's folder: old versions not vacuumed yet included).

Resumable: each finished stage is recorded in ``<workdir>/scale-<patients>/results.json`` (with
the figures) and skipped when the script runs again; ``--redo STAGE`` runs one again (and the
ones after it when they are asked for). A stage that fails stops the run with its error; its
record is not written. The lake lives in ``<workdir>/scale-<patients>/lake``.

    python benchmarks/bench_scale.py --patients 1000 [--years 3] [--workdir /tmp/mobility-scale]
    python benchmarks/bench_scale.py --patients 100000 --years 2 --stages generate aggregate
    python benchmarks/bench_scale.py --patients 100000 --years 2   # resumes where it stopped
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from common import END_DATE, measure, print_table

STAGES = (
    "generate",
    "aggregate",
    "features",
    "train",
    "forecast",
    "monitor",
    "check",
    "dashboard",
    "new-day",
    "daily",
)
# Targets on 2 cores (issue 22).
TARGET_PIPELINE_S = 2 * 3600
TARGET_DAILY_S = 15 * 60
TARGET_RSS_MB = 8 * 1024
TARGET_PATIENT_PAGE_S = 0.5
TARGET_COHORT_PAGE_S = 1.0
HERE = Path(__file__).resolve().parent


def _run(command: list[str], env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run a command to its end: wall and CPU seconds, peak RSS (its own process tree: the
    command and the processes it waited for), the last lines it printed."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        started = time.perf_counter()
        process = subprocess.Popen(command, env=env, stdout=out, stderr=err)
        # reaped here rather than by Popen.wait: wait4 gives the process tree's usage
        _, status, usage = os.wait4(process.pid, 0)
        wall = time.perf_counter() - started
        process.returncode = code = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        printed = out.read().decode(errors="replace").strip().splitlines()
        errors = err.read().decode(errors="replace").strip().splitlines()
    if code:
        tail = (errors or printed)[-20:]
        raise RuntimeError(f"{' '.join(command[2:6])} failed ({code}):\n" + "\n".join(tail))
    return {
        "wall_s": round(wall, 1),
        "cpu_s": round(usage.ru_utime + usage.ru_stime, 1),
        "peak_rss_mb": round(usage.ru_maxrss / 1024),
        "output": printed[-3:],
    }


def _mobility(lake: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "jobs", "--lake", str(lake), *args]


def _stage_command(stage: str, lake: Path, patients: int, years: float, seed: int) -> list[str]:
    commands = {
        "generate": (
            "generate",
            "--patients",
            str(patients),
            "--seed",
            str(seed),
            "--years",
            f"{years:g}",
            "--end-date",
            END_DATE,
        ),
        "aggregate": ("aggregate",),
        "features": ("features",),
        "train": ("train", "--force"),
        "forecast": ("forecast",),
        "monitor": ("monitor",),
        "check": ("lake", "check"),
        "daily": ("pipeline",),
    }
    return _mobility(lake, *commands[stage])


def _tables(lake: Path) -> dict[str, dict[str, int]]:
    """Per table: active data files, their bytes, and the bytes of its folder on disk."""
    from lakehouse.catalog import ALL_TABLES
    from lakehouse.storage import Lake

    store = Lake(str(lake))
    out = {}
    for table in ALL_TABLES:
        folder = lake / table.path
        if not store.exists(table):
            continue
        info = store.info(table)
        on_disk = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
        out[table.path] = {
            "files": info.files,
            "rows": info.rows,
            "bytes": info.size_bytes,
            "bytes_on_disk": on_disk,
        }
    return out


def _new_day(lake: Path) -> dict[str, Any]:
    """Append one more day for every patient: the samples of each patient's last local day's
    weekday a week before it, moved 7 days on (same patients, sources, sizes). Timed like a
    stage by the caller; returns the day and the samples appended."""
    figures = _run([sys.executable, __file__, "--child", "new-day", "--lake", str(lake)])
    figures.update(json.loads(figures["output"][-1]))
    return figures


def append_new_day(lake_uri: str) -> dict[str, Any]:
    """The ``new-day`` stage's work (in its own process)."""
    from datetime import timedelta

    import polars as pl

    from lakehouse.catalog import STEP_SAMPLES
    from lakehouse.storage import Lake

    lake = Lake(lake_uri)
    bronze = lake.scan(STEP_SAMPLES)
    local = (pl.col("start_ts") + pl.duration(minutes=pl.col("utc_offset_minutes"))).dt.date()
    # the day after the last local day with samples (a UTC day would skip one now and then,
    # and the week before it could then be a day without samples)
    newest = bronze.select(pl.col("start_ts").max()).collect().item()
    recent = [(newest - timedelta(days=31)).strftime("%Y-%m"), newest.strftime("%Y-%m")]
    last = bronze.filter(pl.col("month").is_in(recent)).select(local.max()).collect().item()
    day = last + timedelta(days=1)
    week = timedelta(days=7)
    source_day = pl.lit(day - week)
    month = (day - week).strftime("%Y-%m")
    samples = (
        bronze.filter(pl.col("month").is_in([month, day.strftime("%Y-%m")]))
        .filter(local == source_day)
        .with_columns(start_ts=pl.col("start_ts") + week, end_ts=pl.col("end_ts") + week)
        .with_columns(month=pl.col("start_ts").dt.strftime("%Y-%m"))
        .sort("patient_id", "source", "start_ts")
        .collect()
    )
    lake.append(STEP_SAMPLES, samples, metadata={"job": "bench_scale new day"})
    return {"day": day.isoformat(), "samples": samples.height}


def _dashboard(lake: Path) -> dict[str, Any]:
    """Cold renders (cohort page, patient page) and the SQL example, median of 3 each."""
    script = str(HERE / "bench_dashboard.py")
    pages = measure(script, "pages", str(lake), "--runs=3")
    sql = measure(script, "sql", str(lake), "--runs=3")
    result = pages["result"]
    return {
        "cohort_cold_s": round(result["cohort page"]["cold"]["median_s"], 3),
        "cohort_warm_up_s": round(result["cohort page"]["server warm-up"]["median_s"], 3),
        "cohort_after_warm_up_s": round(result["cohort page"]["after the warm-up"]["median_s"], 3),
        "patient_cold_s": round(result["patient page"]["cold"]["median_s"], 3),
        "patient_after_warm_up_s": round(
            result["patient page"]["after the warm-up"]["median_s"], 3
        ),
        "patient_next_s": round(result["patient page"]["other patient"]["median_s"], 3),
        "sql_example_s": round(
            next(
                figures["median_s"]
                for mode, figures in sql["result"]["cohort SQL example"].items()
                if not mode.startswith("first")
            ),
            3,
        ),
        "peak_rss_mb": round(max(pages["rss_mb"], sql["rss_mb"])),
    }


def _report(results: dict[str, Any]) -> None:
    rows = []
    for stage in STAGES:
        if stage not in results["stages"]:
            continue
        figures = results["stages"][stage]
        rows.append(
            {
                "stage": stage,
                "wall_s": figures.get("wall_s", "-"),
                "cpu_s": figures.get("cpu_s", "-"),
                "peak_rss_mb": figures.get("peak_rss_mb", "-"),
                "finished": figures["finished"],
            }
        )
    print_table(rows)
    stages = results["stages"]
    pipeline = [s for s in ("aggregate", "features", "train", "forecast", "monitor") if s in stages]
    total = sum(stages[s]["wall_s"] for s in pipeline)
    print(f"\nfull pipeline ({' + '.join(pipeline)}): {total:,.0f} s wall", end="")
    print(f" (target <= {TARGET_PIPELINE_S:,} s)")
    if "daily" in stages:
        print(
            f"incremental daily run: {stages['daily']['wall_s']:,.0f} s "
            f"(target <= {TARGET_DAILY_S} s)"
        )
    worst = max((s.get("peak_rss_mb", 0) for s in stages.values()), default=0)
    print(f"largest peak RSS: {worst:,} MB (target <= {TARGET_RSS_MB:,} MB)")
    if "dashboard" in stages:
        d = stages["dashboard"]
        print(
            f"cold cohort page {d['cohort_cold_s']} s (<= {TARGET_COHORT_PAGE_S}; after the "
            f"server's warm-up of {d.get('cohort_warm_up_s', '-')} s: "
            f"{d.get('cohort_after_warm_up_s', '-')} s), cold patient "
            f"page {d['patient_cold_s']} s (<= {TARGET_PATIENT_PAGE_S}; after the warm-up: "
            f"{d.get('patient_after_warm_up_s', '-')} s), SQL example "
            f"{d['sql_example_s']} s"
        )
    last = max(stages, key=lambda s: stages[s]["finished"])
    tables = stages[last].get("tables", {})
    if tables:
        print(f"\ntables after {last}:")
        print_table(
            [
                {
                    "table": name,
                    "rows": f"{t['rows']:,}",
                    "files": t["files"],
                    "MB": round(t["bytes"] / 1e6, 1),
                    "MB on disk": round(t["bytes_on_disk"] / 1e6, 1),
                }
                for name, t in tables.items()
            ]
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--patients", type=int, default=1000)
    parser.add_argument("--years", type=float, default=3.0)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--workdir", default="/tmp/mobility-scale")
    parser.add_argument("--stages", nargs="+", choices=STAGES, default=list(STAGES))
    parser.add_argument("--redo", nargs="+", choices=STAGES, default=[])
    parser.add_argument("--child", choices=["new-day"], help=argparse.SUPPRESS)
    parser.add_argument("--lake", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(append_new_day(args.lake)))
        return

    home = Path(args.workdir) / f"scale-{args.patients}"
    home.mkdir(parents=True, exist_ok=True)
    lake = home / "lake"
    record = home / "results.json"
    # models are signed with the artifact key: one per benchmark lake, kept beside it (never in
    # it) so that a resumed run's forecast can read what an earlier run's train wrote
    key = home / "artifact.key"
    if not key.exists():
        key.touch(mode=0o600)
        key.write_text(secrets.token_urlsafe(32))
    os.environ["MOBILITY_ARTIFACT_KEY"] = key.read_text().strip()
    results: dict[str, Any] = (
        json.loads(record.read_text())
        if record.exists()
        else {"patients": args.patients, "years": args.years, "seed": args.seed, "stages": {}}
    )
    if (results["years"], results["seed"]) != (args.years, args.seed):
        sys.exit(f"{record} was made with --years {results['years']} --seed {results['seed']}")
    for stage in STAGES:
        if stage not in args.stages or (stage in results["stages"] and stage not in args.redo):
            continue
        print(f"{datetime.now(UTC):%H:%M:%S} {stage} ...", flush=True)
        if stage == "dashboard":
            figures = _dashboard(lake)
        elif stage == "new-day":
            figures = _new_day(lake)
        else:
            figures = _run(_stage_command(stage, lake, args.patients, args.years, args.seed))
        figures["tables"] = _tables(lake)
        figures["finished"] = datetime.now(UTC).isoformat(timespec="seconds")
        results["stages"][stage] = figures
        # written whole, then renamed: an interrupted run never leaves half a record
        partial = record.with_suffix(".partial")
        partial.write_text(json.dumps(results, indent=1))
        partial.replace(record)
        shown = {k: v for k, v in figures.items() if k not in ("tables", "output")}
        print(f"{datetime.now(UTC):%H:%M:%S} {stage}: {json.dumps(shown)}", flush=True)
    _report(results)


if __name__ == "__main__":
    main()
