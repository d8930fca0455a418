"""Benchmark: ``jobs.ingest.run`` throughput (records/s) and peak memory on large files.

Two parts, every measurement in its own child process (so each peak RSS is its own):

**Apple Health.** A population of 2 patients with ``years=20`` and ``watch_detail=True`` is written
as landing files; the largest ``export.xml`` (seed 42: ``SYN42-000002``, about 1.18 GB) must be at
least 1 GB. Scenarios:

- ``a-empty``: ingest it into an empty lake;
- ``b-other-patient``: ingest it into a lake already holding the other patient's samples (that
  export is ingested first, in its own process, not measured);
- ``c-reingest``: ingest it again into lake ``a`` (nothing new: expects 0 new samples).

**Generic CSV.** ``--csv-patients`` patients (default 20, about 1.3 M samples) are generated
straight into a temporary lake, written out as ``patient_id,start,end,steps,source`` with ISO 8601
local times carrying their own offset (``2024-03-01T08:15:00+01:00``), then ingested with
``format="generic"`` into an empty lake. Checked: new samples == CSV rows, and the sum of steps in
the new lake equals the source sum (to 1e-6 relative).

Each row reports size, records, seconds, records/s, MB/s and peak RSS, with PASS/FAIL against the
target ``peak RSS < 500 MB`` (Apple export scenarios; the CSV's memory is reported only) and the
correctness check. Exits with 1 if any row fails.

Usage::

    .venv/bin/python benchmarks/bench_ingest.py [--scratch DIR] [--keep] [--csv-patients 20]
        [--seed 42] [--skip-apple] [--skip-csv]

Needs about 2.5 GB free in the scratch directory (default: the system temp directory); everything
written there is deleted at the end unless ``--keep``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import common  # noqa: F401  (a throwaway pseudonym key for this run's lakes)

RSS_TARGET_MB = 500.0
MIN_EXPORT_BYTES = 1_000_000_000
APPLE_PATIENTS = 2
APPLE_YEARS = 20.0
CSV_SEED = 1
GENERIC_FORMAT = "generic"
CSV_COLUMNS = ("patient_id", "start", "end", "steps", "source")

Result = dict[str, Any]


# --- child processes -----------------------------------------------------------------------------


def _child_generate_apple(scratch: Path, seed: int) -> Result:
    from jobs import generate
    from lakehouse.storage import Lake
    from synthetic.population import DEFAULT_END_DATE

    summary = generate.run(
        Lake(str(scratch / "generate-lake")),
        patients=APPLE_PATIENTS,
        seed=seed,
        years=APPLE_YEARS,
        landing=scratch / "landing",
        watch_detail=True,
        end_date=DEFAULT_END_DATE,
    )
    return {"seconds": summary.seconds, "samples": summary.samples}


def _child_generate_csv(scratch: Path, patients: int, csv_path: Path) -> Result:
    import polars as pl

    from jobs import generate
    from lakehouse.catalog import STEP_SAMPLES
    from lakehouse.storage import Lake
    from synthetic.population import DEFAULT_END_DATE

    lake = Lake(str(scratch / "csv-source-lake"))
    summary = generate.run(lake, patients=patients, seed=CSV_SEED, end_date=DEFAULT_END_DATE)
    offset = pl.col("utc_offset_minutes").cast(pl.Int32)
    minutes = offset.abs()
    suffix = pl.concat_str(
        pl.when(offset < 0).then(pl.lit("-")).otherwise(pl.lit("+")),
        (minutes // 60).cast(pl.String).str.zfill(2),
        pl.lit(":"),
        (minutes % 60).cast(pl.String).str.zfill(2),
    )

    def local(column: str) -> pl.Expr:
        wall = pl.col(column).dt.replace_time_zone(None) + pl.duration(minutes=offset)
        return pl.concat_str(wall.dt.strftime("%Y-%m-%dT%H:%M:%S"), suffix).alias(column)

    samples = lake.scan(STEP_SAMPLES)
    samples.select(
        "patient_id",
        local("start_ts").alias("start"),
        local("end_ts").alias("end"),
        "steps",
        "source",
    ).sink_csv(csv_path)
    totals = samples.select(pl.len().alias("rows"), pl.col("steps").sum().alias("steps")).collect()
    fractional = (
        samples.filter(
            (pl.col("start_ts").dt.microsecond() != 0) | (pl.col("end_ts").dt.microsecond() != 0)
        )
        .select(pl.len())
        .collect()
        .item()
    )
    return {
        "seconds": summary.seconds,
        "rows": int(totals["rows"][0]),
        "steps": float(totals["steps"][0]),
        "fractional_seconds": int(fractional),
    }


def _child_ingest(lake_dir: Path, path: Path, fmt: str, patient_id: str | None) -> Result:
    import polars as pl

    from jobs.ingest import run as ingest
    from jobs.runs import peak_rss_mb
    from lakehouse.catalog import STEP_SAMPLES
    from lakehouse.storage import Lake

    lake = Lake(str(lake_dir))
    start = time.perf_counter()
    summary = ingest.run(lake, path, format=fmt, patient_id=patient_id)
    seconds = time.perf_counter() - start
    rss_mb = peak_rss_mb()  # before the check below reads the lake
    steps = lake.scan(STEP_SAMPLES).select(pl.col("steps").sum()).collect().item()
    return {
        "seconds": seconds,
        "rss_mb": rss_mb,
        "records_read": summary.records_read,
        "accepted": summary.accepted,
        "quarantined": summary.quarantined,
        "skipped": summary.skipped,
        "new_samples": summary.new_samples,
        "lake_steps": float(steps or 0.0),
    }


def _child(args: argparse.Namespace) -> None:
    scratch = Path(args.scratch)
    result: Result
    if args.child == "generate-apple":
        result = _child_generate_apple(scratch, args.seed)
    elif args.child == "generate-csv":
        result = _child_generate_csv(scratch, args.csv_patients, Path(args.file))
    else:
        result = _child_ingest(Path(args.lake), Path(args.file), args.format, args.patient_id)
    print(json.dumps(result))


def _spawn(kind: str, scratch: Path, *extra: str) -> Result:
    """Run this script with ``--child kind``; its result (the last stdout line, JSON)."""
    out = subprocess.run(
        [sys.executable, __file__, "--child", kind, "--scratch", str(scratch), *extra],
        check=True,
        stdout=subprocess.PIPE,
        text=True,
    )
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def _ingest(lake_dir: Path, path: Path, fmt: str, patient_id: str | None = None) -> Result:
    extra = ["--lake", str(lake_dir), "--file", str(path), "--format", fmt]
    if patient_id:
        extra += ["--patient-id", patient_id]
    return _spawn("ingest", lake_dir.parent, *extra)


# --- parts ---------------------------------------------------------------------------------------


def _row(
    scenario: str, size: int, run: Result, check_ok: bool, check: str, *, rss_target: bool = True
) -> Result:
    seconds = run["seconds"]
    rss_ok = run["rss_mb"] < RSS_TARGET_MB
    return {
        "scenario": scenario,
        "file_mb": round(size / 1e6),
        "records_read": run["records_read"],
        "accepted": run["accepted"],
        "new_samples": run["new_samples"],
        "seconds": round(seconds, 1),
        "records_per_s": round(run["records_read"] / seconds),
        "mb_per_s": round(size / 1e6 / seconds, 1),
        "peak_rss_mb": round(run["rss_mb"]),
        # The memory target is for the Apple export; CSV memory is reported only.
        "rss_lt_500mb": ("PASS" if rss_ok else "FAIL") if rss_target else "n/a (reported)",
        "check": f"{'PASS' if check_ok else 'FAIL'} ({check})",
    }


def _report(row: Result, rows: list[Result]) -> None:
    rows.append(row)
    print(json.dumps(row), flush=True)


def _apple(scratch: Path, seed: int, rows: list[Result]) -> None:
    start = time.perf_counter()
    generated = _spawn("generate-apple", scratch, "--seed", str(seed))
    exports = sorted(
        (p for p in (scratch / "landing" / "apple-health").glob("*/export.*")),
        key=lambda p: p.stat().st_size,
        reverse=True,
    )
    xmls = [p for p in exports if p.name == "export.xml"]
    big = xmls[0] if xmls else None
    sizes = ", ".join(f"{p.parent.name}/{p.name} {p.stat().st_size / 1e6:,.0f} MB" for p in exports)
    print(
        f"generated {APPLE_PATIENTS} Apple exports (seed {seed}, {APPLE_YEARS:g} years, watch "
        f"detail) in {time.perf_counter() - start:.0f} s ({generated['samples']:,} step samples): "
        f"{sizes}",
        flush=True,
    )
    if big is None or big.stat().st_size < MIN_EXPORT_BYTES:
        raise SystemExit(
            f"the largest export.xml of seed {seed} is under {MIN_EXPORT_BYTES / 1e9:g} GB "
            f"({sizes}); try another --seed (42 gives SYN42-000002, about 1.18 GB)"
        )
    other = next(p for p in exports if p != big)
    size = big.stat().st_size
    patient = big.parent.name

    lake_a = scratch / "lake-a"
    first = _ingest(lake_a, big, "apple-health", patient)
    ok = first["new_samples"] == first["accepted"] > 0
    _report(_row(f"a-empty ({patient})", size, first, ok, "new == accepted"), rows)

    lake_b = scratch / "lake-b"
    before = _ingest(lake_b, other, "apple-health", other.parent.name)
    print(
        f"lake b: {other.parent.name}/{other.name} ingested first: "
        f"{before['new_samples']:,} samples in {before['seconds']:.0f} s",
        flush=True,
    )
    second = _ingest(lake_b, big, "apple-health", patient)
    ok = second["new_samples"] == second["accepted"] == first["accepted"]
    _report(_row("b-other-patient", size, second, ok, "new == accepted"), rows)

    again = _ingest(lake_a, big, "apple-health", patient)
    ok = again["new_samples"] == 0 and again["accepted"] == first["accepted"]
    _report(_row("c-reingest", size, again, ok, "0 new"), rows)
    shutil.rmtree(scratch / "landing", ignore_errors=True)  # free the disk for the CSV part


def _csv(scratch: Path, patients: int, rows: list[Result]) -> None:
    csv_path = scratch / "step-samples.csv"
    source = _spawn(
        "generate-csv", scratch, "--csv-patients", str(patients), "--file", str(csv_path)
    )
    size = csv_path.stat().st_size
    print(
        f"generated {patients} patients into a lake in {source['seconds']:.0f} s and wrote "
        f"{source['rows']:,} samples to CSV ({size / 1e6:,.0f} MB; samples with fractional "
        f"seconds: {source['fractional_seconds']})",
        flush=True,
    )
    run = _ingest(scratch / "lake-csv", csv_path, GENERIC_FORMAT)
    relative = abs(run["lake_steps"] - source["steps"]) / max(abs(source["steps"]), 1.0)
    ok = run["new_samples"] == source["rows"] and relative <= 1e-6
    check = f"new == CSV rows, steps sum rel. diff {relative:.1e}"
    row = _row(f"csv-generic ({patients} patients)", size, run, ok, check, rss_target=False)
    _report(row, rows)


def _table(rows: list[Result]) -> None:
    header = list(rows[0])
    print()
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join("---" for _ in header) + "|")
    for row in rows:
        print(
            "| "
            + " | ".join(f"{row[h]:,}" if isinstance(row[h], int) else str(row[h]) for h in header)
            + " |"
        )


def main() -> None:
    """Run the benchmark (or, with ``--child``, one of its measurements)."""
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0] if __doc__ else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--scratch", type=Path, default=None, help="parent of the work directory")
    parser.add_argument("--keep", action="store_true", help="keep the generated files and lakes")
    parser.add_argument("--csv-patients", type=int, default=20)
    parser.add_argument("--seed", type=int, default=42, help="seed of the Apple population")
    parser.add_argument("--skip-apple", action="store_true")
    parser.add_argument("--skip-csv", action="store_true")
    parser.add_argument("--child", choices=["generate-apple", "generate-csv", "ingest"])
    parser.add_argument("--lake")
    parser.add_argument("--file")
    parser.add_argument("--format")
    parser.add_argument("--patient-id")
    args = parser.parse_args()
    if args.child:
        _child(args)
        return

    if args.scratch is not None:
        args.scratch.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix="bench-ingest-", dir=args.scratch))
    free_gb = shutil.disk_usage(scratch).free / 1e9
    print(f"scratch {scratch} ({free_gb:,.1f} GB free)", flush=True)
    rows: list[Result] = []
    try:
        if not args.skip_apple:
            _apple(scratch, args.seed, rows)
        if not args.skip_csv:
            _csv(scratch, args.csv_patients, rows)
    finally:
        if args.keep:
            print(f"kept {scratch}")
        else:
            shutil.rmtree(scratch, ignore_errors=True)
    if rows:
        _table(rows)
    if any("FAIL" in (row["rss_lt_500mb"] + row["check"]) for row in rows):
        sys.exit(1)


if __name__ == "__main__":
    main()
