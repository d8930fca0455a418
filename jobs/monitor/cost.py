"""Cost: what the recorded job runs and the lake's storage would cost at the price table's
rates (``config/prices.toml``, the original design's AWS figures), per month, and projected to
the budget's patient count.

Measured: the CPU seconds of the job runs of the last :data:`WINDOW_DAYS` days (scaled to a
month when the record is shorter) and the lake's size. Projected: both per patient, times the
budget's patients (linear, as the benchmarks found the jobs to scale).

The budget check (``total``) compares the projection with the budget, inclusive: a projection
at or over the budget is a ``warning`` as soon as it is projected, and an ``alert`` once it
rests on :data:`MIN_OBSERVED_DAYS` days of record or more (a younger record scaled to a month
overstates: the first backfill, a weekly training). Under the budget it is ``ok``.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl

from jobs.monitor import checks_frame
from lakehouse.errors import InputError
from lakehouse.settings import get_settings

WINDOW_DAYS = 30
MIN_OBSERVED_DAYS = 7
DEFAULT_PRICES = Path(__file__).resolve().parents[2] / "config" / "prices.toml"
CATEGORIES = ("processing", "training", "inference")


@dataclass(frozen=True)
class Prices:
    """The price table."""

    storage_usd_per_gb_month: float
    usd_per_vcpu_hour: dict[str, float]
    jobs: dict[str, tuple[str, ...]]
    budget_usd_per_month: float
    budget_patients: int

    @classmethod
    def load(cls, path: Path | None = None) -> Prices:
        """The price table at ``path``, else ``MOBILITY_PRICES``, else the repository default.

        Raises:
            InputError: the file is missing or lacks a price.
        """
        chosen = path or Path(get_settings().prices_file or DEFAULT_PRICES)
        try:
            table: dict[str, Any] = tomllib.loads(chosen.read_text())
            return cls(
                storage_usd_per_gb_month=float(table["storage"]["usd_per_gb_month"]),
                usd_per_vcpu_hour={c: float(table[c]["usd_per_vcpu_hour"]) for c in CATEGORIES},
                jobs={c: tuple(table[c]["jobs"]) for c in CATEGORIES},
                budget_usd_per_month=float(table["budget"]["usd_per_month"]),
                budget_patients=int(table["budget"]["patients"]),
            )
        except OSError as err:
            raise InputError(f"price table {chosen}: {err.strerror or err}") from err
        except KeyError as err:
            raise InputError(f"price table {chosen}: missing {err.args[0]}") from err
        except (TypeError, ValueError, tomllib.TOMLDecodeError) as err:
            raise InputError(f"price table {chosen}: {err}") from err


def cost_checks(
    runs: pl.DataFrame, storage_bytes: int, patients: int, prices: Prices, now: datetime
) -> pl.DataFrame:
    """Check rows per category (``storage``, ``processing``, ``training``, ``inference``) and
    ``total``: ``value`` = measured monthly cost, ``reference`` = projected to the budget's
    patients, ``threshold`` = the budget (total only); details say what was measured."""
    since = now - timedelta(days=WINDOW_DAYS)
    recent = runs.filter(pl.col("started_at") >= since)
    first = recent["started_at"].min()
    observed_days = (
        max((now - first).total_seconds() / 86400, 1.0) if isinstance(first, datetime) else 0.0
    )
    to_month = 30.0 / min(observed_days, WINDOW_DAYS) if observed_days else 0.0
    scale = prices.budget_patients / patients if patients else 0.0
    rows = []
    gb = storage_bytes / 1e9
    storage = gb * prices.storage_usd_per_gb_month
    rows.append(_row("storage", storage, storage * scale, f"{_size(storage_bytes)} in the lake"))
    for category in CATEGORIES:
        mine = recent.filter(pl.col("job").is_in(list(prices.jobs[category])))
        cpu_seconds = float(mine["cpu_seconds"].fill_null(0).sum())
        cpu_hours = cpu_seconds / 3600
        monthly = cpu_hours * to_month * prices.usd_per_vcpu_hour[category]
        runs_text = "1 run" if mine.height == 1 else f"{mine.height:,} runs"
        note = (
            f"{_cpu_time(cpu_seconds)} in {runs_text} over {observed_days:,.1f} days at "
            f"${prices.usd_per_vcpu_hour[category]:g} a vCPU-hour"
        )
        rows.append(_row(category, monthly, monthly * scale, note))
    total = sum(r["value"] for r in rows)
    projected = sum(r["reference"] for r in rows)
    over = projected >= prices.budget_usd_per_month
    # a young record (the first backfill, a weekly training) scaled to a month overstates it
    young = observed_days < MIN_OBSERVED_DAYS
    record = (
        f" (projected from {observed_days:.1f} days of record: an alert from "
        f"{MIN_OBSERVED_DAYS} days)"
        if over and young
        else ""
    )
    rows.append(
        {
            "subject": "total",
            "metric": "usd_per_month",
            "value": total,
            "reference": projected,
            "threshold": prices.budget_usd_per_month,
            "status": ("warning" if young else "alert") if over else "ok",
            "details": (
                f"{patients:,} patients measured; projected to {prices.budget_patients:,} "
                f"patients: ${projected:,.0f} per month against a "
                f"${prices.budget_usd_per_month:,.0f} budget{record}"
            ),
        }
    )
    return checks_frame(rows, "cost")


def _row(category: str, monthly: float, projected: float, note: str) -> dict[str, Any]:
    return {
        "subject": category,
        "metric": "usd_per_month",
        "value": monthly,
        "reference": projected,
        "threshold": None,
        "status": "ok",
        "details": note,
    }


def _cpu_time(seconds: float) -> str:
    """CPU time in the unit that reads: seconds under an hour, hours above."""
    if seconds < 3600:
        return f"{seconds:,.0f} CPU-seconds"
    return f"{seconds / 3600:,.1f} CPU-hours"


def _size(size_bytes: int) -> str:
    """A size in MB under a gigabyte, else in GB."""
    if size_bytes < 1e9:
        return f"{size_bytes / 1e6:,.1f} MB"
    return f"{size_bytes / 1e9:,.2f} GB"
