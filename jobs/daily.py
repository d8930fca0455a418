"""Daily aggregation transform: raw step samples -> steps per patient and local calendar day.

Pure Polars (no storage), shared by every engine. Rules (DESIGN.md, "Daily aggregation rules"):

- a sample's local time comes from its own ``utc_offset_minutes``;
- a sample is split across local hour boundaries (and so across midnight) in proportion to time;
- per patient and local hour, the source with the most steps in that hour is kept, so a phone
  and a watch recording the same walk are never counted twice;
- ``coverage_hours`` counts the local hours with any sample (any source, zero-step samples too);
  on the day clocks fall back, the repeated hour counts twice (25 possible hours);
- ``n_samples`` counts raw samples touching the day, every source, before de-duplication; a
  sample that crosses midnight counts on both days;
- ``n_sources`` counts the distinct sources that recorded on the day;
- ``is_wear_day`` marks days with at least :data:`MIN_WEAR_HOURS` hours of coverage and some steps;
  other days are non-wear: kept for the record but treated as missing by forecasting.

For speed the three group-bys run on single ``Int64`` keys packed from dense integer codes instead
of strings (hashing strings dominated the cost); the codes are decoded once at the end.
"""

from __future__ import annotations

import polars as pl

US_PER_MINUTE = 60_000_000
US_PER_HOUR = 3_600_000_000
MIN_WEAR_HOURS = 8

# A local hour is packed with its UTC offset so the two real hours sharing one wall-clock label
# on the DST fall-back night stay apart: slot = hour * 2048 + (offset + 840), offsets |x| <= 840.
_OFFSET_SLOTS = 2048
_OFFSET_SHIFT = 840
_SLOT_BASE = 1 << 31  # hours since 1970 * 2048 stays below 2**31 until the year 2089
_DAY_BASE = 1 << 20

SAMPLE_COLUMNS = ("patient_id", "start_ts", "end_ts", "utc_offset_minutes", "steps", "source")


def _code_table(frame: pl.LazyFrame, column: str, code: str) -> pl.LazyFrame:
    """The distinct values of ``column`` with a dense Int64 code numbered from 0."""
    # Sorted, so every evaluation of this lazy plan numbers the values the same way: the plan is
    # used twice (to encode and to decode), and ``unique()`` alone has no stable order.
    return (
        frame.select(column)
        .unique()
        .sort(column)
        .with_row_index(code)
        .with_columns(pl.col(code).cast(pl.Int64))
    )


def _hourly_pieces(samples: pl.LazyFrame) -> pl.LazyFrame:
    """One row per (sample, local hour it touches) with the steps falling in that hour.

    Input columns: ``pair`` (dense code of patient and source), ``start_ts``, ``end_ts``,
    ``utc_offset_minutes``, ``steps``. Output: ``pair, slot, steps, starts_day``.
    """
    offset_us = pl.col("utc_offset_minutes").cast(pl.Int64) * US_PER_MINUTE
    local = samples.select(
        "pair",
        "steps",
        "utc_offset_minutes",
        local_start=pl.col("start_ts").dt.epoch("us") + offset_us,
        local_end=pl.col("end_ts").dt.epoch("us") + offset_us,
    ).with_columns(
        first_hour=pl.col("local_start") // US_PER_HOUR,
        # end is exclusive: a sample ending exactly on the hour does not touch the next hour
        last_hour=pl.max_horizontal(pl.col("local_end") - 1, pl.col("local_start")) // US_PER_HOUR,
    )
    offset_slot = pl.col("utc_offset_minutes").cast(pl.Int64) + _OFFSET_SHIFT
    within_hour = local.filter(pl.col("first_hour") == pl.col("last_hour")).select(
        "pair",
        "steps",
        slot=pl.col("first_hour") * _OFFSET_SLOTS + offset_slot,
        starts_day=pl.lit(1, dtype=pl.Int32),
    )
    spanning = (
        local.filter(pl.col("first_hour") != pl.col("last_hour"))
        .with_columns(hour=pl.int_ranges("first_hour", pl.col("last_hour") + 1))
        .explode("hour")
        .with_columns(
            piece_us=pl.min_horizontal("local_end", (pl.col("hour") + 1) * US_PER_HOUR)
            - pl.max_horizontal("local_start", pl.col("hour") * US_PER_HOUR),
        )
        .select(
            "pair",
            steps=pl.col("steps")
            * pl.col("piece_us")
            / (pl.col("local_end") - pl.col("local_start")),
            slot=pl.col("hour") * _OFFSET_SLOTS + offset_slot,
            # a sample counts once per local day: on its first hour and at each local midnight
            starts_day=((pl.col("hour") == pl.col("first_hour")) | (pl.col("hour") % 24 == 0)).cast(
                pl.Int32
            ),
        )
    )
    return pl.concat([within_hour, spanning], how="vertical")


def daily_steps(samples: pl.LazyFrame) -> pl.LazyFrame:
    """Aggregate valid step samples into daily steps per patient and local date.

    Args:
        samples: rows with ``patient_id, start_ts, end_ts, utc_offset_minutes, steps, source``
            (already validated: no negative steps, end not before start, offset within 14 h).

    Returns:
        ``patient_id, date, steps, coverage_hours, n_samples, n_sources, is_wear_day, month``,
        one row per patient and local date that has at least one sample.
    """
    named = samples.select(SAMPLE_COLUMNS).with_columns(
        pl.col("patient_id").cast(pl.Categorical), pl.col("source").cast(pl.Categorical)
    )
    # dense 0..n-1 codes per batch, so (patient, source, local hour) packs into one Int64
    patients = _code_table(named, "patient_id", "patient")
    sources = _code_table(named, "source", "source_code")
    n_sources = sources.select(pl.len().cast(pl.Int64)).collect().item()
    coded = named.join(patients, on="patient_id", how="inner").join(
        sources, on="source", how="inner"
    )
    pieces = _hourly_pieces(
        coded.with_columns(pair=pl.col("patient") * n_sources + pl.col("source_code"))
    )
    per_source_hour = (
        pieces.group_by(key=pl.col("pair") * _SLOT_BASE + pl.col("slot"))
        .agg(steps=pl.col("steps").sum(), n_samples=pl.col("starts_day").sum())
        .with_columns(
            patient=(pl.col("key") // _SLOT_BASE) // n_sources,
            source_code=(pl.col("key") // _SLOT_BASE) % n_sources,
            slot=pl.col("key") % _SLOT_BASE,
        )
        .with_columns(day=(pl.col("slot") // _OFFSET_SLOTS) // 24)
    )
    per_hour = per_source_hour.group_by(key=pl.col("patient") * _SLOT_BASE + pl.col("slot")).agg(
        # the source with the most steps in the hour wins; the others recorded the same walking
        steps=pl.col("steps").max(),
        n_samples=pl.col("n_samples").sum(),
        patient=pl.col("patient").first(),
        day=pl.col("day").first(),
    )
    day_key = pl.col("patient") * _DAY_BASE + pl.col("day")
    sources_per_day = (
        per_source_hour.select(day_key=day_key, source_code="source_code")
        .unique()
        .group_by("day_key")
        .agg(n_sources=pl.len().cast(pl.Int16))
    )
    daily = (
        per_hour.group_by(day_key=day_key)
        .agg(
            patient=pl.col("patient").first(),
            day=pl.col("day").first(),
            steps=pl.col("steps").sum(),
            coverage_hours=pl.len().cast(pl.Int16),
            n_samples=pl.col("n_samples").sum().cast(pl.Int32),
        )
        .join(sources_per_day, on="day_key", how="inner")
        .join(patients.select("patient", pl.col("patient_id").cast(pl.String)), on="patient")
        .with_columns(date=pl.col("day").cast(pl.Int32).cast(pl.Date))
    )
    return daily.select(
        "patient_id",
        "date",
        "steps",
        "coverage_hours",
        "n_samples",
        "n_sources",
        is_wear_day=(pl.col("coverage_hours") >= MIN_WEAR_HOURS) & (pl.col("steps") > 0),
        month=pl.col("date").dt.strftime("%Y-%m"),
    )
