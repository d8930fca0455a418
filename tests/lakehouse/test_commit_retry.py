"""Delta commit conflicts are retried with backoff; concurrent appends lose no commit; writers
racing to create a table store each row once."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import polars as pl
import pyarrow as pa
import pytest
from deltalake.exceptions import CommitFailedError

from lakehouse import Lake, StorageError
from lakehouse.catalog import PATIENTS, QUARANTINE, STEP_SAMPLES
from lakehouse.storage import _MAX_COMMIT_ATTEMPTS, _with_commit_retry, conform
from tests.lakehouse.frames import edge_rows


@pytest.fixture
def sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Backoff delays asked for, without waiting."""
    delays: list[float] = []
    monkeypatch.setattr("lakehouse.storage.time.sleep", delays.append)
    return delays


def test_retries_conflicts_then_returns_the_result(sleeps: list[float]) -> None:
    calls = 0

    def commit() -> str:
        nonlocal calls
        calls += 1
        if calls < 3:
            raise CommitFailedError("a concurrent transaction deleted data this operation read")
        return "committed"

    assert _with_commit_retry(commit, what="merge into silver/daily_steps") == "committed"
    assert calls == 3
    assert len(sleeps) == 2
    assert all(0 < delay <= 10 for delay in sleeps)


def test_persistent_conflict_raises_storage_error(sleeps: list[float]) -> None:
    calls = 0

    def commit() -> None:
        nonlocal calls
        calls += 1
        raise CommitFailedError("conflict")

    with pytest.raises(
        StorageError, match="merge into silver/daily_steps: commit conflict"
    ) as info:
        _with_commit_retry(commit, what="merge into silver/daily_steps")
    assert calls == _MAX_COMMIT_ATTEMPTS
    assert len(sleeps) == _MAX_COMMIT_ATTEMPTS - 1
    assert isinstance(info.value.__cause__, CommitFailedError)
    assert "\n" not in str(info.value)


def test_other_errors_are_not_retried(sleeps: list[float]) -> None:
    calls = 0

    def commit() -> None:
        nonlocal calls
        calls += 1
        raise ValueError("schema mismatch")

    with pytest.raises(ValueError, match="schema mismatch"):
        _with_commit_retry(commit, what="append")
    assert calls == 1
    assert sleeps == []


def _batch(writer: int, batch: int) -> pl.DataFrame:
    rows = edge_rows(STEP_SAMPLES, (1, 2))
    return rows.with_columns(
        pl.lit(f"writer-{writer}").alias("source"),
        pl.Series("patient_id", [f"P{writer}-{batch}-a", f"P{writer}-{batch}-b"]),
    )


def test_concurrent_appends_lose_no_commit(lake: Lake) -> None:
    writers, batches_each = 2, 10
    start = threading.Barrier(writers)
    errors: list[BaseException] = []

    def write(writer: int) -> None:
        own_lake = Lake(lake.uri)
        start.wait()
        try:
            for batch in range(batches_each):
                own_lake.append(STEP_SAMPLES, _batch(writer, batch))
        except BaseException as err:
            errors.append(err)

    threads = [threading.Thread(target=write, args=(w,)) for w in range(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors
    samples = lake.read(STEP_SAMPLES)
    assert samples.height == writers * batches_each * 2
    assert samples["patient_id"].n_unique() == samples.height
    assert lake.version(STEP_SAMPLES) == writers * batches_each - 1


def _race(writers: int, write: Callable[[], None]) -> None:
    start = threading.Barrier(writers)
    errors: list[BaseException] = []

    def run() -> None:
        start.wait()
        try:
            write()
        except BaseException as err:
            errors.append(err)

    threads = [threading.Thread(target=run) for _ in range(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors


def test_first_inserts_racing_to_create_a_table_store_each_row_once(tmp_path: Path) -> None:
    # Regression: each writer created the table with its rows (mode="error"), and delta-rs
    # turned the losing creations into appends: the rows were stored once per writer.
    rows = conform(QUARANTINE, edge_rows(QUARANTINE, (0, 1, 2)))
    for attempt in range(4):
        lake = Lake(str(tmp_path / f"insert-{attempt}"))
        _race(3, lambda lake=lake: lake.insert_new(QUARANTINE, lambda: _reader(rows)))
        stored = lake.read(QUARANTINE)
        assert stored.height == 3
        assert stored.select(QUARANTINE.keys).n_unique() == 3


def test_first_upserts_racing_to_create_a_table_store_each_key_once(tmp_path: Path) -> None:
    rows = edge_rows(PATIENTS, (0, 1, 2))
    for attempt in range(4):
        lake = Lake(str(tmp_path / f"upsert-{attempt}"))
        _race(3, lambda lake=lake: lake.upsert(PATIENTS, rows))
        assert lake.read(PATIENTS)["patient_id"].sort().to_list() == sorted(rows["patient_id"])


def _reader(rows: pa.Table) -> pa.RecordBatchReader:
    return pa.RecordBatchReader.from_batches(rows.schema, rows.to_batches())
