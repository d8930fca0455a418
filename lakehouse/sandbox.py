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
4. **A process of its own** (:func:`run`): the check, the connection and the fetch run in a worker
   process (:class:`WorkerPool`) whose address space is capped (``RLIMIT_AS``) and which is killed
   when the time limit has passed: a DuckDB crash (a segfault on a deeply nested VARIANT, found by
   a probe of this module) or a scalar call ``interrupt()`` cannot stop ends that query with one
   line, never the dashboard's server or the other sessions. Only the Arrow result (within the
   byte cap) comes back. :func:`run_here` is the same query in this process, for tests of layers
   1 to 3 alone.

Errors come as :class:`QueryRefused`, whose message is for the analyst (it may quote the query or
DuckDB's words about a value) and whose :attr:`QueryRefused.reason` is content-free, for the
audit log.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import select
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

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
DEFAULT_PROCESS_MEMORY = 6 * 2**30
# After the time limit, the worker has this long to answer (its own interrupt) before it is
# killed.
KILL_GRACE_SECONDS = 2.0
# Rows per fetched batch: the byte cap is checked after each (DuckDB itself works in vectors of
# 2,048 rows, which bounds what one batch can hold beyond the cap).
_FETCH_ROWS = 1024

# Query nodes a read-only statement is made of; COPY_QUERY_NODE, INSERT_QUERY_NODE,
# UPDATE_QUERY_NODE, DELETE_QUERY_NODE (data-modifying CTEs) and any node DuckDB adds later are
# refused.
_READ_ONLY_NODES = frozenset(
    {"SELECT_NODE", "SET_OPERATION_NODE", "RECURSIVE_CTE_NODE", "CTE_NODE"}
)
# Functions that run SQL text given as a string, which the parse tree cannot look into.
_SQL_RUNNING_FUNCTIONS = frozenset({"query", "query_table", "json_execute_serialized_sql"})
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
        process_memory: the address space of the worker process that runs the query (its
            ``RLIMIT_AS``): what DuckDB does not count (string heaps, the fetched batches) ends
            there.
    """

    timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS
    row_cap: int = DEFAULT_ROW_CAP
    byte_cap: int = DEFAULT_BYTE_CAP
    memory_limit: str = DEFAULT_MEMORY_LIMIT
    process_memory: int = DEFAULT_PROCESS_MEMORY


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
    running = sorted(_function_names(tree) & _SQL_RUNNING_FUNCTIONS)
    if running:
        raise QueryRefused(
            f"{', '.join(running)}() runs SQL given as text, which cannot be checked: write the "
            "query itself",
            reason="SQL-running function",
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


def _nodes(tree: object) -> Iterator[dict[str, Any]]:
    """Every object (JSON dict) of a parse tree, at any depth, without recursion."""
    stack = [tree]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            yield item
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


def _node_types(tree: object) -> set[str]:
    """Every query node type (``…_NODE``) in a parse tree."""
    return {
        node["type"]
        for node in _nodes(tree)
        if isinstance(node.get("type"), str) and node["type"].endswith("_NODE")
    }


def _function_names(tree: object) -> set[str]:
    """The lower-case names of every function a parse tree calls (scalar, aggregate, table)."""
    return {
        node["function_name"].lower()
        for node in _nodes(tree)
        if isinstance(node.get("function_name"), str)
    }


def _table_names(tree: object) -> set[str]:
    """The lower-case names of the tables a parse tree reads (CTE names and typos included)."""
    return {
        node["table_name"].lower()
        for node in _nodes(tree)
        if node.get("type") == "BASE_TABLE" and isinstance(node.get("table_name"), str)
    }


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
            dataset = datasets(table) if datasets else lake.dataset(table)
            register(con, lake, table, dataset=catalog_only(lake, table, dataset))
        # DuckDB knows no row counts of Arrow datasets (every scan is estimated at one row), so
        # its choice of a join's build side is a guess, and a filter on the big side makes the
        # guess wrong: 'daily steps JOIN patients WHERE is_wear_day' built its hash table over
        # 54.7 million daily rows at 100,000 patients and ran out of memory. Without that
        # optimizer the build side is the right-hand side of the join, as the analyst wrote it
        # (the lookup table after JOIN, the usual way).
        con.execute("SET disabled_optimizers = 'build_side_probe_side'")
        # no temporary files: a query beyond its memory limit fails instead of spilling
        con.execute("SET temp_directory = ''")
        con.execute("SET disabled_filesystems = 'LocalFileSystem'")
        con.execute("SET enable_external_access = false")
        con.execute("SET lock_configuration = true")
    except BaseException:
        con.close()
        raise
    return con


def catalog_only(lake: Lake, table: TableSpec, dataset: pads.Dataset) -> pads.Dataset:
    """``dataset`` with the catalog's columns only, its files checked on a local lake.

    The Delta log decides a table's files and columns; someone who can write into the lake but
    holds none of its keys could add a column, or a file that is a link to another table's file
    (the re-identification map's, say). The catalog's columns are all SQL may see, through the
    view or the dataset it reads; on a local lake every file must be a regular file inside the
    table's folder.

    Raises:
        QueryRefused: a file of the table is a link, not a regular file, or outside its folder.
    """
    if not isinstance(dataset, pads.FileSystemDataset):
        return dataset
    if lake.is_local:
        folder = os.path.realpath(lake.table_uri(table).removeprefix("file://")) + os.sep
        for name in dataset.files:
            # delta-rs' datasets name their files relative to the table's folder
            path = name if os.path.isabs(name) else os.path.join(folder, name)
            try:
                stat = os.lstat(path)
            except OSError:
                continue  # missing: the scan says so
            inside = os.path.realpath(path).startswith(folder)
            if not (inside and os.path.isfile(path) and not os.path.islink(path)) or (
                stat.st_nlink != 1
            ):
                raise QueryRefused(
                    f"{table.path} holds a data file that is a link or lies outside its folder: "
                    "not read (tell the lake's operators: `mobility lake check`)",
                    reason="linked data file",
                )
    wanted = [field for field in dataset.schema if field.name in table.columns]
    if len(wanted) == len(dataset.schema):
        return dataset
    return pads.FileSystemDataset(
        list(dataset.get_fragments()), pa.schema(wanted), dataset.format, dataset.filesystem
    )


def run_here(
    lake: Lake,
    sql: str,
    *,
    limits: Limits = Limits(),
    datasets: DatasetSource | None = None,
) -> QueryResult:
    """Check ``sql``, then run it on a connection of its own within ``limits``, in this process
    (layers 1 to 3; :func:`run` adds the worker process).

    Raises:
        QueryRefused: not one read-only query, failed, or over a limit (one line).
    """
    try:
        return _run_here(lake, sql, limits, datasets)
    except QueryRefused:
        raise
    except (Exception, RecursionError) as err:
        # a parse tree too deep for json, an Arrow schema too deep, …: one line, a fixed reason
        raise QueryRefused(
            f"query failed: {type(err).__name__}: {_first_line(err)}",
            reason=f"failed: {type(err).__name__}",
        ) from err


def _first_line(err: BaseException) -> str:
    return (str(err).splitlines() or [""])[0][:300]


def _run_here(lake: Lake, sql: str, limits: Limits, datasets: DatasetSource | None) -> QueryResult:
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


# --------------------------------------------------------------------------- worker processes
# A worker is ``python -m lakehouse.sandbox`` (a new interpreter: nothing of the caller is
# inherited, not Streamlit's script module standing in for ``__main__``, which multiprocessing's
# spawn would run again). Requests and answers are frames of a JSON header, and for a result its
# Arrow IPC stream: nothing the worker sends is unpickled, in case the engine it runs were
# subverted.

_LENGTH = 8


def _write_frame(stream: Any, header: dict[str, Any], body: bytes = b"") -> None:
    encoded = json.dumps(header).encode()
    stream.write(len(encoded).to_bytes(_LENGTH, "big") + encoded)
    stream.write(len(body).to_bytes(_LENGTH, "big") + body)
    stream.flush()


def _read_exact_from(stream: Any, size: int) -> bytes:
    data = stream.read(size)
    if data is None or len(data) != size:
        raise EOFError
    return bytes(data)


def _read_frame_from(stream: Any) -> tuple[dict[str, Any], bytes]:
    header = json.loads(_read_exact_from(stream, int.from_bytes(_read_exact_from(stream, _LENGTH))))
    body = _read_exact_from(stream, int.from_bytes(_read_exact_from(stream, _LENGTH)))
    return header, body


def _serve(process_memory: int) -> None:
    """A worker's life: cap the address space, then answer queries until standard input closes.

    Each table's dataset is kept per version, so a table is loaded once per version, not per
    query."""
    import resource
    import sys

    resource.setrlimit(resource.RLIMIT_AS, (process_memory, process_memory))
    requests, answers = sys.stdin.buffer, sys.stdout.buffer
    sys.stdout = sys.stderr  # nothing else may write into the answers
    datasets: dict[tuple[str, str, int | None], pads.Dataset] = {}
    while True:
        try:
            request, _ = _read_frame_from(requests)
        except (EOFError, OSError, ValueError):
            return
        lake = Lake(request["lake_uri"], storage_options=request["storage_options"])
        limits = Limits(**request["limits"])

        def dataset(table: TableSpec, lake: Lake = lake) -> pads.Dataset:
            key = (lake.uri, table.path, lake.version(table))
            if key not in datasets:
                if len(datasets) >= 64:
                    datasets.clear()
                datasets[key] = lake.dataset(table)
            return datasets[key]

        header: dict[str, Any]
        body = b""
        try:
            result = run_here(lake, request["sql"], limits=limits, datasets=dataset)
            sink = pa.BufferOutputStream()
            with pa.ipc.new_stream(sink, result.table.schema) as writer:
                writer.write_table(result.table)
            header, body = (
                {"status": "ok", "truncated": result.truncated},
                sink.getvalue().to_pybytes(),
            )
        except QueryRefused as err:
            header = {"status": "refused", "message": str(err), "reason": err.reason}
        except BaseException as err:  # MemoryError, a storage error: one line, a fixed reason
            name = type(err).__name__
            header = {
                "status": "refused",
                "message": f"query failed: {name}",
                "reason": f"failed: {name}",
            }
        try:
            _write_frame(answers, header, body)
        except (OSError, ValueError):
            return


@dataclass
class _Worker:
    process: subprocess.Popen[bytes]
    process_memory: int
    # the environment it was started with (credentials, endpoints): reused only under the same
    environment: int

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self) -> None:
        if self.alive():
            self.process.kill()
        self.process.wait(timeout=5)
        for stream in (self.process.stdin, self.process.stdout):
            if stream is not None:
                stream.close()

    def read_exact(self, size: int, deadline: float) -> bytes:
        """``size`` bytes of the worker's answer, or :class:`TimeoutError` at ``deadline``."""
        assert self.process.stdout is not None
        fd = self.process.stdout.fileno()
        chunks: list[bytes] = []
        missing = size
        while missing:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError
            ready, _, _ = select.select([fd], [], [], min(remaining, 1.0))
            if not ready:
                continue
            chunk = os.read(fd, min(missing, 1 << 20))
            if not chunk:
                raise EOFError
            chunks.append(chunk)
            missing -= len(chunk)
        return b"".join(chunks)


class WorkerPool:
    """Worker processes for analysts' queries: at most ``size`` queries at once, each in a
    process of its own that is reused while it behaves and killed when it does not (crash, time
    limit).

    Args:
        size: queries run at once; more wait for a free worker.
    """

    def __init__(self, size: int = 2) -> None:
        self._slots = threading.BoundedSemaphore(size)
        self._lock = threading.Lock()
        self._idle: list[_Worker] = []

    def _take(self, process_memory: int) -> _Worker:
        environment = hash(frozenset(os.environ.items()))
        with self._lock:
            while self._idle:
                worker = self._idle.pop()
                if (
                    worker.alive()
                    and worker.process_memory == process_memory
                    and worker.environment == environment
                ):
                    return worker
                worker.stop()
        process = subprocess.Popen(
            [sys.executable, "-m", "lakehouse.sandbox", str(process_memory)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            close_fds=True,
        )
        return _Worker(process, process_memory, environment)

    def run(self, lake: Lake, sql: str, limits: Limits) -> QueryResult:
        """:func:`run_here` in a worker process, killed once ``limits.timeout_seconds`` (plus a
        short grace for its own interrupt to answer) have passed.

        Raises:
            QueryRefused: refused, failed, over a limit, or the worker died (one line).
        """
        request = {
            "lake_uri": lake.uri,
            "storage_options": lake.storage_options or None,
            "sql": sql,
            "limits": dataclasses.asdict(limits),
        }
        with self._slots:
            worker = self._take(limits.process_memory)
            healthy = False
            try:
                header, body = self._ask(worker, request, limits)
                healthy = True
            finally:
                if healthy:
                    with self._lock:
                        self._idle.append(worker)
                else:
                    worker.stop()
        if header.get("status") != "ok":
            raise QueryRefused(str(header.get("message")), reason=str(header.get("reason")))
        table = pa.ipc.open_stream(body).read_all()
        return QueryResult(table, truncated=bool(header.get("truncated")))

    @staticmethod
    def _ask(
        worker: _Worker, request: dict[str, Any], limits: Limits
    ) -> tuple[dict[str, Any], bytes]:
        deadline = time.monotonic() + limits.timeout_seconds + KILL_GRACE_SECONDS
        try:
            assert worker.process.stdin is not None
            _write_frame(worker.process.stdin, request)
            header = json.loads(worker.read_exact(_frame_size(worker, deadline), deadline))
            body = worker.read_exact(_frame_size(worker, deadline), deadline)
        except TimeoutError as err:
            raise QueryRefused(
                f"query stopped after the {limits.timeout_seconds:g} s time limit",
                reason="time limit",
            ) from err
        except (EOFError, OSError, ValueError) as err:
            code = worker.process.wait(timeout=5) if not worker.alive() else None
            raise QueryRefused(
                "query failed: the query engine stopped while running it (exit status "
                f"{code}); nothing else was affected",
                reason="engine crashed",
            ) from err
        if not isinstance(header, dict):
            raise QueryRefused(
                "query failed: the query engine answered wrongly", reason="engine crashed"
            )
        return header, body


def _frame_size(worker: _Worker, deadline: float) -> int:
    return int.from_bytes(worker.read_exact(_LENGTH, deadline))


_pool_lock = threading.Lock()
_pools: dict[int, WorkerPool] = {}


def _pool() -> WorkerPool:
    """This process's pool (a new one after a fork)."""
    with _pool_lock:
        pool = _pools.get(os.getpid())
        if pool is None:
            pool = _pools[os.getpid()] = WorkerPool()
        return pool


def run(lake: Lake, sql: str, *, limits: Limits = Limits()) -> QueryResult:
    """One analyst query: checked, run on a connection of its own in a worker process of its
    own, within ``limits`` (the Cohort SQL page and ``mobility sql``).

    Raises:
        QueryRefused: not one read-only query, failed, over a limit, or the engine crashed (one
            line; :attr:`QueryRefused.reason` holds nothing of the query or the data).
    """
    return _pool().run(lake, sql, limits)


if __name__ == "__main__":
    import sys

    _serve(int(sys.argv[1]))
