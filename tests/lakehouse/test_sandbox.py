"""The analysts' SQL sandbox: the statement check, the connection of its own, bounded results.

Issue 18's reproductions are here: ``EXPLAIN ANALYZE COPY … TO '<lake>/…'`` wrote into the lake,
and ``EXPLAIN ANALYZE CREATE OR REPLACE VIEW bronze.patients …`` changed what other sessions saw.
"""

from __future__ import annotations

import json
import os
import re
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import polars as pl
import pyarrow as pa
import pytest

from lakehouse import Lake, audit, sandbox
from lakehouse.catalog import (
    AUDIT_LOG,
    DAILY_STEPS,
    OUTLOOK,
    PATIENTS,
    REIDENTIFICATION,
    TABLES,
    TableSpec,
)
from lakehouse.sandbox import Limits, QueryRefused
from tests.lakehouse.frames import edge_rows

# ------------------------------------------------------------------------------------ fixtures


@pytest.fixture
def patients_lake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Lake:
    """A lake with patients and daily steps; the working directory a folder of its own."""
    lake = Lake(str(tmp_path / "lake"))
    lake.append(PATIENTS, edge_rows(PATIENTS, rows=(1, 2)))
    lake.append(DAILY_STEPS, edge_rows(DAILY_STEPS))
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)
    return lake


def _tree(root: Path) -> dict[str, tuple[int, int]]:
    """Every file and folder under ``root`` with its size and modification time."""
    found = {}
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(folder, name)
            stat = path.lstat()
            found[str(path)] = (stat.st_size, stat.st_mtime_ns)
    return found


class Unchanged:
    """Asserts that nothing under the lake, the working directory or /tmp changed: the lake and
    the working directory file by file, /tmp by the paths carrying this run's token (every
    statement below writes only to such paths, so other processes' files do not count)."""

    def __init__(self, lake: Lake) -> None:
        self.token = f"mobility-fuzz-{uuid.uuid4().hex[:8]}"
        self.roots = [Path(lake.uri.removeprefix("file://")), Path.cwd()]
        self.before = [_tree(root) for root in self.roots]

    def tmp_paths(self) -> list[str]:
        return [name for name in os.listdir("/tmp") if self.token in name]

    def check(self, what: str) -> None:
        assert [_tree(root) for root in self.roots] == self.before, what
        assert self.tmp_paths() == [], what


def _probe_values(lake: Lake, unchanged: Unchanged) -> dict[str, str]:
    table_folder = lake.uri.removeprefix("file://") + "/bronze/patients"
    return {
        "lake_file": f"{table_folder}/{unchanged.token}-proof",
        "log_file": f"{table_folder}/_delta_log/{unchanged.token}-00000000000000000002.json",
        "tmp_file": f"/tmp/{unchanged.token}-out",
        "tmp_dir": f"/tmp/{unchanged.token}-dir",
        "cwd_file": f"{unchanged.token}-here",
    }


# ---------------------------------------------------------------------- statement types: fuzz

# One or more statements of every DuckDB statement type that is not a SELECT (RELATION and
# LOGICAL_PLAN come from the Python API only, INVALID never parses), aimed at the lake, the working
# directory and /tmp.
NON_SELECT = {
    "INSERT": ["INSERT INTO bronze.patients (patient_id) VALUES ('P-FORGED')"],
    "UPDATE": ["UPDATE bronze.patients SET country = '[x](http://evil.test)'"],
    "DELETE": ["DELETE FROM bronze.patients"],
    "CREATE": [
        "CREATE TABLE main.t AS SELECT * FROM bronze.patients",
        "CREATE OR REPLACE VIEW bronze.patients AS SELECT 'P-FORGED' AS patient_id",
        "CREATE SECRET s (TYPE s3, KEY_ID 'k', SECRET 'x')",
    ],
    "PREPARE": ["PREPARE p AS SELECT 1"],
    "EXECUTE": ["EXECUTE p"],
    "ALTER": ["ALTER VIEW bronze.patients RENAME TO gone"],
    "TRANSACTION": ["BEGIN TRANSACTION", "COMMIT"],
    "COPY": [
        "COPY (SELECT 42 AS x) TO '{lake_file}.csv'",
        "COPY (SELECT 42 AS x) TO '{log_file}' (FORMAT csv, HEADER false)",
        "COPY (SELECT 42 AS x) TO '{tmp_file}.parquet' (FORMAT parquet)",
        "COPY (SELECT 42 AS x) TO '{cwd_file}.csv'",
        "COPY bronze.patients FROM '{tmp_file}.csv'",
    ],
    "ANALYZE": ["ANALYZE"],
    "VARIABLE_SET": ["SET VARIABLE x = 42"],
    "CREATE_FUNC": ["CREATE MACRO forged(a) AS a + 1"],
    "DROP": ["DROP VIEW bronze.patients"],
    "EXPORT": ["EXPORT DATABASE '{tmp_dir}'"],
    "PRAGMA": ["PRAGMA memory_limit='64GB'", "PRAGMA enable_profiling"],
    "VACUUM": ["VACUUM"],
    "CALL": ["CALL pragma_version()"],
    "SET": [
        "SET enable_external_access = true",
        "SET lock_configuration = false",
        "RESET temp_directory",
        "SET profiling_output = '{tmp_file}.json'",
    ],
    "LOAD": ["LOAD httpfs"],
    "EXTENSION": ["INSTALL httpfs", "INSTALL httpfs FROM 'http://127.0.0.1:9/'"],
    "ATTACH": ["ATTACH '{tmp_file}.duckdb' AS other"],
    "DETACH": ["DETACH memory"],
    "MULTI": ["PIVOT bronze.patients ON sex"],
    "COPY_DATABASE": ["COPY FROM DATABASE memory TO other"],
    "MERGE_INTO": [
        "MERGE INTO bronze.patients USING (SELECT 'P-FORGED' AS patient_id) AS s "
        "USING (patient_id) WHEN NOT MATCHED THEN INSERT (patient_id) VALUES (s.patient_id)"
    ],
}

WRAPPERS = {
    "bare": "{s}",
    "lower case": "{lower}",
    "EXPLAIN": "EXPLAIN {s}",
    "EXPLAIN ANALYZE": "EXPLAIN ANALYZE {s}",
    "EXPLAIN (ANALYZE)": "EXPLAIN (ANALYZE) {s}",
    "EXPLAIN (FORMAT JSON, ANALYZE)": "EXPLAIN (FORMAT JSON, ANALYZE) {s}",
    "commented EXPLAIN ANALYZE": "explain /* plan */ analyse\n{s}",
    "CTE": "WITH x AS ({s}) SELECT * FROM x",
    "materialized CTE": "WITH x AS MATERIALIZED ({s}) SELECT 1",
    "nested CTE": "SELECT * FROM (WITH x AS ({s}) SELECT * FROM x) AS y",
    "EXPLAIN of CTE": "EXPLAIN WITH x AS ({s}) SELECT * FROM x",
    "PREPARE": "PREPARE p AS {s}",
    "PREPARE + EXECUTE": "PREPARE p AS {s}; EXECUTE p",
    "after a SELECT": "SELECT 1; {s}",
    "before a SELECT": "{s}; SELECT 1",
}


def test_every_statement_type_but_select_has_a_case() -> None:
    api_only = {"INVALID", "SELECT", "EXPLAIN", "RELATION", "LOGICAL_PLAN"}
    assert set(duckdb.StatementType.__members__) - api_only == set(NON_SELECT)


@pytest.mark.parametrize("kind", NON_SELECT)
def test_statement_check_refuses_every_other_statement_in_every_wrapping(
    patients_lake: Lake, kind: str
) -> None:
    unchanged = Unchanged(patients_lake)
    values = _probe_values(patients_lake, unchanged)
    for template in NON_SELECT[kind]:
        statement = template.format(**values)
        for wrapper, shape in WRAPPERS.items():
            sql = shape.format(s=statement, lower=statement.lower())
            with pytest.raises(QueryRefused) as info:
                sandbox.run(patients_lake, sql)
            assert "\n" not in str(info.value), sql
            assert info.value.reason and unchanged.token not in info.value.reason, sql
            unchanged.check(f"{wrapper}: {sql}")
    # what other queries see is unchanged
    ids = sandbox.run(patients_lake, "SELECT patient_id FROM bronze.patients ORDER BY 1").table
    assert "P-FORGED" not in ids.column("patient_id").to_pylist()
    assert ids.num_rows == 2


@pytest.mark.parametrize("kind", NON_SELECT)
def test_the_connection_alone_writes_nothing_and_changes_no_other_query(
    patients_lake: Lake, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    """Defence in depth: with the statement check switched off, every statement above still
    cannot write a file, and what it did to its connection is gone for the next query."""
    monkeypatch.setattr(
        sandbox, "check", lambda sql: sandbox.CheckedQuery(sql, (PATIENTS, DAILY_STEPS))
    )
    unchanged = Unchanged(patients_lake)
    values = _probe_values(patients_lake, unchanged)
    before = sandbox.run_here(
        patients_lake, "SELECT * FROM bronze.patients ORDER BY patient_id"
    ).table
    for template in NON_SELECT[kind]:
        statement = template.format(**values)
        for wrapper in ("bare", "EXPLAIN ANALYZE", "CTE"):
            sql = WRAPPERS[wrapper].format(s=statement, lower=statement.lower())
            try:
                sandbox.run_here(patients_lake, sql)
            except QueryRefused as err:
                assert "\n" not in str(err)
            unchanged.check(f"{wrapper}: {sql}")
            after = sandbox.run_here(
                patients_lake, "SELECT * FROM bronze.patients ORDER BY 1"
            ).table
            assert after.equals(before), sql


def test_issue_reproductions_are_refused_and_write_nothing(patients_lake: Lake) -> None:
    folder = patients_lake.uri.removeprefix("file://") + "/bronze/patients"
    attacks = [
        f"EXPLAIN ANALYZE COPY (SELECT 42 AS x) TO '{folder}/proof.csv'",
        "EXPLAIN ANALYZE CREATE TABLE main.t AS SELECT * FROM bronze.patients",
        "EXPLAIN ANALYZE CREATE OR REPLACE VIEW bronze.patients AS SELECT * FROM main.t",
        f"WITH x AS (COPY (SELECT 42 AS x) TO '{folder}/proof.csv') SELECT * FROM x",
        "EXPORT DATABASE '/tmp/mobility-issue-18-export'",
    ]
    for sql in attacks:
        with pytest.raises(QueryRefused, match=r"only read-only|EXPLAIN ANALYZE"):
            sandbox.run(patients_lake, sql)
    assert not Path(folder, "proof.csv").exists()
    # the statement check parses, never binds or runs: EXPORT used to create its directory
    assert not Path("/tmp/mobility-issue-18-export").exists()


def test_plain_selects_and_explain_pass(patients_lake: Lake) -> None:
    allowed = [
        "SELECT count(*) AS n FROM bronze.patients",
        "FROM bronze.patients SELECT patient_id",
        "WITH recent AS (SELECT * FROM silver.daily_steps) SELECT count(*) FROM recent",
        "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r WHERE n < 3) "
        "SELECT * FROM r",
        "SELECT 1 AS a UNION ALL SELECT 2",
        "DESCRIBE bronze.patients",
        "SUMMARIZE silver.daily_steps",
        "EXPLAIN SELECT * FROM bronze.patients JOIN silver.daily_steps USING (patient_id)",
        "explain\n  select 1",
    ]
    for sql in allowed:
        assert sandbox.run(patients_lake, sql).table.num_rows >= 1, sql


# ------------------------------------------------------------------------ sessions apart


def test_a_query_cannot_change_what_the_next_one_sees(
    patients_lake: Lake, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 18, finding 2, even past the statement check: each query has its own database."""
    monkeypatch.setattr(sandbox, "check", lambda sql: sandbox.CheckedQuery(sql, (PATIENTS,)))
    sandbox.run_here(patients_lake, "CREATE TABLE main.t AS SELECT * FROM bronze.patients")
    # the table the first query made is not there for the second
    with pytest.raises(QueryRefused, match="Table with name t does not exist"):
        sandbox.run_here(
            patients_lake,
            "CREATE OR REPLACE VIEW bronze.patients AS "
            "SELECT * REPLACE ('[evil](http://evil.test)' AS country) FROM main.t",
        )
    sandbox.run_here(
        patients_lake,
        "CREATE OR REPLACE VIEW bronze.patients AS SELECT '[evil](http://evil.test)' AS country",
    )
    shown = sandbox.run_here(patients_lake, "SELECT country FROM bronze.patients").table
    assert "[evil](http://evil.test)" not in shown.column("country").to_pylist()
    with pytest.raises(QueryRefused, match=r"t does not exist"):
        sandbox.run_here(patients_lake, "SELECT * FROM main.t")


# --------------------------------------------------------------------------- files and state

REFUSED = {
    "read_csv": "SELECT * FROM read_csv('/etc/passwd')",
    "read_csv_of_lake_file": "SELECT * FROM read_csv('{tmp}/visible.csv')",
    "read_text": "SELECT * FROM read_text('/etc/passwd')",
    "read_parquet_of_lake_table": "SELECT * FROM read_parquet('{lake}/bronze/patients/*.parquet')",
    "glob": "SELECT * FROM glob('/etc/*')",
    "glob_lake": "SELECT * FROM glob('{lake}/**')",
    "getenv": "SELECT getenv('HOME')",
    "read_blob_of_system_file": "SELECT * FROM read_blob('/etc/passwd')",
    "file_as_table": "SELECT * FROM '/etc/passwd'",
    "lake_file_as_table": "SELECT * FROM '{lake}/bronze/patients/_delta_log/*.json'",
    "audit_log_view": "SELECT * FROM ops.audit_log",
    "reidentification_view": "SELECT * FROM admin.reidentification",
    "query_function": "SELECT * FROM query('COPY (SELECT 1) TO ''{tmp}/stolen.csv''')",
    "python_variable": "SELECT * FROM secret_cohort",
    "not_sql": "this is not sql",
}


@pytest.mark.parametrize("sql", REFUSED.values(), ids=REFUSED.keys())
def test_sandbox_refuses(patients_lake: Lake, tmp_path: Path, sql: str) -> None:
    secret_cohort = pl.DataFrame({"patient_id": ["P1"], "diagnosis": ["G35"]})
    assert secret_cohort.height == 1
    (tmp_path / "visible.csv").write_text("secret\n42\n")
    lake_root = patients_lake.uri.removeprefix("file://")
    with pytest.raises(QueryRefused) as info:
        sandbox.run(patients_lake, sql.format(tmp=tmp_path, lake=lake_root))
    message = str(info.value)
    assert message.startswith(("query failed: ", "only read-only", "query() runs SQL")) or (
        " is restricted: not available in SQL" in message
    )
    assert "\n" not in message
    assert "root:x" not in message and "G35" not in message
    assert not (tmp_path / "stolen.csv").exists()


def test_refusals_say_why_in_one_line(patients_lake: Lake) -> None:
    cases = {
        "COPY (SELECT 1) TO '/tmp/x.csv'": "only read-only queries are allowed (got a COPY",
        "SELECT * FROM read_text('/etc/passwd')": "disabled by configuration",
        "INSTALL httpfs": "only read-only queries are allowed",
        "SET threads = 64": "only read-only queries are allowed",
        "SELECT 1; SELECT 2": "send exactly one statement (got 2)",
        "EXPLAIN ANALYZE SELECT 1": "EXPLAIN ANALYZE (or EXPLAIN with options) runs the statement",
        "WITH x AS (COPY (SELECT 1) TO '/tmp/x.csv') SELECT * FROM x": "the query holds COPY",
        "WITH x AS (DELETE FROM bronze.patients RETURNING *) SELECT * FROM x": "holds DELETE",
    }
    for sql, fragment in cases.items():
        with pytest.raises(QueryRefused, match=re.escape(fragment)) as info:
            sandbox.run(patients_lake, sql)
        assert "\n" not in str(info.value)


def test_refusal_reasons_hold_nothing_of_the_data(patients_lake: Lake) -> None:
    """Issue 18, finding 5: the audit log keeps the reason, and DuckDB's message quotes values."""
    patients_lake.append(
        PATIENTS,
        edge_rows(PATIENTS, rows=(1,)).with_columns(
            patient_id=pl.lit("P-9"), country=pl.lit("MRN-778812 Jane Doe")
        ),
    )
    with pytest.raises(QueryRefused) as info:
        sandbox.run(
            patients_lake,
            "SELECT CAST(country AS INTEGER) FROM bronze.patients WHERE patient_id = 'P-9'",
        )
    assert "MRN-778812" in str(info.value)  # the analyst sees DuckDB's message
    assert info.value.reason == "failed: ConversionException"


def _restricted_lake(root: Path) -> Lake:
    """A lake holding the restricted tables next to an ordinary one."""
    lake = Lake(str(root / "lake"))
    lake.append(PATIENTS, edge_rows(PATIENTS, rows=(1, 2)))
    audit.record(
        lake,
        audit.AuditEvent(
            user="dr@example.org",
            roles="clinician",
            client="dashboard",
            action="patient",
            page="patient",
            patient_id="P-1",
        ),
    )
    lake.append(
        REIDENTIFICATION,
        pl.DataFrame(
            {
                "patient_id": ["P-1"],
                "source_id": ["MRN-SECRET-42"],
                "key_id": ["k"],
                "first_seen_at": [datetime(2024, 1, 1, tzinfo=UTC)],
                "source_file": ["x"],
            }
        ),
    )
    return lake


def test_restricted_tables_are_unreachable_from_sql(tmp_path: Path) -> None:
    lake = _restricted_lake(tmp_path)
    assert sandbox.run(lake, "SELECT count(*) AS n FROM bronze.patients").table.num_rows == 1
    folders = {
        "audit": lake.table_uri(AUDIT_LOG),
        "map": lake.table_uri(REIDENTIFICATION),
        "via a readable folder": f"{lake.table_uri(PATIENTS)}/../../admin/reidentification",
    }
    for name, folder in folders.items():
        for reader in ("read_parquet", "read_text", "read_blob", "glob"):
            pattern = f"{folder}/**" if reader == "glob" else f"{folder}/**/*.parquet"
            with pytest.raises(QueryRefused) as info:
                sandbox.run(lake, f"SELECT * FROM {reader}('{pattern}')")
            assert "MRN-SECRET" not in str(info.value), (name, reader)
    for view in ("ops.audit_log", "admin.reidentification"):
        with pytest.raises(QueryRefused, match=f"{re.escape(view)} is restricted"):
            sandbox.run(lake, f"SELECT * FROM {view}")
    hidden = "SELECT * FROM bronze.patients JOIN (SELECT * FROM ops.audit_log) USING (patient_id)"
    with pytest.raises(QueryRefused, match=r"ops\.audit_log is restricted"):
        sandbox.run(lake, hidden)


def _tables(sql: str) -> list[TableSpec]:
    return list(sandbox.check(sql).tables)


def _refused(sql: str) -> bool:
    with pytest.raises(QueryRefused):
        sandbox.check(sql)
    return True


def test_the_check_names_the_tables_a_query_reads() -> None:
    joined = (
        "SELECT * FROM bronze.patients p JOIN silver.daily_steps d ON p.patient_id = d.patient_id"
    )
    assert _tables(joined) == [DAILY_STEPS, PATIENTS]
    assert _tables("WITH x AS (SELECT 1) SELECT * FROM x, gold.outlook") == [OUTLOOK]
    assert _tables("SELECT 42") == []
    # read from the parse tree: a join USING a column binds only with the tables
    using = "SELECT * FROM bronze.patients JOIN silver.daily_steps USING (patient_id)"
    assert _tables(using) == [DAILY_STEPS, PATIENTS]
    assert _tables(f"EXPLAIN {joined}") == [DAILY_STEPS, PATIENTS]
    nested = "SELECT (SELECT count(*) FROM gold.outlook) FROM bronze.patients WHERE true"
    assert _tables(nested) == [OUTLOOK, PATIENTS]
    assert _tables('SELECT * FROM GOLD.OUTLOOK WHERE "patient_id" = 1') == [OUTLOOK]
    # refused queries are refused before anything is registered
    assert _refused(f"explain analyze {using}")
    assert _refused("SELECT * FROM ops.audit_log")
    assert _refused("this is not sql")


def test_every_catalog_table_is_a_view_with_its_columns(tmp_path: Path) -> None:
    lake = Lake(str(tmp_path / "lake"))
    lake.append(DAILY_STEPS, edge_rows(DAILY_STEPS))
    for table in TABLES:
        described = sandbox.run(lake, f"DESCRIBE {table.qualified_name}").table
        assert tuple(described.column("column_name").to_pylist()) == table.columns
    count = sandbox.run(lake, "SELECT count(*) AS n FROM silver.daily_steps").table
    assert count.column("n").to_pylist() == [3]


# ------------------------------------------------------------------------------------ limits


@pytest.mark.parametrize(("row_cap", "rows", "truncated"), [(10, 10, True), (25, 25, False)])
def test_row_cap_sets_truncated(
    patients_lake: Lake, row_cap: int, rows: int, truncated: bool
) -> None:
    result = sandbox.run(patients_lake, "SELECT * FROM range(25)", limits=Limits(row_cap=row_cap))
    assert result.table.num_rows == rows
    assert result.truncated is truncated


def test_row_cap_stops_a_large_result_early(patients_lake: Lake) -> None:
    started = time.perf_counter()
    result = sandbox.run(patients_lake, "SELECT * FROM range(500000000)", limits=Limits(row_cap=5))
    assert result.table.column(0).to_pylist() == [0, 1, 2, 3, 4]
    assert result.truncated
    assert time.perf_counter() - started < 10


def test_results_are_bounded_in_bytes(patients_lake: Lake) -> None:
    """Issue 18, finding 7: 5,000 rows of 300 kB took the dashboard's server to 8.2 GB."""
    import resource

    sql = "SELECT i, repeat('x', 300000) AS filler FROM range(5000) t(i)"
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(QueryRefused, match=r"larger than 50 MB") as info:
        sandbox.run(patients_lake, sql, limits=Limits(byte_cap=50_000_000))
    assert "\n" not in str(info.value) and info.value.reason == "byte limit"
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before) / 1024
    # the work (DuckDB computes 2,048 rows at a time, 600 MB here) is the worker's: this process
    # receives at most the capped result
    assert grown_mb < 200, grown_mb
    small = sandbox.run(patients_lake, sql + " LIMIT 100", limits=Limits(byte_cap=50_000_000))
    assert small.table.num_rows == 100


def test_runaway_query_is_interrupted(patients_lake: Lake) -> None:
    started = time.perf_counter()
    with pytest.raises(QueryRefused, match=r"time limit") as info:
        sandbox.run(
            patients_lake,
            "SELECT count(*) FROM range(100000000) a, range(100000000) b",
            limits=Limits(timeout_seconds=0.5),
        )
    assert time.perf_counter() - started < 10
    assert "\n" not in str(info.value) and info.value.reason == "time limit"


def test_memory_beyond_the_limit_fails_without_spilling(patients_lake: Lake) -> None:
    unchanged = Unchanged(patients_lake)
    with pytest.raises(QueryRefused, match="Out of Memory") as info:
        sandbox.run(
            patients_lake,
            "SELECT count(*) FROM (SELECT i, random() AS r FROM range(30000000) t(i) ORDER BY r)",
            limits=Limits(memory_limit="64MB"),
        )
    assert info.value.reason == "failed: OutOfMemoryException"
    unchanged.check("no temporary files")


def test_bad_sql_is_one_line_refusal(patients_lake: Lake) -> None:
    with pytest.raises(QueryRefused) as info:
        sandbox.run(patients_lake, "SELECT * FROM nope")
    assert str(info.value).startswith("query failed: Catalog Error")
    assert "\n" not in str(info.value)


def test_each_query_reads_the_current_version(tmp_path: Path) -> None:
    lake = Lake(str(tmp_path / "lake"))
    first = sandbox.run(lake, "SELECT count(*) AS n FROM silver.daily_steps").table
    lake.append(DAILY_STEPS, edge_rows(DAILY_STEPS))
    second = sandbox.run(lake, "SELECT count(*) AS n FROM silver.daily_steps").table
    assert first.column("n").to_pylist() == [0]
    assert second.column("n").to_pylist() == [3]


# ------------------------------------------------------------------ the worker process (layer 4)


def test_a_query_that_crashes_the_engine_ends_in_one_line_and_the_next_query_runs(
    patients_lake: Lake,
) -> None:
    """A security probe of this sandbox: DuckDB 2.0.1 segfaults casting a VARIANT nested 20,000
    deep to text; in the dashboard's process that took the server and every session with it."""
    nested = "repeat('[', 20000) || '1' || repeat(']', 20000)"
    with pytest.raises(QueryRefused, match="the query engine stopped while running it") as info:
        sandbox.run(patients_lake, f"SELECT length((({nested})::JSON::VARIANT)::VARCHAR) AS n")
    assert info.value.reason == "engine crashed"
    after = sandbox.run(patients_lake, "SELECT count(*) AS n FROM bronze.patients").table
    assert after.column("n").to_pylist() == [2]


def test_a_call_the_interrupt_cannot_stop_is_killed_at_the_time_limit(patients_lake: Lake) -> None:
    """``interrupt()`` does not stop one long scalar call: this one ran 60 s against a 2 s limit."""
    sandbox.run(patients_lake, "SELECT 1")  # a worker started
    started = time.perf_counter()
    with pytest.raises(QueryRefused, match="time limit") as info:
        sandbox.run(
            patients_lake,
            "SELECT length(regexp_replace(repeat('a', 100000000), 'a', 'bb', 'g')) AS n",
            limits=Limits(timeout_seconds=1),
        )
    assert info.value.reason == "time limit"
    assert time.perf_counter() - started < 1 + sandbox.KILL_GRACE_SECONDS + 2
    assert sandbox.run(patients_lake, "SELECT 1 AS x").table.column("x").to_pylist() == [1]


def test_a_value_beyond_the_process_memory_fails_in_the_worker(patients_lake: Lake) -> None:
    with pytest.raises(QueryRefused) as info:
        sandbox.run(
            patients_lake,
            "SELECT length(repeat('x', 3000000000)) AS n",
            limits=Limits(process_memory=2 * 2**30),
        )
    assert "\n" not in str(info.value)
    assert info.value.reason.startswith(("engine crashed", "failed: ")), info.value.reason
    assert sandbox.run(patients_lake, "SELECT 1 AS x").table.num_rows == 1


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT * FROM query('SELECT * FROM ops.audit_log')",
        "SELECT * FROM QUERY_TABLE('admin.reidentification')",
        "SELECT json_execute_serialized_sql(json_serialize_sql('SELECT 1'))",
        "SELECT main.query('SELECT 1')",
    ],
)
def test_functions_that_run_sql_text_are_refused(patients_lake: Lake, sql: str) -> None:
    with pytest.raises(QueryRefused, match="runs SQL given as text") as info:
        sandbox.run(patients_lake, sql)
    assert info.value.reason == "SQL-running function"


def test_queries_too_deep_for_the_check_or_for_arrow_are_one_line_refusals(
    patients_lake: Lake,
) -> None:
    deep_subqueries = "SELECT * FROM (" * 400 + "SELECT 1" + ") AS t" * 400
    deep_lists = "SELECT " + "[" * 300 + "1" + "]" * 300 + " AS x"
    for sql in (deep_subqueries, deep_lists):
        with pytest.raises(QueryRefused) as info:
            sandbox.run(patients_lake, sql)
        assert "\n" not in str(info.value)
        assert info.value.reason.startswith(("failed: ", "not parsable")), info.value.reason


def _forge_add(table_folder: Path, file_name: str) -> None:
    """The next Delta commit of ``table_folder``, adding ``file_name`` as the last commit added
    its own file (what someone who can write into the lake, without its keys, can do)."""
    log = table_folder / "_delta_log"
    commits = sorted(log.glob("*.json"))
    adds = [
        json.loads(line)["add"]
        for commit in commits
        for line in commit.read_text().splitlines()
        if '"add"' in line
    ]
    forged = {**adds[-1], "path": file_name, "dataChange": True}
    (log / f"{len(commits):020d}.json").write_text(json.dumps({"add": forged}) + "\n")


def test_a_data_file_linked_to_another_table_is_refused(tmp_path: Path) -> None:
    """The probe: a link in bronze/patients to the re-identification map's file, added by a
    forged commit, showed the map's source ids to SQL."""
    lake = _restricted_lake(tmp_path)
    patients = Path(lake.table_uri(PATIENTS))
    (secret_file,) = Path(lake.table_uri(REIDENTIFICATION)).glob("*.parquet")
    (patients / "part-99999-link.parquet").symlink_to(secret_file)
    _forge_add(patients, "part-99999-link.parquet")
    with pytest.raises(QueryRefused, match="a link or lies outside its folder") as info:
        sandbox.run(lake, "SELECT * FROM bronze.patients")
    assert "MRN-SECRET" not in str(info.value)
    assert info.value.reason == "linked data file"


def test_sql_sees_the_catalog_columns_only(tmp_path: Path) -> None:
    """A column added to a table behind the catalog's back (its Delta schema merged) is not
    readable, through the view or through the dataset the view reads."""
    from deltalake import write_deltalake

    from lakehouse.storage import conform

    lake = Lake(str(tmp_path / "lake"))
    lake.append(PATIENTS, edge_rows(PATIENTS, rows=(1,)))
    extra = edge_rows(PATIENTS, rows=(1,)).with_columns(patient_id=pl.lit("P-X"))
    forged = conform(PATIENTS, extra).append_column("source_id", pa.array(["MRN-SECRET-42"]))
    write_deltalake(lake.table_uri(PATIENTS), forged, mode="append", schema_mode="merge")
    for sql in ("SELECT * FROM bronze.patients", "SELECT * FROM _arrow_bronze_patients"):
        try:
            shown = sandbox.run(lake, sql).table
        except QueryRefused as err:
            assert "MRN-SECRET" not in str(err)
        else:
            assert "source_id" not in shown.column_names
            assert "MRN-SECRET-42" not in str(shown.to_pylist())
    with pytest.raises(QueryRefused, match="source_id"):
        sandbox.run(lake, "SELECT source_id FROM bronze.patients")


def test_a_join_builds_on_the_table_after_join_whatever_the_filters(tmp_path: Path) -> None:
    """DuckDB knows no row counts of Arrow datasets: with a filter on the big table it took the
    big table for the small one and built its hash table over it (at 100,000 patients the
    Cohort SQL example ran out of memory). The build side is the table after JOIN."""
    lake = Lake(str(tmp_path / "lake"))
    patients = [f"P{i:05d}" for i in range(2_000)]
    lake.append(
        PATIENTS,
        pl.DataFrame(
            {"patient_id": patients, "disease_group": ["MS", "PD"] * 1_000, "timezone": "UTC"}
        )
        .with_columns(pl.lit(None, pl.String).alias(c) for c in ("sex", "country"))
        .with_columns(birth_year=pl.lit(None, pl.Int16), enrolled_on=pl.lit(None, pl.Date)),
    )
    days = pl.DataFrame({"patient_id": patients}).join(
        pl.DataFrame(
            {"date": pl.date_range(datetime(2024, 1, 1), datetime(2024, 12, 31), eager=True)}
        ),
        how="cross",
    )  # 732,000 patient-days
    lake.append(
        DAILY_STEPS,
        days.with_columns(
            steps=pl.lit(5_000.0),
            coverage_hours=pl.lit(12, pl.Int16),
            n_samples=pl.lit(40, pl.Int32),
            n_sources=pl.lit(1, pl.Int16),
            is_wear_day=pl.col("date").dt.day() != 1,
            month=pl.col("date").dt.strftime("%Y-%m"),
        ),
    )
    sql = (
        "SELECT p.disease_group, count(*) AS days FROM silver.daily_steps AS d "
        "JOIN bronze.patients AS p USING (patient_id) WHERE d.is_wear_day GROUP BY ALL ORDER BY 1"
    )

    result = sandbox.run(lake, sql, limits=Limits(memory_limit="24MB"))

    assert result.table.to_pylist() == [
        {"disease_group": "MS", "days": 354 * 1_000},
        {"disease_group": "PD", "days": 354 * 1_000},
    ]


@pytest.mark.parametrize(
    "sql",
    [
        "SET disabled_optimizers = ''",
        "RESET disabled_optimizers",
        "EXPLAIN ANALYZE SET disabled_optimizers = ''",
        "SELECT 1; SET disabled_optimizers = ''",
        "PRAGMA disabled_optimizers = ''",
    ],
)
def test_the_join_setting_cannot_be_undone(patients_lake: Lake, sql: str) -> None:
    with pytest.raises(QueryRefused):
        sandbox.run(patients_lake, sql)
    setting = sandbox.run(patients_lake, "SELECT current_setting('disabled_optimizers') AS s")
    assert "build_side_probe_side" in str(setting.table.to_pylist()[0]["s"])
