"""Cohort SQL: analysts' read-only queries over the lake views, through the same sandbox as
``mobility sql`` (one SELECT, no file or network access, a time limit and a row cap)."""

from __future__ import annotations

import time

import polars as pl
import streamlit as st

from dashboard import auth, data
from dashboard.literal import markdown_literal
from dashboard.sql_example import EXAMPLE
from lakehouse import csv_export
from lakehouse.audit import sql_sha256
from lakehouse.sandbox import QueryRefused

user = auth.require("sql")
st.title("Cohort SQL")
st.caption(
    f"One read-only query (SELECT) over the views below; at most {data.SQL_ROW_CAP:,} rows "
    f"and {data.SQL_TIMEOUT_SECONDS:g} s. Files, network, settings and extensions are off. "
    "Patients are named by pseudonym. Every query is recorded in the audit log (its SHA-256 and "
    "row count)."
)
lake = data.current_lake()

query = st.text_area("Query", value=EXAMPLE, height=220, key="sql_query")
if st.button("Run", type="primary", icon=":material/play_arrow:", key="sql_run"):
    started = time.perf_counter()
    st.session_state["sql_result"] = st.session_state["sql_error"] = None
    fingerprint = sql_sha256(query)
    try:
        result = data.run_analyst_query(lake, query)
    except QueryRefused as err:
        # the reason only: DuckDB's message may quote a value of the data
        refused = f"refused: {err.reason}"
        auth.record(lake, user, "sql", "sql", sql_sha256=fingerprint, outcome=refused)
        st.session_state["sql_error"] = str(err)
    else:
        frame = pl.from_arrow(result.table)
        assert isinstance(frame, pl.DataFrame)
        # on record before the rows are shown
        auth.record(lake, user, "sql", "sql", sql_sha256=fingerprint, rows=frame.height)
        st.session_state["sql_result"] = (frame, result.truncated, time.perf_counter() - started)

if error := st.session_state.get("sql_error"):
    # DuckDB's message may quote a value of the data: shown as text
    st.error(markdown_literal(error), icon=":material/error:")
elif outcome := st.session_state.get("sql_result"):
    frame, truncated, seconds = outcome
    note = f"{frame.height:,} rows in {seconds:.2f} s"
    if truncated:
        note += f" (cut at {data.SQL_ROW_CAP:,}: add a LIMIT or aggregate)"
    st.caption(note)
    if frame.width == 0:
        st.info("The query returned no columns.", icon=":material/info:")
    else:
        st.dataframe(frame, hide_index=True)
        st.download_button(
            "Download (CSV)",
            data=csv_export.frame_csv(frame),
            file_name="cohort-query.csv",
            mime="text/csv",
            icon=":material/download:",
            key="sql_download",
        )

st.subheader("Tables and columns")
columns = data.table_columns()
tables = columns["table"].unique(maintain_order=True).to_list()
table = st.selectbox("Table", tables, key="sql_table")
chosen = columns.filter(pl.col("table") == table)
st.caption(chosen["description"][0])
st.dataframe(chosen.select("column", "type"), hide_index=True)
