"""Benchmark: the models on the real device exports, at the horizons a month of data allows.

The real series in ``../shared/realdata`` (an Apple Health export and the Fitabase hourly file:
35 people, about a month each) are too short to train on or to backtest a year ahead. So the
lake holds a synthetic population (the EBMs learn from it, as they would from a clinic's
patients) plus the real exports; after aggregate, features and ``train``, ``mobility backtest``
scores every model on the real patients' last weeks: the registered EBMs as trained, the
baselines and Prophet fitted per origin, all on the same patients and days. The same is printed
for the synthetic patients for comparison.

    python benchmarks/bench_real_series.py [--patients 1000] [--realdata ../shared/realdata]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
from pathlib import Path

from common import generate, mobility

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--patients", type=int, default=1000, help="synthetic patients")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--realdata", type=Path, default=ROOT.parent / "shared" / "realdata")
    parser.add_argument("--workdir", default="/tmp/mobility-bench")
    parser.add_argument("--tune-seconds", default="0")
    args = parser.parse_args()
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
