"""Ingestion stores pseudonyms only: the key is required, the map is kept apart (and refuses a
second key), and no source identifier reaches a table SQL can read."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import polars as pl
import pytest

from jobs.ingest import run as ingest
from lakehouse import InputError, Lake, get_settings
from lakehouse.catalog import JOB_RUNS, REIDENTIFICATION, TABLES
from lakehouse.pseudonyms import Pseudonymizer
from lakehouse.query import connect, run_query
from tests.pseudonyms import pseudonym
from tests.test_cli import assert_one_line_error, mobility

FITABASE = "Id,ActivityHour,StepTotal\n{rows}"


def _fitabase(folder: Path, ids: list[str]) -> Path:
    rows = "\n".join(f"{i},4/12/2016 1:00:00 AM,{10 + n}" for n, i in enumerate(ids))
    rows += f"\n{ids[0]},4/12/2016 2:00:00 AM,-5"  # quarantined: negative steps
    path = folder / "hourlySteps_merged.csv"
    path.write_text(FITABASE.format(rows=rows) + "\n", encoding="utf-8")
    return path


def test_ingest_without_a_key_is_one_line_and_commits_nothing(tmp_path: Path) -> None:
    data = _fitabase(tmp_path, ["1503960366"])
    lake_dir = tmp_path / "lake"
    done = mobility(
        "--lake",
        str(lake_dir),
        "ingest",
        str(data),
        cwd=tmp_path,
        env={"MOBILITY_PSEUDONYM_KEY": ""},
    )
    assert_one_line_error(done, "MOBILITY_PSEUDONYM_KEY is not set")
    assert not lake_dir.exists() or not any(lake_dir.iterdir())


def test_no_source_identifier_reaches_a_table_sql_can_read(lake: Lake, tmp_path: Path) -> None:
    sources = ["1503960366", "1624580081"]
    summary = ingest.run(lake, _fitabase(tmp_path, sources))
    assert summary.accepted == 2 and summary.quarantined == 1

    con = connect(lake)
    for table in TABLES:
        if not lake.exists(table):
            continue
        text = run_query(con, f"SELECT * FROM {table.qualified_name}").table.to_pylist()
        for source in sources:
            assert source not in str(text), table.path
    quarantined = lake.read(REIDENTIFICATION)  # the map holds them, apart from SQL
    assert sorted(quarantined["source_id"]) == sorted(sources)
    assert sorted(quarantined["patient_id"]) == sorted(pseudonym(s) for s in sources)


def test_a_second_key_is_refused_on_a_lake_made_with_another(
    lake: Lake, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ingest.run(lake, _fitabase(tmp_path, ["7"]))
    monkeypatch.setenv("MOBILITY_PSEUDONYM_KEY", "a-different-tests-only-key-000000000000")
    get_settings.cache_clear()
    before = lake.version(REIDENTIFICATION)
    with pytest.raises(InputError, match="not the key this lake's pseudonyms were made with"):
        ingest.run(lake, _fitabase(tmp_path, ["8"]))
    assert lake.version(REIDENTIFICATION) == before


def test_a_pseudonym_collision_stops_the_ingest(lake: Lake, tmp_path: Path) -> None:
    pseudonyms = Pseudonymizer("tests-only-pseudonym-key-0123456789abcdef")
    lake.append(
        REIDENTIFICATION,
        pl.DataFrame(
            {
                "patient_id": [pseudonym("7")],
                "source_id": ["someone else"],
                "key_id": [pseudonyms.key_id],
                "first_seen_at": [datetime(2024, 1, 1, tzinfo=UTC)],
                "source_file": [None],
            }
        ),
    )
    with pytest.raises(Exception, match="already stands for another patient"):
        ingest.run(lake, _fitabase(tmp_path, ["7"]), pseudonyms=pseudonyms)


def test_a_failed_export_is_recorded_under_its_pseudonym(lake: Lake, tmp_path: Path) -> None:
    broken = tmp_path / "apple-health" / "MRN-77" / "export.xml"
    broken.parent.mkdir(parents=True)
    broken.write_text('<?xml version="1.0"?>\n<HealthData>\n <Record type=', encoding="utf-8")
    with pytest.raises(InputError) as info:
        ingest.run(lake, broken)
    assert "MRN-77" in str(info.value)  # the user sees their own path
    errors = lake.read(JOB_RUNS)["error"].drop_nulls().to_list()
    assert len(errors) == 1
    assert "MRN-77" not in errors[0] and pseudonym("MRN-77") in errors[0]


def test_cli_prints_pseudonyms(tmp_path: Path) -> None:
    done = mobility("--lake", str(tmp_path / "lake"), "pseudonym", "MRN-1", "MRN-2", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "source_id,patient_id",
        f"MRN-1,{pseudonym('MRN-1')}",
        f"MRN-2,{pseudonym('MRN-2')}",
    ]
