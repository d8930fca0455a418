"""UTC offsets of an IANA time zone, vectorised over many instants.

``zoneinfo`` answers one instant at a time; calling it per sample would dominate generation time.
Offsets only change at a handful of DST transitions a year, so this module finds those transitions
once per zone and period (with ``zoneinfo``, to the second) and then answers whole arrays with a
binary search.
"""

from __future__ import annotations

from datetime import UTC, datetime
from functools import lru_cache
from zoneinfo import ZoneInfo

import numpy as np
from numpy.typing import NDArray

_DAY = 86_400


def _offset_seconds(zone: ZoneInfo, utc_seconds: int) -> int:
    offset = datetime.fromtimestamp(utc_seconds, tz=UTC).astimezone(zone).utcoffset()
    assert offset is not None
    return int(offset.total_seconds())


class ZoneOffsets:
    """The offsets of one zone over a range of years.

    Args:
        timezone: IANA zone name.
        first_year: first calendar year that must be answered exactly.
        last_year: last calendar year that must be answered exactly.
    """

    def __init__(self, timezone: str, first_year: int, last_year: int) -> None:
        zone = ZoneInfo(timezone)
        start = int(datetime(first_year - 1, 12, 1, tzinfo=UTC).timestamp())
        stop = int(datetime(last_year + 1, 2, 1, tzinfo=UTC).timestamp())
        # Probe twice a day (transitions are months apart), then bisect each change to the second.
        probes = list(range(start, stop + _DAY, _DAY // 2))
        offsets = [_offset_seconds(zone, t) for t in probes]
        since = [start]
        values = [offsets[0]]
        for before, after, off_before, off_after in zip(
            probes, probes[1:], offsets, offsets[1:], strict=False
        ):
            if off_before == off_after:
                continue
            low, high = before, after  # offset(low) == off_before, offset(high) == off_after
            while high - low > 1:
                middle = (low + high) // 2
                if _offset_seconds(zone, middle) == off_before:
                    low = middle
                else:
                    high = middle
            since.append(high)
            values.append(off_after)
        self.timezone = timezone
        self.transitions: NDArray[np.int64] = np.array(since, dtype=np.int64)
        self.offsets: NDArray[np.int64] = np.array(values, dtype=np.int64)

    def at_utc(self, utc_seconds: NDArray[np.int64]) -> NDArray[np.int64]:
        """Offset in seconds east of UTC in effect at each UTC instant (seconds since epoch)."""
        slot = np.searchsorted(self.transitions, utc_seconds, side="right") - 1
        return self.offsets[np.clip(slot, 0, None)]

    def local_to_utc(self, local_seconds: NDArray[np.int64]) -> NDArray[np.int64]:
        """UTC instants of local wall-clock times (naive seconds since epoch).

        Ambiguous times (the repeated hour when clocks go back) resolve to one of their two
        instants; times that do not exist (skipped when clocks go forward) land one DST step
        later, as a phone's clock would show them.
        """
        guess = local_seconds - self.at_utc(local_seconds)
        return local_seconds - self.at_utc(guess)


@lru_cache(maxsize=64)
def zone_offsets(timezone: str, first_year: int, last_year: int) -> ZoneOffsets:
    """The (cached) offsets of ``timezone`` for the given years."""
    return ZoneOffsets(timezone, first_year, last_year)
