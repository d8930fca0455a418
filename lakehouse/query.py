"""The DuckDB query layer: every catalog table as a view ``<layer>.<name>`` over the lake.

DuckDB cannot download its ``delta`` extension here, so each view reads the files of the table's
current Delta version: on a local lake with DuckDB's own Parquet reader (``read_parquet`` of that
file list, partition columns from the Hive-style paths; 2-3 times faster than an Arrow scan, with
row-group statistics used for filters), on object storage through
``DeltaTable.to_pyarrow_dataset()``. Missing tables appear as empty views with their declared
schema.

These connections run the product's own queries (named constants with bound parameters: the
dashboard's pages, ``mobility export-forecast``). Even so, :func:`connect` locks them down: external
access off (only the catalog tables' folders stay readable, for the views), Python replacement
scans and configuration changes off, memory capped. Analysts' SQL never runs here: it goes through
:mod:`lakehouse.sandbox`, on a connection of its own per query that can open no file at all.

Restricted tables (``catalog.RESTRICTED_TABLES``: the audit log, the re-identification map) are
never views and their folders are not among the readable ones: SQL cannot reach them.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass

import duckdb
import pyarrow as pa
import pyarrow.dataset as pads
from deltalake import DeltaTable

from lakehouse.catalog import TABLES, TableSpec
from lakehouse.errors import InputError, StorageError
from lakehouse.storage import Lake, sql_literal

DEFAULT_TIMEOUT_SECONDS = 30.0
DEFAULT_ROW_CAP = 10_000


# A patient's forecasts from their latest origin, the champion marked as the forecast run chose
# it (gold/outlook: the champion of the registry the forecasts were made with, as in the cohort
# page's decline list). Bound: the patient twice. Used by ``mobility export-forecast`` and the
# dashboard's patient page.
PATIENT_FORECAST_SQL = """
WITH mine AS (
    SELECT * FROM gold.forecasts WHERE patient_id = ?
),
latest AS (
    SELECT max(origin_date) AS origin_date FROM mine
),
champion AS (
    SELECT model
    FROM gold.outlook
    WHERE patient_id = ? AND champion AND origin_date = (SELECT origin_date FROM latest)
)
SELECT
    target_date,
    model,
    model IN (SELECT model FROM champion) AS champion,
    yhat,
    yhat_lower,
    yhat_upper,
    origin_date
FROM mine
JOIN latest USING (origin_date)
ORDER BY model, target_date
"""


@dataclass(frozen=True)
class QueryResult:
    """Rows of a query, capped; ``truncated`` says whether more rows existed."""

    table: pa.Table
    truncated: bool


def connect(
    lake: Lake,
    *,
    sandbox: bool = True,
    memory_limit: str = "2GB",
    tables: Sequence[TableSpec] = TABLES,
) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB connection with lake tables registered as views.

    Args:
        lake: the lake to expose.
        sandbox: lock the connection down (external access off but for the tables' folders,
            configuration locked). Views registered later (:func:`register`) still work.
        memory_limit: DuckDB memory limit.
        tables: the tables to register now (all by default; opening a large table's dataset
            reads its whole Delta log, so callers that know what they query pass
            the tables it names).
    """
    con = duckdb.connect(
        ":memory:",
        config={"python_enable_replacements": False, "memory_limit": memory_limit, "threads": 2},
    )
    # timestamps leave DuckDB in UTC, as the tables store them and the pages label them
    con.execute("SET TimeZone = 'UTC'")
    create_schemas(con)
    for table in tables:
        register(con, lake, table)
    if sandbox:
        if lake.is_local:
            # the views read their tables' Parquet files; nothing else on the machine (TABLES
            # holds no restricted table, so their folders stay unreadable)
            folders = ", ".join(sql_literal(f"{lake.table_uri(t)}/") for t in TABLES)
            con.execute(f"SET allowed_directories = [{folders}]")
        con.execute("SET enable_external_access = false")
        con.execute("SET lock_configuration = true")
    return con


def create_schemas(con: duckdb.DuckDBPyConnection) -> None:
    """The schemas the views live in, one per layer."""
    for layer in sorted({table.layer for table in TABLES}):
        con.execute(f"CREATE SCHEMA IF NOT EXISTS {layer}")


def register(
    con: duckdb.DuckDBPyConnection,
    lake: Lake,
    table: TableSpec,
    *,
    dataset: pads.Dataset | None = None,
) -> None:
    """Expose ``table``'s current files as the view ``<layer>.<name>`` (an empty view with the
    declared schema when the table does not exist yet).

    Args:
        con: the connection.
        lake: the lake.
        table: the catalog table.
        dataset: the table's current version as an Arrow dataset: the view reads it, and DuckDB
            opens no file (the analysts' sandbox). Without it, a local lake's view reads the
            version's Parquet files with DuckDB's own reader.

    Raises:
        StorageError: ``table`` is restricted (never exposed to SQL).
    """
    if table.restricted:
        raise StorageError(f"{table.path} is restricted: it is never exposed to SQL")
    source = f"_arrow_{table.layer}_{table.name}"
    if dataset is not None:
        con.register(source, dataset)
        stored: set[str] = set(dataset.schema.names)
    else:
        # the table's Delta log is read once for its files and its columns
        delta = lake.delta(table) if lake.exists(table) else None
        files = _local_files(lake, table, delta)
        if files:
            source = _parquet_scan(table, files)
        else:
            con.register(source, lake.dataset(table, delta))
        stored = set(table.columns) if delta is None else {f.name for f in delta.schema().fields}
    # a column the catalog added after the table was written reads as NULL
    columns = ", ".join(
        f'"{name}"'
        if name in stored
        else f'CAST(NULL AS {_duckdb_type(table.schema.field(name).type)}) AS "{name}"'
        for name in table.columns
    )
    con.execute(f"CREATE OR REPLACE VIEW {table.qualified_name} AS SELECT {columns} FROM {source}")


def _local_files(lake: Lake, table: TableSpec, delta: DeltaTable | None) -> list[str]:
    """The Parquet files of the table's current version (``delta``, None when the table does
    not exist) when DuckDB can read them itself: a local lake, and partition values in
    Hive-style paths (as delta-rs and Spark write them). Empty otherwise (missing or empty
    table, object storage, other layouts)."""
    if not lake.is_local or delta is None:
        return []
    files = [uri.removeprefix("file://") for uri in delta.file_uris()]
    hive = all(
        f"/{column}=" in file.removeprefix(lake.table_uri(table))
        for file in files
        for column in table.partition_by
    )
    return files if hive else []


def _parquet_scan(table: TableSpec, files: Sequence[str]) -> str:
    """A ``read_parquet`` of ``files`` with the table's partition columns typed as declared.
    Files written before a column was added read it as NULL (``union_by_name``)."""
    listed = ", ".join(sql_literal(file) for file in files)
    options = "union_by_name = true"
    if table.partition_by:
        types = ", ".join(
            f"{sql_literal(column)}: {_duckdb_type(table.schema.field(column).type)}"
            for column in table.partition_by
        )
        options += f", hive_partitioning = true, hive_types = {{{types}}}"
    else:
        options += ", hive_partitioning = false"
    return f"read_parquet([{listed}], {options})"


def _duckdb_type(arrow_type: pa.DataType) -> str:
    """The DuckDB type of a catalog column's Arrow type."""
    if pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type):
        return "VARCHAR"
    if pa.types.is_timestamp(arrow_type):
        assert isinstance(arrow_type, pa.TimestampType)
        return "TIMESTAMPTZ" if arrow_type.tz else "TIMESTAMP"
    simple = {
        pa.bool_(): "BOOLEAN",
        pa.date32(): "DATE",
        pa.int8(): "TINYINT",
        pa.int16(): "SMALLINT",
        pa.int32(): "INTEGER",
        pa.int64(): "BIGINT",
        pa.float32(): "FLOAT",
        pa.float64(): "DOUBLE",
    }
    if arrow_type in simple:
        return simple[arrow_type]
    raise ValueError(f"no DuckDB type for column type {arrow_type}")


def run_query(
    con: duckdb.DuckDBPyConnection,
    sql: str,
    params: list[object] | None = None,
    *,
    timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS,
    row_cap: int = DEFAULT_ROW_CAP,
) -> QueryResult:
    """Run one query with bound parameters, a time limit and a row cap.

    For the product's own queries (named constants with bound parameters); analysts' SQL goes
    through :mod:`lakehouse.sandbox`.

    Raises:
        InputError: the query failed or ran out of time (one line).
    """
    timer = threading.Timer(timeout_seconds, con.interrupt)
    timer.start()
    try:
        relation = con.sql(sql, params=params or None)
        if relation is None:  # a statement without a result
            return QueryResult(pa.table({}), truncated=False)
        reader = relation.to_arrow_reader(min(row_cap + 1, 100_000))
        batches: list[pa.RecordBatch] = []
        rows = 0
        for batch in reader:
            batches.append(batch)
            rows += batch.num_rows
            if rows > row_cap:
                break
        table = pa.Table.from_batches(batches, schema=reader.schema)
    except duckdb.InterruptException as err:
        raise InputError(f"query stopped after the {timeout_seconds:g} s time limit") from err
    except duckdb.Error as err:
        raise InputError(f"query failed: {str(err).splitlines()[0]}") from err
    finally:
        timer.cancel()
    return QueryResult(table.slice(0, row_cap), truncated=table.num_rows > row_cap)
