"""The Polars feature transform against the plain-Python reference (reference_features.py).

A small synthetic population is generated and aggregated, and a seeded sample of its patient-days
(first days, days after the last one, days after gaps and after non-wear days, clinical boundaries)
is compared feature by feature. Hand-built cases pin the rules with values worked out by hand, and
a leakage test checks that nothing of D or later reaches the step features of D.
"""

from __future__ import annotations

import math
import random
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa
import pytest

from jobs import aggregate, generate
from jobs.features import run as features_job
from jobs.features.transform import features
from jobs.ingest import run as ingest
from lakehouse.catalog import (
    DAILY_STEPS,
    DIAGNOSES,
    FEATURES,
    PATIENTS,
    SIDE_EFFECTS,
    THERAPIES,
    TableSpec,
)
from lakehouse.feature_dictionary import FEATURE_NAMES
from lakehouse.storage import Lake, conform
from synthetic.population import DEFAULT_END_DATE
from tests.jobs.reference_features import reference_features, reference_patient_days

Rows = list[dict[str, Any]]
Key = tuple[str, date]
SAMPLE_SIZE = 150
REL_TOL = 1e-9
ABS_TOL = 1e-6


# --- helpers ---------------------------------------------------------------------------------


def _frame(table: TableSpec, rows: Rows) -> pl.DataFrame:
    """Rows as a frame with the table's column types."""
    frame = pl.from_arrow(pa.Table.from_pylist(rows, schema=table.schema))
    assert isinstance(frame, pl.DataFrame)
    return frame


def _run(
    daily: Rows,
    patients: Rows | None = None,
    therapies: Rows | None = None,
    side_effects: Rows | None = None,
    diagnoses: Rows | None = None,
) -> dict[Key, dict[str, Any]]:
    """The Polars transform on row dicts: (patient_id, date) -> feature row."""
    out = features(
        _frame(DAILY_STEPS, daily).lazy(),
        patients=_frame(PATIENTS, patients or []),
        therapies=_frame(THERAPIES, therapies or []),
        side_effects=_frame(SIDE_EFFECTS, side_effects or []),
        diagnoses=_frame(DIAGNOSES, diagnoses or []),
    ).collect()
    return {(r["patient_id"], r["date"]): r for r in out.iter_rows(named=True)}


def _same(want: object, got: object) -> bool:
    if want is None or got is None:
        return want is None and got is None
    if isinstance(want, bool) or isinstance(got, bool):
        return isinstance(want, bool) and isinstance(got, bool) and want == got
    if isinstance(want, float) or isinstance(got, float):
        if not isinstance(got, int | float) or not isinstance(want, int | float):
            return False
        return math.isclose(want, got, rel_tol=REL_TOL, abs_tol=ABS_TOL)
    return type(want) is type(got) and want == got


def _mismatches(key: Key, want: dict[str, object], got: dict[str, Any]) -> list[str]:
    return [
        f"{key[0]} {key[1]} {name}: reference={want[name]!r} transform={got.get(name)!r}"
        for name in FEATURE_NAMES
        if not _same(want[name], got.get(name))
    ]


def _kind(dtype: pl.DataType) -> str:
    return "int" if dtype.is_integer() else "float" if dtype.is_float() else str(dtype)


def _daily_row(
    patient_id: str, day: date, steps: float, *, wear: bool = True, hours: int | None = None
) -> dict[str, Any]:
    return {
        "patient_id": patient_id,
        "date": day,
        "steps": float(steps),
        "coverage_hours": (14 if wear else 2) if hours is None else hours,
        "n_samples": 10,
        "n_sources": 1,
        "is_wear_day": wear,
        "month": day.strftime("%Y-%m"),
    }


def _patient(patient_id: str, group: str = "MS", country: str | None = "DE") -> dict[str, Any]:
    return {
        "patient_id": patient_id,
        "disease_group": group,
        "timezone": "Europe/Berlin",
        "sex": "F",
        "birth_year": 1970,
        "country": country,
        "enrolled_on": None,
    }


def _days(first: date, n: int) -> list[date]:
    return [first + timedelta(days=i) for i in range(n)]


# --- the synthetic population ----------------------------------------------------------------


class Population:
    """Rows of a generated + aggregated lake, and the transform's output on them."""

    def __init__(self, lake: Lake) -> None:
        self.daily_frame = lake.read(DAILY_STEPS)
        self.patients_frame = lake.read(PATIENTS)
        self.therapies_frame = lake.read(THERAPIES)
        self.side_effects_frame = lake.read(SIDE_EFFECTS)
        self.diagnoses_frame = lake.read(DIAGNOSES)
        self.daily: Rows = self.daily_frame.to_dicts()
        self.patients: Rows = self.patients_frame.to_dicts()
        self.therapies: Rows = self.therapies_frame.to_dicts()
        self.side_effects: Rows = self.side_effects_frame.to_dicts()
        self.diagnoses: Rows = self.diagnoses_frame.to_dicts()
        self.output = self.transform(self.daily_frame)
        self.rows = {(r["patient_id"], r["date"]): r for r in self.output.iter_rows(named=True)}

    def transform(self, daily: pl.DataFrame, **clinical: pl.DataFrame) -> pl.DataFrame:
        return features(
            daily.lazy(),
            patients=clinical.get("patients", self.patients_frame),
            therapies=clinical.get("therapies", self.therapies_frame),
            side_effects=clinical.get("side_effects", self.side_effects_frame),
            diagnoses=clinical.get("diagnoses", self.diagnoses_frame),
        ).collect()

    def reference(self, key: Key) -> dict[str, object]:
        return reference_features(
            self.daily,
            self.patients,
            self.therapies,
            self.side_effects,
            self.diagnoses,
            key[0],
            key[1],
        )

    def sample(self, seed: int) -> list[Key]:
        """Seeded random patient-days plus every kind of edge day."""
        rng = random.Random(seed)
        keys = sorted(self.rows)
        chosen = set(rng.sample(keys, SAMPLE_SIZE))
        by_patient: dict[str, dict[date, dict[str, Any]]] = {}
        for r in self.daily:
            by_patient.setdefault(r["patient_id"], {})[r["date"]] = r
        for pid, days in sorted(by_patient.items()):
            first, last = min(days), max(days)
            chosen |= {(pid, first), (pid, first + timedelta(days=1)), (pid, last + timedelta(1))}
            after_gap = sorted(d for d in days if d > first and d - timedelta(days=1) not in days)
            after_nonwear = sorted(
                d + timedelta(days=1) for d, r in days.items() if not r["is_wear_day"]
            )
            # first day with a baseline (60th wear day + 1) and a day just after the 180-day span
            wear = sorted(d for d, r in days.items() if r["is_wear_day"])
            extra = [wear[59], wear[59] + timedelta(days=1)] if len(wear) >= 60 else []
            extra += [first + timedelta(days=181)] if last - first > timedelta(days=181) else []
            for d in [*rng.sample(after_gap, min(5, len(after_gap))), *after_nonwear[:5], *extra]:
                chosen.add((pid, d))
        for c in self.therapies:
            for d in (c["start_date"], c["end_date"]):
                if d is not None:
                    chosen |= {(c["patient_id"], d + timedelta(days=k)) for k in (-1, 0, 1)}
        for e in self.side_effects:
            chosen |= {(e["patient_id"], e["date"] + timedelta(days=k)) for k in (0, 6, 7, 29, 30)}
        return sorted(k for k in chosen if k in self.rows)


@pytest.fixture(scope="module")
def population(tmp_path_factory: pytest.TempPathFactory) -> Population:
    lake = Lake(str(tmp_path_factory.mktemp("features") / "lake"))
    generate.run(lake, patients=8, seed=7, years=1.5, end_date=DEFAULT_END_DATE)
    aggregate.run(lake)
    return Population(lake)


def test_a_sample_of_synthetic_patient_days_matches_the_reference(population: Population) -> None:
    keys = population.sample(seed=2024)
    assert len(keys) >= SAMPLE_SIZE
    problems: list[str] = []
    for key in keys:
        problems += _mismatches(key, population.reference(key), population.rows[key])
    assert not problems, f"{len(problems)} mismatches in {len(keys)} patient-days:\n" + "\n".join(
        problems[:40]
    )


REALDATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "realdata"


@pytest.mark.skipif(not REALDATA.exists(), reason="real device exports not beside the project")
def test_features_of_real_exports_match_the_reference_on_every_row(tmp_path: Path) -> None:
    """A real Apple Health export and a real Fitabase hourly file, through ingest, aggregate and
    the features job; every stored row equals the reference."""
    lake = Lake(str(tmp_path / "lake"))
    ingest.run(lake, REALDATA / "apple-health" / "export.xml", patient_id="apple-1")
    ingest.run(lake, REALDATA / "fitabase" / "hourlySteps_merged.csv", timezone="America/Chicago")
    aggregate.run(lake)
    features_job.run(lake)
    real = Population(lake)
    stored = {(r["patient_id"], r["date"]): r for r in lake.read(FEATURES).iter_rows(named=True)}
    assert len(stored) > 1_000
    assert len({patient for patient, _ in stored}) == 35  # 34 Fitabase ids + the Apple export
    problems: list[str] = []
    for key, row in sorted(stored.items()):
        problems += _mismatches(key, real.reference(key), row)
    assert not problems, f"{len(problems)} mismatches:\n" + "\n".join(problems[:40])


def test_the_sample_exercises_every_feature(population: Population) -> None:
    """Each feature has values somewhere in the compared sample (else it proves little)."""
    keys = population.sample(seed=2024)
    seen = {name for key in keys for name, v in population.rows[key].items() if v is not None}
    # a therapy's day counts are missing unless the generated population takes it
    counts = {n for n in FEATURE_NAMES if n.endswith(("_days_since_start", "_days_since_stop"))}
    assert set(FEATURE_NAMES) - counts - seen == set()
    assert any(population.rows[k]["therapy_other_days_since_stop"] is not None for k in keys)
    assert any(population.rows[k]["side_effect_count_7d"] for k in keys)
    assert any(population.rows[k]["cal_is_public_holiday"] for k in population.rows)


def test_rows_run_from_the_first_day_to_the_day_after_the_last_without_gaps(
    population: Population,
) -> None:
    out = population.output
    assert out.columns == list(FEATURES.columns)
    # integer widths may differ (the writer casts, lakehouse.storage.conform), kinds may not
    for name, dtype in out.schema.items():
        want = FEATURES.schema.field(name).type
        column = pl.from_arrow(pa.array([], type=want))
        assert isinstance(column, pl.Series)
        assert _kind(dtype) == _kind(column.dtype), name
    assert conform(FEATURES, out).num_rows == len(out)  # every value fits the table schema
    expected = {
        (pid, d)
        for pid in {r["patient_id"] for r in population.daily}
        for d in reference_patient_days(population.daily, pid)
    }
    assert len(out) == len(population.rows) == len(expected)
    assert set(population.rows) == expected
    assert list(population.rows) == sorted(population.rows)  # sorted by patient and date
    months = {r["month"] == r["date"].strftime("%Y-%m") for r in out.iter_rows(named=True)}
    assert months == {True}


# --- hand-built cases --------------------------------------------------------------------------


def test_non_wear_and_missing_days_are_left_out_of_the_7_day_window() -> None:
    jan = [date(2024, 1, d) for d in range(1, 32)]
    a = [
        _daily_row("A", jan[7], 50_000, wear=False),  # 8 Jan: non-wear, first day
        _daily_row("A", jan[8], 1000),
        _daily_row("A", jan[9], 40_000, wear=False),
        _daily_row("A", jan[10], 2000),
        # 12, 13 Jan: no data
        _daily_row("A", jan[13], 6000),  # 14 Jan: last day
    ]
    # the same with 9 Jan not worn: two wear days left
    b = [dict(r, patient_id="B") for r in a]
    b[1]["is_wear_day"] = False
    rows = _run(a + b)
    d = date(2024, 1, 15)  # a Monday; D-7 = 8 Jan, not worn
    got = rows[("A", d)]
    assert got["roll_mean_7d"] == pytest.approx(3000.0)
    assert got["roll_min_7d"] == 1000.0
    assert got["roll_max_7d"] == 6000.0
    # deviations -2000, -1000, 3000: (4e6 + 1e6 + 9e6) / 2
    assert got["roll_std_7d"] == pytest.approx(math.sqrt(7_000_000))
    assert got["roll_mean_14d"] is None  # 3 wear days < 5
    assert got["roll_same_weekday_mean_4w"] is None
    assert (got["lag_1d"], got["lag_2d"], got["lag_3d"], got["lag_7d"]) == (
        6000.0,
        None,
        None,
        None,
    )
    w = [0.5 ** (5 / 7), 0.5 ** (3 / 7), 1.0]  # ages 5, 3, 0 days before D-1
    assert got["ewm_mean_7d"] == pytest.approx((w[0] * 1000 + w[1] * 2000 + w[2] * 6000) / sum(w))
    assert got["coverage_hours_1d"] == 14
    assert got["coverage_mean_hours_7d"] == pytest.approx((2 + 14 + 2 + 14 + 0 + 0 + 14) / 7)
    assert got["coverage_nonwear_share_7d"] == pytest.approx(4 / 7)
    assert got["coverage_days_since_wear"] == 1
    two = rows[("B", d)]
    for stat in ("mean", "std", "min", "max"):
        assert two[f"roll_{stat}_7d"] is None
    assert two["coverage_nonwear_share_7d"] == pytest.approx(5 / 7)
    # the first day knows nothing of the past; the third knows two days
    first = rows[("A", jan[7])]
    assert first["coverage_hours_1d"] == 0
    assert first["coverage_mean_hours_7d"] is None
    assert first["coverage_nonwear_share_7d"] is None
    assert first["coverage_nonwear_share_30d"] is None
    assert first["coverage_days_since_wear"] is None
    assert first["ewm_mean_7d"] is None
    third = rows[("A", jan[9])]
    assert third["coverage_mean_hours_7d"] == pytest.approx(8.0)
    assert third["coverage_nonwear_share_30d"] == pytest.approx(0.5)
    # rows: 8 .. 15 Jan for both patients
    assert sorted(rows) == sorted((p, jan[i]) for p in "AB" for i in range(7, 15))


def test_std_needs_its_minimum_and_a_single_value_window_is_not_a_spread() -> None:
    first = date(2024, 5, 1)
    daily = [_daily_row("A", d, 1000 * (i + 1)) for i, d in enumerate(_days(first, 3))]
    got = _run(daily)[("A", first + timedelta(days=3))]
    assert got["roll_std_7d"] == pytest.approx(1000.0)  # 1000, 2000, 3000
    assert got["roll_mean_7d"] == pytest.approx(2000.0)
    assert got["trend_slope_30d"] is None  # 3 wear days < 10
    assert got["baseline_mean_180d"] is None


def test_trend_slope_is_the_least_squares_slope_per_day() -> None:
    first = date(2024, 5, 1)
    # 12 wear days on a line of 50 steps per day, with every third day not worn (off the line)
    daily = [
        _daily_row("A", d, 5000 + 50 * i) if i % 3 != 2 else _daily_row("A", d, 99_999, wear=False)
        for i, d in enumerate(_days(first, 18))
    ]
    got = _run(daily)[("A", first + timedelta(days=18))]
    assert got["trend_slope_30d"] == pytest.approx(50.0)
    assert got["trend_slope_90d"] is None  # 12 wear days < 30


def test_ewm_needs_a_wear_day_within_four_half_lives() -> None:
    first = date(2024, 1, 1)
    values = [1000.0 * (i + 1) for i in range(10)]
    daily = [_daily_row("A", d, v) for d, v in zip(_days(first, 10), values, strict=True)]
    daily.append(_daily_row("A", first + timedelta(days=60), 500))  # the last day, after a gap
    rows = _run(daily)

    def ewm(day: date, half_life: int) -> float:
        w = [0.5 ** (((day - first).days - 1 - i) / half_life) for i in range(10)]
        return float(sum(wi * v for wi, v in zip(w, values, strict=True)) / sum(w))

    # last wear day first+9: in D-28 .. D-1 for D = first+37, not for D = first+38
    at37, at38 = rows[("A", first + timedelta(days=37))], rows[("A", first + timedelta(days=38))]
    assert at37["ewm_mean_7d"] == pytest.approx(ewm(first + timedelta(days=37), 7))
    assert at38["ewm_mean_7d"] is None
    assert at38["ewm_mean_28d"] == pytest.approx(ewm(first + timedelta(days=38), 28))
    assert at38["coverage_days_since_wear"] == 29
    assert (at37["lag_28d"], at38["lag_28d"]) == (10_000.0, None)
    # the day after the gap sees the one wear day of the last 7 days, not enough for a mean
    after = rows[("A", first + timedelta(days=61))]
    assert after["lag_1d"] == 500.0
    assert after["roll_mean_7d"] is None
    old = [0.5 ** ((60 - i) / 7) for i in range(10)]  # ages 60 .. 51 days before D-1
    expected = (500 + sum(w * v for w, v in zip(old, values, strict=True))) / (1 + sum(old))
    assert after["ewm_mean_7d"] == pytest.approx(expected)


def test_a_therapy_course_is_active_from_its_start_through_its_end_day() -> None:
    march = _days(date(2024, 3, 1), 31)
    daily = [_daily_row("A", d, 5000) for d in march]
    therapies = [
        {
            "patient_id": "A",
            "therapy": "Humira",
            "start_date": date(2024, 3, 10),
            "end_date": date(2024, 3, 20),
        },
        {
            "patient_id": "A",
            "therapy": "Physiotherapy",
            "start_date": date(2024, 3, 15),
            "end_date": None,
        },
    ]
    rows = _run(daily, [_patient("A", "RA")], therapies)

    def at(day: int) -> tuple[object, ...]:
        row = rows[("A", date(2024, 3, day))]
        return tuple(
            row[f"therapy_adalimumab_{k}"]
            for k in ("active", "days_since_start", "days_since_stop")
        )

    assert at(9) == (False, None, None)
    assert at(10) == (True, 0, None)
    assert at(20) == (True, 10, None)
    assert at(21) == (False, 11, 1)
    assert at(30) == (False, 20, 10)
    count = {day: rows[("A", date(2024, 3, day))]["therapy_active_count"] for day in (9, 16, 21)}
    assert count == {9: 0, 16: 2, 21: 1}
    other = rows[("A", date(2024, 3, 21))]
    assert (other["therapy_other_active"], other["therapy_other_days_since_start"]) == (True, 6)
    assert other["therapy_other_days_since_stop"] is None
    assert rows[("A", date(2024, 3, 21))]["therapy_methotrexate_active"] is False


def test_side_effects_count_over_the_window_up_to_and_including_d() -> None:
    d = date(2024, 6, 30)
    daily = [_daily_row("A", x, 5000) for x in _days(date(2024, 5, 1), 61)]
    effects = [
        {"patient_id": "A", "date": d - timedelta(days=back), "effect": f"e{back}", "severity": s}
        for back, s in ((0, 1), (6, 2), (7, 4), (8, 3), (29, 1), (30, 5))
    ]
    effects.append({"patient_id": "A", "date": d + timedelta(days=1), "effect": "x", "severity": 5})
    got = _run(daily, [_patient("A")], side_effects=effects)[("A", d)]
    # 7 days = D-6 .. D: D and D-6; D-7 and D-8 are outside
    assert (got["side_effect_count_7d"], got["side_effect_worst_severity_7d"]) == (2, 2)
    # 30 days = D-29 .. D: D-30 (grade 5) and D+1 (grade 5) are outside
    assert (got["side_effect_count_30d"], got["side_effect_worst_severity_30d"]) == (5, 4)
    none = _run(daily, [_patient("A")])[("A", d)]
    assert (none["side_effect_count_7d"], none["side_effect_worst_severity_7d"]) == (0, 0)


def test_public_holidays_follow_the_patients_country() -> None:
    days = _days(date(2024, 12, 20), 10)
    ids = ("DE1", "US1", "NONE", "XX")
    daily = [_daily_row(pid, d, 5000) for pid in ids for d in days]
    patients = [
        _patient("DE1", country="DE"),
        _patient("US1", country="US"),
        _patient("NONE", country=None),
        _patient("XX", country="XX"),  # not a country the holidays package knows
    ]
    rows = _run(daily, patients)
    christmas, before = date(2024, 12, 25), date(2024, 12, 23)
    assert rows[("DE1", christmas)]["cal_is_public_holiday"] is True
    assert rows[("DE1", date(2024, 12, 26))]["cal_is_public_holiday"] is True  # 2. Weihnachtstag
    assert rows[("US1", date(2024, 12, 26))]["cal_is_public_holiday"] is False
    assert rows[("DE1", before)]["cal_is_public_holiday"] is False
    for pid in ("NONE", "XX"):
        assert rows[(pid, christmas)]["cal_is_public_holiday"] is None
    wed = rows[("DE1", christmas)]
    assert (wed["cal_day_of_week"], wed["cal_is_weekend"], wed["cal_month"]) == (3, False, 12)
    assert rows[("DE1", date(2024, 12, 29))]["cal_is_weekend"] is True
    t = 360  # 25 December 2024 (leap year)
    assert wed["cal_doy_sin_1"] == pytest.approx(math.sin(2 * math.pi * t / 365.25))
    assert wed["cal_doy_cos_2"] == pytest.approx(math.cos(4 * math.pi * t / 365.25))


def test_years_since_diagnosis_use_the_codes_of_the_patients_group() -> None:
    days = _days(date(2024, 1, 1), 3)
    daily = [_daily_row(pid, d, 5000) for pid in ("RA1", "OT1", "MS1") for d in days]
    patients = [_patient("RA1", "RA"), _patient("OT1", "OTHER"), _patient("MS1", "MS")]
    diagnoses = [
        {"patient_id": "RA1", "code": "G35", "diagnosed_on": date(2010, 1, 1), "description": ""},
        {"patient_id": "RA1", "code": "M06.9", "diagnosed_on": date(2020, 1, 1), "description": ""},
        {"patient_id": "OT1", "code": "I10", "diagnosed_on": date(2023, 1, 1), "description": ""},
        {"patient_id": "MS1", "code": "G35", "diagnosed_on": date(2024, 1, 2), "description": ""},
    ]
    rows = _run(daily, patients, diagnoses=diagnoses)
    d = date(2024, 1, 1)
    assert rows[("RA1", d)]["dx_disease_group"] == "RA"
    assert rows[("RA1", d)]["dx_years_since_diagnosis"] == pytest.approx(1461 / 365.25)
    assert rows[("OT1", d)]["dx_years_since_diagnosis"] == pytest.approx(365 / 365.25)
    assert rows[("MS1", d)]["dx_years_since_diagnosis"] is None  # diagnosed the next day
    assert rows[("MS1", date(2024, 1, 2))]["dx_years_since_diagnosis"] == 0.0


def test_hand_built_cases_agree_with_the_reference_too() -> None:
    """The reference itself on a hand-built history with gaps, against the transform."""
    rng = random.Random(5)
    first = date(2023, 11, 1)
    daily = []
    for i, d in enumerate(_days(first, 260)):
        if 40 <= i < 55 or rng.random() < 0.1:
            continue  # gaps: a two-week hole and scattered days
        wear = rng.random() > 0.15
        daily.append(
            _daily_row("A", d, rng.randint(0, 20_000), wear=wear, hours=rng.randint(0, 24))
        )
    daily[10]["steps"] = 0.0  # a worn day with 0 steps is a value, not a missing day
    patients = [_patient("A", "PD", "GB")]
    therapies = [
        {
            "patient_id": "A",
            "therapy": "Sinemet",
            "start_date": first,
            "end_date": date(2024, 2, 1),
        },
        {
            "patient_id": "A",
            "therapy": "levodopa",
            "start_date": date(2024, 3, 1),
            "end_date": None,
        },
        # an alias of an overlapping course, and two therapies without columns of their own
        {"patient_id": "A", "therapy": "Madopar", "start_date": date(2024, 3, 5), "end_date": None},
        {
            "patient_id": "A",
            "therapy": "Physiotherapy",
            "start_date": date(2023, 12, 1),
            "end_date": date(2024, 4, 30),
        },
        {
            "patient_id": "A",
            "therapy": "speech therapy",
            "start_date": date(2024, 4, 1),
            "end_date": date(2024, 5, 15),
        },
    ]
    effects = [{"patient_id": "A", "date": date(2024, 3, 5), "effect": "nausea", "severity": 2}]
    diagnoses = [{"patient_id": "A", "code": "G20", "diagnosed_on": date(2019, 6, 1)}]
    rows = _run(daily, patients, therapies, effects, diagnoses)
    assert rows[("A", date(2024, 4, 10))]["therapy_active_count"] == 3  # levodopa, 2 others
    problems: list[str] = []
    for key, got in rows.items():
        want = reference_features(daily, patients, therapies, effects, diagnoses, *key)
        problems += _mismatches(key, want, got)
    assert not problems, "\n".join(problems[:40])


# --- leakage -------------------------------------------------------------------------------------


def _tampered(row: dict[str, Any]) -> dict[str, Any]:
    return dict(
        row,
        steps=row["steps"] * 3 + 17,
        is_wear_day=not row["is_wear_day"],
        coverage_hours=24 - row["coverage_hours"],
    )


@pytest.mark.parametrize("drop_d", [False, True], ids=["D changed", "D dropped"])
def test_nothing_of_d_or_later_reaches_the_features_of_d(
    population: Population, drop_d: bool
) -> None:
    rng = random.Random(11)
    long_patients = sorted(
        pid
        for pid in {r["patient_id"] for r in population.daily}
        if len(reference_patient_days(population.daily, pid)) > 250
    )
    assert long_patients
    for pid in long_patients[:3]:
        days = reference_patient_days(population.daily, pid)
        worn = {r["date"] for r in population.daily if r["patient_id"] == pid}
        # D follows a day with data, so that D is still a row (last + 1) when D is dropped
        d = rng.choice([x for x in days[200:-10] if x - timedelta(days=1) in worn])
        changed = []
        for r in population.daily:
            if r["patient_id"] != pid or r["date"] < d:
                changed.append(r)
            elif r["date"] == d and not drop_d:
                changed.append(_tampered(r))
        # clinical rows after D, and a course starting after D, must not matter either
        later_effect = {
            "patient_id": pid,
            "date": d + timedelta(days=1),
            "effect": "x",
            "severity": 5,
        }
        later_course = {
            "patient_id": pid,
            "therapy": "ocrelizumab",
            "start_date": d + timedelta(days=1),
            "end_date": None,
        }
        out = population.transform(
            _frame(DAILY_STEPS, changed),
            side_effects=_frame(SIDE_EFFECTS, [*population.side_effects, later_effect]),
            therapies=_frame(THERAPIES, [*population.therapies, later_course]),
        )
        after = {(r["patient_id"], r["date"]): r for r in out.iter_rows(named=True)}
        before = population.rows[(pid, d)]
        diff = [
            f"{pid} {d} {name}: before={before[name]!r} after={after[(pid, d)][name]!r}"
            for name in FEATURE_NAMES
            if not _same(before[name], after[(pid, d)][name])
        ]
        assert not diff, "\n".join(diff)
        last = d if not drop_d else max(r["date"] for r in changed if r["patient_id"] == pid)
        assert max(k[1] for k in after if k[0] == pid) == last + timedelta(days=1)
