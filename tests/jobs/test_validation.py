"""Row rules for step samples: each bad row gets its one reason, good rows none."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import polars as pl
import pytest

from jobs.validation import quarantine_reason

T0 = datetime(2024, 5, 1, 12, tzinfo=UTC)


def _reason(start: datetime, end: datetime, steps: float | None, offset: int | None = 0) -> str:
    row = pl.DataFrame(
        {"start_ts": [start], "end_ts": [end], "steps": [steps], "utc_offset_minutes": [offset]},
        schema={
            "start_ts": pl.Datetime("us", "UTC"),
            "end_ts": pl.Datetime("us", "UTC"),
            "steps": pl.Float64,
            "utc_offset_minutes": pl.Int16,
        },
    )
    return row.select(quarantine_reason()).item()


@pytest.mark.parametrize(
    ("start", "end", "steps", "offset", "reason"),
    [
        (T0, T0 + timedelta(minutes=5), 300.0, 60, None),
        (T0, T0, 8.0, 0, None),  # Apple writes very short samples with a few steps
        (T0, T0 + timedelta(minutes=1), None, 0, "steps is not a number"),
        (T0, T0 + timedelta(minutes=1), float("nan"), 0, "steps is not a number"),
        (T0, T0 + timedelta(minutes=1), -3.0, 0, "negative steps"),
        (T0, T0 + timedelta(minutes=1), float("inf"), 0, "steps is not finite"),
        (T0, T0 - timedelta(seconds=1), 5.0, 0, "end before start"),
        (T0, T0 + timedelta(hours=25), 5.0, 0, "sample longer than 24 hours"),
        (T0, T0 + timedelta(minutes=1), 5.0, None, "missing UTC offset"),
        (T0, T0 + timedelta(minutes=1), 5.0, 15 * 60, "UTC offset beyond 14 hours"),
        (T0, T0 + timedelta(minutes=1), 50_000.0, 0, "implausible step rate"),
        (
            datetime(1970, 1, 1, tzinfo=UTC),
            datetime(1970, 1, 1, 0, 1, tzinfo=UTC),
            5.0,
            0,
            "timestamp outside 2000-2099",
        ),
        (
            datetime(2150, 1, 1, tzinfo=UTC),
            datetime(2150, 1, 1, 0, 1, tzinfo=UTC),
            5.0,
            0,
            "timestamp outside 2000-2099",
        ),
    ],
)
def test_each_rule_gives_its_reason(start, end, steps, offset, reason) -> None:
    got = _reason(start, end, steps, offset)
    if reason is None:
        assert got is None
    else:
        assert got is not None and got.startswith(reason)
