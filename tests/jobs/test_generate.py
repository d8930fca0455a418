"""The generate job: bronze tables in direct mode, landing files otherwise; idempotent per seed."""

from __future__ import annotations

import csv
import json
import re
import xml.etree.ElementTree as ET
import zipfile
from collections import Counter
from datetime import UTC, date, datetime
from pathlib import Path

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from jobs import generate
from jobs.daily import daily_steps
from jobs.recent_activity import as_of
from lakehouse.catalog import (
    DIAGNOSES,
    GROUND_TRUTH,
    JOB_RUNS,
    PATIENTS,
    QUARANTINE,
    SIDE_EFFECTS,
    STEP_SAMPLES,
    THERAPIES,
    TableSpec,
)
from lakehouse.errors import InputError
from lakehouse.storage import Lake, empty_frame
from synthetic.population import DEFAULT_END_DATE, daily_frame, samples_frame, simulate_patient

SEED = 5
PATIENTS_N = 5
YEARS = 1.0
WRITTEN = (STEP_SAMPLES, PATIENTS, THERAPIES, SIDE_EFFECTS, DIAGNOSES, QUARANTINE, GROUND_TRUTH)
_LOCAL_TIME = re.compile(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2} [+-]\d{4}$")


def _sorted(lake: Lake, table: TableSpec) -> pl.DataFrame:
    frame = lake.read(table)
    return frame.sort(frame.columns)


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> tuple[Lake, generate.GenerateSummary]:
    lake = Lake(str(tmp_path_factory.mktemp("generated")))
    summary = generate.run(
        lake, patients=PATIENTS_N, seed=SEED, years=YEARS, end_date=DEFAULT_END_DATE
    )
    return lake, summary


def test_direct_mode_writes_bronze_tables(
    generated: tuple[Lake, generate.GenerateSummary],
) -> None:
    lake, summary = generated
    assert summary.mode == "direct" and summary.patients == PATIENTS_N
    patients = lake.read(PATIENTS)
    assert patients["patient_id"].to_list() == [f"SYN{SEED}-{i:06d}" for i in range(1, 6)]
    samples = lake.read(STEP_SAMPLES)
    assert samples.height == summary.samples > 20_000
    assert samples.schema == empty_frame(STEP_SAMPLES).schema
    assert (samples["steps"] >= 0).all()
    month = samples["start_ts"].dt.strftime("%Y-%m")
    assert (samples["month"] == month).all()
    assert lake.read(THERAPIES).height == lake.read(GROUND_TRUTH).height == summary.therapies
    assert lake.read(SIDE_EFFECTS).height == summary.side_effects
    assert lake.read(DIAGNOSES).height == summary.diagnoses
    runs = lake.read(JOB_RUNS).filter(pl.col("job") == "generate")
    assert runs["status"].to_list() == ["succeeded"]
    assert runs["rows_out"].to_list() == [summary.samples]


def test_corrupt_samples_go_to_quarantine_only(
    generated: tuple[Lake, generate.GenerateSummary],
) -> None:
    lake, summary = generated
    quarantine = lake.read(QUARANTINE)
    # Independently simulated: the corrupt rows the population carries.
    patients = [simulate_patient(SEED, i, years=YEARS) for i in range(1, PATIENTS_N + 1)]
    corrupt = samples_frame(patients).filter("corrupt")
    assert corrupt.height > 0
    assert quarantine.height == summary.quarantined == corrupt.height
    assert set(quarantine["source_file"]) == {f"synthetic:seed={SEED}"}
    assert sorted(quarantine["record"]) == sorted(corrupt["record"])
    assert quarantine["reason"].null_count() == 0
    assert quarantine["quarantined_at"].to_list()[0] == datetime(2026, 11, 1, tzinfo=UTC)
    raw = json.loads(quarantine["raw"][0])
    assert {"patient_id", "start_ts", "end_ts", "steps", "source"} <= set(raw)
    bronze = lake.read(STEP_SAMPLES)
    leaked = bronze.join(
        corrupt.select("patient_id", "source", "start_ts", "end_ts", "steps"),
        on=["patient_id", "source", "start_ts", "end_ts", "steps"],
    )
    assert leaked.height == 0


def test_rerun_leaves_identical_tables(
    tmp_path: Path, generated: tuple[Lake, generate.GenerateSummary]
) -> None:
    first, _ = generated
    lake = Lake(str(tmp_path / "lake"))
    seen: list[int] = []
    generate.run(
        lake,
        patients=PATIENTS_N,
        seed=SEED,
        years=YEARS,
        progress=seen.append,
        end_date=DEFAULT_END_DATE,
    )
    assert seen == sorted(seen) and seen[-1] == PATIENTS_N
    generate.run(lake, patients=PATIENTS_N, seed=SEED, years=YEARS, end_date=DEFAULT_END_DATE)
    for table in WRITTEN:
        # Identical to itself after the re-run (no duplicates) and to a run in another lake.
        assert_frame_equal(_sorted(lake, table), _sorted(first, table))
    assert lake.read(JOB_RUNS).height == 2


def test_batch_size_does_not_change_the_data(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    generated: tuple[Lake, generate.GenerateSummary],
) -> None:
    first, _ = generated
    lake = Lake(str(tmp_path / "lake"))
    monkeypatch.setattr(generate, "BATCH_SAMPLES", 1)  # one patient per batch
    seen: list[int] = []
    generate.run(
        lake,
        patients=PATIENTS_N,
        seed=SEED,
        years=YEARS,
        progress=seen.append,
        end_date=DEFAULT_END_DATE,
    )
    assert seen == list(range(1, PATIENTS_N + 1))
    for table in (STEP_SAMPLES, QUARANTINE, PATIENTS):
        assert_frame_equal(_sorted(lake, table), _sorted(first, table))


def test_worker_processes_do_not_change_the_data(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    generated: tuple[Lake, generate.GenerateSummary],
) -> None:
    """Batches simulated by two worker processes give the tables of one in-process run."""
    first, summary = generated
    lake = Lake(str(tmp_path / "lake"))
    monkeypatch.setattr(generate, "BATCH_SAMPLES", 60_000)  # two patients per batch
    seen: list[int] = []
    workers = generate.run(
        lake,
        patients=PATIENTS_N,
        seed=SEED,
        years=YEARS,
        progress=seen.append,
        end_date=DEFAULT_END_DATE,
        workers=2,
    )
    assert seen == [2, 4, 5]
    assert (workers.samples, workers.quarantined) == (summary.samples, summary.quarantined)
    for table in WRITTEN:
        assert_frame_equal(_sorted(lake, table), _sorted(first, table))


def test_seeds_do_not_touch_each_other(tmp_path: Path) -> None:
    lake = Lake(str(tmp_path / "lake"))
    generate.run(lake, patients=2, seed=4, years=0.3, end_date=DEFAULT_END_DATE)
    before = {table: _sorted(lake, table) for table in WRITTEN}
    # Seed 42 shares the prefix "SYN4" but not "SYN4-".
    generate.run(lake, patients=2, seed=42, years=0.3, end_date=DEFAULT_END_DATE)
    generate.run(lake, patients=1, seed=42, years=0.3, end_date=DEFAULT_END_DATE)
    for table, frame in before.items():
        kept = _sorted(lake, table).filter(pl.col("patient_id").str.starts_with("SYN4-"))
        assert_frame_equal(kept, frame.filter(pl.col("patient_id").str.starts_with("SYN4-")))
    assert set(lake.read(PATIENTS)["patient_id"]) == {"SYN4-000001", "SYN4-000002", "SYN42-000001"}


def test_aggregation_recovers_recorded_steps(
    generated: tuple[Lake, generate.GenerateSummary],
) -> None:
    lake, _ = generated
    daily = daily_steps(lake.read(STEP_SAMPLES))
    patients = [simulate_patient(SEED, i, years=YEARS) for i in range(1, PATIENTS_N + 1)]
    truth = daily_frame(patients).filter(pl.col("recorded_steps") > 0)
    joined = truth.join(daily, on=["patient_id", "date"], how="left")
    assert joined["steps"].null_count() == 0
    single = joined.filter(~pl.col("duplicated"))
    # Exact up to the float arithmetic of splitting samples by hour.
    assert (single["steps"] - single["recorded_steps"]).abs().max() < 1e-6
    both = joined.filter("duplicated")
    assert both["steps"].sum() == pytest.approx(both["recorded_steps"].sum(), rel=0.02)


def test_the_population_ends_yesterday_by_default(tmp_path: Path) -> None:
    """Without an end date the simulated period ends yesterday (a new demo is current), and it
    is the same population as one asked for with yesterday's date."""
    before = as_of()
    by_default = Lake(str(tmp_path / "default"))
    generate.run(by_default, patients=2, seed=SEED, years=0.2)
    after = as_of()
    details = json.loads(by_default.read(JOB_RUNS)["details"][0])
    end = date.fromisoformat(details["end_date"])
    assert end in {before, after}  # the test may run over midnight
    named = Lake(str(tmp_path / "named"))
    generate.run(named, patients=2, seed=SEED, years=0.2, end_date=end)
    for table in WRITTEN:
        assert_frame_equal(_sorted(by_default, table), _sorted(named, table))


def test_bad_arguments_are_input_errors(tmp_path: Path) -> None:
    lake = Lake(str(tmp_path / "lake"))
    with pytest.raises(InputError):
        generate.run(lake, patients=0, seed=1)
    with pytest.raises(InputError):
        generate.run(lake, patients=1, seed=1, years=0)


def test_seed_predicate_is_a_prefix_range() -> None:
    assert generate.seed_predicate(42) == "patient_id >= 'SYN42-' AND patient_id < 'SYN42.'"


def test_split_quarantine_keeps_valid_rows() -> None:
    start = datetime(2026, 1, 1, 8, tzinfo=UTC)
    end = datetime(2026, 1, 1, 8, 1, tzinfo=UTC)
    frame = pl.DataFrame(
        {
            "patient_id": ["SYN1-000001"] * 3,
            "start_ts": [start, end, start],
            "end_ts": [end, start, end],
            "utc_offset_minutes": pl.Series([60, 60, 60], dtype=pl.Int16),
            "steps": [90.0, 90.0, -3.0],
            "source": ["Apple Watch"] * 3,
            "month": ["2026-01"] * 3,
            "record": [100_000_000, 100_000_001, 100_000_002],
        },
        schema_overrides={"start_ts": pl.Datetime("us", "UTC"), "end_ts": pl.Datetime("us", "UTC")},
    )
    valid, rejected = generate.split_quarantine(
        frame, source_file="synthetic:seed=1", quarantined_at=start
    )
    assert valid.columns == list(STEP_SAMPLES.columns) and valid["steps"].to_list() == [90.0]
    assert rejected["record"].to_list() == [100_000_001, 100_000_002]
    assert rejected["reason"].to_list() == ["end before start", "negative steps"]


# ------------------------------------------------------------------ landing mode


@pytest.fixture(scope="module")
def landing(tmp_path_factory: pytest.TempPathFactory) -> tuple[Lake, Path]:
    root = tmp_path_factory.mktemp("landing")
    lake = Lake(str(root / "lake"))
    summary = generate.run(
        lake, patients=4, seed=SEED, years=0.25, landing=root / "files", end_date=DEFAULT_END_DATE
    )
    assert summary.mode == "landing" and summary.landing_files == 4 + 4
    return lake, root / "files"


def _records(path: Path) -> list[dict[str, str]]:
    if path.suffix == ".zip":
        with zipfile.ZipFile(path) as archive:
            assert archive.namelist() == ["apple_health_export/export.xml"]
            with archive.open("apple_health_export/export.xml") as xml:
                return _parse(xml)
    with path.open("rb") as xml:
        return _parse(xml)


def _parse(xml: object) -> list[dict[str, str]]:
    records = []
    root_tag = None
    for event, element in ET.iterparse(xml, events=("start", "end")):  # type: ignore[arg-type]
        if event == "start" and root_tag is None:
            root_tag = element.tag
            assert element.attrib == {"locale": "en_US"}
        if event == "end" and element.tag == "Record":
            records.append(dict(element.attrib))
    assert root_tag == "HealthData"
    return records


def test_landing_exports_parse_like_apple_health(landing: tuple[Lake, Path]) -> None:
    _, files = landing
    exports = sorted((files / "apple-health").glob("*/export.*"))
    assert [p.parent.name for p in exports] == [f"SYN{SEED}-{i:06d}" for i in range(1, 5)]
    assert [p.name for p in exports] == ["export.xml"] * 3 + ["export.zip"]
    for path in exports:
        patient = simulate_patient(SEED, int(path.parent.name[-6:]), years=0.25)
        records = _records(path)
        types = Counter(r["type"] for r in records)
        steps = [r for r in records if r["type"] == "HKQuantityTypeIdentifierStepCount"]
        assert len(steps) == len(patient.samples)
        assert types["HKQuantityTypeIdentifierDistanceWalkingRunning"] > 0
        for record in steps[:200]:
            assert _LOCAL_TIME.match(record["startDate"]) and _LOCAL_TIME.match(record["endDate"])
            assert record["unit"] == "count"
        genuine = (
            sum(float(r["value"]) for r in steps)
            - patient.samples.steps[patient.samples.corrupt].sum()
        )
        assert genuine == patient.samples.steps[~patient.samples.corrupt].sum()
        offsets = {r["startDate"][-5:] for r in steps}
        zone_offsets = {
            f"{'+' if m >= 0 else '-'}{abs(m) // 60:02d}{abs(m) % 60:02d}"
            for m in set(patient.samples.utc_offset_minutes.tolist())
        }
        assert offsets == zone_offsets


def test_landing_clinical_csvs_have_documented_columns(landing: tuple[Lake, Path]) -> None:
    lake, files = landing
    expected = {
        "patients": list(PATIENTS.columns),
        "therapies": list(THERAPIES.columns),
        "side_effects": list(SIDE_EFFECTS.columns),
        "diagnoses": list(DIAGNOSES.columns),
    }
    for name, columns in expected.items():
        with (files / "clinical" / f"{name}.csv").open() as handle:
            rows = list(csv.reader(handle))
        assert rows[0] == columns
        if name == "patients":
            assert len(rows) == 5
            assert date.fromisoformat(rows[1][columns.index("enrolled_on")])
    # Ground truth lands in the lake; device data does not.
    with (files / "clinical" / "therapies.csv").open() as handle:
        therapies = len(list(csv.reader(handle))) - 1
    assert lake.read(GROUND_TRUTH).height == therapies
    assert not lake.exists(STEP_SAMPLES) and not lake.exists(PATIENTS)


def test_watch_detail_needs_landing(lake: Lake) -> None:
    with pytest.raises(InputError, match="--landing"):
        generate.run(lake, patients=1, seed=1, watch_detail=True)
    assert not lake.exists(STEP_SAMPLES)
