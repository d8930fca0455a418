"""Row rules for step samples: which rows go to quarantine, and why.

One implementation shared by ingestion and the synthetic generator's direct-to-bronze path.
"""

from __future__ import annotations

from datetime import UTC, datetime

import polars as pl

# Faster than any sustained human cadence (elite sprinters reach about 4-5 steps per second).
MAX_STEPS_PER_SECOND = 5.0
# Short samples may carry a few steps recorded at the boundary (Apple writes 2-second samples).
RATE_GRACE_STEPS = 30.0
MAX_SAMPLE_HOURS = 24
MAX_OFFSET_MINUTES = 14 * 60
# Before wearables existed or far in the future: a device clock reset (often to 1970) or a
# corrupt value, not a walk.
EARLIEST_SAMPLE = datetime(2000, 1, 1, tzinfo=UTC)
LATEST_SAMPLE = datetime(2100, 1, 1, tzinfo=UTC)


def quarantine_reason() -> pl.Expr:
    """A string expression: why a step-sample row is rejected, null when it is valid.

    Expects columns ``start_ts``, ``end_ts`` (UTC timestamps), ``utc_offset_minutes`` and
    ``steps`` (float, may be null or NaN when the source value was not a number).
    """
    seconds = (pl.col("end_ts") - pl.col("start_ts")).dt.total_microseconds() / 1e6
    return (
        pl.when(pl.col("steps").is_null() | pl.col("steps").is_nan())
        .then(pl.lit("steps is not a number"))
        .when(pl.col("steps") < 0)
        .then(pl.lit("negative steps"))
        .when(pl.col("steps").is_infinite())
        .then(pl.lit("steps is not finite"))
        .when(pl.col("start_ts").is_null() | pl.col("end_ts").is_null())
        .then(pl.lit("missing timestamp"))
        .when((pl.col("start_ts") < EARLIEST_SAMPLE) | (pl.col("end_ts") >= LATEST_SAMPLE))
        .then(pl.lit("timestamp outside 2000-2099"))
        .when(pl.col("end_ts") < pl.col("start_ts"))
        .then(pl.lit("end before start"))
        .when(seconds > MAX_SAMPLE_HOURS * 3600)
        .then(pl.lit(f"sample longer than {MAX_SAMPLE_HOURS} hours"))
        .when(pl.col("utc_offset_minutes").is_null())
        .then(pl.lit("missing UTC offset"))
        .when(pl.col("utc_offset_minutes").abs() > MAX_OFFSET_MINUTES)
        .then(pl.lit("UTC offset beyond 14 hours"))
        .when(pl.col("steps") > MAX_STEPS_PER_SECOND * seconds + RATE_GRACE_STEPS)
        .then(pl.lit(f"implausible step rate (over {MAX_STEPS_PER_SECOND:g} steps per second)"))
        .otherwise(pl.lit(None, dtype=pl.String))
    )
