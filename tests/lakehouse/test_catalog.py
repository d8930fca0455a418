"""The catalog declares every table of DESIGN.md once, with sound keys and partitioning."""

from __future__ import annotations

import pyarrow as pa
import pytest

from lakehouse.catalog import ALL_TABLES, RESTRICTED_TABLES, TABLES, TableSpec, table_by_path

# DESIGN.md, "Tables": the columns each table has at least.
DESIGN_COLUMNS: dict[str, tuple[str, ...]] = {
    "bronze/step_samples": (
        "patient_id",
        "start_ts",
        "end_ts",
        "utc_offset_minutes",
        "steps",
        "source",
    ),
    "bronze/patients": ("patient_id", "disease_group", "timezone"),
    "bronze/therapies": ("patient_id", "therapy", "start_date", "end_date"),
    "bronze/side_effects": ("patient_id", "date", "effect", "severity"),
    "bronze/diagnoses": ("patient_id", "code", "diagnosed_on"),
    "bronze/quarantine": ("source_file", "record", "reason", "raw"),
    "silver/daily_steps": ("patient_id", "date", "steps", "coverage_hours", "n_samples"),
    "silver/features": ("patient_id", "date"),
    "gold/forecasts": (
        "patient_id",
        "model",
        "origin_date",
        "target_date",
        "yhat",
        "yhat_lower",
        "yhat_upper",
    ),
    "gold/explanations": (
        "patient_id",
        "model",
        "origin_date",
        "target_date",
        "feature",
        "contribution",
    ),
    "gold/backtests": (
        "model",
        "cluster",
        "origin_date",
        "horizon_days",
        "mae",
        "rmse",
        "mase",
        "coverage",
    ),
    "models/registry": (
        "model_id",
        "kind",
        "cluster",
        "version",
        "trained_at",
        "params",
        "metrics",
        "artifact_uri",
        "status",
    ),
    "ops/job_runs": (
        "run_id",
        "job",
        "started_at",
        "finished_at",
        "status",
        "rows_in",
        "rows_out",
        "error",
    ),
    "synthetic/ground_truth": ("patient_id", "therapy", "effect_steps"),
}

UTC_TIMESTAMP = pa.timestamp("us", tz="UTC")


def _ids(table: TableSpec) -> str:
    return table.path


@pytest.mark.parametrize("path", sorted(DESIGN_COLUMNS))
def test_design_table_is_declared_with_its_columns(path: str) -> None:
    table = table_by_path(path)
    missing = [c for c in DESIGN_COLUMNS[path] if c not in table.columns]
    assert not missing, f"{path} lacks DESIGN columns {missing}"


def test_unknown_table_path_raises_key_error() -> None:
    with pytest.raises(KeyError):
        table_by_path("bronze/nope")


def test_paths_and_view_names_are_unique() -> None:
    paths = [t.path for t in TABLES]
    assert len(paths) == len(set(paths))
    assert len({t.qualified_name for t in TABLES}) == len(TABLES)


def test_every_declared_table_is_in_design() -> None:
    assert {t.path for t in TABLES} >= set(DESIGN_COLUMNS)


@pytest.mark.parametrize("table", TABLES, ids=_ids)
def test_keys_partitions_and_sort_columns_exist(table: TableSpec) -> None:
    assert table.keys, f"{table.path} declares no keys"
    for name in (*table.keys, *table.partition_by, *table.sort_by):
        assert name in table.schema.names
    assert table.columns == tuple(table.schema.names)
    assert len(set(table.columns)) == len(table.columns)


@pytest.mark.parametrize("table", TABLES, ids=_ids)
def test_keys_and_partitions_are_not_nullable(table: TableSpec) -> None:
    # A null key never matches in a merge (upsert would duplicate rows); a null partition value
    # has no folder.
    for name in (*table.keys, *table.partition_by):
        assert not table.schema.field(name).nullable, f"{table.path}.{name} is nullable"


@pytest.mark.parametrize("table", TABLES, ids=_ids)
def test_no_partition_per_patient(table: TableSpec) -> None:
    assert "patient_id" not in table.partition_by


@pytest.mark.parametrize("table", TABLES, ids=_ids)
def test_patient_tables_sort_by_patient_first(table: TableSpec) -> None:
    # Row-group statistics prune reads of one patient only when files are sorted by patient.
    if "patient_id" in table.keys and table.sort_by:
        assert table.sort_by[0] == "patient_id"


@pytest.mark.parametrize("table", TABLES, ids=_ids)
def test_timestamps_are_utc_microseconds_and_ids_strings(table: TableSpec) -> None:
    for schema_field in table.schema:
        if pa.types.is_timestamp(schema_field.type):
            assert schema_field.type == UTC_TIMESTAMP, f"{table.path}.{schema_field.name}"
    if "patient_id" in table.columns:
        assert table.schema.field("patient_id").type == pa.string()


def test_step_and_daily_columns_have_design_types() -> None:
    samples = table_by_path("bronze/step_samples").schema
    assert samples.field("steps").type == pa.float64()
    assert samples.field("source").type == pa.string()
    daily = table_by_path("silver/daily_steps").schema
    assert daily.field("steps").type == pa.float64()


def test_spec_rejects_unknown_key_column() -> None:
    with pytest.raises(ValueError, match="unknown columns"):
        TableSpec(
            layer="bronze",
            name="broken",
            schema=pa.schema([pa.field("patient_id", pa.string())]),
            keys=("nope",),
        )


def test_path_and_qualified_name() -> None:
    table = table_by_path("silver/daily_steps")
    assert table.path == "silver/daily_steps"
    assert table.qualified_name == "silver.daily_steps"


def test_the_restricted_tables_are_exactly_those_flagged_and_never_sql_views() -> None:
    # the SQL sandbox refuses RESTRICTED_TABLES by name and register() refuses the flag
    assert {t.path for t in ALL_TABLES if t.restricted} == {t.path for t in RESTRICTED_TABLES}
    assert not [t.path for t in TABLES if t.restricted]
