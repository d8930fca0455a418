"""An independent, plain-Python computation of the daily aggregation rules (DESIGN.md).

Written sample by sample with ``datetime`` arithmetic, nothing shared with ``jobs/daily.py``, so
the two can be compared on the same samples.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import date, datetime, timedelta
from typing import Any

HOUR = timedelta(hours=1)


def reference_daily(samples: list[dict[str, Any]]) -> dict[tuple[str, date], dict[str, float]]:
    """Daily totals per (patient_id, local date) from sample dicts.

    Each sample: patient_id, start_ts, end_ts (aware UTC datetimes), utc_offset_minutes, steps,
    source. Returns steps, coverage_hours, n_samples, n_sources per patient-day.
    """
    # (patient, local hour start, offset) -> source -> steps
    hours: dict[tuple[str, datetime, int], dict[str, float]] = defaultdict(
        lambda: defaultdict(float)
    )
    samples_per_day: dict[tuple[str, date], int] = defaultdict(int)
    sources_per_day: dict[tuple[str, date], set[str]] = defaultdict(set)
    for sample in samples:
        offset = timedelta(minutes=sample["utc_offset_minutes"])
        start = sample["start_ts"].replace(tzinfo=None) + offset
        end = sample["end_ts"].replace(tzinfo=None) + offset
        duration = (end - start).total_seconds()
        hour = start.replace(minute=0, second=0, microsecond=0)
        days_seen: set[date] = set()
        while True:
            piece_start, piece_end = max(start, hour), min(end, hour + HOUR)
            share = 1.0 if duration == 0 else (piece_end - piece_start).total_seconds() / duration
            key = (sample["patient_id"], hour, sample["utc_offset_minutes"])
            hours[key][sample["source"]] += sample["steps"] * share
            day = (sample["patient_id"], hour.date())
            if hour.date() not in days_seen:
                days_seen.add(hour.date())
                samples_per_day[day] += 1
            sources_per_day[day].add(sample["source"])
            hour += HOUR
            if hour >= end:
                break
    out: dict[tuple[str, date], dict[str, float]] = {}
    for (patient, hour, _offset), by_source in hours.items():
        row = out.setdefault(
            (patient, hour.date()), {"steps": 0.0, "coverage_hours": 0, "n_samples": 0}
        )
        row["steps"] += max(by_source.values())
        row["coverage_hours"] += 1
    for key, row in out.items():
        row["n_samples"] = samples_per_day[key]
        row["n_sources"] = len(sources_per_day[key])
    return out
