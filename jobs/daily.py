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

Speed: bronze files are sorted by patient, source and time, so most samples of one (patient,
source, local hour) arrive next to each other. Those runs are summed with one linear pass
(``numpy.add.reduceat``) before any hashing; the hash group-bys then see a few rows per hour
instead of every sample. The result never depends on the input order, only the speed does.
"""

from __future__ import annotations

import numpy as np
import polars as pl

US_PER_MINUTE = 60_000_000
US_PER_HOUR = 3_600_000_000
MIN_WEAR_HOURS = 8

# A local hour is packed with its UTC offset so the two real hours sharing one wall-clock label
# on the DST fall-back night stay apart: slot = hour * 2048 + (offset + 840), |offset| <= 840.
_OFFSET_SLOTS = 2048
_OFFSET_SHIFT = 840

SAMPLE_COLUMNS = ("patient_id", "start_ts", "end_ts", "utc_offset_minutes", "steps", "source")
DAILY_COLUMNS = (
    "patient_id",
    "date",
    "steps",
    "coverage_hours",
    "n_samples",
    "n_sources",
    "is_wear_day",
    "month",
)
_PIECE_SCHEMA = {
    "patient": pl.UInt32,
    "source": pl.UInt32,
    "slot": pl.Int64,
    "steps": pl.Float64,
    "n_samples": pl.Int64,
}


def _local_hours(samples: pl.DataFrame) -> pl.DataFrame:
    """Local start/end in microseconds since the epoch and the first/last local hour touched.

    Expects integer ``patient`` and ``source`` codes next to the sample columns.
    """
    offset = pl.col("utc_offset_minutes").cast(pl.Int64)
    return samples.select(
        "patient",
        "source",
        "steps",
        offset_slot=offset + _OFFSET_SHIFT,
        local_start=pl.col("start_ts").dt.epoch("us") + offset * US_PER_MINUTE,
        local_end=pl.col("end_ts").dt.epoch("us") + offset * US_PER_MINUTE,
    ).with_columns(
        first_hour=pl.col("local_start") // US_PER_HOUR,
        # end is exclusive: a sample ending exactly on the hour does not touch the next hour
        last_hour=pl.max_horizontal(pl.col("local_end") - 1, pl.col("local_start")) // US_PER_HOUR,
    )


def _coded(samples: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The samples with ``patient`` and ``source`` as integer codes, and the patient code table.

    The group-bys below then hash integers, not strings. Codes are the categorical physical
    values of this very frame; they are only meaningful together with the returned table.
    """
    patient = samples["patient_id"].cast(pl.Categorical)
    codes = patient.to_physical()
    first_rows = (
        pl.DataFrame({"patient": codes})
        .with_row_index("row")
        .group_by("patient")
        .agg(pl.col("row").first())
    )
    patients = first_rows.select(
        "patient", patient_id=patient.gather(first_rows["row"]).cast(pl.String)
    )
    coded = samples.select(
        "start_ts",
        "end_ts",
        "utc_offset_minutes",
        "steps",
        patient=codes,
        source=pl.col("source").cast(pl.Categorical).to_physical(),
    )
    return coded, patients


def _within_hour_runs(local: pl.DataFrame) -> pl.DataFrame:
    """Samples inside one local hour, consecutive rows of the same (patient, source, hour)
    summed in one linear pass."""
    first_hour = local["first_hour"].to_numpy()
    inside = np.flatnonzero(first_hour == local["last_hour"].to_numpy())
    if inside.size == 0:
        return pl.DataFrame(schema=_PIECE_SCHEMA)
    patient = local["patient"].to_numpy()[inside]
    source = local["source"].to_numpy()[inside]
    slot = first_hour[inside] * _OFFSET_SLOTS + local["offset_slot"].to_numpy()[inside]
    changed = np.empty(inside.size, dtype=bool)
    changed[0] = True
    np.not_equal(slot[1:], slot[:-1], out=changed[1:])
    changed[1:] |= patient[1:] != patient[:-1]
    changed[1:] |= source[1:] != source[:-1]
    starts = np.flatnonzero(changed)
    return pl.DataFrame(
        {
            "patient": patient[starts],
            "source": source[starts],
            "slot": slot[starts],
            "steps": np.add.reduceat(local["steps"].to_numpy()[inside], starts),
            "n_samples": np.diff(np.append(starts, inside.size)),
        },
        schema=_PIECE_SCHEMA,
    )


def _spanning_pieces(local: pl.DataFrame) -> pl.DataFrame:
    """Samples touching several local hours, split in proportion to the time in each hour."""
    return (
        local.filter(pl.col("first_hour") != pl.col("last_hour"))
        .with_columns(hour=pl.int_ranges("first_hour", pl.col("last_hour") + 1))
        .explode("hour")
        .with_columns(
            piece_us=pl.min_horizontal("local_end", (pl.col("hour") + 1) * US_PER_HOUR)
            - pl.max_horizontal("local_start", pl.col("hour") * US_PER_HOUR),
        )
        .select(
            "patient",
            "source",
            slot=pl.col("hour") * _OFFSET_SLOTS + pl.col("offset_slot"),
            steps=pl.col("steps")
            * pl.col("piece_us")
            / (pl.col("local_end") - pl.col("local_start")),
            # a sample counts once per local day: on its first hour and at each local midnight
            n_samples=((pl.col("hour") == pl.col("first_hour")) | (pl.col("hour") % 24 == 0)).cast(
                pl.Int64
            ),
        )
    )


def daily_steps(samples: pl.DataFrame) -> pl.DataFrame:
    """Aggregate valid step samples into daily steps per patient and local date.

    Args:
        samples: rows with ``patient_id, start_ts, end_ts, utc_offset_minutes, steps, source``
            (already validated: no negative steps, end not before start, offset within 14 h).
            ``patient_id`` and ``source`` may be strings or categoricals. Input sorted by
            patient, source and time is fastest; any order gives the same result.

    Returns:
        ``patient_id, date, steps, coverage_hours, n_samples, n_sources, is_wear_day, month``,
        one row per patient and local date that has at least one sample.
    """
    coded, patient_ids = _coded(samples.select(SAMPLE_COLUMNS))
    local = _local_hours(coded)
    pieces = pl.concat([_within_hour_runs(local), _spanning_pieces(local)], how="vertical")
    per_source_hour = (
        pieces.lazy()
        .group_by("patient", "source", "slot")
        .agg(pl.col("steps").sum(), pl.col("n_samples").sum())
        .with_columns(day=pl.col("slot") // (_OFFSET_SLOTS * 24))
    )
    per_hour = per_source_hour.group_by("patient", "day", "slot").agg(
        # the source with the most steps in the hour wins; the others recorded the same walking
        pl.col("steps").max(),
        pl.col("n_samples").sum(),
    )
    sources_per_day = per_source_hour.group_by("patient", "day").agg(
        n_sources=pl.col("source").n_unique().cast(pl.Int16)
    )
    daily = (
        per_hour.group_by("patient", "day")
        .agg(
            pl.col("steps").sum(),
            coverage_hours=pl.len().cast(pl.Int16),
            n_samples=pl.col("n_samples").sum().cast(pl.Int32),
        )
        .join(sources_per_day, on=["patient", "day"], how="inner")
        .join(patient_ids.lazy(), on="patient", how="inner")
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
    ).collect()
