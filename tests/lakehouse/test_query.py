"""The DuckDB layer: catalog views over the lake and the read-only SQL sandbox."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import polars as pl
import pytest

from lakehouse import InputError, Lake, audit
from lakehouse.catalog import (
    AUDIT_LOG,
    DAILY_STEPS,
    PATIENTS,
    REIDENTIFICATION,
    TABLES,
    TableSpec,
)
from lakehouse.errors import StorageError
from lakehouse.query import connect, register, run_query, tables_in
from tests.lakehouse.frames import edge_rows


@pytest.fixture
def con(lake: Lake) -> Iterator[duckdb.DuckDBPyConnection]:
    connection = connect(lake)
    yield connection
    connection.close()


def _ids(table: TableSpec) -> str:
    return table.path


@pytest.mark.parametrize("table", TABLES, ids=_ids)
def test_empty_lake_exposes_every_table_as_empty_view(
    con: duckdb.DuckDBPyConnection, table: TableSpec
) -> None:
    described = run_query(con, f"DESCRIBE {table.qualified_name}").table
    assert tuple(described.column("column_name").to_pylist()) == table.columns
    count = run_query(con, f"SELECT count(*) AS n FROM {table.qualified_name}").table
    assert count.column("n").to_pylist() == [0]


def test_written_rows_are_queryable_with_bound_parameters(lake: Lake) -> None:
    rows = edge_rows(DAILY_STEPS)
    lake.append(DAILY_STEPS, rows)
    con = connect(lake)
    result = run_query(
        con,
        "SELECT patient_id, date, steps FROM silver.daily_steps WHERE patient_id = ?",
        ["O'Brien-ü"],
    )
    assert result.table.to_pylist() == [
        {"patient_id": "O'Brien-ü", "date": rows["date"][0], "steps": rows["steps"][0]}
    ]
    assert not result.truncated
    # The parameter is bound, not spliced: a quote-bearing value cannot change the query.
    injected = run_query(
        con,
        "SELECT count(*) AS n FROM silver.daily_steps WHERE patient_id = ?",
        ["x' OR '1'='1"],
    )
    assert injected.table.column("n").to_pylist() == [0]


def test_views_join_across_layers(lake: Lake) -> None:
    lake.append(DAILY_STEPS, edge_rows(DAILY_STEPS))
    lake.append(TABLES[1], edge_rows(TABLES[1]))  # bronze/patients
    result = run_query(
        connect(lake),
        "SELECT count(*) AS n FROM silver.daily_steps d JOIN bronze.patients p USING (patient_id)",
    )
    assert result.table.column("n").to_pylist() == [3]


@pytest.mark.parametrize(
    ("row_cap", "rows", "truncated"), [(10, 10, True), (25, 25, False), (30, 25, False)]
)
def test_row_cap_sets_truncated(
    con: duckdb.DuckDBPyConnection, row_cap: int, rows: int, truncated: bool
) -> None:
    result = run_query(con, "SELECT * FROM range(25)", row_cap=row_cap)
    assert result.table.num_rows == rows
    assert result.truncated is truncated


def test_row_cap_stops_a_large_result_early(con: duckdb.DuckDBPyConnection) -> None:
    result = run_query(con, "SELECT * FROM range(50000000)", row_cap=5, timeout_seconds=10)
    assert result.table.column(0).to_pylist() == [0, 1, 2, 3, 4]
    assert result.truncated


REFUSED = {
    "copy_to": "COPY (SELECT 1 AS x) TO '{tmp}/stolen.csv'",
    "read_csv": "SELECT * FROM read_csv('/etc/passwd')",
    "read_csv_of_lake_file": "SELECT * FROM read_csv('{tmp}/visible.csv')",
    "read_text": "SELECT * FROM read_text('/etc/passwd')",
    "glob": "SELECT * FROM glob('/etc/*')",
    "install": "INSTALL httpfs",
    "load": "LOAD httpfs",
    "attach": "ATTACH '{tmp}/other.duckdb' AS other",
    "set_memory_limit": "SET memory_limit = '64GB'",
    "unlock_configuration": "SET lock_configuration = false",
    "enable_external_access": "SET enable_external_access = true",
    "getenv": "SELECT getenv('HOME')",
    "read_blob_of_system_file": "SELECT * FROM read_blob('/etc/passwd')",
    "file_as_table": "SELECT * FROM '/etc/passwd'",
    "read_parquet_outside_lake": "SELECT * FROM read_parquet('{tmp}/*.parquet')",
    "copy_from": "COPY bronze.patients FROM '{tmp}/visible.csv'",
    "pragma_set": "PRAGMA memory_limit='64GB'",
    "set_allowed_directories": "SET allowed_directories = ['/']",
    "reset": "RESET enable_external_access",
    "detach": "DETACH memory",
    "install_from_url": "INSTALL httpfs FROM 'http://127.0.0.1:9/'",
    "export_database": "EXPORT DATABASE '{tmp}/dump'",
    "audit_log_view": "SELECT * FROM ops.audit_log",
    "reidentification_view": "SELECT * FROM admin.reidentification",
    "create_view": "CREATE OR REPLACE VIEW silver.daily_steps AS SELECT 1 AS x",
    "drop_view": "DROP VIEW silver.daily_steps",
    "two_statements": "SELECT 1; SELECT 2",
}


@pytest.mark.parametrize("sql", REFUSED.values(), ids=REFUSED.keys())
def test_sandbox_refuses(con: duckdb.DuckDBPyConnection, tmp_path: Path, sql: str) -> None:
    (tmp_path / "visible.csv").write_text("secret\n42\n")
    with pytest.raises(InputError) as info:
        run_query(con, sql.format(tmp=tmp_path))
    message = str(info.value)
    assert message.startswith(("query failed: ", "only read-only", "send exactly one")) or (
        " is restricted: not available in SQL" in message
    )
    assert "\n" not in message
    assert not (tmp_path / "stolen.csv").exists()
    assert not (tmp_path / "other.duckdb").exists()


def test_sandbox_refusals_say_why_in_one_line(con: duckdb.DuckDBPyConnection) -> None:
    cases = {
        "COPY (SELECT 1) TO '/tmp/x.csv'": "only read-only queries are allowed (got a COPY",
        "SELECT * FROM read_text('/etc/passwd')": "disabled by configuration",
        "SELECT getenv('HOME')": "getenv",
        "INSTALL httpfs": "only read-only queries are allowed",
        "SET threads = 64": "only read-only queries are allowed",
    }
    for sql, fragment in cases.items():
        with pytest.raises(InputError, match=re.escape(fragment)) as info:
            run_query(con, sql)
        assert "\n" not in str(info.value)


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
    con = connect(lake)
    assert run_query(con, "SELECT count(*) AS n FROM bronze.patients").table.num_rows == 1
    folders = {
        "audit": lake.table_uri(AUDIT_LOG),
        "map": lake.table_uri(REIDENTIFICATION),
        "via a readable folder": f"{lake.table_uri(PATIENTS)}/../../admin/reidentification",
    }
    for name, folder in folders.items():
        for reader in ("read_parquet", "read_text", "read_blob", "glob"):
            pattern = f"{folder}/**" if reader == "glob" else f"{folder}/**/*.parquet"
            with pytest.raises(InputError) as info:
                run_query(con, f"SELECT * FROM {reader}('{pattern}')")
            assert "MRN-SECRET" not in str(info.value), (name, reader)
    for view in ("ops.audit_log", "admin.reidentification"):
        with pytest.raises(InputError, match=f"{re.escape(view)} is restricted"):
            run_query(con, f"SELECT * FROM {view}")
    assert tables_in("SELECT * FROM ops.audit_log") == []
    hidden = "SELECT * FROM bronze.patients JOIN (SELECT * FROM ops.audit_log) USING (patient_id)"
    with pytest.raises(InputError, match=r"ops\.audit_log is restricted"):
        run_query(con, hidden)
    with pytest.raises(StorageError, match="restricted"):
        register(con, lake, REIDENTIFICATION)


ENGINE_REFUSED = [
    "copy_to",
    "install",
    "load",
    "attach",
    "set_memory_limit",
    "unlock_configuration",
    "enable_external_access",
]


@pytest.mark.parametrize("name", ENGINE_REFUSED)
def test_locked_engine_refuses_even_without_the_statement_check(
    con: duckdb.DuckDBPyConnection, tmp_path: Path, name: str
) -> None:
    # Defence in depth: the connection's own configuration refuses these too.
    with pytest.raises(duckdb.Error):
        con.execute(REFUSED[name].format(tmp=tmp_path))
    assert not (tmp_path / "stolen.csv").exists()
    assert not (tmp_path / "other.duckdb").exists()


def test_views_cannot_be_redefined_through_run_query(con: duckdb.DuckDBPyConnection) -> None:
    with pytest.raises(InputError):
        run_query(con, REFUSED["create_view"])
    assert run_query(con, "SELECT * FROM silver.daily_steps").table.column_names[0] == "patient_id"


def test_sandbox_off_can_read_files(lake: Lake, tmp_path: Path) -> None:
    # Control: the refusals above come from the sandbox, not from a broken query.
    (tmp_path / "visible.csv").write_text("secret\n42\n")
    open_con = connect(lake, sandbox=False)
    result = run_query(open_con, f"SELECT secret FROM read_csv('{tmp_path}/visible.csv')")
    assert result.table.column("secret").to_pylist() == [42]


def test_sandbox_cannot_read_python_variables(con: duckdb.DuckDBPyConnection) -> None:
    secret_cohort = pl.DataFrame({"patient_id": ["P1"], "diagnosis": ["G35"]})
    assert secret_cohort.height == 1
    with pytest.raises(InputError, match="secret_cohort"):
        run_query(con, "SELECT * FROM secret_cohort")
    # DuckDB looks variables up in the frame that calls it: here that is this test's frame.
    with pytest.raises(duckdb.CatalogException):
        con.sql("SELECT * FROM secret_cohort").fetchall()


def test_plain_duckdb_would_read_python_variables() -> None:
    # Control for the test above: without the sandbox setting, the variable is readable.
    secret_cohort = pl.DataFrame({"patient_id": ["P1"]})
    assert secret_cohort.height == 1
    with duckdb.connect(":memory:") as plain:
        assert plain.sql("SELECT * FROM secret_cohort").fetchall() == [("P1",)]


def test_runaway_query_is_interrupted(con: duckdb.DuckDBPyConnection) -> None:
    started = time.perf_counter()
    with pytest.raises(InputError, match=r"time limit") as info:
        run_query(
            con,
            "SELECT count(*) FROM range(100000000) a, range(100000000) b",
            timeout_seconds=0.5,
        )
    assert time.perf_counter() - started < 10
    assert "\n" not in str(info.value)
    # The connection is still usable after the interrupt.
    assert run_query(con, "SELECT 1 AS x").table.column("x").to_pylist() == [1]


def test_bad_sql_is_one_line_input_error(con: duckdb.DuckDBPyConnection) -> None:
    with pytest.raises(InputError) as info:
        run_query(con, "SELECT * FROM nope")
    assert str(info.value).startswith("query failed: Catalog Error")
    assert "\n" not in str(info.value)


def test_views_are_a_snapshot_taken_at_connect(lake: Lake) -> None:
    # Callers reconnect (or key caches by table version) to see newer commits.
    con = connect(lake)
    lake.append(DAILY_STEPS, edge_rows(DAILY_STEPS))
    stale = run_query(con, "SELECT count(*) AS n FROM silver.daily_steps").table
    fresh = run_query(connect(lake), "SELECT count(*) AS n FROM silver.daily_steps").table
    assert stale.column("n").to_pylist() == [0]
    assert fresh.column("n").to_pylist() == [3]


def test_tables_in_names_what_a_query_reads() -> None:
    from lakehouse.catalog import OUTLOOK, PATIENTS
    from lakehouse.query import tables_in

    joined = (
        "SELECT * FROM bronze.patients p JOIN silver.daily_steps d ON p.patient_id = d.patient_id"
    )
    assert tables_in(joined) == [DAILY_STEPS, PATIENTS]
    assert tables_in("WITH x AS (SELECT 1) SELECT * FROM x, gold.outlook") == [OUTLOOK]
    assert tables_in("SELECT 42") == []
    # read from the parse tree: a join USING a column binds only with the tables, which the
    # caller registers after asking (it used to register every table, bronze samples included)
    using = "SELECT * FROM bronze.patients JOIN silver.daily_steps USING (patient_id)"
    assert tables_in(using) == [DAILY_STEPS, PATIENTS]
    assert tables_in(f"EXPLAIN {joined}") == [DAILY_STEPS, PATIENTS]
    assert tables_in(f"explain analyze {using}") == [DAILY_STEPS, PATIENTS]
    nested = "SELECT (SELECT count(*) FROM gold.outlook) FROM bronze.patients WHERE true"
    assert tables_in(nested) == [OUTLOOK, PATIENTS]
    # not SQL: nothing is registered, the query says why
    assert tables_in("this is not sql") == []


def test_tables_registered_after_the_lock_are_queryable_and_still_sandboxed(
    lake: Lake, tmp_path: Path
) -> None:
    from lakehouse.query import register

    con = connect(lake, tables=())
    with pytest.raises(InputError, match="does not exist"):
        run_query(con, "SELECT count(*) FROM silver.daily_steps")
    register(con, lake, DAILY_STEPS)
    assert run_query(con, "SELECT count(*) AS n FROM silver.daily_steps").table.num_rows == 1
    with pytest.raises(InputError):
        run_query(con, f"SELECT * FROM read_text('{tmp_path}')")


def test_merged_tables_stay_filterable_in_sql(tmp_path: Path) -> None:
    """delta-rs writes merged files' strings as string_view; a WHERE on such a column used to
    fail in pyarrow ("no kernel matching input types (string, string_view)")."""
    from datetime import UTC, datetime

    from lakehouse.catalog import REGISTRY

    lake = Lake(str(tmp_path / "lake"))

    def rows(version: int, status: str) -> pl.DataFrame:
        return pl.DataFrame(
            {
                "model_id": [f"ebm:MS:v{version}"],
                "kind": ["ebm"],
                "cluster": ["MS"],
                "version": [version],
                "trained_at": [datetime(2026, 1, version, tzinfo=UTC)],
                "params": ["{}"],
                "metrics": ["{}"],
                "artifact_uri": [None],
                "status": [status],
            },
            schema_overrides={"version": pl.Int32, "artifact_uri": pl.String},
        )

    lake.upsert(REGISTRY, rows(1, "champion"))
    lake.upsert(REGISTRY, pl.concat([rows(2, "champion"), rows(1, "retired")]))
    con = connect(lake, tables=[REGISTRY])
    result = run_query(con, "SELECT model_id FROM models.registry WHERE status = 'champion'")
    assert result.table.column("model_id").to_pylist() == ["ebm:MS:v2"]
    with pytest.raises(StorageError, match="not declared merge_written"):
        lake.upsert(DAILY_STEPS, pl.DataFrame())


def test_a_partial_delete_keeps_the_table_filterable_in_sql(tmp_path: Path) -> None:
    """Retention deletes one patient's old origin from a file that also holds another patient:
    the rows kept used to be rewritten as string_view, and the patient page's query failed."""
    from datetime import date, timedelta

    from jobs.forecast import _retire_superseded
    from lakehouse.catalog import FORECASTS, OUTLOOK
    from lakehouse.query import PATIENT_FORECAST_SQL

    lake = Lake(str(tmp_path / "lake"))

    def forecast(patient: str, origin: date) -> pl.DataFrame:
        return pl.DataFrame(
            {
                "patient_id": patient,
                "model": "m",
                "origin_date": origin,
                "target_date": [origin + timedelta(days=i) for i in range(3)],
                "yhat": 1.0,
                "yhat_lower": 0.0,
                "yhat_upper": 2.0,
                "origin_month": origin.strftime("%Y-%m"),
            }
        )

    def run(a: date, b: date, predicate: str) -> None:
        lake.replace(
            FORECASTS, pl.concat([forecast("A", a), forecast("B", b)]), predicate=predicate
        )

    first, a2, b2, a3 = date(2024, 3, 2), date(2024, 3, 10), date(2024, 3, 8), date(2024, 3, 11)
    run(first, first, "origin_month = '2024-03'")
    later = (
        "origin_month = '2024-03' AND ((origin_date = '{}' AND patient_id = 'A') "
        "OR (origin_date = '{}' AND patient_id = 'B'))"
    )
    run(a2, b2, later.format(a2, b2))
    run(a3, b2, later.format(a3, b2))  # A moved on, B did not: A's 10 March rows retire
    batch = pl.DataFrame({"patient_id": ["A", "B"], "origin": [a3, b2]})
    assert _retire_superseded(lake, batch) == 1
    con = connect(lake, tables=[FORECASTS, OUTLOOK])
    assert run_query(con, PATIENT_FORECAST_SQL, ["B", "B"]).table.num_rows == 3


def test_tables_in_ignores_case() -> None:
    from lakehouse.catalog import FORECASTS
    from lakehouse.query import tables_in

    assert tables_in('SELECT * FROM GOLD.FORECASTS WHERE "patient_id" = 1') == [FORECASTS]


@pytest.mark.parametrize("table", TABLES, ids=_ids)
def test_views_return_exactly_the_rows_of_the_current_version(lake: Lake, table: TableSpec) -> None:
    """On a local lake the views read the current version's Parquet files themselves: files
    that a rewrite left on disk are not read, partition columns keep their type, and values
    (nulls, quotes, unicode) come back as Delta holds them."""
    lake.append(table, edge_rows(table))
    lake.replace(table, edge_rows(table, rows=(0, 2)), predicate=None)  # old files stay
    expected = lake.read(table).sort(table.keys, nulls_last=True)
    con = connect(lake, tables=[table])
    shown = pl.from_arrow(run_query(con, f"SELECT * FROM {table.qualified_name}").table)
    assert isinstance(shown, pl.DataFrame)
    assert shown.columns == list(table.columns)
    assert shown.sort(table.keys, nulls_last=True).to_dicts() == expected.to_dicts()
    assert expected.height == 2


def test_sandbox_reads_the_lake_tables_and_nothing_else(lake: Lake, tmp_path: Path) -> None:
    lake.append(DAILY_STEPS, edge_rows(DAILY_STEPS))
    outside = tmp_path / "outside.parquet"
    pl.DataFrame({"secret": [42]}).write_parquet(outside)
    con = connect(lake)
    assert run_query(con, "SELECT count(*) AS n FROM silver.daily_steps").table["n"][0].as_py() == 3
    for escape in (
        f"SELECT * FROM read_parquet('{outside}')",
        f"SELECT * FROM read_parquet('{lake.uri}/silver/../../outside.parquet')",
        f"SELECT * FROM read_text('{lake.uri}/silver/daily_steps/../../../../../etc/passwd')",
        "SELECT * FROM read_text('/etc/passwd')",
    ):
        with pytest.raises(InputError, match=r"disabled by configuration|Permission"):
            run_query(con, escape)


@pytest.mark.parametrize("route", ["parquet", "arrow"])
def test_a_table_written_before_a_catalog_column_shows_it_as_null(
    lake: Lake, route: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ops/job_runs gained bytes_read and bytes_written: a lake written before still queries,
    by DuckDB's Parquet reader (local lakes) as through Arrow (object storage)."""
    import pyarrow as pa
    from deltalake import write_deltalake

    from lakehouse import query
    from lakehouse.catalog import JOB_RUNS
    from lakehouse.storage import conform

    old = [c for c in JOB_RUNS.columns if not c.startswith("bytes_")]
    write_deltalake(lake.table_uri(JOB_RUNS), conform(JOB_RUNS, edge_rows(JOB_RUNS)).select(old))
    if route == "arrow":
        monkeypatch.setattr(query, "_local_files", lambda _lake, _table, _delta: [])
    con = connect(lake, tables=[JOB_RUNS])
    shown = run_query(con, "SELECT run_id, bytes_read, bytes_written FROM ops.job_runs").table
    assert shown.num_rows == 3
    assert shown.column("bytes_read").null_count == 3
    assert shown.schema.field("bytes_written").type == pa.int64()
