"""The DuckDB query layer: every catalog table as a view ``<layer>.<name>`` over the lake.

DuckDB cannot download its ``delta`` extension here, so each view reads the files of the table's
current Delta version: on a local lake with DuckDB's own Parquet reader (``read_parquet`` of that
file list, partition columns from the Hive-style paths; 2-3 times faster than an Arrow scan, with
row-group statistics used for filters), on object storage through
``DeltaTable.to_pyarrow_dataset()``. Missing tables appear as empty views with their declared
schema. The sandboxed connection used by the analysts' SQL console and ``mobility sql`` turns off
external access (only the catalog tables' folders stay readable, for the views), Python
replacement scans and configuration changes, caps memory, and interrupts queries that run too
long.

Restricted tables (``catalog.RESTRICTED_TABLES``: the audit log, the re-identification map) are
never views and their folders are not among the sandbox's readable ones: SQL cannot reach them.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass

import duckdb
import pyarrow as pa
from deltalake import DeltaTable

from lakehouse.catalog import RESTRICTED_TABLES, TABLES, TableSpec
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
        sandbox: lock the connection down for untrusted SQL (external access off, configuration
            locked). Views registered later (:func:`register`) still work.
        memory_limit: DuckDB memory limit.
        tables: the tables to register now (all by default; opening a large table's dataset
            reads its whole Delta log, so callers that know what they query pass
            :func:`tables_in` of it).
    """
    con = duckdb.connect(
        ":memory:",
        config={"python_enable_replacements": False, "memory_limit": memory_limit, "threads": 2},
    )
    # timestamps leave DuckDB in UTC, as the tables store them and the pages label them
    con.execute("SET TimeZone = 'UTC'")
    for layer in sorted({table.layer for table in TABLES}):
        con.execute(f"CREATE SCHEMA IF NOT EXISTS {layer}")
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


def register(con: duckdb.DuckDBPyConnection, lake: Lake, table: TableSpec) -> None:
    """Expose ``table``'s current files as the view ``<layer>.<name>`` (an empty view with the
    declared schema when the table does not exist yet).

    Raises:
        StorageError: ``table`` is restricted (never exposed to SQL).
    """
    if table.restricted:
        raise StorageError(f"{table.path} is restricted: it is never exposed to SQL")
    # the table's Delta log is read once for its files and its columns
    delta = lake.delta(table) if lake.exists(table) else None
    files = _local_files(lake, table, delta)
    if files:
        source = _parquet_scan(table, files)
    else:
        source = f"_arrow_{table.layer}_{table.name}"
        con.register(source, lake.dataset(table, delta))
    # the columns the stored table has; a column the catalog added after the table was written
    # reads as NULL
    stored = table.columns if delta is None else {f.name for f in delta.schema().fields}
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


_EXPLAIN = re.compile(r"^\s*EXPLAIN(\s+ANALYZE)?\s+", re.IGNORECASE)
_parser_lock = threading.Lock()
_parser: list[duckdb.DuckDBPyConnection] = []


def table_names(sql: str) -> set[str] | None:
    """The lower-case names of the tables ``sql`` names (CTEs and typos included), None when
    DuckDB cannot tell.

    Read from DuckDB's parse tree (``json_serialize_sql``), which needs no table to exist: the
    binder behind ``duckdb.get_table_names`` fails on a join ``USING`` a column of tables it does
    not know, as every analyst query over the lake's views is to it. EXPLAIN is read from the
    statement it explains; other statements the parse tree cannot show go to ``get_table_names``.
    """
    explained = _EXPLAIN.match(sql)
    with _parser_lock:
        if not _parser:
            _parser.append(duckdb.connect(":memory:"))
        query = sql[explained.end() :] if explained else sql
        row = _parser[0].execute("SELECT json_serialize_sql(?)", [query]).fetchone()
    tree = json.loads(row[0]) if row else {"error": True}
    if not tree.get("error"):
        names: set[str] = set()
        _collect_tables(tree, names)
        return names
    try:
        return {name.lower() for name in duckdb.get_table_names(sql, qualified=False)}
    except Exception:  # not parsable or bindable alone
        return None


def _collect_tables(node: object, names: set[str]) -> None:
    if isinstance(node, dict):
        if node.get("type") == "BASE_TABLE" and isinstance(node.get("table_name"), str):
            names.add(node["table_name"].lower())
        for value in node.values():
            _collect_tables(value, names)
    elif isinstance(node, list):
        for value in node:
            _collect_tables(value, names)


def tables_in(sql: str) -> list[TableSpec]:
    """The catalog tables ``sql`` reads (none when DuckDB cannot tell: the query then fails with
    DuckDB's own message, without first registering every table, bronze samples included, under
    the lock every dashboard session waits on)."""
    names = table_names(sql)
    if names is None:
        return []
    # a name outside the catalog may be a CTE or a typo
    by_name = {table.name: table for table in TABLES}
    return [by_name[name] for name in sorted(names) if name in by_name]


_READ_ONLY = {duckdb.StatementType.SELECT, duckdb.StatementType.EXPLAIN}


def _require_one_read_only_statement(con: duckdb.DuckDBPyConnection, sql: str) -> None:
    """Refuse anything but one SELECT / EXPLAIN: the views are shared between users, so
    CREATE, DROP or SET from one analyst must not change what another sees."""
    try:
        statements = con.extract_statements(sql)
    except duckdb.Error as err:
        raise InputError(f"query failed: {str(err).splitlines()[0]}") from err
    if len(statements) != 1:
        raise InputError(f"send exactly one statement (got {len(statements)})")
    if statements[0].type not in _READ_ONLY:
        kind = statements[0].type.name.replace("_", " ")
        raise InputError(f"only read-only queries are allowed (got a {kind} statement)")
    names = table_names(sql) or set()  # None: not parsable, the query itself will say why
    restricted = [t.qualified_name for t in RESTRICTED_TABLES if t.name in names]
    if restricted:
        raise InputError(
            f"{', '.join(restricted)} is restricted: not available in SQL (the dashboard's "
            "Audit log and Re-identification pages, for the roles allowed)"
        )


def run_query(
    con: duckdb.DuckDBPyConnection,
    sql: str,
    params: list[object] | None = None,
    *,
    timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS,
    row_cap: int = DEFAULT_ROW_CAP,
) -> QueryResult:
    """Run one query with bound parameters, a time limit and a row cap.

    Raises:
        InputError: the query failed or ran out of time (one line, safe to show a user).
    """
    _require_one_read_only_statement(con, sql)
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
