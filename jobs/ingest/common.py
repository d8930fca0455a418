"""Shared by every ingest reader: parse counts, repeat detection, the valid/rejected split."""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

from jobs.validation import quarantine_reason
from lakehouse.catalog import STEP_SAMPLES


@dataclass
class ParseStats:
    """Counts kept while a file is read.

    Args:
        records_read: records (XML elements or CSV data lines) read.
        skipped: records that carry no steps (other types, days without step data).
        export_date: the ``ExportDate`` value as written, None when the file has none.
    """

    records_read: int = 0
    skipped: int = 0
    export_date: str | None = None


class SeenKeys:
    """Hashes of the step_samples keys accepted so far from one file.

    A file that repeats a sample (same patient, source and times) must not count its steps twice;
    the repeat is quarantined instead. 8 bytes per accepted sample, so a 1 GB export costs tens of
    MB. A 64-bit hash collision would quarantine a valid sample (kept, with its raw text), never
    drop it.
    """

    def __init__(self) -> None:
        self._hashes = pl.Series("hash", [], dtype=pl.UInt64)

    def repeats(self, hashes: pl.Series) -> pl.Series:
        """Which of ``hashes`` (null = row already rejected) repeat an earlier accepted key."""
        repeated = (hashes.is_in(self._hashes) | ~hashes.is_first_distinct()).fill_null(False)
        repeated = repeated & hashes.is_not_null()
        # No rechunk: copying every earlier hash once per batch would be quadratic.
        self._hashes = pl.concat(
            [self._hashes, hashes.filter(~repeated).drop_nulls()], rechunk=False
        )
        return repeated


def split_samples(
    frame: pl.DataFrame,
    *,
    first: pl.Expr | None = None,
    last: pl.Expr | None = None,
    seen: SeenKeys | None = None,
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Split candidate rows into bronze/step_samples rows and rejected rows.

    Args:
        frame: the step_samples columns (but ``month``) plus ``record`` and ``raw``.
        first: reader-specific reasons checked before :func:`jobs.validation.quarantine_reason`
            (a string expression, null when the row is valid).
        last: reader-specific reasons checked after it.
        seen: keys accepted from earlier batches of the same file; repeats are rejected.

    Returns:
        The valid rows with exactly the step_samples columns (sorted as the table is), and the
        rejected ones with ``record``, ``reason``, ``raw`` and ``patient_id``.
    """
    reasons = [quarantine_reason()]
    if first is not None:
        reasons.insert(0, first)
    if last is not None:
        reasons.append(last)
    frame = frame.with_columns(reason=pl.coalesce(reasons))
    if seen is not None:
        hashes = frame.select(
            pl.when(pl.col("reason").is_null()).then(pl.struct(STEP_SAMPLES.keys).hash(seed=0))
        ).to_series()
        frame = frame.with_columns(
            reason=pl.when(seen.repeats(hashes))
            .then(pl.lit("repeats an earlier sample of this file"))
            .otherwise(pl.col("reason"))
        )
    valid = (
        frame.filter(pl.col("reason").is_null())
        .with_columns(month=pl.col("start_ts").dt.strftime("%Y-%m"))
        .select(STEP_SAMPLES.columns)
        .sort(list(STEP_SAMPLES.sort_by))
    )
    rejected = (
        frame.filter(pl.col("reason").is_not_null())
        .select("record", "reason", "raw", "patient_id")
        .sort("record")
    )
    return valid, rejected
