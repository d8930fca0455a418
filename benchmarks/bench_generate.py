"""Time ``mobility generate`` in direct mode: samples per second and peak memory.

Usage::

    .venv/bin/python benchmarks/bench_generate.py [--patients 100] [--years 3] [--lake DIR]

Writes into a temporary lake unless ``--lake`` is given, and prints one line per run. Peak
memory is this process's and that of the largest worker process (the simulation workers share
their sample columns with this process through mapped files, counted in both).
"""

from __future__ import annotations

import argparse
import resource
import tempfile
from pathlib import Path

from jobs import generate
from jobs.runs import peak_rss_mb
from lakehouse.catalog import STEP_SAMPLES
from lakehouse.storage import Lake
from synthetic.population import DEFAULT_END_DATE


def main() -> None:
    """Run the benchmark."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=100)
    parser.add_argument("--years", type=float, default=3.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--lake", type=Path, default=None)
    parser.add_argument(
        "--workers", type=int, default=None, help="simulation processes (default: automatic)"
    )
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-generate-") as scratch:
        lake = Lake(str(args.lake or scratch))
        summary = generate.run(
            lake,
            patients=args.patients,
            seed=args.seed,
            years=args.years,
            end_date=DEFAULT_END_DATE,
            workers=args.workers,
        )
        info = lake.info(STEP_SAMPLES)
        worker_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        print(
            f"patients={summary.patients} samples={summary.samples:,} "
            f"quarantined={summary.quarantined} seconds={summary.seconds:.1f} "
            f"samples_per_s={summary.samples_per_second:,.0f} peak_rss_mb={peak_rss_mb():.0f} "
            f"worker_peak_rss_mb={worker_mb:.0f} "
            f"files={info.files} size_mb={info.size_bytes / 1e6:.0f}"
        )


if __name__ == "__main__":
    main()
