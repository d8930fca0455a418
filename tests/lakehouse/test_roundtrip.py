"""Round trips through Delta for every catalog table, and the write modes of :class:`Lake`."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import polars as pl
import pytest
from deltalake import DeltaTable
from hypothesis import HealthCheck, given, settings
from polars.testing import assert_frame_equal

from lakehouse import Lake, StorageError
from lakehouse.catalog import (
    BACKTESTS,
    DAILY_STEPS,
    FORECASTS,
    JOB_RUNS,
    PATIENTS,
    STEP_SAMPLES,
    TABLES,
    TableSpec,
)
from lakehouse.storage import (
    _newest_logged_version,
    conform,
    empty_frame,
    in_list_predicate,
    sql_literal,
)
from tests.lakehouse.frames import canonical, edge_rows, frames, polars_schema

OBRIEN = "O'Brien-ü"


def _ids(table: TableSpec) -> str:
    return table.path


def _assert_same_rows(actual: pl.DataFrame, expected: pl.DataFrame, table: TableSpec) -> None:
    assert actual.schema == polars_schema(table)
    assert_frame_equal(canonical(actual, table), canonical(expected, table), check_exact=True)


# ------------------------------------------------------------------ round trips per table


@pytest.mark.parametrize("table", TABLES, ids=_ids)
def test_edge_rows_round_trip(lake: Lake, table: TableSpec) -> None:
    rows = edge_rows(table)
    assert lake.append(table, rows)
    back = lake.read(table)
    _assert_same_rows(back, rows, table)
    # The awkward values survive exactly, not just "something equal after sorting".
    if "patient_id" in table.columns:
        assert OBRIEN in back["patient_id"].to_list()
    for schema_field in table.schema:
        if schema_field.nullable:
            assert back[schema_field.name].null_count() == 1, schema_field.name


@pytest.mark.parametrize("table", TABLES, ids=_ids)
def test_generated_frames_round_trip(
    tmp_path_factory: pytest.TempPathFactory, table: TableSpec
) -> None:
    @settings(
        max_examples=8,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(first=frames(table), second=frames(table))
    def round_trip(first: pl.DataFrame, second: pl.DataFrame) -> None:
        lake = Lake(str(tmp_path_factory.mktemp("lake")))
        lake.append(table, first)
        lake.append(table, second)
        _assert_same_rows(lake.read(table), pl.concat([first, second]), table)
        assert lake.info(table).rows == first.height + second.height

    round_trip()


# ------------------------------------------------------------------ missing tables


@pytest.mark.parametrize("table", TABLES, ids=_ids)
def test_missing_table_reads_as_empty_frame_with_schema(lake: Lake, table: TableSpec) -> None:
    assert not lake.exists(table)
    assert lake.version(table) is None
    frame = lake.read(table)
    assert frame.height == 0
    assert frame.schema == empty_frame(table).schema
    assert list(frame.schema) == list(table.columns)
    assert lake.dataset(table).schema == table.schema
    assert lake.scan(table).collect().schema == frame.schema
    assert lake.history(table) == []


def test_missing_table_handle_raises_storage_error(lake: Lake) -> None:
    with pytest.raises(StorageError, match="does not exist"):
        lake.delta(PATIENTS)


def test_empty_frame_matches_declared_types() -> None:
    frame = empty_frame(STEP_SAMPLES)
    assert frame.height == 0
    assert frame.schema["start_ts"] == pl.Datetime("us", "UTC")
    assert frame.schema["utc_offset_minutes"] == pl.Int16
    assert frame.schema["steps"] == pl.Float64


# ------------------------------------------------------------------ replace


def _daily(patient_ids: list[str], month: str, steps: float) -> pl.DataFrame:
    day = date.fromisoformat(f"{month}-01")
    return pl.DataFrame(
        {
            "patient_id": patient_ids,
            "date": [day] * len(patient_ids),
            "steps": [steps] * len(patient_ids),
            "coverage_hours": [12] * len(patient_ids),
            "n_samples": [40] * len(patient_ids),
            "n_sources": [1] * len(patient_ids),
            "is_wear_day": [True] * len(patient_ids),
            "month": [month] * len(patient_ids),
        },
        schema=polars_schema(DAILY_STEPS),
    )


def test_replace_by_predicate_only_touches_matching_rows(lake: Lake) -> None:
    january = _daily(["a", "b"], "2024-01", 100.0)
    february = _daily(["a", "b"], "2024-02", 200.0)
    lake.append(DAILY_STEPS, pl.concat([january, february]))

    new_january = _daily(["a", "c", OBRIEN], "2024-01", 111.0)
    lake.replace(DAILY_STEPS, new_january, predicate="month = '2024-01'")
    expected = pl.concat([new_january, february])
    _assert_same_rows(lake.read(DAILY_STEPS), expected, DAILY_STEPS)

    version = lake.version(DAILY_STEPS)
    assert version is not None
    lake.replace(DAILY_STEPS, new_january, predicate="month = '2024-01'")
    assert lake.version(DAILY_STEPS) == version + 1
    _assert_same_rows(lake.read(DAILY_STEPS), expected, DAILY_STEPS)


def test_replace_with_escaped_string_predicate(lake: Lake) -> None:
    rows = edge_rows(PATIENTS)
    lake.append(PATIENTS, rows)
    obrien = rows.filter(pl.col("patient_id") == OBRIEN).with_columns(disease_group=pl.lit("PD"))
    lake.replace(PATIENTS, obrien, predicate=f"patient_id = {sql_literal(OBRIEN)}")
    expected = pl.concat([rows.filter(pl.col("patient_id") != OBRIEN), obrien])
    _assert_same_rows(lake.read(PATIENTS), expected, PATIENTS)


def test_replace_without_predicate_overwrites_everything(lake: Lake) -> None:
    lake.append(PATIENTS, edge_rows(PATIENTS))
    only = edge_rows(PATIENTS, (2,))
    lake.replace(PATIENTS, only, predicate=None)
    _assert_same_rows(lake.read(PATIENTS), only, PATIENTS)


def test_replace_creates_missing_table(lake: Lake) -> None:
    rows = _daily(["a"], "2024-03", 5.0)
    lake.replace(DAILY_STEPS, rows, predicate="month = '2024-03'")
    _assert_same_rows(lake.read(DAILY_STEPS), rows, DAILY_STEPS)


# ------------------------------------------------------------------ upsert


MERGED = [t for t in TABLES if t.merge_written]


@pytest.mark.parametrize("table", [t for t in TABLES if not t.merge_written], ids=_ids)
def test_tables_not_declared_merge_written_refuse_a_merge(lake: Lake, table: TableSpec) -> None:
    with pytest.raises(StorageError, match="not declared merge_written"):
        lake.upsert(table, edge_rows(table, (0, 1)))
    assert not lake.exists(table)


@pytest.mark.parametrize("table", MERGED, ids=_ids)
def test_upsert_updates_by_key_and_inserts_new(lake: Lake, table: TableSpec) -> None:
    lake.upsert(table, edge_rows(table, (0, 1)))  # creates the table
    _assert_same_rows(lake.read(table), edge_rows(table, (0, 1)), table)

    # Row 1 with a changed non-key value, plus the new row 2.
    changeable = [c for c in table.columns if c not in (*table.keys, *table.partition_by)]
    updated = edge_rows(table, (1,))
    if changeable:
        updated = updated.with_columns(edge_rows(table, (2,))[changeable[0]])
    batch = pl.concat([updated, edge_rows(table, (2,))])
    lake.upsert(table, batch)
    expected = pl.concat([edge_rows(table, (0,)), batch])
    _assert_same_rows(lake.read(table), expected, table)

    lake.upsert(table, batch)  # idempotent
    _assert_same_rows(lake.read(table), expected, table)


# ------------------------------------------------------------------ append, delete


def test_append_with_app_transaction_is_skipped_when_seen(lake: Lake) -> None:
    rows = edge_rows(JOB_RUNS)
    assert lake.append(JOB_RUNS, rows, app_id="ingest:file-1", app_version=1) is True
    assert lake.append(JOB_RUNS, rows, app_id="ingest:file-1", app_version=1) is False
    assert lake.append(JOB_RUNS, rows, app_id="ingest:file-1", app_version=0) is False
    assert lake.read(JOB_RUNS).height == rows.height

    # Another application id, or a later version, is a new batch.
    assert lake.append(JOB_RUNS, rows, app_id="ingest:file-2", app_version=1) is True
    assert lake.append(JOB_RUNS, rows, app_id="ingest:file-1", app_version=2) is True
    assert lake.read(JOB_RUNS).height == 3 * rows.height


def test_append_records_commit_metadata(lake: Lake) -> None:
    lake.append(PATIENTS, edge_rows(PATIENTS), metadata={"job": "unit-test"})
    assert lake.history(PATIENTS, limit=1)[0].get("job") == "unit-test"


def test_delete_by_escaped_predicate(lake: Lake) -> None:
    rows = edge_rows(STEP_SAMPLES)
    lake.append(STEP_SAMPLES, rows)
    lake.delete(STEP_SAMPLES, f"patient_id = {sql_literal(OBRIEN)}")
    _assert_same_rows(
        lake.read(STEP_SAMPLES), rows.filter(pl.col("patient_id") != OBRIEN), STEP_SAMPLES
    )
    lake.delete(STEP_SAMPLES, in_list_predicate("patient_id", ["P-000001", 'Z "quoted" 患者']))
    assert lake.read(STEP_SAMPLES).height == 0


def test_delete_on_missing_table_is_a_no_op(lake: Lake) -> None:
    lake.delete(PATIENTS, "true")
    assert not lake.exists(PATIENTS)


# ------------------------------------------------------------------ conform, literals


def test_conform_orders_casts_and_drops_extra_columns() -> None:
    rows = edge_rows(PATIENTS)
    shuffled = rows.select(reversed(rows.columns)).with_columns(
        pl.col("birth_year").cast(pl.Int64), extra=pl.lit(1)
    )
    arrow = conform(PATIENTS, shuffled.to_arrow())
    assert arrow.schema == PATIENTS.schema
    assert arrow.column("patient_id").to_pylist() == sorted(rows["patient_id"].to_list())


def test_conform_raises_on_missing_columns() -> None:
    with pytest.raises(StorageError, match=r"lack columns \['timezone'\]"):
        conform(PATIENTS, edge_rows(PATIENTS).drop("timezone"))


@pytest.mark.parametrize(
    ("column", "bad_values"),
    [
        ("steps", ["many", "few", "none"]),  # text in a float column
        ("utc_offset_minutes", [70_000, 0, 0]),  # overflows int16
        ("patient_id", [None, "P-1", "P-2"]),  # null in a non-nullable column
    ],
)
def test_conform_raises_on_values_that_do_not_fit(column: str, bad_values: list[object]) -> None:
    rows = edge_rows(STEP_SAMPLES).with_columns(pl.Series(column, bad_values, strict=False))
    with pytest.raises(StorageError, match="do not fit the table schema"):
        conform(STEP_SAMPLES, rows)


def test_unfit_rows_are_not_written(lake: Lake) -> None:
    with pytest.raises(StorageError):
        lake.append(PATIENTS, edge_rows(PATIENTS).drop("disease_group"))
    assert not lake.exists(PATIENTS)


@pytest.mark.parametrize(
    ("value", "literal"),
    [
        (OBRIEN, "'O''Brien-ü'"),
        ("''", "''''''"),
        ("plain", "'plain'"),
        (None, "NULL"),
        (True, "true"),
        (False, "false"),
        (42, "42"),
        (1.5, "1.5"),
        (date(2024, 2, 29), "'2024-02-29'"),
    ],
)
def test_sql_literal(value: object, literal: str) -> None:
    assert sql_literal(value) == literal


def test_in_list_predicate() -> None:
    assert in_list_predicate("patient_id", ["a", "b'c"]) == "patient_id IN ('a', 'b''c')"
    assert in_list_predicate("patient_id", []) == "false"


# ------------------------------------------------------------------ info, optimize


def test_info_counts_rows_files_and_version(lake: Lake) -> None:
    missing = lake.info(PATIENTS)
    assert (missing.exists, missing.version, missing.rows, missing.files) == (False, None, 0, 0)

    lake.append(PATIENTS, edge_rows(PATIENTS, (0, 1)))
    lake.append(PATIENTS, edge_rows(PATIENTS, (2,)))
    info = lake.info(PATIENTS)
    assert info.exists
    assert info.path == "bronze/patients"
    assert info.version == 1
    assert info.rows == 3
    assert info.files == 2
    assert info.size_bytes > 0


def test_version_is_the_delta_logs_through_checkpoints_and_cleanups(lake: Lake) -> None:
    assert lake.version(PATIENTS) is None
    for row in range(4):
        lake.append(PATIENTS, edge_rows(PATIENTS, (row % 3,)))
        assert lake.version(PATIENTS) == DeltaTable(lake.table_uri(PATIENTS)).version() == row

    delta = DeltaTable(lake.table_uri(PATIENTS))
    delta.create_checkpoint()
    delta.cleanup_metadata()  # nothing expired yet: the commits stay
    log = Path(lake.table_uri(PATIENTS)) / "_delta_log"
    for commit in sorted(log.glob("*.json"))[:-1]:  # as after a cleanup past the checkpoint
        commit.unlink()
    (log / "_commit_0123.json.tmp").write_text("{}")  # a commit being written is not one yet
    assert lake.version(PATIENTS) == DeltaTable(lake.table_uri(PATIENTS)).version() == 3
    lake.append(PATIENTS, edge_rows(PATIENTS, (0,)))
    assert lake.version(PATIENTS) == DeltaTable(lake.table_uri(PATIENTS)).version() == 4


@pytest.mark.parametrize(
    ("names", "newest"),
    [
        ([], None),
        (["_last_checkpoint", "00000000000000000007.crc", "_commit_ab.json.tmp"], None),
        (["00000000000000000009.json", "00000000000000000010.checkpoint.parquet"], 10),
        (["00000000000000000012.checkpoint.0000000001.0000000002.parquet"], 12),
        (
            ["00000000000000000002.json", "00000000000000000011.json", "0000000000000000099.json"],
            11,
        ),
    ],
)
def test_the_newest_logged_version_is_read_from_log_names(
    tmp_path: Path, names: list[str], newest: int | None
) -> None:
    log = tmp_path / "_delta_log"
    log.mkdir()
    for name in names:
        (log / name).write_text("")
    assert _newest_logged_version(tmp_path) == newest
    assert _newest_logged_version(tmp_path / "missing") is None


def test_partitioned_table_writes_one_folder_per_month(lake: Lake) -> None:
    lake.append(
        DAILY_STEPS, pl.concat([_daily(["a", "b"], m, 1.0) for m in ("2024-01", "2024-02")])
    )
    assert lake.info(DAILY_STEPS).files == 2
    folders = sorted(p.name for p in Path(lake.table_uri(DAILY_STEPS)).glob("month=*"))
    assert folders == ["month=2024-01", "month=2024-02"]


def test_compact_merges_only_the_crowded_partitions_and_keeps_every_row(lake: Lake) -> None:
    column = FORECASTS.partition_by[0]
    for month, commits in (("2026-01", 5), ("2026-02", 2)):
        for row in range(commits):
            lake.append(
                FORECASTS,
                edge_rows(FORECASTS, (row % 3,)).with_columns(pl.lit(month).alias(column)),
            )
    before = lake.read(FORECASTS)

    assert lake.compact(FORECASTS, min_files=4) == 4

    files = lake.file_stats(FORECASTS).group_by(f"partition.{column}").len().sort(pl.all())
    assert files.rows() == [("2026-01", 1), ("2026-02", 2)]
    _assert_same_rows(lake.read(FORECASTS), before, FORECASTS)
    assert lake.compact(FORECASTS, min_files=4) == 0  # nothing crowded any more


@pytest.mark.parametrize("table", [STEP_SAMPLES, BACKTESTS], ids=_ids)
def test_optimize_compacts_small_files_and_keeps_content(lake: Lake, table: TableSpec) -> None:
    batches = [edge_rows(table, (row,)) for row in (0, 1, 2)]
    if table.partition_by:  # all in one partition, so compaction can make a single file
        batches = [b.with_columns(pl.lit("2024-01").alias(table.partition_by[0])) for b in batches]
    for batch in batches:
        lake.append(table, batch)
    before = lake.read(table)
    assert lake.info(table).files == 3

    metrics = lake.optimize(table, vacuum_hours=0)
    assert lake.info(table).files == 1
    assert metrics["vacuumed_files"] == 3
    _assert_same_rows(lake.read(table), before, table)


def test_optimize_retries_when_a_concurrent_replace_removes_its_files(
    lake: Lake, monkeypatch: pytest.MonkeyPatch
) -> None:
    for patient in ("a", "b", "c"):
        lake.append(DAILY_STEPS, _daily([patient], "2024-01", 1.0))
    writer = Lake(lake.uri)  # another process, in effect
    replacement = _daily(["a", "b"], "2024-01", 5.0)
    loads = 0
    original_delta = lake.delta

    def delta_then_concurrent_replace(
        table: TableSpec, *, version: int | None = None
    ) -> DeltaTable:
        nonlocal loads
        handle = original_delta(table, version=version)
        loads += 1
        if loads == 1:  # the replace commits after optimize has loaded its snapshot
            writer.replace(DAILY_STEPS, replacement, predicate="month = '2024-01'")
        return handle

    monkeypatch.setattr(lake, "delta", delta_then_concurrent_replace)
    monkeypatch.setattr("lakehouse.storage.time.sleep", lambda seconds: None)
    lake.optimize(DAILY_STEPS)
    monkeypatch.undo()

    assert loads >= 2
    _assert_same_rows(lake.read(DAILY_STEPS), replacement, DAILY_STEPS)
    assert lake.info(DAILY_STEPS).files == 1
