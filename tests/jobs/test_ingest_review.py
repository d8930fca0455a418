"""Review of the ingest change (dd35ba5..): real-bug reproductions (marked ``# BUG:``) and pins.

Each ``# BUG:`` test fails on the code under review; the others pin subtle behaviour that holds.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import polars as pl
import pyarrow as pa
import pytest

from jobs.ingest import run as ingest
from lakehouse.catalog import PATIENTS, QUARANTINE, STEP_SAMPLES
from lakehouse.storage import Lake, conform
from tests.pseudonyms import pseudonym
from tests.test_cli import mobility

PATIENTS_HEADER = "patient_id,disease_group,timezone"
KEYS = list(STEP_SAMPLES.keys)


def _utc(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)  # type: ignore[misc]


def _samples(rows: list[tuple[str, datetime, datetime, float]]) -> pa.Table:
    frame = pl.DataFrame(
        {
            "patient_id": [r[0] for r in rows],
            "start_ts": [r[1] for r in rows],
            "end_ts": [r[2] for r in rows],
            "utc_offset_minutes": [0] * len(rows),
            "steps": [r[3] for r in rows],
            "source": ["Fitbit"] * len(rows),
        },
        schema_overrides={
            "start_ts": pl.Datetime("us", "UTC"),
            "end_ts": pl.Datetime("us", "UTC"),
            "utc_offset_minutes": pl.Int16,
        },
    ).with_columns(month=pl.col("start_ts").dt.strftime("%Y-%m"))
    return conform(STEP_SAMPLES, frame)


# ------------------------------------------------------------------ naive times, patient zone


# BUG: files that name their patients in a column (Fitabase Id, generic patient column) place
# naive local times in UTC even when bronze/patients knows the patient's zone. DESIGN.md: "naive
# timestamps use --timezone (default: the patient's timezone, else UTC)", the --timezone help says
# the same, and run_folder ingests patients files first precisely so that "their time zones then
# place naive timestamps". run() only looks the zone up for a single ``patient`` (None here).
def test_fitabase_naive_times_use_the_known_patients_zone(lake: Lake, tmp_path: Path) -> None:
    patients = tmp_path / "patients.csv"
    patients.write_text(f"{PATIENTS_HEADER}\n1503960366,MS,America/New_York\n", encoding="utf-8")
    ingest.run(lake, patients)
    hourly = tmp_path / "hourlySteps_merged.csv"
    hourly.write_text(
        "Id,ActivityHour,StepTotal\r\n1503960366,4/12/2016 1:00:00 AM,373\r\n", encoding="utf-8"
    )
    summary = ingest.run(lake, hourly)
    assert summary.accepted == 1
    row = lake.read(STEP_SAMPLES).row(0, named=True)
    # 01:00 EDT (UTC-4) is 05:00 UTC; the code stores 01:00 UTC with offset 0.
    assert (row["start_ts"], row["utc_offset_minutes"]) == (_utc(2016, 4, 12, 5), -240)


# BUG: the same for a generic CSV with a patient column and naive times.
def test_generic_patient_column_naive_times_use_the_known_zone(lake: Lake, tmp_path: Path) -> None:
    patients = tmp_path / "patients.csv"
    patients.write_text(f"{PATIENTS_HEADER}\nP1,MS,Europe/Berlin\n", encoding="utf-8")
    ingest.run(lake, patients)
    data = tmp_path / "steps.csv"
    data.write_text(
        "patient_id,start,end,steps,source\n"
        "P1,2024-01-15 10:00:00,2024-01-15 11:00:00,500,Fitbit\n",
        encoding="utf-8",
    )
    summary = ingest.run(lake, data, format="generic")
    assert summary.accepted == 1
    row = lake.read(STEP_SAMPLES).row(0, named=True)
    assert (row["start_ts"], row["utc_offset_minutes"]) == (_utc(2024, 1, 15, 9), 60)


# ------------------------------------------------------------------ insert_new on a new table


# BUG: insert_new decides "table does not exist -> plain append" once, before the retry loop and
# before the stream is written. When another writer creates the table in between (two ingests of
# one export racing on a fresh lake, or the loser of the version-0 race retrying), the append
# path writes every row again without the key check: steps counted twice. Here the concurrent
# writer lands while our reader is being opened.
def test_insert_new_on_a_fresh_table_racing_another_writer_adds_no_duplicates(
    lake: Lake,
) -> None:
    rows = _samples([("P1", _utc(2024, 1, 1, 10), _utc(2024, 1, 1, 11), 100.0)])
    other = Lake(lake.uri)
    raced = False

    def open_batches() -> pa.RecordBatchReader:
        nonlocal raced
        if not raced:
            raced = True
            other.insert_new(
                STEP_SAMPLES,
                lambda: pa.RecordBatchReader.from_batches(STEP_SAMPLES.schema, rows.to_batches()),
            )
        return pa.RecordBatchReader.from_batches(STEP_SAMPLES.schema, rows.to_batches())

    lake.insert_new(STEP_SAMPLES, open_batches, within={"patient_id": ["P1"], "month": ["2024-01"]})
    stored = lake.read(STEP_SAMPLES)
    assert stored.height == 1, stored


# ------------------------------------------------------------------ pins: anti-join vs merge


def test_merge_still_dedupes_when_the_anti_join_read_an_older_version(
    lake: Lake, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A concurrent ingest of the same samples commits between the anti-join (which saw an older
    # version) and the merge: the merge re-reads the table and its key match still holds.
    older = _samples([("P1", _utc(2024, 2, 1, 0), _utc(2024, 2, 1, 1), 1.0)])
    lake.insert_new(
        STEP_SAMPLES,
        lambda: pa.RecordBatchReader.from_batches(STEP_SAMPLES.schema, older.to_batches()),
    )
    data = tmp_path / "steps.csv"
    data.write_text(
        "patient_id,start,end,steps,source\n"
        "P1,2024-01-31T23:30:00-01:00,2024-02-01T00:30:00-01:00,500,Fitbit\n",
        encoding="utf-8",
    )
    original = Lake.insert_new
    concurrent = Lake(lake.uri)

    def racing(self: Lake, table, open_batches, **kwargs):  # type: ignore[no-untyped-def]
        if table is STEP_SAMPLES and self is not concurrent:
            original(concurrent, table, open_batches, **kwargs)  # the other writer wins
        return original(self, table, open_batches, **kwargs)

    monkeypatch.setattr(Lake, "insert_new", racing)
    summary = ingest.run(lake, data, format="generic")
    assert (summary.accepted, summary.new_samples) == (1, 0)
    stored = lake.read(STEP_SAMPLES)
    assert stored.height == 2
    assert stored.filter(pl.col("month") == "2024-02").height == 2  # UTC month of 00:30 UTC


def test_within_predicate_keeps_the_key_match_for_a_local_month_boundary(
    lake: Lake, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Local 2024-01-31 23:30 at -01:00 is 2024-02-01 00:30 UTC: month comes from UTC on both
    # sides, so the within lists include the stored row. With the anti-join disabled (empty
    # stored keys) the merge alone must refuse the repeat.
    data = tmp_path / "steps.csv"
    data.write_text(
        "patient_id,start,end,steps,source\n"
        "O'Brien,2024-01-31T23:30:00-01:00,2024-02-01T00:30:00-01:00,500,Fitbit\n",
        encoding="utf-8",
    )
    assert ingest.run(lake, data, format="generic").new_samples == 1
    real_scan = Lake.scan

    def blind_scan(self: Lake, table):  # type: ignore[no-untyped-def]
        frame = real_scan(self, table)
        return frame.filter(pl.lit(False)) if table is STEP_SAMPLES else frame

    monkeypatch.setattr(Lake, "scan", blind_scan)
    again = ingest.run(lake, data, format="generic")
    assert (again.accepted, again.new_samples) == (1, 0)
    monkeypatch.undo()
    assert lake.read(STEP_SAMPLES).height == 1


# ------------------------------------------------------------------ CLI: folder option checks


# BUG: an invalid --timezone with a folder is not checked up front: the clinical files (which get
# no zone) are committed, then every device file fails on its own with the same message. The
# contract is one clear line, non-zero exit and nothing committed for a bad option.
def test_cli_folder_with_unknown_timezone_commits_nothing(tmp_path: Path) -> None:
    folder = tmp_path / "landing"
    (folder / "clinical").mkdir(parents=True)
    (folder / "clinical" / "patients.csv").write_text(
        f"{PATIENTS_HEADER}\nP1,MS,Europe/Berlin\n", encoding="utf-8"
    )
    (folder / "steps.csv").write_text(
        "patient_id,start,end,steps,source\nP1,2024-01-15 10:00,2024-01-15 11:00,5,Fitbit\n",
        encoding="utf-8",
    )
    lake_dir = tmp_path / "lake"
    done = mobility(
        "--lake", str(lake_dir), "ingest", str(folder), "--timezone", "Mars/Base", cwd=tmp_path
    )
    assert done.returncode != 0
    assert len(done.stderr.splitlines()) == 1, done.stderr
    assert "Mars/Base" in done.stderr
    assert not Lake(str(lake_dir)).exists(PATIENTS)


# ------------------------------------------------------------------ pin: quarantine after samples


def test_quarantine_commit_failure_heals_on_reingest(
    lake: Lake, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from lakehouse.errors import StorageError

    data = tmp_path / "steps.csv"
    data.write_text(
        "patient_id,start,end,steps,source\n"
        "P1,2024-01-15T10:00:00Z,2024-01-15T11:00:00Z,500,Fitbit\n"
        "P1,2024-01-15T11:00:00Z,2024-01-15T12:00:00Z,-3,Fitbit\n",
        encoding="utf-8",
    )
    real_upsert = Lake.upsert

    def failing(self: Lake, table, *args, **kwargs):  # type: ignore[no-untyped-def]
        if table is QUARANTINE:
            raise StorageError("merge into bronze/quarantine: injected")
        return real_upsert(self, table, *args, **kwargs)

    monkeypatch.setattr(Lake, "upsert", failing)
    with pytest.raises(StorageError):
        ingest.run(lake, data, format="generic")
    monkeypatch.undo()
    # Partial state: the samples went in, the quarantine row did not ...
    assert lake.read(STEP_SAMPLES).height == 1
    # ... and a re-ingest completes it without adding samples.
    again = ingest.run(lake, data, format="generic")
    assert (again.new_samples, again.quarantined) == (0, 1)
    assert lake.read(QUARANTINE).height == 1
    assert lake.read(PATIENTS)["patient_id"].to_list() == [pseudonym("P1")]
