"""The daily aggregation transform: golden cases computed by hand and properties."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal

from jobs.daily import MIN_WEAR_HOURS, daily_steps
from tests.jobs.samples import assert_days_match_reference, local_sample, sample_frame


def _daily(samples: list[dict[str, Any]]) -> dict[tuple[str, date], dict[str, Any]]:
    out = daily_steps(sample_frame(samples))
    return {(r["patient_id"], r["date"]): r for r in out.iter_rows(named=True)}


def test_sample_across_local_midnight_is_split_in_proportion_to_time() -> None:
    # 23:30-00:30 local at UTC+1: half of the hour on each local day
    days = _daily([local_sample("2024-03-04 23:30", "2024-03-05 00:30", 120, offset=60)])
    assert days[("P1", date(2024, 3, 4))]["steps"] == pytest.approx(60)
    assert days[("P1", date(2024, 3, 5))]["steps"] == pytest.approx(60)
    # the sample touches both days, so each counts it
    assert days[("P1", date(2024, 3, 4))]["n_samples"] == 1
    assert days[("P1", date(2024, 3, 5))]["n_samples"] == 1


def test_local_date_comes_from_each_samples_own_offset() -> None:
    instant = "2024-05-01 23:30"  # UTC
    east = local_sample(instant, instant, 10, offset=0) | {"utc_offset_minutes": 120}
    west = local_sample(instant, instant, 20, offset=0) | {"utc_offset_minutes": -300}
    days = _daily([east, west])
    assert days[("P1", date(2024, 5, 2))]["steps"] == 10  # 01:30 local on May 2
    assert days[("P1", date(2024, 5, 1))]["steps"] == 20  # 18:30 local on May 1


def test_half_hour_offset_uses_local_hours() -> None:
    # Kolkata, UTC+05:30: 23:50-00:10 local crosses local midnight, not UTC midnight
    days = _daily([local_sample("2024-01-10 23:50", "2024-01-11 00:10", 40, offset=330)])
    assert days[("P1", date(2024, 1, 10))]["steps"] == pytest.approx(20)
    assert days[("P1", date(2024, 1, 11))]["steps"] == pytest.approx(20)


def test_dst_spring_forward_day_keeps_both_sides_of_the_gap() -> None:
    # New York, 2024-03-10: 01:30 EST (UTC-5) and 03:30 EDT (UTC-4) are the same local date
    days = _daily(
        [
            local_sample("2024-03-10 01:30", "2024-03-10 01:40", 100, offset=-300),
            local_sample("2024-03-10 03:30", "2024-03-10 03:40", 200, offset=-240),
        ]
    )
    day = days[("P1", date(2024, 3, 10))]
    assert day["steps"] == 300
    assert day["coverage_hours"] == 2


def test_dst_fall_back_repeated_hour_is_two_real_hours_not_an_overlap() -> None:
    # New York, 2024-11-03: 01:00-02:00 happens twice (EDT, then EST). Phone in the first, watch
    # in the second: different real hours, so both count; no de-duplication between them.
    days = _daily(
        [
            local_sample("2024-11-03 01:10", "2024-11-03 01:20", 100, offset=-240, source="phone"),
            local_sample("2024-11-03 01:10", "2024-11-03 01:20", 150, offset=-300, source="watch"),
        ]
    )
    day = days[("P1", date(2024, 11, 3))]
    assert day["steps"] == 250
    assert day["coverage_hours"] == 2
    assert day["n_sources"] == 2


def test_phone_and_watch_in_the_same_hour_count_once() -> None:
    days = _daily(
        [
            local_sample("2024-06-01 09:00", "2024-06-01 09:10", 300, source="phone"),
            local_sample("2024-06-01 09:40", "2024-06-01 09:50", 100, source="phone"),
            local_sample("2024-06-01 09:01", "2024-06-01 09:11", 380, source="watch"),
            # another hour recorded only by the phone still counts
            local_sample("2024-06-01 15:00", "2024-06-01 15:05", 50, source="phone"),
        ]
    )
    day = days[("P1", date(2024, 6, 1))]
    # hour 9: phone 400 beats watch 380; hour 15: phone 50
    assert day["steps"] == 450
    assert day["coverage_hours"] == 2
    assert day["n_samples"] == 4
    assert day["n_sources"] == 2


def test_long_sample_is_spread_over_hours_and_end_is_exclusive() -> None:
    days = _daily(
        [
            local_sample("2024-02-01 09:30", "2024-02-01 12:30", 300),  # 3 h: 50/100/100/50
            local_sample("2024-02-01 14:50", "2024-02-01 15:00", 10),  # ends on the hour
            local_sample("2024-02-01 18:00", "2024-02-01 18:00", 7),  # zero duration
        ]
    )
    day = days[("P1", date(2024, 2, 1))]
    assert day["steps"] == pytest.approx(317)
    assert day["coverage_hours"] == 4 + 1 + 1


def test_wear_day_needs_enough_covered_hours_and_some_steps() -> None:
    worn = [
        local_sample(f"2024-04-02 {h:02d}:00", f"2024-04-02 {h:02d}:05", 10)
        for h in range(8, 8 + MIN_WEAR_HOURS)
    ]
    barely = worn[:-1]
    days = _daily(worn + [s | {"patient_id": "P2"} for s in barely])
    assert days[("P1", date(2024, 4, 2))]["is_wear_day"] is True
    assert days[("P2", date(2024, 4, 2))]["is_wear_day"] is False


def test_patients_are_kept_apart_and_month_column_matches_date() -> None:
    days = _daily(
        [
            local_sample("2024-01-31 10:00", "2024-01-31 10:05", 5, patient="A"),
            local_sample("2024-01-31 10:00", "2024-01-31 10:05", 9, patient="B"),
            local_sample("2024-02-01 10:00", "2024-02-01 10:05", 4, patient="B"),
        ]
    )
    assert days[("A", date(2024, 1, 31))]["steps"] == 5
    assert days[("B", date(2024, 1, 31))]["steps"] == 9
    assert days[("B", date(2024, 2, 1))]["month"] == "2024-02"


def test_empty_input_gives_empty_output_with_schema() -> None:
    out = daily_steps(sample_frame([]))
    assert out.height == 0
    assert out.columns == [
        "patient_id",
        "date",
        "steps",
        "coverage_hours",
        "n_samples",
        "n_sources",
        "is_wear_day",
        "month",
    ]


_BASE = datetime(2024, 3, 9, tzinfo=UTC)
_sample_strategy = st.builds(
    lambda patient, start_min, duration_s, steps, offset, source: {
        "patient_id": patient,
        "start_ts": _BASE + timedelta(minutes=start_min),
        "end_ts": _BASE + timedelta(minutes=start_min, seconds=duration_s),
        "utc_offset_minutes": offset,
        "steps": float(steps),
        "source": source,
    },
    patient=st.sampled_from(["A", "B", "C'D"]),
    start_min=st.integers(0, 3 * 24 * 60),
    duration_s=st.integers(0, 6 * 3600),
    steps=st.integers(0, 3000),
    offset=st.sampled_from([-300, -240, 0, 60, 330, 345, 840, -720]),
    source=st.sampled_from(["phone", "watch", "ring"]),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_sample_strategy, min_size=1, max_size=40))
def test_matches_an_independent_computation(samples: list[dict[str, Any]]) -> None:
    assert_days_match_reference(samples, daily_steps(sample_frame(samples)))


@settings(max_examples=40, deadline=None)
@given(st.lists(_sample_strategy, min_size=1, max_size=40))
def test_single_source_steps_are_conserved(samples: list[dict[str, Any]]) -> None:
    one_source = [s | {"source": "phone"} for s in samples]
    out = daily_steps(sample_frame(one_source))
    assert out["steps"].sum() == pytest.approx(sum(s["steps"] for s in one_source), abs=1e-6)
    # with several sources, nothing is double counted: at most the sum, at least the best source
    out_all = daily_steps(sample_frame(samples))
    per_source: dict[str, float] = {}
    for s in samples:
        per_source[s["source"]] = per_source.get(s["source"], 0.0) + s["steps"]
    total = out_all["steps"].sum()
    assert total <= sum(per_source.values()) + 1e-6
    assert (out_all["steps"] >= 0).all()


@settings(max_examples=30, deadline=None)
@given(st.lists(_sample_strategy, min_size=2, max_size=40), st.randoms(use_true_random=False))
def test_result_does_not_depend_on_row_order_or_string_interning(
    samples: list[dict[str, Any]], random: Any
) -> None:
    # intern unrelated strings first, so categorical codes differ from a fresh process
    pl.Series(["watch", "zz-other", "ring", "C'D", "phone"]).cast(pl.Categorical)
    in_order = daily_steps(
        sample_frame(sorted(samples, key=lambda s: (s["patient_id"], s["source"])))
    )
    shuffled = list(samples)
    random.shuffle(shuffled)
    as_categorical = sample_frame(shuffled).with_columns(
        pl.col("source").cast(pl.Categorical), pl.col("patient_id").cast(pl.Categorical)
    )
    for other in (daily_steps(sample_frame(shuffled)), daily_steps(as_categorical)):
        assert_frame_equal(
            other.sort("patient_id", "date"), in_order.sort("patient_id", "date"), abs_tol=1e-6
        )


def test_patients_split_over_many_runs_in_any_order_match_the_reference() -> None:
    # as a batch reads bronze: month files one after another, each holding every patient, and
    # ids longer than the 12 bytes a string view holds inline (views then differ for equal ids)
    long_a, long_b = "patient-with-a-long-identifier-A", "patient-with-a-long-identifier-B"
    samples = []
    for month in (1, 2, 3):
        for patient in (long_a, "P2", long_b):
            for source in ("watch", "phone"):
                for hour in (8, 13, 23):
                    start = f"2024-0{month}-10 {hour:02d}:40"
                    end = f"2024-0{month}-{11 if hour == 23 else 10} {(hour + 1) % 24:02d}:20"
                    samples.append(
                        local_sample(
                            start, end, 10 * hour, offset=60, source=source, patient=patient
                        )
                    )
    days = daily_steps(sample_frame(samples))
    assert days.height == 3 * 3 * 2  # three patients, three months, two days each
    assert_days_match_reference(samples, days)


def test_offset_beyond_14_hours_is_refused_not_read_out_of_bounds() -> None:
    good = local_sample("2024-01-01 10:00", "2024-01-01 10:05", 5)
    # -32768: the one Int16 whose abs() is itself
    for offset in (900, -841, -32768, None):
        bad = good | {"utc_offset_minutes": offset}
        with pytest.raises(ValueError, match="UTC offset missing or beyond 840 minutes"):
            daily_steps(sample_frame([good, bad]))


def test_a_patient_spanning_years_with_sparse_data_is_aggregated() -> None:
    # the dense per-patient cells span every hour between the first and the last sample
    samples = [
        local_sample("2001-03-01 10:00", "2001-03-01 10:30", 100),
        local_sample("2031-03-01 10:00", "2031-03-01 12:00", 200, offset=-240),
    ]
    days = daily_steps(sample_frame(samples))
    assert days["steps"].to_list() == [100, 200]
    assert_days_match_reference(samples, days)
