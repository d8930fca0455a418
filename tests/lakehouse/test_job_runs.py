"""Every job run, succeeded or failed, leaves one row in ops/job_runs."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest

from jobs.runs import job_run
from lakehouse import Lake
from lakehouse.catalog import JOB_RUNS
from lakehouse.errors import StorageError


def test_succeeded_run_is_recorded_with_its_figures(lake: Lake) -> None:
    with job_run(lake, "unit-test") as run:
        run.rows_in, run.rows_out = 120, 7
        run.details["batches"] = 2
        sum(range(100_000))  # some CPU time to measure

    runs = lake.read(JOB_RUNS)
    assert runs.height == 1
    row = runs.row(0, named=True)
    assert row["run_id"] == run.run_id
    assert row["job"] == "unit-test"
    assert row["status"] == "succeeded"
    assert (row["rows_in"], row["rows_out"]) == (120, 7)
    assert row["error"] is None
    assert row["engine"] == "local"
    assert row["wall_seconds"] >= 0
    assert row["cpu_seconds"] >= 0
    assert row["peak_rss_mb"] > 0
    assert row["started_at"] <= row["finished_at"]
    assert row["started_at"].tzinfo is not None
    assert json.loads(row["details"]) == {"batches": 2}


def test_failed_run_is_recorded_with_one_line_error_and_re_raised(lake: Lake) -> None:
    with pytest.raises(StorageError, match="bronze version 3 is gone"), job_run(lake, "unit-test"):
        raise StorageError("bronze version 3 is gone\nsecond line of detail")

    row = lake.read(JOB_RUNS).row(0, named=True)
    assert row["status"] == "failed"
    assert row["error"] == "StorageError: bronze version 3 is gone"
    assert "traceback_tail" in json.loads(row["details"])
    assert (row["rows_in"], row["rows_out"]) == (0, 0)


def test_a_library_error_is_recorded_by_type_and_place_never_its_message(lake: Lake) -> None:
    """A foreign exception's message may quote the data (Polars quotes the values it could not
    convert): ops/job_runs, which analysts can query, keeps its type and where it was raised."""
    cell = "MRN-778812 Jane Doe"
    with pytest.raises(pl.exceptions.InvalidOperationError), job_run(lake, "unit-test"):
        pl.Series([cell]).cast(pl.Float64, strict=True)

    row = lake.read(JOB_RUNS).row(0, named=True)
    assert row["status"] == "failed"
    assert row["error"].startswith("InvalidOperationError at polars/"), row["error"]
    assert "its message is not recorded" in row["error"]
    details = json.loads(row["details"])
    assert "tests/lakehouse/test_job_runs.py:" in details["traceback_tail"]
    for text in (row["error"], row["details"]):
        assert "MRN" not in text and "Jane" not in text, text


def test_runs_accumulate_with_distinct_ids(lake: Lake) -> None:
    for _ in range(3):
        with job_run(lake, "unit-test", engine="spark"):
            pass
    runs = lake.read(JOB_RUNS)
    assert runs.height == 3
    assert runs["run_id"].n_unique() == 3
    assert runs["engine"].to_list() == ["spark"] * 3


def test_cpu_time_of_worker_processes_counts(lake: Lake) -> None:
    """Work handed to child processes (as EBM and Prophet do) is part of the run's cost."""
    import subprocess
    import sys

    busy = "import time\nend = time.process_time() + 0.6\nwhile time.process_time() < end: pass"
    with job_run(lake, "train"):
        subprocess.run([sys.executable, "-c", busy], check=True)
    assert lake.read(JOB_RUNS)["cpu_seconds"][0] >= 0.5


def test_bytes_read_and_written_are_measured(lake: Lake, tmp_path: Path) -> None:
    data = tmp_path / "export.bin"
    data.write_bytes(b"\0" * 3_000_000)
    with job_run(lake, "ingest"):
        copy = tmp_path / "copy.bin"
        copy.write_bytes(data.read_bytes())
    row = lake.read(JOB_RUNS).row(0, named=True)
    # the file itself, plus whatever the interpreter read and wrote meanwhile
    assert 3_000_000 <= row["bytes_read"] < 6_000_000
    assert 3_000_000 <= row["bytes_written"] < 6_000_000


def test_a_job_runs_table_from_before_the_byte_columns_gains_them(lake: Lake) -> None:
    import polars as pl
    from deltalake import write_deltalake

    from lakehouse.storage import conform

    old_columns = [c for c in JOB_RUNS.columns if not c.startswith("bytes_")]
    with job_run(lake, "aggregate"):
        pass
    old_row = lake.read(JOB_RUNS).select(old_columns)
    write_deltalake(
        lake.table_uri(JOB_RUNS),
        conform(JOB_RUNS, lake.read(JOB_RUNS)).select(old_columns),
        mode="overwrite",
        schema_mode="overwrite",
    )
    assert not lake.schema_matches(JOB_RUNS)
    with job_run(lake, "features"):
        pass
    runs = lake.read(JOB_RUNS).sort("started_at")
    assert lake.schema_matches(JOB_RUNS)
    assert runs["job"].to_list() == ["aggregate", "features"]
    assert runs.select(old_columns).head(1).equals(old_row)
    assert runs["bytes_read"].is_null().to_list() == [True, False]
    assert pl.Series(runs["bytes_written"]).dtype == pl.Int64
