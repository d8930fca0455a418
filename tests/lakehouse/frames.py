"""Frames that fit a catalog table, built from its declared Arrow schema (no schema repeated)."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

import hypothesis.strategies as st
import polars as pl
from polars.testing.parametric import column, dataframes

from lakehouse.catalog import TableSpec
from lakehouse.storage import empty_frame

# Three distinct values per type, so rows 0, 1 and 2 never share a key. Row 0 is the awkward one:
# a unicode patient id with a quote, nulls in nullable columns, the last microsecond of a month.
_PATIENT_IDS = ("O'Brien-ü", "P-000001", 'Z "quoted" 患者')
_MONTHS = ("2024-01", "2024-02", "2023-12")
_TIMESTAMPS = (
    datetime(2024, 1, 31, 23, 59, 59, 999_999, tzinfo=UTC),
    datetime(2024, 2, 29, 0, 0, 0, 1, tzinfo=UTC),
    datetime(2023, 12, 31, 12, 30, 0, 123_456, tzinfo=UTC),
)
_DATES = (date(2024, 1, 31), date(2024, 2, 29), date(2023, 12, 31))
_INTEGERS = {
    pl.Int8: (127, -128, 3),
    pl.Int16: (32_767, -32_768, 0),
    pl.Int32: (2**31 - 1, -(2**31), 1),
    pl.Int64: (2**63 - 1, -(2**63), 7),
}
_FLOATS = (0.1, -1e300, 1234.5)
_BOOLS = (True, False, True)


def polars_schema(table: TableSpec) -> pl.Schema:
    """The Polars schema a table reads back with."""
    return empty_frame(table).schema


def _edge_value(table: TableSpec, name: str, dtype: pl.DataType, row: int) -> Any:
    if dtype == pl.String:
        if name == "patient_id":
            return _PATIENT_IDS[row]
        if name.endswith("month"):
            return _MONTHS[row]
        return f"{name} ü'{row}"
    if isinstance(dtype, pl.Datetime):
        return _TIMESTAMPS[row]
    if dtype == pl.Date:
        return _DATES[row]
    if dtype == pl.Float64:
        return _FLOATS[row]
    if dtype == pl.Boolean:
        return _BOOLS[row]
    for integer_type, values in _INTEGERS.items():
        if dtype == integer_type:
            return values[row]
    raise NotImplementedError(f"{table.path}.{name}: no edge value for {dtype}")


def edge_rows(table: TableSpec, rows: tuple[int, ...] = (0, 1, 2)) -> pl.DataFrame:
    """Handwritten rows (by index 0..2) with the table's exact dtypes; row 0 has the nulls."""
    schema = polars_schema(table)
    nullable = {f.name: f.nullable for f in table.schema}
    data: dict[str, list[Any]] = {}
    for name, dtype in schema.items():
        # The quoted unicode id stays in row 0 even where patient_id may be null.
        null_row = 1 if name == "patient_id" else 0
        data[name] = [
            None if row == null_row and nullable[name] else _edge_value(table, name, dtype, row)
            for row in rows
        ]
    return pl.DataFrame(data, schema=schema)


def frames(table: TableSpec, *, max_size: int = 12) -> st.SearchStrategy[pl.DataFrame]:
    """Hypothesis frames fitting ``table``: declared dtypes, nulls only where nullable.

    Partition columns hold realistic values (``YYYY-MM``): they become folder names.
    """
    nullable = {f.name: f.nullable for f in table.schema}
    months = st.dates(min_value=date(1990, 1, 1), max_value=date(2100, 12, 31)).map(
        lambda d: d.strftime("%Y-%m")
    )
    columns = [
        column(
            name,
            dtype=dtype,
            allow_null=nullable[name],
            strategy=months if name in table.partition_by else None,
        )
        for name, dtype in polars_schema(table).items()
    ]
    return dataframes(columns, min_size=0, max_size=max_size, allow_chunks=True)


def canonical(frame: pl.DataFrame, table: TableSpec) -> pl.DataFrame:
    """Rows in one deterministic order (keys first, then every other column)."""
    order = [*table.keys, *(c for c in frame.columns if c not in table.keys)]
    return frame.select(table.columns).sort(order, nulls_last=True)
