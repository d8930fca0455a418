"""The synthetic population: deterministic, realistic, and true to its own ground truth.

Realism checks are computed here from the simulated frames, independently of the model code
(dates with ``datetime``, offsets with ``zoneinfo``, ramps from the ground-truth rows).
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, date, datetime, timedelta
from functools import cache
from zoneinfo import ZoneInfo

import numpy as np
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from jobs.validation import quarantine_reason
from lakehouse.catalog import STEP_SAMPLES
from synthetic.clinical import ClinicalHistory
from synthetic.daily import DailyTruth, patient_days, simulate_daily
from synthetic.population import (
    DEFAULT_END_DATE,
    RECORD_STRIDE,
    SampleBatch,
    SimulatedPatient,
    Stream,
    clinical_frames,
    daily_frame,
    patient_rng,
    samples_frame,
    simulate_history,
    simulate_patient,
    simulation_period,
)
from synthetic.reference import DISEASE_GROUPS, DISEASE_SHARES
from synthetic.zones import ZoneOffsets

SEED = 11
YEARS = 1.0


@cache
def _histories(count: int = 400) -> tuple[ClinicalHistory, ...]:
    return tuple(simulate_history(SEED, i, years=3.0) for i in range(1, count + 1))


@cache
def _patients(count: int = 8) -> tuple[SimulatedPatient, ...]:
    return tuple(simulate_patient(SEED, i, years=YEARS) for i in range(1, count + 1))


def _daily(history: ClinicalHistory, *, years: float = 3.0) -> DailyTruth:
    _, last = simulation_period(years, DEFAULT_END_DATE)
    days = patient_days(history.profile.enrolled_on, last)
    rng = patient_rng(history.profile.seed, history.profile.index, Stream.DAILY)
    return simulate_daily(rng, history, days)


def _local(samples: pl.DataFrame) -> pl.DataFrame:
    """Samples with the local date and hour taken from each sample's own UTC offset."""
    local = pl.col("start_ts") + pl.duration(minutes=pl.col("utc_offset_minutes"))
    return samples.with_columns(date=local.dt.date(), hour=local.dt.hour())


# ------------------------------------------------------------------ determinism


def test_same_seed_gives_identical_frames() -> None:
    first = [simulate_patient(3, i, years=0.5) for i in (1, 2)]
    again = [simulate_patient(3, i, years=0.5) for i in (1, 2)]
    assert_frame_equal(samples_frame(first), samples_frame(again))
    assert_frame_equal(daily_frame(first), daily_frame(again))
    for name, frame in vars(clinical_frames(p.history for p in first)).items():
        assert_frame_equal(frame, vars(clinical_frames(p.history for p in again))[name])


def test_different_seed_gives_different_data() -> None:
    one = samples_frame([simulate_patient(3, 1, years=0.5)])
    other = samples_frame([simulate_patient(4, 1, years=0.5)])
    assert one.height != other.height or not one["steps"].equals(other["steps"])
    assert one["patient_id"][0] == "SYN3-000001"
    assert other["patient_id"][0] == "SYN4-000001"


def test_patient_does_not_depend_on_batch() -> None:
    alone = samples_frame([simulate_patient(SEED, 5, years=YEARS)])
    together = samples_frame(_patients()).filter(pl.col("patient_id") == "SYN11-000005")
    assert_frame_equal(alone, together)
    assert alone["record"][0] == 5 * RECORD_STRIDE


def test_sample_batch_holds_the_samples_in_bronze_order() -> None:
    """A batch (what direct mode writes) holds every sample once, genuine ones month by month
    (bronze's partitions) and in each month in the sort order of bronze/step_samples, source
    names mapped by the label given."""
    patients = _patients()
    genuine, twins = SampleBatch.of(patients, str.upper).frames()
    labelled = samples_frame(patients).with_columns(pl.col("source").str.to_uppercase())
    expected = labelled.filter(~pl.col("corrupt")).select(STEP_SAMPLES.columns)
    assert_frame_equal(genuine.sort(genuine.columns), expected.sort(genuine.columns))
    in_order = genuine.sort(["month", *STEP_SAMPLES.sort_by], maintain_order=True)
    assert_frame_equal(genuine, in_order)
    assert_frame_equal(twins, labelled.filter("corrupt").select(*STEP_SAMPLES.columns, "record"))


def test_end_date_default_is_fixed() -> None:
    assert simulation_period(3.0, DEFAULT_END_DATE)[1] == date(2026, 10, 31)
    assert (
        simulate_patient(SEED, 1, years=YEARS).daily.days[-1]
        == (DEFAULT_END_DATE - date(1970, 1, 1)).days
    )


# ------------------------------------------------------------------ population-level realism


def test_disease_proportions() -> None:
    groups = pl.Series([h.profile.disease_group for h in _histories()])
    for group, share in zip(DISEASE_GROUPS, DISEASE_SHARES, strict=True):
        assert abs((groups == group).mean() - share) < 0.07, group


def test_demographics_are_plausible() -> None:
    profiles = pl.DataFrame([dataclasses.asdict(h.profile) for h in _histories()])
    age = 2026 - profiles["birth_year"]
    assert age.min() >= 25 and age.max() <= 85
    mean_age = profiles.with_columns(age=age).group_by("disease_group").agg(pl.col("age").mean())
    ages = dict(mean_age.iter_rows())
    assert ages["PD"] > ages["MS"] + 10
    assert set(profiles["sex"]) == {"F", "M"}
    baseline = profiles["baseline_steps"]
    assert 3_000 < baseline.median() < 7_000
    assert baseline.quantile(0.05) > 1_500 and baseline.quantile(0.95) < 14_000
    by_group = dict(
        profiles.group_by("disease_group").agg(pl.col("baseline_steps").mean()).iter_rows()
    )
    assert by_group["PD"] < 0.85 * by_group["OTHER"]


def test_timezones_match_countries() -> None:
    pairs = {(h.profile.country, h.profile.timezone) for h in _histories()}
    continents = {"DE": "Europe", "GB": "Europe", "US": "America", "AU": "Australia"}
    for country, zone in pairs:
        ZoneInfo(zone)  # a real IANA name
        if country in continents:
            assert zone.startswith(continents[country]), (country, zone)
    assert ("IN", "Asia/Kolkata") in pairs


def test_some_patients_have_short_history() -> None:
    _, last = simulation_period(3.0, DEFAULT_END_DATE)
    history_days = np.array([(last - h.profile.enrolled_on).days + 1 for h in _histories()])
    assert 0.03 < np.mean(history_days < 90) < 0.15
    assert np.mean(history_days == history_days.max()) > 0.4


def test_clinical_records_are_consistent() -> None:
    frames = clinical_frames(_histories(120))
    enrolled = frames.patients.select("patient_id", "enrolled_on")
    diagnoses = frames.diagnoses.join(enrolled, on="patient_id")
    assert (diagnoses["diagnosed_on"] < diagnoses["enrolled_on"]).all()
    primary = {"MS": {"G35"}, "PD": {"G20"}, "RA": {"M06.9", "M05.79"}}
    codes = diagnoses.group_by("patient_id").agg("code").join(frames.patients, on="patient_id")
    for row in codes.iter_rows(named=True):
        if row["disease_group"] in primary:
            assert primary[row["disease_group"]] & set(row["code"]), row
    side = frames.side_effects.join(enrolled, on="patient_id")
    assert (side["date"] >= side["enrolled_on"]).all()
    assert (side["date"] <= DEFAULT_END_DATE).all()
    assert side["severity"].is_between(1, 5).all() and (side["severity"] <= 3).mean() > 0.9
    truth = frames.ground_truth
    assert truth.height == frames.therapies.height
    assert ((truth["end_date"] > truth["start_date"]) | truth["end_date"].is_null()).all()
    assert truth["end_date"].null_count() > 0  # some ongoing
    assert (truth["effect_steps"] > 0).mean() > 0.75 and (truth["effect_steps"] < 0).any()
    assert truth["effect_steps"].abs().max() <= 1_600


# ------------------------------------------------------------------ daily truth


def test_weekends_differ_from_weekdays() -> None:
    ratios = []
    for history in _histories(60):
        daily = _daily(history)
        weekend = (daily.days + 3) % 7 >= 5
        ratios.append(daily.walked_steps[weekend].mean() / daily.walked_steps[~weekend].mean())
    assert np.mean(ratios) < 0.97
    assert np.std(ratios) > 0.03  # the weekend factor is the patient's own


def test_winter_is_lower_than_summer() -> None:
    northern, southern = [], []
    for history in _histories(120):
        if history.profile.tropical:
            continue
        daily = _daily(history)
        months = daily.days.astype("datetime64[D]").astype("datetime64[M]").astype(int) % 12 + 1
        dec_feb = np.isin(months, (12, 1, 2))
        jun_aug = np.isin(months, (6, 7, 8))
        if not dec_feb.any() or not jun_aug.any():
            continue
        ratio = daily.expected_steps[dec_feb].mean() / daily.expected_steps[jun_aug].mean()
        (southern if history.profile.southern else northern).append(ratio)
    assert np.mean(northern) < 0.93
    assert np.mean(southern) > 1.05


def test_pd_declines_and_other_is_stable() -> None:
    slopes: dict[str, list[float]] = {"PD": [], "OTHER": []}
    for history in _histories(160):
        group = history.profile.disease_group
        if group not in slopes:
            continue
        daily = _daily(history)
        if daily.days.size < 700:
            continue
        # Compare the same calendar months one year apart, so seasons cancel.
        year = daily.multiplicative[:365].mean(), daily.multiplicative[365:730].mean()
        slopes[group].append(year[1] / year[0] - 1)
    assert -0.07 < np.mean(slopes["PD"]) < -0.015
    assert abs(np.mean(slopes["OTHER"])) < 0.02


def test_therapy_effect_equals_ground_truth() -> None:
    """Expected steps minus the counterfactual without the course = effect_steps when ramped."""
    checked = floored_days = 0
    for history in _histories(80):
        truth = clinical_frames([history]).ground_truth
        daily = _daily(history)
        dates = [date(1970, 1, 1) + timedelta(days=int(d)) for d in daily.days]
        for k, course in enumerate(truth.iter_rows(named=True)):
            ramped_from = course["start_date"] + timedelta(days=course["ramp_days"])
            until = course["end_date"] or DEFAULT_END_DATE
            full = np.array([ramped_from <= d <= until for d in dates])
            if full.sum() < 5:
                continue
            without = dataclasses.replace(
                history, therapies=history.therapies[:k] + history.therapies[k + 1 :]
            )
            counterfactual = _daily(without)
            # The floor (a bed-bound minimum) is the one documented exception to additivity.
            unfloored = ~(_floored(daily) | _floored(counterfactual))
            floored_days += int((full & ~unfloored).sum())
            full &= unfloored
            difference = daily.expected_steps[full] - counterfactual.expected_steps[full]
            assert difference.mean() == pytest.approx(course["effect_steps"], abs=1e-6)
            # Halfway up the ramp, half of the effect.
            half = course["start_date"] + timedelta(days=course["ramp_days"] / 2)
            if course["ramp_days"] % 2 == 0 and half in dates and half <= until:
                i = dates.index(half)
                assert daily.expected_steps[i] - counterfactual.expected_steps[i] == pytest.approx(
                    course["effect_steps"] / 2, abs=1e-6
                )
            checked += 1
    assert checked > 30
    assert floored_days < 5


def _floored(daily: DailyTruth) -> np.ndarray:
    additive = daily.multiplicative + daily.therapy_effects.sum(axis=0) - daily.side_effect_dips
    return np.asarray(~np.isclose(daily.expected_steps, additive, rtol=0, atol=1e-9))


def test_floor_rarely_binds() -> None:
    days = floored = 0
    for history in _histories(200):
        daily = _daily(history)
        days += daily.days.size
        floored += int(_floored(daily).sum())
    assert floored / days < 1e-4


def test_noise_keeps_expected_as_the_mean() -> None:
    walked = expected = 0.0
    for history in _histories(40):
        daily = _daily(history)
        walked += daily.walked_steps.sum()
        expected += daily.expected_steps.sum()
    assert walked / expected == pytest.approx(1.0, abs=0.02)


def test_daily_steps_are_overdispersed() -> None:
    cvs = []
    for history in _histories(40):
        daily = _daily(history)
        residual = daily.walked_steps / daily.expected_steps
        cvs.append(residual.std())
    assert 0.2 < np.median(cvs) < 0.5


# ------------------------------------------------------------------ intraday samples


def test_samples_per_patient_year() -> None:
    patients = _patients()
    samples = sum(len(p.samples) for p in patients)
    patient_years = sum(p.daily.days.size for p in patients) / 365.25
    assert samples / patient_years == pytest.approx(26_700, rel=0.25)


def test_samples_add_up_to_recorded_daily_steps() -> None:
    patients = _patients()
    samples = _local(samples_frame(patients).filter(~pl.col("corrupt")))
    per_source = samples.group_by("patient_id", "date", "source").agg(
        pl.col("steps").sum(), pl.len().alias("n")
    )
    days = daily_frame(patients)
    primary = days.join(
        per_source,
        left_on=["patient_id", "date", "primary_source"],
        right_on=["patient_id", "date", "source"],
        how="left",
    ).with_columns(pl.col("steps").fill_null(0.0))
    assert (primary["steps"] == primary["recorded_steps"]).all()
    assert (primary.filter(pl.col("wear") == "not_worn")["n"].fill_null(0) == 0).all()
    assert (samples["steps"] == samples["steps"].round()).all()
    # The second device on phone + watch days: nearly the same walks, a little fewer steps.
    copies = (
        days.filter("duplicated")
        .join(per_source, on=["patient_id", "date"], how="inner")
        .filter(pl.col("source") != pl.col("primary_source"))
    )
    assert copies.height > 20
    ratio = copies["steps"].sum() / copies["recorded_steps"].sum()
    assert 0.7 < ratio < 1.0


def test_phone_and_watch_overlap_per_hour_is_deduplicable() -> None:
    patients = [p for p in _patients() if p.wear.duplicated.any()]
    samples = _local(samples_frame(patients).filter(~pl.col("corrupt")))
    hourly = samples.group_by("patient_id", "date", "hour", "source").agg(pl.col("steps").sum())
    both_sources = hourly.group_by("patient_id", "date").agg(pl.col("steps").sum().alias("both"))
    deduplicated = (
        hourly.group_by("patient_id", "date", "hour")
        .agg(pl.col("steps").max())
        .group_by("patient_id", "date")
        .agg(pl.col("steps").sum())
    )
    days = daily_frame(patients).filter("duplicated")
    joined = days.join(deduplicated, on=["patient_id", "date"]).join(
        both_sources, on=["patient_id", "date"]
    )
    # Taking the larger source per hour recovers the watch's count (within boundary jitter),
    # while summing both sources would nearly double it.
    assert joined["steps"].sum() == pytest.approx(joined["recorded_steps"].sum(), rel=0.02)
    assert joined["both"].sum() > 1.6 * joined["recorded_steps"].sum()


def test_non_wear_and_low_coverage_days_exist() -> None:
    days = daily_frame(_patients())
    share = days.group_by("wear").len().with_columns(pl.col("len") / days.height)
    shares = dict(share.iter_rows())
    assert 0.03 < shares["not_worn"] < 0.25
    assert 0.005 < shares["low_coverage"] < 0.08
    samples = _local(samples_frame(_patients()).filter(~pl.col("corrupt")))
    hours = samples.group_by("patient_id", "date").agg(pl.col("hour").n_unique())
    low = days.filter(pl.col("wear") == "low_coverage").join(hours, on=["patient_id", "date"])
    assert low["hour"].max() <= 4


def test_samples_look_like_walking_bouts() -> None:
    samples = samples_frame(_patients()).filter(~pl.col("corrupt"))
    seconds = (samples["end_ts"] - samples["start_ts"]).dt.total_seconds()
    assert seconds.min() >= 1 and seconds.max() <= 600
    days = daily_frame(_patients()).select("patient_id", "date", "primary_source")
    walks = (
        _local(samples)
        .join(days, on=["patient_id", "date"])
        .with_columns(
            seconds=(pl.col("end_ts") - pl.col("start_ts")).dt.total_seconds(),
            primary=pl.col("source") == pl.col("primary_source"),
        )
        .filter(pl.col("seconds") > 60)
        .with_columns(cadence=pl.col("steps") / pl.col("seconds") * 60)
    )
    assert walks.filter("primary")["cadence"].is_between(59, 122).all()  # whole seconds
    # The second device's copy: slightly different boundaries and counts.
    assert walks.filter(~pl.col("primary"))["cadence"].is_between(50, 135).all()
    assert samples.select(quarantine_reason().is_null().all()).item()
    # One source never records two samples at the same time.
    ordered = samples.sort("patient_id", "source", "start_ts")
    overlap = ordered.with_columns(
        previous_end=pl.col("end_ts").shift().over("patient_id", "source")
    ).filter(pl.col("start_ts") < pl.col("previous_end"))
    assert overlap.height == 0
    # A diurnal profile: little at night, most between 8:00 and 20:00 local time.
    hours = _local(samples).group_by("hour").agg(pl.col("steps").sum())
    by_hour = dict(hours.iter_rows())
    total = sum(by_hour.values())
    assert sum(by_hour.get(h, 0) for h in range(0, 5)) / total < 0.03
    assert sum(by_hour.get(h, 0) for h in range(8, 20)) / total > 0.7
    sources = set(samples["source"])
    phones = {s for s in sources if s.endswith("'s iPhone")}
    assert phones and "Apple Watch" in sources
    assert sources == phones | {"Apple Watch"}


def test_corrupt_samples_are_rare_and_caught_by_quarantine_rules() -> None:
    samples = samples_frame(_patients())
    corrupt = samples.filter("corrupt")
    assert 0 < corrupt.height < samples.height / 5_000
    reasons = corrupt.select(quarantine_reason()).to_series()
    assert reasons.null_count() == 0


def test_utc_offsets_match_zoneinfo() -> None:
    samples = samples_frame(_patients()).filter(~pl.col("corrupt"))
    zones = dict(
        clinical_frames(p.history for p in _patients())
        .patients.select("patient_id", "timezone")
        .iter_rows()
    )
    picked = samples.gather(np.random.default_rng(0).choice(samples.height, 3_000))
    for row in picked.iter_rows(named=True):
        offset = row["start_ts"].astimezone(ZoneInfo(zones[row["patient_id"]])).utcoffset()
        assert offset is not None
        assert row["utc_offset_minutes"] == offset.total_seconds() / 60


@pytest.mark.parametrize(
    ("zone", "change_utc", "before", "after"),
    [
        ("Europe/Berlin", datetime(2025, 3, 30, 1, 0, tzinfo=UTC), 60, 120),
        ("Europe/Berlin", datetime(2025, 10, 26, 1, 0, tzinfo=UTC), 120, 60),
        ("America/New_York", datetime(2025, 3, 9, 7, 0, tzinfo=UTC), -300, -240),
        ("America/New_York", datetime(2025, 11, 2, 6, 0, tzinfo=UTC), -240, -300),
        ("Australia/Sydney", datetime(2025, 4, 5, 16, 0, tzinfo=UTC), 660, 600),
        ("Australia/Sydney", datetime(2025, 10, 4, 16, 0, tzinfo=UTC), 600, 660),
        ("Asia/Kolkata", datetime(2025, 6, 1, tzinfo=UTC), 330, 330),
    ],
)
def test_zone_offsets_at_dst_changes(
    zone: str, change_utc: datetime, before: int, after: int
) -> None:
    offsets = ZoneOffsets(zone, 2025, 2025)
    instant = int(change_utc.timestamp())
    probe = np.array([instant - 1, instant, instant + 1], dtype=np.int64)
    assert (offsets.at_utc(probe) // 60).tolist() == [before, after, after]


def test_local_times_map_to_the_right_instant() -> None:
    offsets = ZoneOffsets("Europe/Berlin", 2025, 2025)
    zone = ZoneInfo("Europe/Berlin")
    epoch = datetime(1970, 1, 1)
    walls = [datetime(2025, 3, 30, 1, 30), datetime(2025, 3, 30, 3, 30), datetime(2025, 7, 1, 9)]
    local = np.array([int((w - epoch).total_seconds()) for w in walls], dtype=np.int64)
    utc = offsets.local_to_utc(local)
    for wall, instant in zip(walls, utc, strict=True):
        assert datetime.fromtimestamp(int(instant), tz=zone).replace(tzinfo=None) == wall
    # 02:30 on the spring-forward night does not exist: a phone shows it as 03:30 CEST.
    skipped = np.array([int((datetime(2025, 3, 30, 2, 30) - epoch).total_seconds())])
    shown = datetime.fromtimestamp(int(offsets.local_to_utc(skipped)[0]), tz=zone)
    assert shown.replace(tzinfo=None) == datetime(2025, 3, 30, 3, 30)


def _berlin_samples() -> pl.DataFrame:
    """Samples of the Berlin patients enrolled before March 2026."""
    berlin = [
        simulate_patient(SEED, history.profile.index, years=YEARS)
        for history in (simulate_history(SEED, i, years=YEARS) for i in range(1, 80))
        if history.profile.timezone == "Europe/Berlin"
        and history.profile.enrolled_on < date(2026, 3, 1)
    ]
    return samples_frame(berlin).filter(~pl.col("corrupt"))


def test_samples_around_dst_changes_use_the_new_offset() -> None:
    samples = _berlin_samples()
    local = _local(samples)
    march = local.filter(pl.col("date").is_between(date(2026, 3, 26), date(2026, 4, 2)))
    before = march.filter(pl.col("date") < date(2026, 3, 29))
    after = march.filter(pl.col("date") > date(2026, 3, 29))
    assert before.height and after.height
    assert set(before["utc_offset_minutes"]) == {60}
    assert set(after["utc_offset_minutes"]) == {120}
    # On the night itself, samples before 01:00 UTC carry +01:00 and later ones +02:00.
    night = samples.filter(pl.col("start_ts").dt.date() == date(2026, 3, 29))
    change = datetime(2026, 3, 29, 1, tzinfo=UTC)
    expected = pl.when(pl.col("start_ts") < change).then(60).otherwise(120)
    assert night.height and night.select((pl.col("utc_offset_minutes") == expected).all()).item()
