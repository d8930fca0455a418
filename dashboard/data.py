"""Every query the dashboard runs: SQL as named constants, run through DuckDB over the lake.

Pages call the public functions here and never see SQL, DuckDB or Delta. Queries bind their
parameters (``?``), never format values into SQL text.

Caching:

- the table versions of the lake are read at most every :data:`VERSION_TTL_SECONDS`;
- the DuckDB connection (``st.cache_resource``) is keyed by the versions of all tables, because its
  views are bound to the files of the versions current when it was opened;
- each query result (``st.cache_data``) is keyed by the query, its parameters and the versions of
  the tables it reads, so a new pipeline run invalidates exactly the results it changed.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date

import duckdb
import polars as pl
import streamlit as st

from lakehouse.catalog import (
    DAILY_STEPS,
    JOB_RUNS,
    PATIENTS,
    SIDE_EFFECTS,
    TABLES,
    THERAPIES,
    TableSpec,
)
from lakehouse.query import connect, run_query
from lakehouse.settings import get_settings
from lakehouse.storage import Lake

VERSION_TTL_SECONDS = 10
RESULT_TTL_SECONDS = 3600
MAX_PATIENT_OPTIONS = 1000
RECENT_DAYS = 14
DISEASE_GROUPS = ("MS", "PD", "RA", "OTHER")

TableVersions = tuple[tuple[str, int | None], ...]

# ------------------------------------------------------------------------------------------- SQL

OVERVIEW_KPIS_SQL = """
SELECT
    (SELECT count(*) FROM bronze.patients) AS patients,
    count(*) AS patient_days,
    median(steps) FILTER (WHERE is_wear_day) AS median_wear_day_steps,
    avg(CASE WHEN is_wear_day THEN 1.0 ELSE 0.0 END) AS wear_day_share
FROM silver.daily_steps
"""

# Quantiles are computed in DuckDB so the browser receives one row per group, whatever the size
# of the lake. Non-wear days are left out: they are missing data, not low mobility.
STEPS_BY_DISEASE_GROUP_SQL = """
SELECT
    coalesce(p.disease_group, 'unknown') AS disease_group,
    count(*) AS wear_days,
    count(DISTINCT d.patient_id) AS patients,
    quantile_cont(d.steps, 0.05) AS p05,
    quantile_cont(d.steps, 0.25) AS p25,
    quantile_cont(d.steps, 0.50) AS median,
    quantile_cont(d.steps, 0.75) AS p75,
    quantile_cont(d.steps, 0.95) AS p95,
    avg(d.steps) AS mean
FROM silver.daily_steps AS d
LEFT JOIN bronze.patients AS p USING (patient_id)
WHERE d.is_wear_day
GROUP BY 1
ORDER BY 1
"""

PATIENT_IDS_SQL = """
SELECT patient_id
FROM bronze.patients
WHERE (? IS NULL OR disease_group = ?)
  AND (? IS NULL OR contains(lower(patient_id), lower(?)))
ORDER BY patient_id
LIMIT ?
"""

PATIENT_PROFILE_SQL = """
SELECT patient_id, disease_group, timezone, sex, birth_year, country, enrolled_on
FROM bronze.patients
WHERE patient_id = ?
"""

PATIENT_DAILY_STEPS_SQL = """
SELECT date, steps, coverage_hours, n_samples, n_sources, is_wear_day
FROM silver.daily_steps
WHERE patient_id = ?
ORDER BY date
"""

PATIENT_THERAPIES_SQL = """
SELECT therapy, start_date, end_date
FROM bronze.therapies
WHERE patient_id = ?
ORDER BY start_date, therapy
"""

PATIENT_SIDE_EFFECTS_SQL = """
SELECT date, effect, severity
FROM bronze.side_effects
WHERE patient_id = ?
ORDER BY date, effect
"""

RECENT_JOB_RUNS_SQL = """
SELECT
    started_at,
    job,
    status,
    date_diff('millisecond', started_at, finished_at) / 1000.0 AS duration_seconds,
    rows_in,
    rows_out,
    error,
    engine,
    run_id
FROM ops.job_runs
ORDER BY started_at DESC
LIMIT ?
"""

# ------------------------------------------------------------------------------- value objects


@dataclass(frozen=True)
class OverviewKpis:
    """The headline figures of the Overview page.

    Args:
        patients: patients registered in ``bronze/patients``.
        patient_days: rows of ``silver/daily_steps``.
        median_wear_day_steps: median daily steps over wear days (None without wear days).
        wear_day_share: share of patient-days that are wear days (None without days).
    """

    patients: int
    patient_days: int
    median_wear_day_steps: float | None
    wear_day_share: float | None

    @property
    def is_empty(self) -> bool:
        """Whether the lake holds neither patients nor daily steps."""
        return self.patients == 0 and self.patient_days == 0


@dataclass(frozen=True)
class PatientProfile:
    """What the Patient page shows about who the patient is."""

    patient_id: str
    disease_group: str
    timezone: str
    sex: str | None
    birth_year: int | None
    country: str | None
    enrolled_on: date | None


# ---------------------------------------------------------------------------------- lake access


def current_lake() -> Lake:
    """The lake named by the settings (``LAKE_URI``), with storage options from the environment."""
    settings = get_settings()
    return Lake(settings.lake_uri, storage_options=settings.storage_options())


@st.cache_data(ttl=VERSION_TTL_SECONDS, show_spinner=False)
def _all_versions(uri: str, _lake: Lake) -> TableVersions:
    return tuple((table.path, _lake.version(table)) for table in TABLES)


def _versions_of(lake: Lake, tables: Sequence[TableSpec]) -> TableVersions:
    wanted = {table.path for table in tables}
    return tuple(item for item in _all_versions(lake.uri, lake) if item[0] in wanted)


@dataclass
class _Connection:
    """A DuckDB connection with the lock that serialises its use across browser sessions."""

    con: duckdb.DuckDBPyConnection
    lock: threading.Lock


# Two entries: the current versions and, briefly, the previous ones for queries still running.
@st.cache_resource(max_entries=2, show_spinner=False)
def _connection(uri: str, versions: TableVersions, _lake: Lake) -> _Connection:
    return _Connection(connect(_lake, sandbox=True, memory_limit="1GB"), threading.Lock())


@st.cache_data(ttl=RESULT_TTL_SECONDS, max_entries=512, show_spinner=False)
def _cached_query(
    uri: str, versions: TableVersions, sql: str, params: tuple[object, ...], _lake: Lake
) -> pl.DataFrame:
    connection = _connection(uri, _all_versions(uri, _lake), _lake)
    with connection.lock:
        result = run_query(connection.con, sql, list(params), row_cap=100_000)
    frame = pl.from_arrow(result.table)
    assert isinstance(frame, pl.DataFrame)
    return frame


def _query(
    lake: Lake, sql: str, params: Sequence[object], *, reads: Sequence[TableSpec]
) -> pl.DataFrame:
    """Run ``sql`` with bound ``params``, cached until a table in ``reads`` changes."""
    return _cached_query(lake.uri, _versions_of(lake, reads), sql, tuple(params), lake)


# -------------------------------------------------------------------------------------- queries


def lake_tables(lake: Lake) -> pl.DataFrame:
    """One row per catalog table: whether it exists, its version, rows, files and size."""
    return _lake_tables(lake.uri, _all_versions(lake.uri, lake), lake)


@st.cache_data(ttl=RESULT_TTL_SECONDS, show_spinner=False)
def _lake_tables(uri: str, versions: TableVersions, _lake: Lake) -> pl.DataFrame:
    rows = []
    for table in TABLES:
        info = _lake.info(table)
        rows.append(
            {
                "table": table.path,
                "exists": info.exists,
                "version": info.version,
                "rows": info.rows,
                "files": info.files,
                "size_mb": round(info.size_bytes / 1e6, 2),
                "partitioned_by": ", ".join(table.partition_by) or "-",
                "description": table.description,
            }
        )
    return pl.DataFrame(
        rows,
        schema={
            "table": pl.String,
            "exists": pl.Boolean,
            "version": pl.Int64,
            "rows": pl.Int64,
            "files": pl.Int64,
            "size_mb": pl.Float64,
            "partitioned_by": pl.String,
            "description": pl.String,
        },
    )


def overview_kpis(lake: Lake) -> OverviewKpis:
    """Patients, patient-days, median daily steps over wear days, share of wear days."""
    row = _query(lake, OVERVIEW_KPIS_SQL, (), reads=(PATIENTS, DAILY_STEPS)).row(0, named=True)
    median, share = row["median_wear_day_steps"], row["wear_day_share"]
    return OverviewKpis(
        patients=int(row["patients"]),
        patient_days=int(row["patient_days"]),
        median_wear_day_steps=None if median is None else float(median),
        wear_day_share=None if share is None else float(share),
    )


def steps_by_disease_group(lake: Lake) -> pl.DataFrame:
    """Daily steps on wear days per disease group: counts, 5/25/50/75/95th percentiles, mean."""
    return _query(lake, STEPS_BY_DISEASE_GROUP_SQL, (), reads=(PATIENTS, DAILY_STEPS))


def patient_ids(
    lake: Lake,
    *,
    disease_group: str | None = None,
    search: str | None = None,
    limit: int = MAX_PATIENT_OPTIONS,
) -> list[str]:
    """Patient ids in order, optionally of one disease group or containing ``search``.

    Args:
        lake: the lake.
        disease_group: only patients of this group (all when None).
        search: only ids containing this text, case-insensitive (all when None or blank).
        limit: at most this many ids, so a selectbox never receives the whole registry.
    """
    text = search.strip() if search and search.strip() else None
    params = (disease_group, disease_group, text, text, limit)
    frame = _query(lake, PATIENT_IDS_SQL, params, reads=(PATIENTS,))
    return [str(value) for value in frame["patient_id"].to_list()]


def patient_profile(lake: Lake, patient_id: str) -> PatientProfile | None:
    """The patient's row of ``bronze/patients`` (None when unknown)."""
    frame = _query(lake, PATIENT_PROFILE_SQL, (patient_id,), reads=(PATIENTS,))
    if frame.is_empty():
        return None
    return PatientProfile(**frame.row(0, named=True))


def patient_daily_steps(lake: Lake, patient_id: str) -> pl.DataFrame:
    """The patient's days: date, steps, coverage_hours, n_samples, n_sources, is_wear_day."""
    return _query(lake, PATIENT_DAILY_STEPS_SQL, (patient_id,), reads=(DAILY_STEPS,))


def patient_therapies(lake: Lake, patient_id: str) -> pl.DataFrame:
    """The patient's therapy courses: therapy, start_date, end_date (null = ongoing)."""
    return _query(lake, PATIENT_THERAPIES_SQL, (patient_id,), reads=(THERAPIES,))


def patient_side_effects(lake: Lake, patient_id: str) -> pl.DataFrame:
    """The patient's reported side effects: date, effect, severity."""
    return _query(lake, PATIENT_SIDE_EFFECTS_SQL, (patient_id,), reads=(SIDE_EFFECTS,))


def recent_days(daily_steps: pl.DataFrame, days: int = RECENT_DAYS) -> pl.DataFrame:
    """The last ``days`` rows of a patient's daily steps, newest first."""
    return daily_steps.sort("date", descending=True).head(days)


def recent_job_runs(lake: Lake, limit: int = 100) -> pl.DataFrame:
    """The latest job runs, newest first, with status, duration, rows and error."""
    return _query(lake, RECENT_JOB_RUNS_SQL, (limit,), reads=(JOB_RUNS,))


def clear_caches() -> None:
    """Forget cached versions, connections and results (tests; after writing to the lake)."""
    _all_versions.clear()
    _connection.clear()
    _cached_query.clear()
    _lake_tables.clear()
