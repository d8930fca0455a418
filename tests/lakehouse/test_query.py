"""The DuckDB layer: catalog views over the lake for the product's own queries (the analysts'
sandbox, a connection of its own per query, is tested in test_sandbox.py)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import polars as pl
import pytest

from lakehouse import InputError, Lake
from lakehouse.catalog import (
    DAILY_STEPS,
    TABLES,
    TableSpec,
)
from lakehouse.errors import StorageError
from lakehouse.query import connect, register, run_query
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


# Statements the connection's own configuration refuses: it runs only the product's named queries;
# analysts' SQL goes through lakehouse.sandbox (test_sandbox.py).
ENGINE_REFUSED = {
    "copy_to": "COPY (SELECT 1 AS x) TO '{tmp}/stolen.csv'",
    "install": "INSTALL httpfs",
    "load": "LOAD httpfs",
    "attach": "ATTACH '{tmp}/other.duckdb' AS other",
    "set_memory_limit": "SET memory_limit = '64GB'",
    "unlock_configuration": "SET lock_configuration = false",
    "enable_external_access": "SET enable_external_access = true",
}


@pytest.mark.parametrize("name", ENGINE_REFUSED)
def test_locked_engine_refuses_even_without_the_statement_check(
    con: duckdb.DuckDBPyConnection, tmp_path: Path, name: str
) -> None:
    # Defence in depth: the connection's own configuration refuses these too.
    with pytest.raises(duckdb.Error):
        con.execute(ENGINE_REFUSED[name].format(tmp=tmp_path))
    assert not (tmp_path / "stolen.csv").exists()
    assert not (tmp_path / "other.duckdb").exists()


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


def test_tables_registered_after_the_lock_are_queryable_and_still_sandboxed(
    lake: Lake, tmp_path: Path
) -> None:

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
                "intervals": [None],
                "shrinkage": [None],
            },
            schema_overrides={
                "version": pl.Int32,
                "artifact_uri": pl.String,
                "intervals": pl.String,
                "shrinkage": pl.String,
            },
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


@pytest.mark.parametrize("route", ["parquet", "arrow", "sandbox"])
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
    sql = "SELECT run_id, bytes_read, bytes_written FROM ops.job_runs"
    if route == "sandbox":
        from lakehouse import sandbox

        shown = sandbox.run(lake, sql).table
    else:
        shown = run_query(connect(lake, tables=[JOB_RUNS]), sql).table
    assert shown.num_rows == 3
    assert shown.column("bytes_read").null_count == 3
    assert shown.schema.field("bytes_written").type == pa.int64()
