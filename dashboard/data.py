"""Every query the dashboard runs: SQL as named constants, run through DuckDB over the lake.

Pages call the public functions here and never see SQL, DuckDB or Delta. Queries bind their
parameters (``?``), never format values into SQL text.

Caching:

- the table versions of the lake are read at most every :data:`VERSION_TTL_SECONDS`;
- the DuckDB connection of the pages' own queries (``st.cache_resource``, one per lake, shared by
  every session: only the named queries below run on it) registers a table's view when a query
  first reads it, and again when the table has a new version (views are bound to files);
- analysts' SQL never runs there: each query gets a sandboxed connection of its own in a worker
  process (:mod:`lakehouse.sandbox`);
- each query result (``st.cache_data``) is keyed by the query, its parameters and the versions of
  the tables it reads, so a new pipeline run invalidates exactly the results it changed.
"""

from __future__ import annotations

import json
import math
import threading
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import date, timedelta
from urllib.parse import urlencode

import duckdb
import polars as pl
import streamlit as st
from streamlit.runtime.scriptrunner import add_script_run_ctx, get_script_run_ctx

from jobs.outlook import DECLINE_SHARE
from jobs.recent_activity import recent_activity, window_start
from lakehouse import sandbox
from lakehouse.audit import read as read_audit
from lakehouse.catalog import (
    ALERTS,
    BACKTESTS,
    DAILY_STEPS,
    DIAGNOSES,
    EXPLANATIONS,
    FORECASTS,
    JOB_RUNS,
    MONITOR_CHECKS,
    OUTLOOK,
    PATIENTS,
    QUARANTINE,
    REGISTRY,
    REIDENTIFICATION,
    SIDE_EFFECTS,
    TABLES,
    THERAPIES,
    TableSpec,
    table_by_path,
)
from lakehouse.feature_dictionary import (
    EXPLANATION_FAMILY,
    MAX_EXPLANATION_ROWS,
    ROLLING_WINDOWS,
    explanation_family,
    normalise_therapy,
    therapy_slug,
)
from lakehouse.feature_dictionary import THERAPIES as KNOWN_THERAPIES
from lakehouse.icd10 import icd10_name
from lakehouse.query import (
    PATIENT_FORECAST_SQL,
    QueryResult,
    connect,
    register,
    run_query,
)
from lakehouse.settings import get_settings
from lakehouse.storage import Lake, empty_frame
from models.base import ForecastInput
from models.baselines import UsualLevel, usual_days

VERSION_TTL_SECONDS = 10
RESULT_TTL_SECONDS = 3600
MAX_PATIENT_OPTIONS = 1000
# days of history drawn before the forecast on the patient page
HISTORY_DAYS = 730
DISEASE_GROUPS = ("MS", "PD", "RA", "OTHER")
# The cohort page's period at first: the last year of data.
DEFAULT_PERIOD_DAYS = 365
# Age on the last day of the chosen period, in bands; "unknown" without a birth year.
AGE_BANDS = ("under 40", "40-49", "50-59", "60-69", "70+", "unknown")
DECLINE_LIST_LENGTH = 50
# shown when no patient crosses the decline threshold: the patients nearest it
NEAREST_DECLINES = 10
WORKLIST_PAGE_ROWS = 25
SQL_ROW_CAP = 5_000
SQL_TIMEOUT_SECONDS = 20.0
# what one analyst's result may take in the server's memory (st.dataframe sends it to the browser)
SQL_RESULT_MB = 50
# DuckDB's memory for the dashboard's queries and the analysts' (exact medians over a 10,000-
# patient lake need more than 1 GB)
MEMORY_LIMIT = "3GB"
SQL_LIMITS = sandbox.Limits(
    timeout_seconds=SQL_TIMEOUT_SECONDS,
    row_cap=SQL_ROW_CAP,
    byte_cap=SQL_RESULT_MB * 10**6,
    memory_limit=MEMORY_LIMIT,
)

TableVersions = tuple[tuple[str, int | None], ...]

# ------------------------------------------------------------------------------------------- SQL

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

PATIENT_DIAGNOSES_SQL = """
SELECT code, diagnosed_on, description
FROM bronze.diagnoses
WHERE patient_id = ?
ORDER BY diagnosed_on, code
"""

# ------------------------------------------------------------------------------------- cohorts

# The patients of a cohort filter (bound parameters in the order of CohortFilter.params()):
# the period's last day four times (ages on that day), groups twice, age bands twice,
# therapies twice, then the period's last, last and first day (a therapy counts when any of its
# days falls in the period). A NULL list means "no filter".
_COHORT = """
cohort AS (
    SELECT
        p.patient_id,
        coalesce(p.disease_group, 'OTHER') AS disease_group,
        CASE
            WHEN p.birth_year IS NULL THEN 'unknown'
            WHEN year(CAST(? AS DATE)) - p.birth_year < 40 THEN 'under 40'
            WHEN year(CAST(? AS DATE)) - p.birth_year < 50 THEN '40-49'
            WHEN year(CAST(? AS DATE)) - p.birth_year < 60 THEN '50-59'
            WHEN year(CAST(? AS DATE)) - p.birth_year < 70 THEN '60-69'
            ELSE '70+'
        END AS age_band
    FROM bronze.patients AS p
),
chosen AS (
    SELECT c.*
    FROM cohort AS c
    WHERE (CAST(? AS VARCHAR[]) IS NULL OR list_contains(CAST(? AS VARCHAR[]), c.disease_group))
      AND (CAST(? AS VARCHAR[]) IS NULL OR list_contains(CAST(? AS VARCHAR[]), c.age_band))
      AND (
          CAST(? AS VARCHAR[]) IS NULL
          OR c.patient_id IN (
              SELECT t.patient_id
              FROM bronze.therapies AS t
              WHERE list_contains(CAST(? AS VARCHAR[]), t.therapy)
                AND t.start_date <= CAST(? AS DATE)
                AND coalesce(t.end_date, CAST(? AS DATE)) >= CAST(? AS DATE)
          )
      )
)
"""

COHORT_KPIS_SQL = f"""
WITH {_COHORT},
days AS (
    SELECT d.patient_id, d.date, d.steps, d.is_wear_day
    FROM silver.daily_steps AS d
    JOIN chosen USING (patient_id)
    WHERE d.month BETWEEN ? AND ? AND d.date BETWEEN CAST(? AS DATE) AND CAST(? AS DATE)
)
SELECT
    (SELECT count(*) FROM chosen) AS patients,
    (SELECT count(DISTINCT patient_id) FROM days) AS patients_with_data,
    (SELECT median(steps) FROM days WHERE is_wear_day) AS median_wear_day_steps
"""

# Quantiles are computed in DuckDB so the browser receives one row per group, whatever the size
# of the lake (all five from one sort per group). Non-wear days are left out: they are missing
# data, not low mobility.
COHORT_STEPS_BY_GROUP_SQL = f"""
WITH {_COHORT},
groups AS (
    SELECT
        chosen.disease_group,
        count(*) AS wear_days,
        count(DISTINCT d.patient_id) AS patients,
        quantile_cont(d.steps, [0.05, 0.25, 0.50, 0.75, 0.95]) AS q,
        avg(d.steps) AS mean
    FROM silver.daily_steps AS d
    JOIN chosen USING (patient_id)
    WHERE d.is_wear_day AND d.month BETWEEN ? AND ?
      AND d.date BETWEEN CAST(? AS DATE) AND CAST(? AS DATE)
    GROUP BY 1
)
SELECT
    disease_group, wear_days, patients,
    q[1] AS p05, q[2] AS p25, q[3] AS median, q[4] AS p75, q[5] AS p95,
    mean
FROM groups
ORDER BY 1
"""

COHORT_WEEKLY_TREND_SQL = f"""
WITH {_COHORT}
SELECT
    chosen.disease_group,
    CAST(date_trunc('week', d.date) AS DATE) AS week,
    median(d.steps) AS median_steps,
    count(DISTINCT d.patient_id) AS patients
FROM silver.daily_steps AS d
JOIN chosen USING (patient_id)
WHERE d.is_wear_day AND d.month BETWEEN ? AND ?
  AND d.date BETWEEN CAST(? AS DATE) AND CAST(? AS DATE)
GROUP BY 1, 2
ORDER BY 1, 2
"""

# The champion's outlook from each patient's latest forecast origin.
COHORT_DECLINE_SQL = f"""
WITH {_COHORT},
latest AS (
    SELECT patient_id, max(origin_date) AS origin_date
    FROM gold.outlook
    GROUP BY patient_id
)
SELECT
    o.patient_id,
    chosen.disease_group,
    chosen.age_band,
    o.origin_date,
    o.model,
    o.baseline_steps,
    o.next_quarter_steps,
    o.year_end_steps,
    o.year_end_change
FROM gold.outlook AS o
JOIN latest USING (patient_id, origin_date)
JOIN chosen USING (patient_id)
WHERE o.champion AND o.year_end_change <= ?
ORDER BY o.year_end_change, o.patient_id
LIMIT ?
"""


# Every patient of the cohort (the worklist's rows).
COHORT_PATIENTS_SQL = f"""
WITH {_COHORT}
SELECT patient_id, disease_group, age_band FROM chosen
"""

# The champion's year-end change from each patient's latest forecast origin, for every patient
# of the cohort that has one.
COHORT_OUTLOOK_SQL = f"""
WITH {_COHORT},
latest AS (
    SELECT patient_id, max(origin_date) AS origin_date
    FROM gold.outlook
    GROUP BY patient_id
)
SELECT o.patient_id, o.model, o.origin_date, o.year_end_change
FROM gold.outlook AS o
JOIN latest USING (patient_id, origin_date)
JOIN chosen USING (patient_id)
WHERE o.champion
"""

THERAPY_NAMES_SQL = """
SELECT DISTINCT therapy FROM bronze.therapies ORDER BY therapy
"""

# ----------------------------------------------------------------------------------- forecasts


# The average contribution of each feature over the chosen target days: a feature outside a
# day's top contributions counts as 0 there (its share is in that day's other_features), so the
# averages still add up to the mean forecast of those days.
PATIENT_EXPLANATION_SQL = """
WITH rows AS (
    SELECT target_date, feature, contribution
    FROM gold.explanations
    WHERE origin_month = ? AND patient_id = ? AND model = ? AND origin_date = ?
      AND target_date BETWEEN CAST(? AS DATE) AND CAST(? AS DATE)
)
SELECT
    feature,
    sum(contribution) / (SELECT count(DISTINCT target_date) FROM rows) AS contribution
FROM rows
GROUP BY feature
"""

# How the patient's forecast was chosen: the own-backtest errors of their latest origin and the
# newest registry's shrinkage of each learned model for their group.
FORECAST_CHOICE_SQL = """
WITH latest AS (
    SELECT max(origin_date) AS origin_date FROM gold.outlook WHERE patient_id = ?
)
SELECT model, champion, own_year_mae
FROM gold.outlook
WHERE patient_id = ? AND origin_date = (SELECT origin_date FROM latest)
"""

# The champion's summary of the patient's latest forecast (the worklist's and the decline
# list's figures for one patient).
PATIENT_OUTLOOK_SQL = """
SELECT model, origin_date, baseline_steps, next_quarter_steps, year_end_steps, year_end_change
FROM gold.outlook
WHERE patient_id = ? AND champion
  AND origin_date = (SELECT max(origin_date) FROM gold.outlook WHERE patient_id = ?)
ORDER BY model
LIMIT 1
"""

MODEL_SHRINKAGE_SQL = """
SELECT split_part(model_id, ':', 1) AS model, status, shrinkage
FROM models.registry
WHERE cluster = ? AND version = (SELECT max(version) FROM models.registry)
"""

# The newest registry's metrics of a model for the patient's group (its therapy evidence).
THERAPY_EVIDENCE_SQL = """
SELECT r.metrics
FROM models.registry AS r
JOIN bronze.patients AS p ON p.disease_group = r.cluster
WHERE p.patient_id = ? AND split_part(r.model_id, ':', 1) = ?
  AND r.version = (SELECT max(version) FROM models.registry)
"""

CLUSTER_ACCURACY_SQL = """
WITH latest AS (SELECT max(trained_at) AS trained_at FROM gold.backtests)
SELECT
    model,
    horizon_days,
    avg(mae) AS mae,
    avg(rmse) AS rmse,
    avg(mase) AS mase,
    avg(coverage) AS coverage,
    count(*) AS origins,
    max(patients) AS patients
FROM gold.backtests
WHERE cluster = ? AND trained_at = (SELECT trained_at FROM latest)
GROUP BY model, horizon_days
ORDER BY horizon_days, mae
"""

# --------------------------------------------------------------------------------- operations

# Reasons carry numbers (values, line numbers): grouped with the digits replaced by N.
QUARANTINE_BY_REASON_SQL = """
SELECT
    regexp_replace(reason, '[0-9]+', 'N', 'g') AS reason,
    count(*) AS rows,
    count(DISTINCT source_file) AS files,
    max(quarantined_at) AS latest
FROM bronze.quarantine
GROUP BY 1
ORDER BY rows DESC, reason
LIMIT 50
"""

ALERTS_SQL = """
SELECT raised_at, "check", subject, message, resolved_at
FROM ops.alerts
ORDER BY resolved_at IS NULL DESC, raised_at DESC, subject
LIMIT ?
"""

LATEST_CHECKS_SQL = """
SELECT checked_at, "check", subject, metric, value, reference, threshold, status, details
FROM ops.monitor_checks
WHERE run_id = (SELECT arg_max(run_id, checked_at) FROM ops.monitor_checks)
ORDER BY "check", subject, metric
"""

RECENT_JOB_RUNS_SQL = """
SELECT
    started_at,
    job,
    status,
    date_diff('millisecond', started_at, finished_at) / 1000.0 AS duration_seconds,
    rows_in,
    rows_out,
    cpu_seconds,
    bytes_read / 1e6 AS mb_read,
    bytes_written / 1e6 AS mb_written,
    peak_rss_mb,
    error,
    engine,
    run_id
FROM ops.job_runs
ORDER BY started_at DESC
LIMIT ?
"""

# ------------------------------------------------------------------------------- value objects


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
def _version(uri: str, path: str, _lake: Lake) -> int | None:
    return _lake.version(table_by_path(path))


def _all_versions(uri: str, _lake: Lake) -> TableVersions:
    return versions_of(_lake, TABLES)


def versions_of(lake: Lake, tables: Sequence[TableSpec]) -> TableVersions:
    """The current versions of ``tables`` (each re-read at most every 10 s), in their order."""
    return tuple((table.path, _version(lake.uri, table.path, lake)) for table in tables)


@dataclass
class _Connection:
    """A sandboxed DuckDB connection, the lock that serialises its use across browser sessions,
    and the version each table was registered at. A table is registered when a query first reads
    it, and again when it has a new version: a page never waits for the Delta logs of tables it
    does not show (bronze/step_samples' is the largest)."""

    con: duckdb.DuckDBPyConnection
    lock: threading.Lock
    lake: Lake
    registered: dict[str, int | None] = field(default_factory=dict)

    def ensure(self, versions: TableVersions) -> None:
        """Register the tables of ``versions`` not registered at that version (call with the
        lock held)."""
        for path, version in versions:
            if path not in self.registered or self.registered[path] != version:
                register(self.con, self.lake, table_by_path(path))
                self.registered[path] = version


@st.cache_resource(show_spinner=False)
def _connection(uri: str, _lake: Lake) -> _Connection:
    con = connect(_lake, sandbox=True, memory_limit=MEMORY_LIMIT, tables=())
    return _Connection(con, threading.Lock(), _lake)


@st.cache_data(ttl=RESULT_TTL_SECONDS, max_entries=512, show_spinner=False)
def _cached_query(
    uri: str, versions: TableVersions, sql: str, params: tuple[object, ...], _lake: Lake
) -> pl.DataFrame:
    connection = _connection(uri, _lake)
    with connection.lock:
        connection.ensure(versions)
        result = run_query(connection.con, sql, list(params), row_cap=100_000)
    frame = pl.from_arrow(result.table)
    assert isinstance(frame, pl.DataFrame)
    return frame


def _query(
    lake: Lake, sql: str, params: Sequence[object], *, reads: Sequence[TableSpec]
) -> pl.DataFrame:
    """Run ``sql`` with bound ``params``, cached until a table in ``reads`` (every table the
    query reads) changes."""
    return _cached_query(lake.uri, versions_of(lake, reads), sql, tuple(params), lake)


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


def patient_diagnoses(lake: Lake, patient_id: str) -> pl.DataFrame:
    """The patient's diagnoses, oldest first: ``code, name, diagnosed_on``. The name is the
    ICD-10-CM title of the code (:func:`icd10_name`), else the description the clinical file gave,
    else "code not in ICD-10-CM"."""
    frame = _query(lake, PATIENT_DIAGNOSES_SQL, (patient_id,), reads=(DIAGNOSES,))
    names = [
        icd10_name(code) or (str(given).strip() if given and str(given).strip() else None)
        for code, given in frame.select("code", "description").iter_rows()
    ]
    return frame.select(
        "code",
        pl.Series("name", names, dtype=pl.String).fill_null(UNKNOWN_CODE),
        "diagnosed_on",
    )


UNKNOWN_CODE = "code not in ICD-10-CM"


@dataclass(frozen=True)
class PatientSummary:
    """What a clinician reads first about a patient, as of a reference day.

    Args:
        reference: the day the figures are measured up to (yesterday on the page).
        age: years between the birth year and the reference day's year (None when unknown); with
            only a birth year on record it may be one year more than the true age.
        disease_group: MS, PD, RA or OTHER.
        diagnoses: ``code, name, diagnosed_on`` (:func:`patient_diagnoses`).
        current_therapies: ``therapy, start_date`` of the courses running on the reference day.
        activity: the patient's row of :func:`jobs.recent_activity.recent_activity`: last day
            with data, days without data, worn days of the last 28 and the wear share, 30-day
            mean, baseline and change, and the flags.
    """

    reference: date
    age: int | None
    disease_group: str
    diagnoses: pl.DataFrame
    current_therapies: pl.DataFrame
    activity: dict[str, object]


def patient_activity(daily_steps: pl.DataFrame, reference: date) -> dict[str, object]:
    """The patient's recent activity (:func:`jobs.recent_activity.recent_activity`) from their
    days (``date, steps, is_wear_day`` as :func:`patient_daily_steps` returns them)."""
    days = daily_steps.select("date", "steps", "is_wear_day").with_columns(
        patient_id=pl.lit("patient")
    )
    last = days["date"].max() if days.height else None
    last_days = pl.DataFrame(
        {"patient_id": ["patient"], "last_day": [last]},
        schema={"patient_id": pl.String, "last_day": pl.Date},
    )
    return recent_activity(days, last_days, reference).row(0, named=True)


def patient_summary(
    lake: Lake,
    patient_id: str,
    reference: date,
    *,
    daily_steps: pl.DataFrame | None = None,
    therapies: pl.DataFrame | None = None,
) -> PatientSummary | None:
    """The patient's summary as of ``reference`` (None when the patient is unknown). Pass the
    daily steps and therapies already read for the page to avoid reading them twice."""
    profile = patient_profile(lake, patient_id)
    if profile is None:
        return None
    days = patient_daily_steps(lake, patient_id) if daily_steps is None else daily_steps
    courses = patient_therapies(lake, patient_id) if therapies is None else therapies
    running = courses.filter(
        (pl.col("start_date") <= reference)
        & (pl.col("end_date").is_null() | (pl.col("end_date") >= reference))
    ).select("therapy", "start_date")
    return PatientSummary(
        reference=reference,
        age=None if profile.birth_year is None else reference.year - profile.birth_year,
        disease_group=profile.disease_group,
        diagnoses=patient_diagnoses(lake, patient_id),
        current_therapies=running,
        activity=patient_activity(days, reference),
    )


# -------------------------------------------------------------------------------------- cohorts


@dataclass(frozen=True)
class CohortFilter:
    """Who and when the cohort views look at; an empty selection means "everyone".

    Args:
        first_day: first day of the period (daily steps, therapies given in it).
        last_day: last day of the period (ages are taken on this day).
        disease_groups: only these groups.
        age_bands: only these bands of :data:`AGE_BANDS`.
        therapies: only patients given one of these therapies during the period.
    """

    first_day: date
    last_day: date
    disease_groups: tuple[str, ...] = ()
    age_bands: tuple[str, ...] = ()
    therapies: tuple[str, ...] = ()

    @classmethod
    def default(cls, period: tuple[date, date]) -> CohortFilter:
        """What the cohort page shows first: everyone, the last year of the data ``period``
        (its first and last day)."""
        first_day, last_day = period
        return cls(
            first_day=max(first_day, last_day - timedelta(days=DEFAULT_PERIOD_DAYS - 1)),
            last_day=last_day,
        )

    def period(self) -> tuple[object, ...]:
        """The bound parameters of a period filter on daily steps: first and last month (the
        partitions to read), first and last day."""
        months = (self.first_day.strftime("%Y-%m"), self.last_day.strftime("%Y-%m"))
        return (*months, self.first_day, self.last_day)

    def params(self) -> tuple[object, ...]:
        """The bound parameters of the cohort's SQL, in order."""

        def chosen(values: tuple[str, ...]) -> list[str] | None:
            return list(values) if values else None

        groups, bands, therapies = (
            chosen(self.disease_groups),
            chosen(self.age_bands),
            chosen(self.therapies),
        )
        last, first = self.last_day, self.first_day
        ages = (last, last, last, last)
        return (*ages, groups, groups, bands, bands, therapies, therapies, last, last, first)


@dataclass(frozen=True)
class CohortKpis:
    """The headline figures of a cohort.

    Args:
        patients: patients matching the filters.
        patients_with_data: of those, patients with daily steps in the period.
        median_wear_day_steps: median daily steps over their wear days (None without any).
    """

    patients: int
    patients_with_data: int
    median_wear_day_steps: float | None


def data_period(lake: Lake) -> tuple[date, date] | None:
    """The first and last day of daily steps in the lake (None before any), from the Delta log's
    file statistics: no data file is read."""
    return _data_period(lake.uri, versions_of(lake, (DAILY_STEPS,)), lake)


@st.cache_data(ttl=RESULT_TTL_SECONDS, show_spinner=False)
def _data_period(uri: str, versions: TableVersions, _lake: Lake) -> tuple[date, date] | None:
    stats = _lake.file_stats(DAILY_STEPS)
    if not stats.height or not stats["num_records"].sum():
        return None
    first, last = stats["min.date"].min(), stats["max.date"].max()
    if not (isinstance(first, date) and isinstance(last, date)):  # files written without stats
        row = _lake.scan(DAILY_STEPS).select(
            pl.col("date").min().alias("first"), pl.col("date").max().alias("last")
        )
        first, last = row.collect().row(0)
    return first, last


def therapy_names(lake: Lake) -> list[str]:
    """Every therapy name recorded, in order."""
    frame = _query(lake, THERAPY_NAMES_SQL, (), reads=(THERAPIES,))
    return [str(value) for value in frame["therapy"].to_list()]


_COHORT_TABLES = (PATIENTS, THERAPIES)


def cohort_kpis(lake: Lake, cohort: CohortFilter) -> CohortKpis:
    """Patients, patients with data and median daily steps on wear days in the period (wear
    and data freshness are the worklist's, :func:`worklist`)."""
    params = (*cohort.params(), *cohort.period())
    row = _query(lake, COHORT_KPIS_SQL, params, reads=(*_COHORT_TABLES, DAILY_STEPS)).row(
        0, named=True
    )
    median = row["median_wear_day_steps"]
    return CohortKpis(
        patients=int(row["patients"]),
        patients_with_data=int(row["patients_with_data"]),
        median_wear_day_steps=None if median is None else float(median),
    )


def cohort_steps_by_group(lake: Lake, cohort: CohortFilter) -> pl.DataFrame:
    """Daily steps on wear days in the period per disease group: counts, 5/25/50/75/95th
    percentiles, mean."""
    params = (*cohort.params(), *cohort.period())
    return _query(lake, COHORT_STEPS_BY_GROUP_SQL, params, reads=(*_COHORT_TABLES, DAILY_STEPS))


def cohort_weekly_trend(lake: Lake, cohort: CohortFilter) -> pl.DataFrame:
    """Median daily steps on wear days per disease group and calendar week (Monday)."""
    params = (*cohort.params(), *cohort.period())
    return _query(lake, COHORT_WEEKLY_TREND_SQL, params, reads=(*_COHORT_TABLES, DAILY_STEPS))


def declining_patients(
    lake: Lake,
    cohort: CohortFilter,
    *,
    limit: int = DECLINE_LIST_LENGTH,
    threshold: float = -DECLINE_SHARE,
) -> pl.DataFrame:
    """Patients of the cohort whose champion forecast for the last quarter of the year ahead is
    at least :data:`jobs.outlook.DECLINE_SHARE` below their 180-day baseline, largest fall
    first (from each patient's latest forecast). ``threshold=math.inf`` lists the patients
    nearest the threshold whatever their change (:data:`NEAREST_DECLINES`)."""
    params = (*cohort.params(), threshold, limit)
    return _query(lake, COHORT_DECLINE_SQL, params, reads=(*_COHORT_TABLES, OUTLOOK))


DEFAULT_WORKLIST_ORDER = "needs attention first"
# a patient who never sent data has been silent longest
_SILENCE = pl.col("days_without_data").fill_null(2**31 - 1)
# each order: sort keys and whether each is descending (missing values last, then by patient)
WORKLIST_ORDERS: dict[str, tuple[list[pl.Expr], list[bool]]] = {
    "needs attention first": (
        [pl.col("attention"), _SILENCE, pl.col("forecast_change"), pl.col("change")],
        [True, True, False, False],
    ),
    "longest without data": ([_SILENCE], [True]),
    "least wear": ([pl.col("wear")], [False]),
    "largest fall, last 30 days": ([pl.col("change")], [False]),
    "largest fall expected": ([pl.col("forecast_change")], [False]),
    "patient": ([pl.col("patient_id")], [False]),
}
WORKLIST_SCHEMA = pl.Schema(
    {
        "patient_id": pl.String,
        "disease_group": pl.String,
        "age_band": pl.String,
        "attention": pl.Int32,
        "reasons": pl.String,
        "last_day": pl.Date,
        "days_without_data": pl.Int32,
        "worn_days": pl.Int32,
        "wear": pl.Float64,
        "recent_mean": pl.Float64,
        "baseline": pl.Float64,
        "change": pl.Float64,
        "forecast_change": pl.Float64,
        "no_data": pl.Boolean,
        "low_wear": pl.Boolean,
        "decline_expected": pl.Boolean,
    }
)


def worklist(
    lake: Lake, cohort: CohortFilter, reference: date, *, order: str = DEFAULT_WORKLIST_ORDER
) -> pl.DataFrame:
    """Every patient of the cohort with their recent activity as of ``reference``
    (:func:`jobs.recent_activity.recent_activity`), the champion's forecast change for months
    10-12 against their baseline (``forecast_change``, from their latest forecast) and the flags
    a clinician acts on: ``no data`` (7+ days), ``low wear`` (under 70% of the last 28 days),
    ``decline expected`` (a forecast change at or below minus :data:`DECLINE_SHARE`).
    ``attention`` counts the flags and ``reasons`` names them; rows in :data:`WORKLIST_ORDERS`
    ``order``. :data:`WORKLIST_SCHEMA` columns."""
    patients = _query(lake, COHORT_PATIENTS_SQL, cohort.params(), reads=(*_COHORT_TABLES,))
    outlook = _query(lake, COHORT_OUTLOOK_SQL, cohort.params(), reads=(*_COHORT_TABLES, OUTLOOK))
    activity = recent_activity_of(lake, reference)
    rows = (
        patients.join(activity, on="patient_id", how="left")
        .join(
            outlook.select("patient_id", forecast_change="year_end_change"),
            on="patient_id",
            how="left",
        )
        .with_columns(
            # a patient without any daily steps has no activity row: no data, no wear
            no_data=pl.col("no_data").fill_null(True),
            low_wear=pl.col("low_wear").fill_null(True),
            worn_days=pl.col("worn_days").fill_null(0),
            wear=pl.col("wear").fill_null(0.0),
            decline_expected=(pl.col("forecast_change") <= -DECLINE_SHARE).fill_null(False),
        )
    )
    no_data = (
        pl.when(pl.col("days_without_data").is_null())
        .then(pl.lit("no data yet"))
        .otherwise(pl.format("no data for {} days", pl.col("days_without_data")))
    )
    low_wear = pl.format("wear {}%", (pl.col("wear") * 100).round(0).cast(pl.Int32))
    decline = pl.format(
        "decline expected ({}%)", (pl.col("forecast_change") * 100).round(0).cast(pl.Int32)
    )
    reasons = pl.concat_list(
        pl.when(pl.col("no_data")).then(no_data),
        pl.when(pl.col("low_wear") & ~pl.col("no_data")).then(low_wear),
        pl.when(pl.col("decline_expected")).then(decline),
    ).list.drop_nulls()
    by, descending = WORKLIST_ORDERS.get(order, WORKLIST_ORDERS[DEFAULT_WORKLIST_ORDER])
    return (
        rows.with_columns(
            attention=reasons.list.len().cast(pl.Int32),
            reasons=reasons.list.join(" · "),
        )
        .select(list(WORKLIST_SCHEMA))
        .cast(WORKLIST_SCHEMA)
        .sort(
            [*by, pl.col("patient_id")],
            descending=[*descending, False],
            nulls_last=True,
            maintain_order=True,
        )
    )


def recent_activity_of(lake: Lake, reference: date) -> pl.DataFrame:
    """Every patient's recent activity as of ``reference`` (:func:`jobs.recent_activity.
    recent_activity`), read from the lake once per version of silver/daily_steps and day; when
    :func:`start_recent_activity` is computing it, its result."""
    key = (lake.uri, versions_of(lake, (DAILY_STEPS,)), reference)
    with _COMPUTING_LOCK:
        computing = _COMPUTING.get(key)
    if computing is not None:
        return computing.result()
    return _recent_activity(*key, lake)


# recent activity being computed ahead of the page's need, by cache key
_COMPUTING: dict[tuple[str, TableVersions, date], Future[pl.DataFrame]] = {}
_COMPUTING_LOCK = threading.Lock()
_AHEAD = ThreadPoolExecutor(max_workers=1, thread_name_prefix="recent-activity")


def start_recent_activity(lake: Lake, reference: date) -> None:
    """Start computing :func:`recent_activity_of` on a thread of its own (Polars), so that it
    runs while the page's DuckDB queries run; nothing happens when its result is cached or being
    computed. The page's own call then waits for it."""
    key = (lake.uri, versions_of(lake, (DAILY_STEPS,)), reference)
    context = get_script_run_ctx()

    def compute() -> pl.DataFrame:
        if context is not None:  # the cache belongs to the page's session, as on its thread
            add_script_run_ctx(threading.current_thread(), context)
        try:
            return _recent_activity(*key, lake)
        finally:
            with _COMPUTING_LOCK:
                _COMPUTING.pop(key, None)

    with _COMPUTING_LOCK:
        if key not in _COMPUTING:
            _COMPUTING[key] = _AHEAD.submit(compute)


@st.cache_data(ttl=RESULT_TTL_SECONDS, max_entries=16, show_spinner=False)
def _recent_activity(
    uri: str, versions: TableVersions, reference: date, _lake: Lake
) -> pl.DataFrame:
    first = window_start(reference)
    daily = (
        _lake.scan(DAILY_STEPS)
        .filter(
            (pl.col("month") >= first.strftime("%Y-%m"))
            & pl.col("date").is_between(first, reference)
        )
        .select("patient_id", "date", "steps", "is_wear_day")
        .collect()
    )
    table = _lake.scan(DAILY_STEPS)
    # a day after the reference day (today's first samples) is the last day with data too
    later = table.filter(
        (pl.col("month") >= reference.strftime("%Y-%m")) & (pl.col("date") > reference)
    ).select("patient_id", "date")
    last_days = (
        pl.concat([daily.lazy().select("patient_id", "date"), later])
        .group_by("patient_id")
        .agg(last_day=pl.col("date").max())
        .collect()
    )
    # patients without a day in the window: their last day from the older months, read for
    # them alone (rare: patients who stopped sending data half a year ago or more)
    silent = (
        _lake.scan(PATIENTS)
        .select("patient_id")
        .collect()
        .join(last_days, on="patient_id", how="anti")["patient_id"]
    )
    if silent.len():
        older = (
            table.filter(pl.col("patient_id").is_in(silent.implode()) & (pl.col("date") < first))
            .group_by("patient_id")
            .agg(last_day=pl.col("date").max())
            .collect()
        )
        last_days = pl.concat([last_days, older])
    return recent_activity(daily, last_days, reference)


def has_forecasts(lake: Lake) -> bool:
    """Whether the forecast job has written its summary (gold/outlook) yet."""
    return versions_of(lake, (OUTLOOK,))[0][1] is not None


PATIENT_PAGE = "patient"


def with_patient_links(frame: pl.DataFrame) -> pl.DataFrame:
    """``frame`` with an ``open`` column: the link to each row's patient page."""
    return frame.with_columns(
        open=pl.col("patient_id").map_elements(
            lambda pid: f"{PATIENT_PAGE}?{urlencode({'patient_id': pid})}",
            return_dtype=pl.String,
        )
    )


# ------------------------------------------------------------------------------------ forecasts


def patient_forecast(lake: Lake, patient_id: str) -> pl.DataFrame:
    """The patient's forecasts from their latest origin, every model, the champion marked:
    ``target_date, model, champion, yhat, yhat_lower, yhat_upper, origin_date`` (empty when
    the patient has none): the rows ``mobility export-forecast`` writes."""
    return _query(lake, PATIENT_FORECAST_SQL, (patient_id, patient_id), reads=(FORECASTS, OUTLOOK))


def patient_explanation(
    lake: Lake, patient_id: str, model: str, origin: date, first_day: date, last_day: date
) -> pl.DataFrame:
    """The model's own explanation of the patient's forecast over ``first_day..last_day`` (one
    day or a month), as stored in gold/explanations: ``feature, family, contribution`` with the
    average contribution per day and each row's :func:`explanation_family`. The contributions
    add up to the mean forecast of those days. Empty for a model that stores none (the
    baselines, Prophet)."""
    # the origin's month names the partition: only its files are opened
    params = (origin.strftime("%Y-%m"), patient_id, model, origin, first_day, last_day)
    frame = _query(lake, PATIENT_EXPLANATION_SQL, params, reads=(EXPLANATIONS,))
    return frame.select(
        "feature",
        pl.col("feature").map_elements(explanation_family, return_dtype=pl.String).alias("family"),
        "contribution",
    ).sort("feature")


# ----------------------------------------------------------------- the forecast the page shows

# The models in the page's words (the registry's names are code); an unknown model shows its own.
MODEL_NAMES: dict[str, str] = {
    "usual_level": "usual level (13-week median, by weekday)",
    "trailing_mean_28d": "28-day average",
    "weekday_profile_8w": "weekday pattern",
    "seasonal_naive_7d": "same weekday last week",
    "prophet": "seasonal model (Prophet)",
    "ebm_cluster": "ML model (one per disease group)",
    "ebm_global": "ML model (all patients)",
    "cluster_level": "typical patient of the disease group",
}
# Drawn when none of the patient's forecasts is by their group's champion (before the first
# training, or when the champion could not forecast this patient): the first one present.
FALLBACK_MODELS = ("usual_level", "trailing_mean_28d", "weekday_profile_8w", "cluster_level")
# A therapy's effect learned from fewer patients' starts and stops than this is shown as uncertain.
THERAPY_EVIDENCE_PATIENTS = 5
# A breakdown that misses the forecast by more than this (steps/day) gets a row for the rest.
UNEXPLAINED_STEPS = 0.5
# the generic name of each therapy with inputs of its own, by slug
THERAPY_NAMES = {therapy.slug: therapy.name for therapy in KNOWN_THERAPIES}
_WEEKDAY_NAMES = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
EXPLANATION_SCHEMA = pl.Schema(
    {"family": pl.String, "label": pl.String, "detail": pl.String, "contribution": pl.Float64}
)


def model_name(model: str) -> str:
    """The model's name in the page's words (:data:`MODEL_NAMES`)."""
    return MODEL_NAMES.get(model, model)


def with_model_names(frame: pl.DataFrame) -> pl.DataFrame:
    """``frame`` with its ``model`` column in the page's words (:func:`model_name`)."""
    return frame.with_columns(
        pl.col("model").replace_strict(MODEL_NAMES, default=pl.col("model"), return_dtype=pl.String)
    )


def shown_model(forecast: pl.DataFrame) -> str | None:
    """The model whose forecast the page draws and explains: the champion of the patient's group
    among the rows of :func:`patient_forecast`, else the first of :data:`FALLBACK_MODELS` there,
    else the first model by name (None without rows)."""
    if forecast.is_empty():
        return None
    champion = forecast.filter(pl.col("champion"))["model"].unique().sort().to_list()
    if champion:
        return str(champion[0])
    models = forecast["model"].unique().sort().to_list()
    return next((m for m in FALLBACK_MODELS if m in models), str(models[0]))


@dataclass(frozen=True)
class ForecastExplanation:
    """What makes up one model's mean forecast over some days, in rows a clinician reads.

    Args:
        model: the model explained.
        rows: ``family, label, detail, contribution`` (:data:`EXPLANATION_SCHEMA`), at most
            :data:`MAX_EXPLANATION_ROWS`: the first row is the level the forecast starts from,
            each other row what one family of inputs adds or takes away (steps per day); a
            ``rest`` row holds what a stored breakdown misses. They sum to ``forecast``.
        forecast: the mean forecast of the days (steps per day), from the forecast rows.
        days: how many days are explained.
        from_model: the rows are the model's own contributions (gold/explanations); else they
            are worked out from the patient's data and the forecast rows (what a baseline is).
        summary: one or two sentences: what this forecast is, with its numbers.
    """

    model: str
    rows: pl.DataFrame
    forecast: float
    days: int
    from_model: bool
    summary: str


def forecast_explanation(
    lake: Lake,
    patient_id: str,
    forecast: pl.DataFrame,
    daily_steps: pl.DataFrame,
    therapies: pl.DataFrame,
    *,
    model: str,
    first_day: date,
    last_day: date,
) -> ForecastExplanation | None:
    """The explanation of ``model``'s forecast of ``first_day..last_day``, whatever the model.

    A model that stores contributions (the EBMs) is explained by them, grouped into the
    clinical families of the feature dictionary (:func:`group_by_family`). Any other is
    explained as what it is, from the patient's worn days before the origin and the forecast
    rows (:func:`computed_explanation`): the 28-day average as the average of those days, the
    weekday pattern as that plus each weekday's difference, and so on. A therapy that starts or
    stops between the origin and a day explained has a row of its own, by name. The rows always
    add up to the forecast: should a breakdown miss it (data changed since the forecast was
    made), a row says by how much.

    Args:
        lake: the lake.
        patient_id: the patient.
        forecast: the patient's rows of :func:`patient_forecast`.
        daily_steps: the patient's rows of :func:`patient_daily_steps`.
        therapies: the patient's rows of :func:`patient_therapies`.
        model: the model to explain (:func:`shown_model`).
        first_day: first day explained.
        last_day: last day explained.

    Returns:
        None when ``model`` has no forecast for those days.
    """
    of_model = forecast.filter(pl.col("model") == model).sort("target_date")
    days = of_model.filter(pl.col("target_date").is_between(first_day, last_day))
    if days.is_empty():
        return None
    origin = days["origin_date"][0]
    assert isinstance(origin, date)
    total = float(days["yhat"].mean())  # type: ignore[arg-type]
    changes = therapy_changes(therapies, origin, first_day, last_day)
    stored = patient_explanation(lake, patient_id, model, origin, first_day, last_day)
    if stored.height:
        rows = group_by_family(stored, changes, therapy_evidence(lake, patient_id, model))
        if "recent_level" in stored["feature"]:
            summary = (
                f"The {model_name(model)} starts from the patient's usual level (the median "
                "of their worn days of the last 13 weeks, by weekday) and adds what it learned "
                "from many patients' histories, by group of inputs: only as much of it as "
                "earned its place in past forecasts, and never so much that a quarter leaves "
                "the range of the patient's own last year."
            )
        else:
            summary = (
                f"The {model_name(model)} starts from the patient's recent level, "
                f"{rows['contribution'][0]:,.0f} steps/day, and adds what it learned from many "
                "patients' histories, by group of inputs."
            )
    else:
        rows, summary = computed_explanation(
            model, of_model, days, wear_before(daily_steps, origin), origin, changes
        )
    rest = total - math.fsum(rows["contribution"])
    if abs(rest) >= UNEXPLAINED_STEPS:
        rows = _with_family(
            rows,
            "rest",
            "Rest of the stored forecast",
            "What the breakdown above does not cover: the data changed since the forecast was "
            "made, or some days have no breakdown stored.",
            rest,
        )
    return ForecastExplanation(
        model=model,
        rows=limit_rows(rows),
        forecast=total,
        days=days.height,
        from_model=bool(stored.height),
        summary=summary,
    )


def group_by_family(
    contributions: pl.DataFrame,
    changes: dict[str, str],
    evidence: dict[str, int] | None = None,
) -> pl.DataFrame:
    """Stored contributions (``feature, family, contribution``: :func:`patient_explanation`) as
    one row per clinical family, the recent level first, the others by size, ``other`` last.

    A therapy's inputs make a row of their own, labelled with the therapy's name and what
    changes, when the therapy starts or stops in the days explained (``changes``, from
    :func:`therapy_changes`); otherwise they are the model's usual allowance for a therapy that
    does not change and count in ``other``. Every contribution lands in exactly one row. With
    ``evidence`` (:func:`therapy_evidence`), a therapy's label says on how many patients' starts
    and stops its effect rests, and that it is uncertain under
    :data:`THERAPY_EVIDENCE_PATIENTS`.
    """
    level = math.fsum(contributions.filter(pl.col("feature") == "baseline")["contribution"])
    # served as an adjustment of the usual level (models.guard): its level is that median
    served = "recent_level" in contributions["feature"]
    totals: dict[str, float] = {}
    for family, contribution in contributions.select("family", "contribution").iter_rows():
        if family.startswith("therapy:") and family.removeprefix("therapy:") not in changes:
            family = "other"
        totals[family] = totals.get(family, 0.0) + contribution
    for slug in changes:
        totals.setdefault(f"therapy:{slug}", 0.0)
    rows = []
    for family, value in totals.items():
        if family.startswith("therapy:"):
            slug = family.removeprefix("therapy:")
            label = changes[slug]
            detail = (
                f"What the model expects from this change, learned from patients who started "
                f"or stopped the same therapy: {value:+,.0f} steps/day."
            )
            if evidence is not None:
                patients = evidence.get(slug, 0)
                label += f" (learned from {patients} patient{'s' if patients != 1 else ''}"
                label += ": uncertain)" if patients < THERAPY_EVIDENCE_PATIENTS else ")"
                detail += (
                    f" The model saw {patients} patient(s) start or stop it in its training "
                    "data"
                    + (
                        ": too few to be sure of the effect, read it as a hint."
                        if patients < THERAPY_EVIDENCE_PATIENTS
                        else "."
                    )
                )
        else:
            label = EXPLANATION_FAMILY[family].label
            detail = EXPLANATION_FAMILY[family].description
            if family == "level" and served:
                detail += (
                    f" Median of worn days of the last 13 weeks: {level:,.0f} steps/day; the "
                    f"last days and months against that: {value - level:+,.0f}."
                )
            elif family == "level":
                detail += (
                    f" Average of worn days, the last weeks counting most: {level:,.0f} steps/"
                    f"day; the last days and months against that: {value - level:+,.0f}."
                )
        rows.append({"family": family, "label": label, "detail": detail, "contribution": value})
    rows.sort(key=lambda row: row["family"] != "level")  # where the forecast starts, first
    return _in_order(pl.DataFrame(rows, schema=EXPLANATION_SCHEMA))


def computed_explanation(
    model: str,
    forecast: pl.DataFrame,
    days: pl.DataFrame,
    wear: pl.DataFrame,
    origin: date,
    changes: dict[str, str],
) -> tuple[pl.DataFrame, str]:
    """A forecast without stored contributions, explained as what the model is, and a summary.

    - ``trailing_mean_28d``: the average of the worn days of the 28 days before the origin (the
      last 28 worn days when fewer than 7 lie there), as :mod:`models.baselines` computes it;
    - ``weekday_profile_8w``: the average of the worn days of the last 8 weeks, plus the
      difference of each weekday's average from it;
    - ``seasonal_naive_7d``: the average of the last worn day of each weekday, plus that day's
      difference from it;
    - ``cluster_level``: the group's typical day (the mean of the forecast's weekdays), plus the
      weekday's difference from it;
    - Prophet and any other model: the 28-day average, the weekday pattern of the forecast (a
      day against its forecast week's mean) and the rest, the model's change from that level.

    A therapy that starts or stops gets a row: 0 for the baselines, which do not use therapies;
    in Prophet's rest, which does.

    Args:
        model: the model.
        forecast: the model's rows of the patient's forecast (every day).
        days: those of the days explained.
        wear: ``date, steps`` of the patient's worn days before the origin (:func:`wear_before`).
        origin: the forecast's first day.
        changes: the therapies that start or stop (:func:`therapy_changes`).
    """
    weekdays = days["target_date"].dt.weekday().to_list()
    name = model_name(model)
    rows: list[dict[str, object]] = []

    def row(family: str, label: str, detail: str, value: float) -> None:
        rows.append({"family": family, "label": label, "detail": detail, "contribution": value})

    def weekday_row(by_weekday: dict[int, float], level: float, among: str) -> None:
        offsets = [by_weekday[weekday] - level for weekday in weekdays]
        if len(set(weekdays)) == 1:
            day = _WEEKDAY_NAMES[weekdays[0] - 1]
            detail = f"{day}s: {by_weekday[weekdays[0]]:,.0f} steps/day {among}."
        else:
            detail = (
                f"How the weekdays of these days differ from the average {among}, averaged over "
                "the days."
            )
        value = math.fsum(offsets) / len(offsets)
        row("weekday", EXPLANATION_FAMILY["weekday"].label, detail, value)

    recent, recent_what = recent_wear(wear, origin, 28)
    if model == "usual_level" and wear.height:
        usual = usual_days(
            ForecastInput(
                origin,
                wear.select(patient_id=pl.lit("patient"), date="date", steps="steps"),
                pl.DataFrame({"patient_id": ["patient"]}),
                pl.DataFrame(),
            )
        )
        level = float(usual["level"][0])
        by_weekday = dict(zip(usual["weekday"].to_list(), usual["yhat"].to_list(), strict=True))
        _, what = recent_wear(wear, origin, UsualLevel.days, least=UsualLevel.min_days)
        row("level", "Usual level", f"Median of {what}: {level:,.0f} steps/day.", level)
        weekday_row(by_weekday, level, "(each weekday's usual share of the level, last year)")
        summary = (
            f"The usual level forecasts each day at the patient's median of {what} "
            f"({level:,.0f} steps/day), times that weekday's usual share of it over the last "
            f"year: {_weekday_range(by_weekday)}."
        )
    elif model == "weekday_profile_8w" and wear.height:
        eight_weeks, what = recent_wear(wear, origin, 56)
        level = float(eight_weeks["steps"].mean())  # type: ignore[arg-type]
        means = eight_weeks.group_by(pl.col("date").dt.weekday().alias("weekday")).agg(
            pl.col("steps").mean()
        )
        by_weekday = {w: level for w in range(1, 8)} | dict(means.iter_rows())
        row("level", "Recent level", f"Average of {what}: {level:,.0f} steps/day.", level)
        weekday_row(by_weekday, level, "in those weeks")
        summary = (
            f"The weekday pattern forecasts each weekday at its average of {what}: "
            f"{level:,.0f} steps/day overall, {_weekday_range(by_weekday)}."
        )
    elif model == "seasonal_naive_7d" and wear.height:
        ordered = wear.sort("date")
        latest = ordered.group_by(pl.col("date").dt.weekday().alias("weekday")).agg(
            pl.col("steps").last(), pl.col("date").last()
        )
        fallback = float(ordered["steps"][-1])
        by_weekday = {w: fallback for w in range(1, 8)} | {w: s for w, s, _ in latest.iter_rows()}
        level = math.fsum(by_weekday.values()) / 7
        since, until = latest["date"].min(), latest["date"].max()
        what = f"the last worn day of each weekday ({_day(since)} to {_day(until)})"
        row("level", "Recent level", f"Average of {what}: {level:,.0f} steps/day.", level)
        weekday_row(by_weekday, level, "in the latest week worn")
        summary = (
            f"Same weekday last week repeats {what} for every week of the year ahead: "
            f"{level:,.0f} steps/day on average."
        )
    elif model == "cluster_level" or not recent.height:
        typical = forecast.group_by(pl.col("target_date").dt.weekday().alias("weekday")).agg(
            pl.col("yhat").mean()
        )
        by_weekday = dict(typical.iter_rows())
        level = math.fsum(by_weekday.values()) / len(by_weekday)
        row(
            "disease",
            "Patients of the same disease group",
            "Too little recent history of the patient's own: the typical day of patients of "
            f"the same disease group (their worn days of the last 8 weeks): {level:,.0f} "
            "steps/day.",
            level,
        )
        weekday_row(by_weekday, level, "for those patients")
        summary = (
            "Too little recent history of the patient's own: the forecast is the typical day of "
            f"patients of the same disease group (the median of their worn days of the last 8 "
            f"weeks), {level:,.0f} steps/day on average."
        )
    else:
        level = float(recent["steps"].mean())  # type: ignore[arg-type]
        row("level", "Recent level", f"Average of {recent_what}: {level:,.0f} steps/day.", level)
        if model == "trailing_mean_28d":
            summary = (
                f"The 28-day average forecasts every day of the year ahead at the average of "
                f"{recent_what}: {level:,.0f} steps/day."
            )
        else:
            week = ((pl.col("target_date") - pl.lit(origin)).dt.total_days() // 7).alias("week")
            weekly = forecast.group_by(week).agg(pl.col("yhat").mean().alias("week_mean"))
            per_day = days.with_columns(week).join(weekly, on="week", how="left")
            weekday = (per_day["yhat"] - per_day["week_mean"]).mean()
            season = float(per_day["week_mean"].mean()) - level  # type: ignore[arg-type]
            row(
                "weekday",
                EXPLANATION_FAMILY["weekday"].label,
                "How the model's forecast of these days differs from its average of their weeks.",
                float(weekday),  # type: ignore[arg-type]
            )
            if model == "prophet":
                therapies = "; ".join(changes.values())
                row(
                    "season",
                    "Time of year, trend and therapies",
                    "What the seasonal model adds to the recent level: the yearly pattern and "
                    "damped trend it fitted to the patient's own last two years"
                    + (f", with the therapy changes ({therapies})." if changes else "."),
                    season,
                )
                summary = (
                    "The seasonal model (Prophet) is fitted to the patient's own last two years: "
                    "their weekly and yearly pattern, a damped trend and their therapies. Below: "
                    f"their 28-day average ({level:,.0f} steps/day) and what the model adds."
                )
            else:
                row(
                    "other",
                    f"What the {name} adds",
                    f"What the {name} adds to the recent level.",
                    season,
                )
                summary = (
                    f"The {name} forecast against the patient's 28-day average "
                    f"({level:,.0f} steps/day)."
                )
    if model != "prophet":
        for slug, label in changes.items():
            row(
                f"therapy:{slug}",
                label,
                f"Not taken into account by the {name}, which repeats recent steps.",
                0.0,
            )
    frame = pl.DataFrame(rows, schema=EXPLANATION_SCHEMA)
    return _in_order(frame), summary


def _weekday_range(by_weekday: dict[int, float]) -> str:
    """ "from 3,100 on Sundays to 4,200 on Wednesdays": the lowest and highest of the weekdays."""
    lowest = min(by_weekday, key=lambda w: by_weekday[w])
    highest = max(by_weekday, key=lambda w: by_weekday[w])
    return (
        f"from {by_weekday[lowest]:,.0f} on {_WEEKDAY_NAMES[lowest - 1]}s to "
        f"{by_weekday[highest]:,.0f} on {_WEEKDAY_NAMES[highest - 1]}s"
    )


def wear_before(daily_steps: pl.DataFrame, origin: date) -> pl.DataFrame:
    """``date, steps`` of the worn days before ``origin`` (what the forecast knew), by date."""
    if daily_steps.is_empty():
        return pl.DataFrame(schema={"date": pl.Date, "steps": pl.Float64})
    return (
        daily_steps.filter(pl.col("is_wear_day") & (pl.col("date") < origin))
        .select("date", pl.col("steps").cast(pl.Float64))
        .sort("date")
    )


def recent_wear(
    wear: pl.DataFrame, origin: date, days: int, *, least: int | None = None
) -> tuple[pl.DataFrame, str]:
    """The worn days a baseline averages (:mod:`models.baselines`) and what they are in words:
    those of the ``days`` days before ``origin``, or the last ``days`` worn days when fewer than
    ``least`` (default ``min(7, days)``) lie there (a recent gap in wearing)."""
    window = wear.filter(pl.col("date") >= origin - timedelta(days=days))
    least = min(7, days) if least is None else least
    if window.height >= least:
        return window, f"the {window.height} worn days of the {days} days before {_day(origin)}"
    last = wear.tail(days)
    if not last.height:
        return last, "no worn day"
    return last, (
        f"the last {last.height} worn days ({_day(last['date'][0])} to {_day(last['date'][-1])}; "
        f"fewer than {least} in the {days} days before {_day(origin)})"
    )


def therapy_changes(
    therapies: pl.DataFrame, origin: date, first_day: date, last_day: date
) -> dict[str, str]:
    """The therapies that start or stop between the forecast's origin and a day of
    ``first_day..last_day``: their feature slug (:func:`therapy_slug`) and a label with the
    names as recorded and what changes when, e.g. ``levodopa stops after 12 May 2024``.

    A therapy counts as changed when on some day explained it is taken and at the origin not, or
    the other way round (the courses as recorded, planned starts and ends included; a course
    without an end is ongoing), as the models' therapy inputs see it.
    """
    courses: dict[str, list[tuple[str, date, date | None]]] = {}
    for therapy, start, end in therapies.select("therapy", "start_date", "end_date").iter_rows():
        courses.setdefault(therapy_slug(therapy), []).append((therapy, start, end))
    span = [first_day + timedelta(days=i) for i in range((last_day - first_day).days + 1)]
    changes = {}
    for slug, mine in courses.items():

        def taken(day: date, mine: list[tuple[str, date, date | None]] = mine) -> bool:
            return any(start <= day and (end is None or day <= end) for _, start, end in mine)

        at_origin = taken(origin)
        if all(taken(day) == at_origin for day in span):
            continue
        events = [
            (start, f"starts {_day(start)}") for _, start, _ in mine if origin < start <= last_day
        ]
        events += [
            (end, f"stops after {_day(end)}")
            for _, _, end in mine
            if end is not None and origin <= end < last_day
        ]
        names = ", ".join(dict.fromkeys(therapy for therapy, _, _ in mine))
        generic = THERAPY_NAMES.get(slug)
        if generic and normalise_therapy(names) != normalise_therapy(generic):
            names += f" ({generic})"  # a brand or other spelling: the generic name beside it
        changes[slug] = f"{names} " + " and ".join(text for _, text in sorted(events))
    return changes


def limit_rows(rows: pl.DataFrame, limit: int = MAX_EXPLANATION_ROWS) -> pl.DataFrame:
    """``rows`` with at most ``limit`` rows: the smallest rows other than the level and the
    therapies that change go into ``other`` first (its total is kept), then the smallest
    therapies."""
    while rows.height > limit:
        movable = rows.slice(1).filter(pl.col("family") != "other")
        preferred = movable.filter(~pl.col("family").str.starts_with("therapy"))
        pool = preferred if preferred.height else movable
        smallest = pool.sort(pl.col("contribution").abs()).row(0, named=True)
        rows = rows.filter(
            ~((pl.col("family") == smallest["family"]) & (pl.col("label") == smallest["label"]))
        )
        rows = _with_family(
            rows,
            "other",
            EXPLANATION_FAMILY["other"].label,
            EXPLANATION_FAMILY["other"].description,
            smallest["contribution"],
        )
    return rows


def _with_family(
    rows: pl.DataFrame, family: str, label: str, detail: str, value: float
) -> pl.DataFrame:
    """``rows`` with ``value`` added to the ``family`` row (a new row when there is none)."""
    if family in rows["family"]:
        return rows.with_columns(
            pl.when(pl.col("family") == family)
            .then(pl.col("contribution") + value)
            .otherwise(pl.col("contribution"))
            .alias("contribution")
        )
    extra = pl.DataFrame(
        [{"family": family, "label": label, "detail": detail, "contribution": value}],
        schema=EXPLANATION_SCHEMA,
    )
    return _in_order(pl.concat([rows, extra]))


def _in_order(rows: pl.DataFrame) -> pl.DataFrame:
    """The first row (where the forecast starts) first, then the others by size, ``other``
    last."""
    rest = rows.slice(1)
    return pl.concat(
        [
            rows.head(1),
            rest.filter(pl.col("family") != "other").sort(
                pl.col("contribution").abs(), descending=True, maintain_order=True
            ),
            rest.filter(pl.col("family") == "other"),
        ]
    )


def _day(day: object) -> str:
    """A day as clinicians write it: ``12 May 2024`` (no-break spaces: never split over lines)."""
    assert isinstance(day, date)
    return f"{day.day}\u00a0{day:%b}\u00a0{day.year}"


def forecast_choice(lake: Lake, patient_id: str, group: str, shown: str) -> str:
    """Why the page shows ``shown`` for the patient, in a clinician's words: the model chosen
    for their group by past accuracy, or their usual level because that model lost to it on the
    patient's own last year; how much of a learned model's change from the usual level is
    served, and on how many patients' past data that share rests (all groups pooled when the
    group had too few)."""
    outlook = _query(lake, FORECAST_CHOICE_SQL, (patient_id, patient_id), reads=(OUTLOOK,))
    registry = _query(lake, MODEL_SHRINKAGE_SQL, (group,), reads=(REGISTRY,))
    errors = {
        str(m): float(e) for m, _, e in outlook.iter_rows() if e is not None and not math.isnan(e)
    }
    group_champion = registry.filter(pl.col("status") == "champion")["model"].to_list()
    champion = str(group_champion[0]) if group_champion else None
    shares = {str(m): share for m, _, t in registry.iter_rows() if (share := _served_share(t))}
    shown_champion = bool(outlook.filter((pl.col("model") == shown) & pl.col("champion")).height)
    if not shown_champion:
        return (
            "No model was chosen for this patient's group yet, or the chosen one could not "
            "forecast them."
        )
    if champion is not None and shown != champion and champion in errors and shown in errors:
        return (
            f"For disease group {group} the {model_name(champion)} was chosen, but over this "
            f"patient's last year it was off by {errors[champion]:,.0f} steps/day on average "
            f"and their usual level by only {errors[shown]:,.0f}: for them the usual level is "
            "shown."
        )
    text = f"Chosen for disease group {group} by its accuracy on past data."
    share = shares.get(shown)
    if share is not None:
        pooled = " (all groups together: too few of this group)" if share["pooled"] else ""
        text += (
            f" It moves the patient's usual level at most {share['shrinkage']:.0%} of the "
            f"way the model suggests: as far as that improved past forecasts of "
            f"{share['patients']:.0f} patients{pooled}."
        )
        usual = errors.get(UsualLevel.name)
        if shown in errors and usual is not None:
            text += (
                f" Over this patient's last year: off by {errors[shown]:,.0f} steps/day on "
                f"average, their usual level alone by {usual:,.0f}."
            )
    return text


@dataclass(frozen=True)
class PatientOutlook:
    """The champion's forecast of a patient summed up (:mod:`jobs.outlook`), as the worklist
    and the decline list show it.

    Args:
        model: the champion model.
        origin_date: the forecast's first day.
        baseline_steps: mean steps of the worn days of the 180 days before the origin (None
            with fewer than 60).
        next_quarter_steps: the mean forecast of days 1-91.
        year_end_steps: the mean forecast of days 274-365 (months 10-12).
        year_end_change: ``year_end_steps / baseline_steps - 1`` (None without a baseline).
    """

    model: str
    origin_date: date
    baseline_steps: float | None
    next_quarter_steps: float | None
    year_end_steps: float | None
    year_end_change: float | None


def patient_outlook(lake: Lake, patient_id: str) -> PatientOutlook | None:
    """The champion's outlook of the patient's latest forecast (None without a champion)."""
    rows = _query(lake, PATIENT_OUTLOOK_SQL, (patient_id, patient_id), reads=(OUTLOOK,))
    if rows.is_empty():
        return None
    return PatientOutlook(**rows.row(0, named=True))


def therapy_evidence(lake: Lake, patient_id: str, model: str) -> dict[str, int] | None:
    """Per therapy (slug): how many training patients of ``model`` for the patient's group
    started or stopped it (the newest registry version's record; None when it has none)."""
    rows = _query(lake, THERAPY_EVIDENCE_SQL, (patient_id, model), reads=(REGISTRY, PATIENTS))
    if not rows.height or rows["metrics"][0] is None:
        return None
    counts = (_json_object(rows["metrics"][0]) or {}).get("therapy_patients")
    if not isinstance(counts, dict):
        return None
    evidence: dict[str, int] = {}
    for feature, patients in counts.items():
        if not _is_count(patients):
            return None  # not what training writes: no claim rather than a wrong one
        family = explanation_family(str(feature))
        if family.startswith("therapy:"):
            slug = family.removeprefix("therapy:")
            evidence[slug] = evidence.get(slug, 0) + int(patients)
    return evidence


def _json_object(text: object) -> dict[str, object] | None:
    """``text`` parsed as a JSON object; None when it is not one (a registry row written by
    something else than training is shown as no record, never as a failed page)."""
    if not isinstance(text, str):
        return None
    try:
        parsed = json.loads(text)
    except ValueError:
        return None
    return parsed if isinstance(parsed, dict) else None


def _is_count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _served_share(text: object) -> dict[str, float] | None:
    """A registry ``shrinkage`` record as training writes it (``shrinkage`` 0-1, ``patients`` a
    count, ``pooled``), else None."""
    record = _json_object(text)
    if record is None:
        return None
    share, patients = record.get("shrinkage"), record.get("patients")
    if (
        not isinstance(share, int | float)
        or isinstance(share, bool)
        or not 0 <= share <= 1
        or not _is_count(patients)
    ):
        return None
    assert isinstance(patients, int)
    return {"shrinkage": float(share), "patients": patients, "pooled": bool(record.get("pooled"))}


def cluster_accuracy(lake: Lake, cluster: str) -> pl.DataFrame:
    """Backtest accuracy of every model for ``cluster`` from the latest training: mean MAE,
    RMSE, MASE and interval coverage over the origins, per cumulative horizon."""
    return _query(lake, CLUSTER_ACCURACY_SQL, (cluster,), reads=(BACKTESTS,))


# ----------------------------------------------------------------------------------- analysts


def run_analyst_query(lake: Lake, sql: str) -> QueryResult:
    """One read-only query of an analyst through the SQL sandbox (the same code as
    ``mobility sql``): on a connection of its own in a worker process of its own (a crash or a
    runaway query ends there, never in this server), within :data:`SQL_LIMITS`.

    Raises:
        QueryRefused: not one read-only statement, failed, or over a limit (one line).
    """
    return sandbox.run(lake, sql, limits=SQL_LIMITS)


def table_columns() -> pl.DataFrame:
    """Every view an analyst can query with its columns and types: ``table, column, type,
    description``."""
    rows = [
        {
            "table": table.qualified_name,
            "column": column.name,
            "type": str(column.type),
            "description": table.description,
        }
        for table in TABLES
        for column in table.schema
    ]
    return pl.DataFrame(rows)


# --------------------------------------------------------------------------------- operations


def quarantine_by_reason(lake: Lake) -> pl.DataFrame:
    """Quarantined input rows per reason (numbers in reasons replaced by N): rows, files,
    latest."""
    return _query(lake, QUARANTINE_BY_REASON_SQL, (), reads=(QUARANTINE,))


def recent_history(daily_steps: pl.DataFrame, days: int | None = HISTORY_DAYS) -> pl.DataFrame:
    """The patient's days of the last ``days`` before their last day (the chart's history;
    every day when None)."""
    if daily_steps.is_empty() or days is None:
        return daily_steps
    last = daily_steps["date"].max()
    assert isinstance(last, date)
    return daily_steps.filter(pl.col("date") > last - timedelta(days=days))


# the history a patient's chart shows: label -> days before the last day (None: all of it)
HISTORY_RANGES: dict[str, int | None] = {"90 days": 90, "1 year": 365, "all": None}
ROLLING_DAYS = 7
# a rolling mean needs this many wear days among its 7 (the roll_mean_7d feature's minimum)
ROLLING_MIN_DAYS = ROLLING_WINDOWS[ROLLING_DAYS]
# runs of days without any data longer than this are shaded "no data" on the chart
GAP_DAYS = 3


def rolling_mean(daily_steps: pl.DataFrame) -> pl.DataFrame:
    """``date, rolling_mean``: for every calendar day from the first to the last, the mean steps
    of the wear days among it and the :data:`ROLLING_DAYS` - 1 days before it (non-wear days and
    days without data are missing, not zero); missing with fewer than :data:`ROLLING_MIN_DAYS`
    wear days there."""
    if daily_steps.is_empty():
        return pl.DataFrame(schema={"date": pl.Date, "rolling_mean": pl.Float64})
    calendar = daily_steps.select(
        pl.date_range(pl.col("date").min(), pl.col("date").max(), "1d").alias("date")
    )
    wear = daily_steps.select(
        "date", steps=pl.when(pl.col("is_wear_day")).then(pl.col("steps").cast(pl.Float64))
    )
    return calendar.join(wear, on="date", how="left").select(
        "date",
        rolling_mean=pl.col("steps").rolling_mean(
            window_size=ROLLING_DAYS, min_samples=ROLLING_MIN_DAYS
        ),
    )


def data_gaps(daily_steps: pl.DataFrame, longer_than: int = GAP_DAYS) -> pl.DataFrame:
    """``first_day, last_day, days``: each run of more than ``longer_than`` consecutive days
    without any data (no row in silver/daily_steps) between the patient's first and last day."""
    schema = {"first_day": pl.Date, "last_day": pl.Date, "days": pl.Int64}
    if daily_steps.height < 2:
        return pl.DataFrame(schema=schema)
    days = daily_steps.select("date").unique().sort("date")
    return (
        days.select(
            first_day=pl.col("date").shift(1) + pl.duration(days=1),
            last_day=pl.col("date") - pl.duration(days=1),
        )
        .with_columns(days=(pl.col("last_day") - pl.col("first_day")).dt.total_days() + 1)
        .filter(pl.col("days") > longer_than)
        .cast(schema)  # type: ignore[arg-type]
    )


def horizon_months(first_day: date, last_day: date) -> list[date]:
    """The first day of every calendar month that ``first_day..last_day`` touches."""
    months, month = [], first_day.replace(day=1)
    while month <= last_day:
        months.append(month)
        month = month_end(month) + timedelta(days=1)
    return months


def month_end(month: date) -> date:
    """The last day of ``month``'s calendar month."""
    following = (month.replace(day=28) + timedelta(days=4)).replace(day=1)
    return following - timedelta(days=1)


def recent_job_runs(lake: Lake, limit: int = 100) -> pl.DataFrame:
    """The latest job runs, newest first: status, duration, rows, CPU, MB read and written, peak
    memory and error."""
    return _query(lake, RECENT_JOB_RUNS_SQL, (limit,), reads=(JOB_RUNS,))


def alerts(lake: Lake, limit: int = 200) -> pl.DataFrame:
    """Alerts, open ones first, newest first: raised_at, check, subject, message, resolved_at."""
    return _query(lake, ALERTS_SQL, (limit,), reads=(ALERTS,))


def latest_checks(lake: Lake) -> pl.DataFrame:
    """Every check of the latest ``mobility monitor`` run (empty before the first)."""
    return _query(lake, LATEST_CHECKS_SQL, (), reads=(MONITOR_CHECKS,))


# ------------------------------------------------------------------------------------- security
# The audit log and the re-identification map are restricted tables: never DuckDB views (the SQL
# sandbox cannot reach them), read here with Polars for the pages of the roles that may see them
# (ops and admin; admin), uncached so every look is current.


# audit log events, newest first, filtered (the pages read every table through this module)
audit_events = read_audit


def reidentification(
    lake: Lake, *, patient_id: str | None = None, source_id: str | None = None
) -> pl.DataFrame:
    """Rows of the re-identification map for one pseudonym or one source identifier (exact,
    surrounding spaces ignored): ``patient_id, source_id, first_seen_at, source_file``."""
    if patient_id and patient_id.strip():
        wanted = pl.col("patient_id") == patient_id.strip()
    elif source_id and source_id.strip():
        wanted = pl.col("source_id") == source_id.strip()
    else:
        return empty_frame(REIDENTIFICATION).drop("key_id")
    return lake.scan(REIDENTIFICATION).filter(wanted).drop("key_id").collect()


def clear_caches() -> None:
    """Forget cached versions, connections and results (tests; after writing to the lake)."""
    _version.clear()
    _data_period.clear()
    _connection.clear()
    _cached_query.clear()
    _lake_tables.clear()
