"""Benchmark: the longer versions of the reliability tests (docs/reliability.md).

- **kills**: ``mobility pipeline`` on a small synthetic lake (quick training) SIGKILLed at random
  moments ``--kills`` times; after every kill every table must be readable with unique keys, and
  every run that completes must leave tables identical (rows, order-independent) to one
  uninterrupted run. Reports the kills per stage they landed in.
- **concurrent**: ``--concurrent`` rounds of two pipelines started at once on a fresh copy of the
  lake; each must end with the tables of one run.
- **fuzz**: ``--fuzz-examples`` hypothesis examples per file form (Apple XML, zip and CSV,
  Fitbit CSV and JSON, generic CSV, clinical CSV): each read (counts adding up) or refused with
  one line.
- **hostile**: big hostile files (a 200 MB XML attribute, 400,000 records nested in one element,
  a 200 MB CSV line, a 600 MB zip bomb, billion laughs), each read in a fresh process: outcome,
  seconds and the peak memory it added.

Prints one table per part and exits 1 if anything failed.

    .venv/bin/python benchmarks/bench_reliability.py [--kills 100] [--fuzz-examples 1000]
        [--concurrent 3] [--patients 4] [--seed 7] [--workdir /tmp/mobility-bench]
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
from common import print_table

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the test helpers (tests/reliability.py, tests/jobs/ingest_fuzz.py)

from tests import reliability  # noqa: E402


def _reference(pristine: Path, workdir: Path) -> tuple[dict[str, Any], float]:
    folder = reliability.copy_lake(pristine, workdir / "reference")
    seconds = reliability.run(str(folder), "pipeline")
    from jobs import check
    from lakehouse.storage import Lake

    report = check.run(Lake(str(folder)))
    if not report.ok:
        raise SystemExit(f"the reference lake fails its check: {report.problems}")
    return reliability.comparable(Lake(str(folder))), seconds


def kills(pristine: Path, workdir: Path, count: int, seed: int) -> list[dict[str, Any]]:
    """The kill campaign: one result row."""
    reference, seconds = _reference(pristine, workdir)
    print(f"reference pipeline: {seconds:.1f} s", flush=True)

    def progress(number: int, stage: str, delay: float) -> None:
        if number % 10 == 0:
            print(f"  kill {number}/{count} ({stage}, after {delay:.1f} s)", flush=True)

    campaign = reliability.kill_campaign(
        pristine,
        workdir / "killed",
        reference,
        kills=count,
        max_delay=seconds,
        seed=seed,
        on_kill=progress,
    )
    for line in campaign.damaged_after_kill + campaign.different_after_completion:
        print("  FAIL", line)
    return [
        {
            "kills": campaign.kills,
            "tables readable after every kill": not campaign.damaged_after_kill,
            "completed runs equal to reference": (
                f"{campaign.completed_runs - len(campaign.different_after_completion)}"
                f"/{campaign.completed_runs}"
            ),
            "kills per stage": json.dumps(dict(sorted(campaign.killed_in.items()))),
            "reference s": round(seconds, 1),
            "campaign s": round(campaign.seconds, 1),
            "result": "PASS" if campaign.passed else "FAIL",
        }
    ]


def concurrent(pristine: Path, workdir: Path, rounds: int) -> list[dict[str, Any]]:
    """Two pipelines at once, ``rounds`` times: one row per round."""
    from lakehouse.storage import Lake

    reference, _ = _reference(pristine, workdir)
    rows = []
    env = reliability.environment({"MOBILITY_LOCK_WAIT": "1200"})
    for number in range(1, rounds + 1):
        folder = reliability.copy_lake(pristine, workdir / f"concurrent-{number}")
        started = time.perf_counter()
        logs = [workdir / f"concurrent-{number}-{side}.log" for side in ("a", "b")]
        pipelines = [reliability.start(str(folder), "pipeline", env=env, log=log) for log in logs]
        statuses = [process.wait(timeout=1800) for process in pipelines]
        seconds = time.perf_counter() - started
        found = reliability.differences(reference, reliability.comparable(Lake(str(folder))))
        waited = sum("waiting for the lake lock" in log.read_text() for log in logs)
        for line in found:
            print("  FAIL", line)
        rows.append(
            {
                "round": number,
                "exit statuses": statuses,
                "waited for the lock": waited,
                "tables different from one run": len(found),
                "seconds": round(seconds, 1),
                "result": "PASS" if statuses == [0, 0] and not found and waited == 1 else "FAIL",
            }
        )
    return rows


def fuzz(examples: int) -> list[dict[str, Any]]:
    """``examples`` hypothesis examples per file form: one row per form."""
    from tests.jobs.ingest_fuzz import CASES

    rows = []
    for case, (format, strategy, suffix) in sorted(CASES.items()):
        counts = {"parsed": 0, "refused": 0}
        read_or_refuse = _fuzzer(strategy, format, suffix, counts, examples)
        started = time.perf_counter()
        failure = ""
        try:
            read_or_refuse()
        except Exception as err:  # a falsifying example: report it, go on with the next form
            failure = " ".join(str(err).split())[:300]
            print(f"  FAIL {case}: {failure}")
        rows.append(
            {
                "form": case,
                "cases run": counts["parsed"] + counts["refused"],
                "read": counts["parsed"],
                "refused in one line": counts["refused"],
                "failures": 1 if failure else 0,
                "seconds": round(time.perf_counter() - started, 1),
                "result": "FAIL" if failure else "PASS",
            }
        )
        print(f"  {case}: {rows[-1]}", flush=True)
    return rows


def _fuzzer(strategy: Any, format: str, suffix: str, counts: dict[str, int], examples: int) -> Any:
    """A hypothesis test of one file form that counts its outcomes in ``counts``."""
    from hypothesis import HealthCheck, given, settings

    from tests.jobs.ingest_fuzz import check_bytes

    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(strategy)
    def read_or_refuse(content: bytes) -> None:
        counts[check_bytes(content, format, suffix)] += 1

    return read_or_refuse


def hostile(workdir: Path) -> list[dict[str, Any]]:
    """Big hostile files, each measured in a fresh process: one row per file."""
    from tests.jobs import test_ingest_hostile as files

    folder = workdir / "hostile"
    rows = []
    builds = {
        "xml, 200 MB attribute": ("apple-health", files._huge_attribute, "refused"),
        "xml, 400k records in one element": ("apple-health", files._wide_correlation, "parsed"),
        "csv, 200 MB line": ("generic", files._giant_line, "refused"),
        "zip bomb, 600 MB of blanks": ("apple-health", files._zip_bomb, "refused"),
        "xml, billion laughs": ("apple-health", files._billion_laughs, "refused"),
    }
    for name, (format, build, expected) in builds.items():
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        path = build(folder)
        done = subprocess.run(
            [sys.executable, "-m", "tests.jobs.ingest_fuzz", format, str(path)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=600,
            check=True,
        )
        measured = json.loads(done.stdout.strip().splitlines()[-1])
        ok = measured["outcome"] == expected and measured["added_mb"] < 60
        rows.append(
            {
                "file": name,
                "MB": round(path.stat().st_size / 1e6, 1),
                "outcome": measured["outcome"],
                "seconds": measured["seconds"],
                "memory added MB": measured["added_mb"],
                "message": measured["message"][-90:],
                "result": "PASS" if ok else "FAIL",
            }
        )
    shutil.rmtree(folder, ignore_errors=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--kills", type=int, default=100)
    parser.add_argument("--concurrent", type=int, default=3)
    parser.add_argument("--fuzz-examples", type=int, default=1000)
    parser.add_argument("--patients", type=int, default=4)
    parser.add_argument("--years", type=float, default=1.6)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--workdir", default=None)
    parser.add_argument("--skip", nargs="*", default=[], choices=["kills", "concurrent", "fuzz"])
    args = parser.parse_args()
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="mobility-reliability-"))
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    pristine = workdir / "pristine"
    from jobs import generate
    from lakehouse.storage import Lake

    generate.run(Lake(str(pristine)), patients=args.patients, seed=args.seed, years=args.years)
    results: list[list[dict[str, Any]]] = []
    try:
        parts = [
            ("kills", lambda: kills(pristine, workdir, args.kills, args.seed)),
            ("concurrent", lambda: concurrent(pristine, workdir, args.concurrent)),
            ("fuzz", lambda: fuzz(args.fuzz_examples)),
            ("hostile", lambda: hostile(workdir)),
        ]
        for name, part in parts:
            if name in args.skip:
                continue
            print(f"\n== {name}", flush=True)
            started = time.perf_counter()
            rows = part()
            print(f"{name}: {time.perf_counter() - started:.0f} s")
            print_table(rows)
            results.append(rows)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    failed = [row for rows in results for row in rows if row.get("result") != "PASS"]
    print(f"\n{'FAIL' if failed else 'PASS'}: {len(failed)} failing row(s)")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
