"""Helpers shared by the benchmark scripts: child processes (each with its own peak RSS), the
``mobility`` command and the result table."""

from __future__ import annotations

import argparse
import json
import os
import secrets
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

# Benchmarks build throwaway lakes: ingestion pseudonymises patient ids with a key from the
# environment, so each run gets a random one unless the caller set it (never stored anywhere).
os.environ.setdefault("MOBILITY_PSEUDONYM_KEY", secrets.token_hex(32))
# The synthetic populations' last day: fixed, so figures stay comparable between runs and with
# those recorded (``mobility generate`` alone ends yesterday).
END_DATE = "2026-10-31"


def measure(script: str, kind: str, lake_uri: str, *extra: str) -> dict[str, Any]:
    """Run ``script --child KIND --lake URI [EXTRA...]`` in a fresh process; its last stdout line
    is JSON."""
    out = subprocess.run(
        [sys.executable, script, "--child", kind, "--lake", lake_uri, *extra],
        check=False,
        capture_output=True,
        text=True,
    )
    if out.returncode:
        print(out.stderr[-5000:], file=sys.stderr)
        out.check_returncode()
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def mobility(*args: str) -> None:
    """Run the ``mobility`` command line (output discarded, failure raises)."""
    subprocess.run([sys.executable, "-m", "jobs", *args], check=True, stdout=subprocess.DEVNULL)


def generate(lake_dir: Path, patients: int, seed: int) -> None:
    """A synthetic population of ``patients`` written straight into bronze."""
    mobility(
        "--lake",
        str(lake_dir),
        "generate",
        "--patients",
        str(patients),
        "--seed",
        str(seed),
        "--end-date",
        END_DATE,
    )


def print_table(rows: list[dict[str, Any]]) -> None:
    """The rows as a ``|``-separated table with a header."""
    print()
    header = list(rows[0])
    print(" | ".join(header))
    for row in rows:
        print(" | ".join(str(row[h]) for h in header))


def arguments(description: str | None, children: list[str]) -> argparse.Namespace:
    """The options every population benchmark takes (``--child`` runs one measurement)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--patients", type=int, nargs="+", default=[100, 1000])
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--workdir", default="/tmp/mobility-bench")
    parser.add_argument("--keep", action="store_true", help="keep the generated lakes")
    parser.add_argument("--child", choices=children)
    parser.add_argument("--lake")
    return parser.parse_args()


def run_pipeline(lake_dir: Path, *, quick: bool) -> tuple[float, str | None]:
    """``mobility pipeline`` on the lake in a child process (with ``MOBILITY_QUICK_TRAINING``
    when ``quick``): wall seconds, and the error text if it failed (its output printed if not)."""
    env = dict(os.environ)
    if quick:
        env["MOBILITY_QUICK_TRAINING"] = "1"
    else:
        env.pop("MOBILITY_QUICK_TRAINING", None)
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "jobs", "--lake", str(lake_dir), "pipeline"],
        env=env,
        capture_output=True,
        text=True,
    )
    seconds = time.perf_counter() - started
    if done.returncode:
        return seconds, (done.stderr.strip() or done.stdout.strip())
    print(done.stdout.strip(), flush=True)
    return seconds, None
