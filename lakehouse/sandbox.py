"""The analysts' SQL sandbox (the Cohort SQL page, ``mobility sql``): one read-only query over the
lake's views, on a connection of its own that can read those tables and nothing else, and can
write nothing anywhere.

Three layers, each of which holds alone (docs/security.md has the threat model):

1. **The statement check** (:func:`check`), from DuckDB's parse tree, before anything is
   registered or run: exactly one statement, a plain SELECT (or EXPLAIN of one, never EXPLAIN
   ANALYZE, which runs what it explains), every query node in it a SELECT, set operation or CTE
   node. A SELECT can carry writes inside: DuckDB runs ``WITH x AS (COPY … TO 'file') SELECT …``
   and ``WITH x AS (INSERT …) SELECT …``, whose statement type is SELECT; the parse tree shows
   their COPY / INSERT / UPDATE / DELETE nodes. No restricted table may be named.
2. **A connection per query** (:func:`open_connection`): a new in-memory database whose views read
   Arrow datasets handed over from Python, so DuckDB itself never opens a file. Its local file
   system is disabled and external access is off with no allowed directory: no COPY, ATTACH,
   EXPORT, read_csv or glob can reach any path, for reading or for writing. Spilling to a
   temporary directory is off (a query that needs more memory than its limit fails), extensions
   are neither installed nor loaded, Python objects cannot be scanned by name, and the
   configuration is locked. Whatever a statement did to its catalog dies with the connection: one
   session or command can never change what another sees.
3. **Bounded results**: rows (:attr:`Limits.row_cap`, the result is cut), bytes
   (:attr:`Limits.byte_cap`, the query is refused) and time (:attr:`Limits.timeout_seconds`,
   counting the fetch), each with a one-line error; DuckDB's own memory limit bounds the work.

Errors come as :class:`QueryRefused`, whose message is for the analyst (it may quote the query or
DuckDB's words about a value) and whose :attr:`QueryRefused.reason` is content-free, for the
audit log.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import duckdb
import pyarrow as pa
import pyarrow.dataset as pads

from lakehouse.catalog import RESTRICTED_TABLES, TABLES, TableSpec
from lakehouse.errors import InputError
from lakehouse.query import (
    DEFAULT_ROW_CAP,
    DEFAULT_TIMEOUT_SECONDS,
    QueryResult,
    create_schemas,
    register,
)
from lakehouse.storage import Lake

DEFAULT_BYTE_CAP = 256_000_000
DEFAULT_MEMORY_LIMIT = "2GB"
# Rows per fetched batch: the byte cap is checked after each (DuckDB itself works in vectors of
# 2,048 rows, which bounds what one batch can hold beyond the cap).
_FETCH_ROWS = 1024

# Query nodes a read-only statement is made of; COPY_QUERY_NODE, INSERT_QUERY_NODE,
# UPDATE_QUERY_NODE, DELETE_QUERY_NODE (data-modifying CTEs) and any node DuckDB adds later are
# refused.
_READ_ONLY_NODES = frozenset(
    {"SELECT_NODE", "SET_OPERATION_NODE", "RECURSIVE_CTE_NODE", "CTE_NODE"}
)
_EXPLAIN = re.compile(r"\s*EXPLAIN\s+", re.IGNORECASE)
_ANALYZE = re.compile(r"\s*(ANALY[SZ]E\b|\()", re.IGNORECASE)
# The connection that parses statements: it never runs one (json_serialize_sql and
# extract_statements only parse) and holds no table.
_parser_lock = threading.Lock()
_parser: list[duckdb.DuckDBPyConnection] = []


class QueryRefused(InputError):
    """An analyst's query that was refused, failed or hit a limit.

    Args:
        message: one line for the analyst (may quote DuckDB, which may quote a value).
        reason: one line without anything taken from the query or the data, for the audit log.
    """

    def __init__(self, message: str, *, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class Limits:
    """What one query may take.

    Args:
        timeout_seconds: wall time from the start of the query to its last fetched row.
        row_cap: rows returned at most (the result is cut, ``truncated`` set).
        byte_cap: bytes of the returned Arrow result at most (refused beyond).
        memory_limit: DuckDB's memory limit for the query's work.
    """

    timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS
    row_cap: int = DEFAULT_ROW_CAP
    byte_cap: int = DEFAULT_BYTE_CAP
    memory_limit: str = DEFAULT_MEMORY_LIMIT


@dataclass(frozen=True)
class CheckedQuery:
    """A query that passed :func:`check`: its text and the catalog tables it reads."""

    sql: str
    tables: tuple[TableSpec, ...]


def _parse(sql: str) -> tuple[list[duckdb.Statement], dict[str, object]]:
    with _parser_lock:
        if not _parser:
            _parser.append(duckdb.connect(":memory:"))
        parser = _parser[0]
        try:
            statements = parser.extract_statements(sql)
        except duckdb.Error as err:
            raise QueryRefused(
                f"query failed: {str(err).splitlines()[0]}", reason="not parsable"
            ) from err
        row = parser.execute("SELECT json_serialize_sql(?)", [sql]).fetchone()
    tree = json.loads(row[0]) if row else {"error": True}
    return statements, tree


def _refuse_kind(kind: str) -> QueryRefused:
    return QueryRefused(
        f"only read-only queries are allowed (got a {kind} statement)", reason=f"{kind} statement"
    )


def check(sql: str) -> CheckedQuery:
    """The query if it is one read-only SELECT (or EXPLAIN of one) naming no restricted table.

    Raises:
        QueryRefused: anything else (one line), before anything runs.
    """
    statements, _ = _parse(sql)
    if len(statements) != 1:
        raise QueryRefused(
            f"send exactly one statement (got {len(statements)})",
            reason=f"{len(statements)} statements",
        )
    (statement,) = statements
    select = sql
    if statement.type == duckdb.StatementType.EXPLAIN:
        explained = _EXPLAIN.match(sql)
        if explained is None or _ANALYZE.match(sql, explained.end()):
            raise QueryRefused(
                "EXPLAIN ANALYZE (or EXPLAIN with options) runs the statement it explains: "
                "use EXPLAIN alone",
                reason="EXPLAIN ANALYZE statement",
            )
        select = sql[explained.end() :]
        inner, _ = _parse(select)
        if len(inner) != 1 or inner[0].type != duckdb.StatementType.SELECT:
            kind = inner[0].type.name.replace("_", " ") if len(inner) == 1 else "multiple"
            raise _refuse_kind(f"EXPLAIN {kind}")
    elif statement.type != duckdb.StatementType.SELECT:
        raise _refuse_kind(statement.type.name.replace("_", " "))
    _, tree = _parse(select)
    if tree.get("error"):
        raise _refuse_kind("non-SELECT")
    writes = sorted(_node_types(tree) - _READ_ONLY_NODES)
    if writes:
        kinds = ", ".join(node.removesuffix("_NODE").removesuffix("_QUERY") for node in writes)
        raise QueryRefused(
            f"only read-only queries are allowed (the query holds {kinds})",
            reason=f"SELECT holding {kinds}",
        )
    names = _table_names(tree)
    restricted = [t.qualified_name for t in RESTRICTED_TABLES if t.name in names]
    if restricted:
        raise QueryRefused(
            f"{', '.join(restricted)} is restricted: not available in SQL (the dashboard's "
            "Audit log and Re-identification pages, for the roles allowed)",
            reason="restricted table",
        )
    # a name outside the catalog may be a CTE or a typo: DuckDB will say which
    by_name = {table.name: table for table in TABLES}
    return CheckedQuery(sql, tuple(by_name[name] for name in sorted(names) if name in by_name))


def _node_types(node: object) -> set[str]:
    """Every query node type (``…_NODE``) in a parse tree."""
    found: set[str] = set()
    stack = [node]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            kind = item.get("type")
            if isinstance(kind, str) and kind.endswith("_NODE"):
                found.add(kind)
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return found


def _table_names(node: object) -> set[str]:
    """The lower-case names of the tables a parse tree reads (CTE names and typos included)."""
    names: set[str] = set()
    stack = [node]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            if item.get("type") == "BASE_TABLE" and isinstance(item.get("table_name"), str):
                names.add(item["table_name"].lower())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return names


def tables_in(sql: str) -> list[TableSpec]:
    """The catalog tables a read-only query reads (none when it is not one: such a query is
    refused before anything is registered)."""
    try:
        return list(check(sql).tables)
    except QueryRefused:
        return []


# A view's data: the table's current version as an Arrow dataset (the dashboard keeps them per
# table version; the command line loads them once).
DatasetSource = Callable[[TableSpec], pads.Dataset]


def open_connection(
    lake: Lake,
    tables: Sequence[TableSpec],
    *,
    memory_limit: str = DEFAULT_MEMORY_LIMIT,
    datasets: DatasetSource | None = None,
) -> duckdb.DuckDBPyConnection:
    """A new locked-down connection with ``tables`` as views over Arrow datasets.

    Args:
        lake: the lake the tables are in.
        tables: the catalog tables to expose (restricted ones are refused by :func:`register`).
        memory_limit: DuckDB's memory limit.
        datasets: where each table's dataset comes from (default: loaded from the lake now).
    """
    con = duckdb.connect(
        ":memory:",
        config={
            "python_enable_replacements": False,
            "memory_limit": memory_limit,
            "threads": 2,
            "autoinstall_known_extensions": False,
            "autoload_known_extensions": False,
            "allow_community_extensions": False,
        },
    )
    try:
        con.execute("SET TimeZone = 'UTC'")
        create_schemas(con)
        for table in tables:
            register(con, lake, table, dataset=datasets(table) if datasets else lake.dataset(table))
        # no temporary files: a query beyond its memory limit fails instead of spilling
        con.execute("SET temp_directory = ''")
        con.execute("SET disabled_filesystems = 'LocalFileSystem'")
        con.execute("SET enable_external_access = false")
        con.execute("SET lock_configuration = true")
    except BaseException:
        con.close()
        raise
    return con


def run(
    lake: Lake,
    sql: str,
    *,
    limits: Limits = Limits(),
    datasets: DatasetSource | None = None,
) -> QueryResult:
    """Check ``sql``, then run it on a connection of its own within ``limits``.

    Raises:
        QueryRefused: not one read-only query, failed, or over a limit (one line).
    """
    checked = check(sql)
    started = time.monotonic()
    con = open_connection(lake, checked.tables, memory_limit=limits.memory_limit, datasets=datasets)
    timer = threading.Timer(limits.timeout_seconds, con.interrupt)
    timer.start()
    try:
        return _fetch(con, checked.sql, limits, started)
    finally:
        timer.cancel()
        con.close()


def _fetch(con: duckdb.DuckDBPyConnection, sql: str, limits: Limits, started: float) -> QueryResult:
    out_of_time = QueryRefused(
        f"query stopped after the {limits.timeout_seconds:g} s time limit", reason="time limit"
    )
    try:
        relation = con.sql(sql)
        if relation is None:  # a statement without a result (none passes the check)
            return QueryResult(pa.table({}), truncated=False)
        reader = relation.to_arrow_reader(_FETCH_ROWS)
        batches: list[pa.RecordBatch] = []
        rows = size = 0
        for batch in reader:
            batches.append(batch)
            rows += batch.num_rows
            size += batch.nbytes
            if size > limits.byte_cap:
                raise QueryRefused(
                    f"the result is larger than {limits.byte_cap / 1e6:,.0f} MB: select fewer "
                    "rows or columns, or aggregate",
                    reason="byte limit",
                )
            if time.monotonic() - started > limits.timeout_seconds:
                raise out_of_time
            if rows > limits.row_cap:
                break
        table = pa.Table.from_batches(batches, schema=reader.schema)
    except duckdb.InterruptException as err:
        raise out_of_time from err
    except duckdb.Error as err:
        raise QueryRefused(
            f"query failed: {str(err).splitlines()[0]}", reason=f"failed: {type(err).__name__}"
        ) from err
    return QueryResult(table.slice(0, limits.row_cap), truncated=table.num_rows > limits.row_cap)
