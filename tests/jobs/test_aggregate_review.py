"""Review of the daily-steps aggregation: edge inputs of the transform and the incremental job.

The transform is checked against the independent plain-Python reference
(``tests/jobs/reference_daily.py``); the job is checked against ``daily_steps`` over the whole of
bronze (a full recomputation), after appends, deletes and compactions of bronze.
"""

from __future__ import annotations

import random
import shutil
import tempfile
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from unittest import mock

import polars as pl
import pytest
from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal

from jobs import aggregate
from jobs.daily import daily_steps
from lakehouse.catalog import DAILY_STEPS, STEP_SAMPLES
from lakehouse.storage import Lake, sql_literal
from tests.jobs.reference_daily import reference_daily
from tests.jobs.samples import assert_days_match_reference, local_sample, sample_frame

# Ids that sort oddly: empty, a quote, a backslash, lower case after upper case, multi-byte UTF-8.
ODD_PATIENTS = ["", "A", "A'", "B", "a", "é", "日本", "Z\\"]


# ------------------------------------------------------------------------------------- helpers


def _bronze(samples: list[dict[str, Any]]) -> pl.DataFrame:
    return sample_frame(samples).with_columns(month=pl.col("start_ts").dt.strftime("%Y-%m"))


def _by_day(out: pl.DataFrame) -> dict[tuple[str, date], dict[str, Any]]:
    return {(r["patient_id"], r["date"]): r for r in out.iter_rows(named=True)}


def _assert_matches_reference(samples: list[dict[str, Any]]) -> None:
    assert_days_match_reference(samples, daily_steps(sample_frame(samples)))


def _silver(lake: Lake) -> pl.DataFrame:
    return lake.read(DAILY_STEPS).sort("patient_id", "date")


def _assert_silver_is_full_recompute(lake: Lake) -> None:
    expected = daily_steps(lake.read(STEP_SAMPLES)).sort("patient_id", "date")
    actual = _silver(lake)
    assert actual.height == expected.height
    assert_frame_equal(actual.select(expected.columns), expected, check_dtypes=False, abs_tol=1e-6)


# ----------------------------------------------------------------- transform: hand-made cases


def test_crossing_hours_corrections_with_an_unsorted_overlapping_source() -> None:
    samples = [
        # watch: 50 steps inside hour 9 only
        local_sample("2024-06-01 09:00", "2024-06-01 09:59", 50, source="watch"),
        # phone: 09:30-11:30, 120 steps -> 30 / 60 / 30 (its first hour gets a negative correction)
        local_sample("2024-06-01 09:30", "2024-06-01 11:30", 120, source="phone"),
        # zero steps across three hours: covered, no steps
        local_sample("2024-06-01 12:30", "2024-06-01 14:30", 0, source="phone"),
        # exactly one hour: stays in hour 15
        local_sample("2024-06-01 15:00", "2024-06-01 16:00", 40, source="phone"),
        # zero duration exactly on an hour boundary: hour 17 only
        local_sample("2024-06-01 17:00", "2024-06-01 17:00", 3, source="watch"),
    ]
    for order in (samples, list(reversed(samples)), samples[2:] + samples[:2]):
        day = _by_day(daily_steps(sample_frame(order)))[("P1", date(2024, 6, 1))]
        # hour 9: watch 50 beats phone 30; hours 10, 11: phone 60 + 30; hour 15: 40; hour 17: 3
        assert day["steps"] == pytest.approx(50 + 60 + 30 + 40 + 3)
        assert day["coverage_hours"] == 3 + 3 + 1 + 1  # 9-11, 12-14, 15, 17
        assert day["n_samples"] == 5
        assert day["n_sources"] == 2
    _assert_matches_reference(samples)


def test_sample_ending_exactly_at_local_midnight_stays_on_its_day() -> None:
    days = _by_day(
        daily_steps(
            sample_frame(
                [
                    local_sample("2024-06-01 23:00", "2024-06-02 00:00", 70, offset=345),
                    # zero duration exactly at midnight belongs to the new day
                    local_sample("2024-06-03 00:00", "2024-06-03 00:00", 5, offset=-210),
                ]
            )
        )
    )
    assert set(days) == {("P1", date(2024, 6, 1)), ("P1", date(2024, 6, 3))}
    assert days[("P1", date(2024, 6, 1))]["steps"] == 70
    assert days[("P1", date(2024, 6, 1))]["coverage_hours"] == 1
    assert days[("P1", date(2024, 6, 3))]["steps"] == 5


@pytest.mark.parametrize("offset", [345, -210, 840, -840, 1, -59])
def test_offsets_that_are_not_whole_hours_split_at_local_midnight(offset: int) -> None:
    # 23:45-00:15 local: half on each local day whatever the offset
    days = _by_day(
        daily_steps(
            sample_frame([local_sample("2024-01-10 23:45", "2024-01-11 00:15", 60, offset=offset)])
        )
    )
    assert days[("P1", date(2024, 1, 10))]["steps"] == pytest.approx(30)
    assert days[("P1", date(2024, 1, 11))]["steps"] == pytest.approx(30)
    assert days[("P1", date(2024, 1, 10))]["n_samples"] == 1
    assert days[("P1", date(2024, 1, 11))]["n_samples"] == 1


def test_dst_fall_back_repeated_hour_with_both_sources_in_both_hours() -> None:
    # New York 2024-11-03, 01:00-02:00 twice: EDT (-240) then EST (-300)
    samples = [
        local_sample("2024-11-03 01:10", "2024-11-03 01:20", 100, offset=-240, source="phone"),
        local_sample("2024-11-03 01:15", "2024-11-03 01:25", 150, offset=-240, source="watch"),
        local_sample("2024-11-03 01:10", "2024-11-03 01:20", 80, offset=-300, source="phone"),
        local_sample("2024-11-03 01:30", "2024-11-03 01:40", 60, offset=-300, source="watch"),
    ]
    day = _by_day(daily_steps(sample_frame(samples)))[("P1", date(2024, 11, 3))]
    assert day["steps"] == 150 + 80  # best source of each real hour
    assert day["coverage_hours"] == 2
    assert day["n_samples"] == 4
    assert day["n_sources"] == 2
    _assert_matches_reference(samples)


def test_full_day_sample_of_exactly_24_hours() -> None:
    samples = [
        local_sample("2024-02-01 00:00", "2024-02-02 00:00", 2400),
        local_sample("2024-02-03 00:30", "2024-02-04 00:30", 480, offset=-840),
    ]
    days = _by_day(daily_steps(sample_frame(samples)))
    assert days[("P1", date(2024, 2, 1))]["coverage_hours"] == 24
    assert days[("P1", date(2024, 2, 1))]["steps"] == pytest.approx(2400)
    assert ("P1", date(2024, 2, 2)) not in days
    assert days[("P1", date(2024, 2, 4))]["steps"] == pytest.approx(10)
    _assert_matches_reference(samples)


def test_more_than_64_sources_for_one_patient() -> None:
    # 150 sources (three 64-bit words), each in its own hour slot, several per hour
    samples = [
        local_sample(
            f"2024-05-01 {s % 24:02d}:{s % 50:02d}",
            f"2024-05-01 {s % 24:02d}:{s % 50 + 5:02d}",
            s + 1,
            source=f"device-{s:03d}",
        )
        for s in range(150)
    ] + [local_sample("2024-05-01 10:00", "2024-05-01 10:05", 7, source="x", patient="P2")]
    day = _by_day(daily_steps(sample_frame(samples)))[("P1", date(2024, 5, 1))]
    assert day["n_sources"] == 150
    assert day["n_samples"] == 150
    assert day["steps"] == sum(max(s + 1 for s in range(150) if s % 24 == h) for h in range(24))
    _assert_matches_reference(samples)


def test_many_patients_and_wide_source_sets_in_one_batch() -> None:
    # 5,000 patients, a few of them with 300 sources: the packed keys must not overflow or collide
    rng = random.Random(7)
    base = datetime(2024, 3, 9, tzinfo=UTC)
    samples = []
    for p in range(5000):
        sources = 300 if p in (0, 1234, 4999) else rng.randint(1, 3)
        for s in range(sources):
            start = base + timedelta(minutes=rng.randrange(3 * 24 * 60))
            samples.append(
                {
                    "patient_id": f"P{p:05d}",
                    "start_ts": start,
                    "end_ts": start + timedelta(seconds=rng.randrange(6 * 3600)),
                    "utc_offset_minutes": rng.choice([-300, 0, 345, 840]),
                    "steps": float(rng.randrange(3000)),
                    "source": f"src{s:03d}",
                }
            )
    rng.shuffle(samples)
    _assert_matches_reference(samples)


@pytest.mark.parametrize(
    ("start", "offset"),
    [
        # a device clock reset to the Unix epoch, worn in New York: local time is 1969-12-31
        (datetime(1970, 1, 1, 0, 0, tzinfo=UTC), -300),
        # a device clock far in the future (past the 2**31 hour-slot range of the packed keys)
        (datetime(2095, 1, 1, 12, 0, tzinfo=UTC), 0),
    ],
)
def test_out_of_range_timestamps_never_move_steps_to_another_patient(
    start: datetime, offset: int
) -> None:
    """BUG: jobs/daily.py packs (patient, local hour slot) as ``patient * 2**31 + slot`` and
    unpacks with ``//`` and ``%``. A local hour before 1970 gives a negative slot (and one from
    2089 on a slot >= 2**31), so the unpacked patient code is off by one: the steps land on a
    neighbouring patient (or, for code -1, wrap to the last one) on a date ~120 years away.
    Validation (jobs/validation.py) accepts these timestamps."""
    samples = [
        {
            "patient_id": "A",
            "start_ts": datetime(2024, 1, 1, 12, tzinfo=UTC),
            "end_ts": datetime(2024, 1, 1, 12, 5, tzinfo=UTC),
            "utc_offset_minutes": 0,
            "steps": 5.0,
            "source": "phone",
        },
        {
            "patient_id": "B",
            "start_ts": start,
            "end_ts": start + timedelta(minutes=5),
            "utc_offset_minutes": offset,
            "steps": 100.0,
            "source": "phone",
        },
        {
            "patient_id": "C",
            "start_ts": datetime(2024, 1, 2, 12, tzinfo=UTC),
            "end_ts": datetime(2024, 1, 2, 12, 5, tzinfo=UTC),
            "utc_offset_minutes": 0,
            "steps": 7.0,
            "source": "phone",
        },
    ]
    actual = {key: row["steps"] for key, row in _by_day(daily_steps(sample_frame(samples))).items()}
    expected = {key: row["steps"] for key, row in reference_daily(samples).items()}
    assert actual == expected


# ----------------------------------------------------------- transform: property against reference

_BASE = datetime(2024, 11, 2, tzinfo=UTC)  # New York falls back on 2024-11-03
_start = st.one_of(
    st.integers(0, 4 * 24 * 4).map(lambda q: _BASE + timedelta(minutes=15 * q)),  # on boundaries
    st.integers(0, 4 * 86400).map(lambda s: _BASE + timedelta(seconds=s)),
)
_duration = st.one_of(
    st.sampled_from([0, 1, 1800, 3600, 23 * 3600, 24 * 3600]).map(lambda s: timedelta(seconds=s)),
    st.integers(0, 24 * 3600).map(lambda s: timedelta(seconds=s)),
)
_review_sample = st.builds(
    lambda patient, start, duration, steps, offset, source: {
        "patient_id": patient,
        "start_ts": start,
        "end_ts": start + duration,
        "utc_offset_minutes": offset,
        "steps": float(steps),
        "source": source,
    },
    patient=st.sampled_from(ODD_PATIENTS),
    start=_start,
    duration=_duration,
    steps=st.one_of(st.just(0), st.integers(0, 5000)),
    offset=st.one_of(
        st.sampled_from([-840, -720, -300, -240, -210, 0, 330, 345, 840]), st.integers(-840, 840)
    ),
    source=st.sampled_from(["phone", "watch", "ring", "w'2", ""]),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_review_sample, min_size=1, max_size=50), st.randoms(use_true_random=False))
def test_transform_matches_reference_on_edge_samples_in_any_order(
    samples: list[dict[str, Any]], rnd: random.Random
) -> None:
    rnd.shuffle(samples)
    _assert_matches_reference(samples)


# ------------------------------------------------------------------------------ the job: helpers

START = datetime(2024, 1, 28, tzinfo=UTC)  # batches cross the January / February partitions


def _grid(patients: list[str], days: int, *, steps: float = 10.0) -> pl.DataFrame:
    """Three samples a day per patient, phone and watch, at varied offsets."""
    rows = []
    for i, patient in enumerate(patients):
        for day in range(days):
            for hour, source, offset in ((3, "phone", -300), (11, "watch", 345), (20, "phone", 60)):
                start = START + timedelta(days=day, hours=hour, minutes=i % 60)
                rows.append(
                    {
                        "patient_id": patient,
                        "start_ts": start,
                        "end_ts": start + timedelta(minutes=50),
                        "utc_offset_minutes": offset,
                        "steps": steps + i,
                        "source": source,
                    }
                )
    return _bronze(rows)


@pytest.fixture
def lake(tmp_path: Path) -> Lake:
    return Lake(str(tmp_path / "lake"))


PATIENTS = [f"P{i:02d}" for i in range(10)]


# ------------------------------------------------------------------- the job: deterministic cases


@pytest.mark.parametrize("compact_bronze", [False, True])
def test_late_data_for_one_patient_inside_a_large_bronze_file(
    lake: Lake, compact_bronze: bool
) -> None:
    """BUG: jobs/aggregate.py ``_scope_batches``: when a file segment holds more than
    ``batch_samples`` samples it is split by per-patient counts over the *segment's* patient range
    (``_patient_filter(first, last, ...)``), not the scope's. Those patients can lie outside the
    scope, so the batch bounds ``[scope.first_patient, *starts[1:]]`` are not increasing: the
    first batch is [P05, P02) (empty), later batches hold P02..P07, and the grouped commit uses
    the predicate ``patient_id >= 'P05' AND patient_id <= 'P05'`` for rows of P02..P07. delta-rs
    refuses the write ("rows failed validation check"): the run fails, and fails again on every
    retry, so the late data never reaches silver. Typical trigger: bronze after ``lake optimize``
    (one big file per month) plus a late upload for one patient."""
    lake.append(STEP_SAMPLES, _grid(PATIENTS, 4))
    if compact_bronze:
        lake.optimize(STEP_SAMPLES, vacuum_hours=168)
    aggregate.run(lake)
    late = _bronze([local_sample("2024-01-29 12:00", "2024-01-29 12:30", 999, patient="P05")])
    lake.append(STEP_SAMPLES, late)
    summary = aggregate.run(lake, batch_samples=20)  # the month's file holds 120 samples
    assert summary.mode == "incremental"
    _assert_silver_is_full_recompute(lake)


def test_extreme_samples_at_both_edges_of_an_incremental_scope(lake: Lake) -> None:
    # existing samples as far from the scope as can still touch its first and last local days
    first_day, last_day = date(2024, 2, 9), date(2024, 2, 12)  # the scope of the late file below
    before_first = datetime(2024, 2, 9, tzinfo=UTC) - timedelta(hours=38) + timedelta(minutes=1)
    after_last = datetime(2024, 2, 13, tzinfo=UTC) + timedelta(hours=14) - timedelta(minutes=1)
    edges = [
        # 24 h at +14 h starting 38 h before the first day (UTC): ends 1 min into its local day
        {
            "patient_id": "P1",
            "start_ts": before_first,
            "end_ts": before_first + timedelta(hours=24),
            "utc_offset_minutes": 840,
            "steps": 1440.0,
            "source": "phone",
        },
        # 23 h at -12 h starting just before the first day
        {
            "patient_id": "P1",
            "start_ts": datetime(2024, 2, 9, tzinfo=UTC) - timedelta(minutes=1),
            "end_ts": datetime(2024, 2, 9, 23, tzinfo=UTC) - timedelta(minutes=1),
            "utc_offset_minutes": -720,
            "steps": 2300.0,
            "source": "watch",
        },
        # at -14 h, starting one minute before local midnight after the last day
        {
            "patient_id": "P1",
            "start_ts": after_last,
            "end_ts": after_last + timedelta(hours=20),
            "utc_offset_minutes": -840,
            "steps": 1200.0,
            "source": "phone",
        },
    ]
    lake.append(STEP_SAMPLES, _bronze(edges))
    lake.append(STEP_SAMPLES, _grid(["Q0", "Q2"], 20))  # other patients, same days
    aggregate.run(lake)
    # late file whose UTC span is 2024-02-10 00:00 .. 2024-02-11 23:59: scope 02-09 .. 02-12
    late = [
        {
            "patient_id": "P1",
            "start_ts": datetime(2024, 2, 10, tzinfo=UTC),
            "end_ts": datetime(2024, 2, 10, 0, 10, tzinfo=UTC),
            "utc_offset_minutes": 0,
            "steps": 1.0,
            "source": "ring",
        },
        {
            "patient_id": "P1",
            "start_ts": datetime(2024, 2, 11, 23, 49, tzinfo=UTC),
            "end_ts": datetime(2024, 2, 11, 23, 59, tzinfo=UTC),
            "utc_offset_minutes": 0,
            "steps": 1.0,
            "source": "ring",
        },
    ]
    lake.append(STEP_SAMPLES, _bronze(late))
    scopes = aggregate.changed_scopes(lake, 1, 2)
    assert scopes is not None
    assert [(s.first_day, s.last_day) for s in scopes] == [(first_day, last_day)]
    assert aggregate.run(lake, batch_samples=2).mode == "incremental"
    _assert_silver_is_full_recompute(lake)
    silver = _by_day(_silver(lake))
    assert silver[("P1", first_day)]["n_samples"] == 2  # the two edge samples reach it
    assert silver[("P1", last_day)]["n_samples"] == 1


def test_patients_whose_samples_are_all_deleted_leave_no_rows(
    lake: Lake, monkeypatch: pytest.MonkeyPatch
) -> None:
    for group in (PATIENTS[:4], PATIENTS[4:7], PATIENTS[7:]):
        lake.append(STEP_SAMPLES, _grid(group, 3))
    aggregate.run(lake)
    monkeypatch.setattr(aggregate, "_COMMIT_DAYS", 1)  # one commit per batch, empty ones too
    lake.delete(STEP_SAMPLES, "patient_id >= 'P03' AND patient_id <= 'P05'")
    assert aggregate.run(lake, batch_samples=9).batches > 1
    _assert_silver_is_full_recompute(lake)
    assert not set(_silver(lake)["patient_id"]) & {"P03", "P04", "P05"}
    # and every sample gone: silver empties
    lake.delete(STEP_SAMPLES, "true")
    aggregate.run(lake, batch_samples=9)
    assert _silver(lake).height == 0


def test_odd_patient_ids_at_batch_bounds(lake: Lake, monkeypatch: pytest.MonkeyPatch) -> None:
    # one file per patient, so batch bounds fall on every odd id (empty, quote, backslash, UTF-8)
    for patient in ODD_PATIENTS:
        lake.append(STEP_SAMPLES, _grid([patient], 3))
    monkeypatch.setattr(aggregate, "_COMMIT_DAYS", 5)
    aggregate.run(lake, batch_samples=10)
    _assert_silver_is_full_recompute(lake)
    assert set(_silver(lake)["patient_id"]) == set(ODD_PATIENTS)
    lake.append(STEP_SAMPLES, _grid(["A'", "é"], 2, steps=500.0))
    lake.delete(STEP_SAMPLES, f"patient_id = {sql_literal('Z' + chr(92))}")
    assert aggregate.run(lake, batch_samples=10).mode == "incremental"
    _assert_silver_is_full_recompute(lake)


def test_reruns_batch_sizes_and_bronze_compaction_give_identical_silver(lake: Lake) -> None:
    for group in (PATIENTS[:5], PATIENTS[3:8], PATIENTS[6:]):  # overlapping patient ranges
        lake.append(STEP_SAMPLES, _grid(group, 5))
    aggregate.run(lake, batch_samples=25)
    first = _silver(lake)
    _assert_silver_is_full_recompute(lake)
    assert aggregate.run(lake).mode == "up-to-date"
    lake.optimize(STEP_SAMPLES, vacuum_hours=168)
    assert aggregate.run(lake).mode == "up-to-date"
    for batch_samples in (1, 37, 10_000):
        aggregate.run(lake, full=True, batch_samples=batch_samples)
        assert_frame_equal(_silver(lake), first, abs_tol=1e-9)


def test_bronze_rebuilt_from_scratch_is_not_taken_for_up_to_date(lake: Lake) -> None:
    """BUG: jobs/aggregate.py ``run`` trusts the bronze *version number* alone. When the bronze
    table is dropped and rebuilt (e.g. re-ingesting all landing files after a parser fix), its
    versions restart at 0, so ``previous >= bronze_version`` says "up-to-date" and silver keeps
    the old patients' days and misses the new ones; later runs diff against versions of the
    new table and never repair it."""
    lake.append(STEP_SAMPLES, _grid(["OLD1"], 2))
    lake.append(STEP_SAMPLES, _grid(["OLD2"], 2))
    aggregate.run(lake)
    shutil.rmtree(lake.table_uri(STEP_SAMPLES))
    lake.append(STEP_SAMPLES, _grid(["NEW1"], 2))
    aggregate.run(lake)
    _assert_silver_is_full_recompute(lake)


def test_merging_scopes_keeps_unbounded_sides_unbounded() -> None:
    """BUG (latent): jobs/aggregate.py ``merge_scopes`` documents None as unbounded but merges
    with ``or ""`` / ``or date.max`` / ``or date.min``, so an unbounded side becomes the other
    scope's bound: patients after 'K' (or days outside the other scope's dates) are no longer
    recomputed. Not reachable today (``_file_scopes`` always gives bounded scopes; it raises on
    files without statistics instead)."""
    unbounded = aggregate.Scope(first_patient=None, last_patient=None)
    bounded = aggregate.Scope(
        first_patient=None,
        last_patient="K",
        first_day=date(2024, 1, 1),
        last_day=date(2024, 1, 31),
    )
    assert aggregate.merge_scopes([unbounded, bounded]) == [unbounded]


# ---------------------------------------------------------- the job: random histories of bronze

_JOB_BASE = datetime(2024, 1, 30, tzinfo=UTC)
_job_sample = st.builds(
    lambda patient, minute, seconds, steps, offset, source: {
        "patient_id": patient,
        "start_ts": _JOB_BASE + timedelta(minutes=minute),
        "end_ts": _JOB_BASE + timedelta(minutes=minute, seconds=seconds),
        "utc_offset_minutes": offset,
        "steps": float(steps),
        "source": source,
    },
    patient=st.sampled_from(ODD_PATIENTS),
    minute=st.integers(0, 8 * 24 * 60),
    seconds=st.one_of(st.just(24 * 3600), st.integers(0, 24 * 3600)),
    steps=st.integers(0, 3000),
    offset=st.sampled_from([-840, -300, 0, 345, 840]),
    source=st.sampled_from(["phone", "watch"]),
)
_operation = st.one_of(
    st.tuples(st.just("append"), st.lists(_job_sample, min_size=1, max_size=12)),
    st.tuples(st.just("delete patient"), st.sampled_from(ODD_PATIENTS)),
    st.tuples(st.just("delete day"), st.integers(0, 8)),
    st.tuples(st.just("optimize"), st.none()),
)


def _apply(lake: Lake, kind: str, argument: Any) -> None:
    if kind == "append":
        lake.append(STEP_SAMPLES, _bronze(argument))
    elif kind == "delete patient":
        lake.delete(STEP_SAMPLES, f"patient_id = {sql_literal(argument)}")
    elif kind == "delete day":
        day = _JOB_BASE + timedelta(days=argument)
        end = day + timedelta(days=1)
        lake.delete(
            STEP_SAMPLES, f"start_ts >= '{day.isoformat()}' AND start_ts < '{end.isoformat()}'"
        )
    else:
        lake.optimize(STEP_SAMPLES, vacuum_hours=168)


def _job_row(patient: str, day: int, hour: int) -> dict[str, Any]:
    start = _JOB_BASE + timedelta(days=day, hours=hour)
    return {
        "patient_id": patient,
        "start_ts": start,
        "end_ts": start + timedelta(minutes=20),
        "utc_offset_minutes": 0,
        "steps": 100.0,
        "source": "phone",
    }


# No shrinking: one Delta history per example is slow to shrink (minutes); the failure found
# first is reported as is. The explicit example always exercises compacted bronze plus late data
# for one patient in the middle of the file (see the _scope_batches bug above).
@example(
    initial=[[_job_row(p, d, 9) for p in ("A", "A'", "B", "a") for d in range(3)]],
    history=[(("optimize", None), 40, 2_000_000), (("append", [_job_row("B", 1, 15)]), 1, 5)],
    first_batch=40,
)
@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    phases=[Phase.explicit, Phase.reuse, Phase.generate],
)
@given(
    initial=st.lists(st.lists(_job_sample, min_size=1, max_size=12), min_size=1, max_size=3),
    history=st.lists(
        st.tuples(_operation, st.integers(1, 40), st.sampled_from([1, 5, 2_000_000])),
        min_size=1,
        max_size=3,
    ),
    first_batch=st.integers(1, 40),
)
def test_incremental_runs_equal_a_full_recompute_after_any_bronze_history(
    initial: list[list[dict[str, Any]]],
    history: list[tuple[tuple[str, Any], int, int]],
    first_batch: int,
) -> None:
    with tempfile.TemporaryDirectory() as folder:
        lake = Lake(str(Path(folder) / "lake"))
        for rows in initial:
            lake.append(STEP_SAMPLES, _bronze(rows))
        aggregate.run(lake, batch_samples=first_batch)
        _assert_silver_is_full_recompute(lake)
        for (kind, argument), batch_samples, commit_days in history:
            _apply(lake, kind, argument)
            with mock.patch.object(aggregate, "_COMMIT_DAYS", commit_days):
                aggregate.run(lake, batch_samples=batch_samples)
            _assert_silver_is_full_recompute(lake)
