"""The table catalog: every table of the lake declared once (schema, partitioning, keys).

Jobs, the dashboard and the tests import these declarations; no schema is written anywhere else.
Partitioning follows DESIGN.md: never one folder per patient. Bronze and silver are partitioned by
calendar month, files are written sorted by ``patient_id`` and time so that row-group statistics
prune reads for one patient or a range of patients.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pyarrow as pa

from lakehouse.feature_dictionary import FEATURES as FEATURE_DICTIONARY

UTC_TS = pa.timestamp("us", tz="UTC")


@dataclass(frozen=True)
class TableSpec:
    """One Delta table of the lake.

    Args:
        layer: lake layer (``bronze``, ``silver``, ``gold``, ``models``, ``ops``, ``synthetic``).
        name: table name inside the layer.
        schema: Arrow schema of the table, partition columns included.
        keys: columns that identify a row (unique per row).
        partition_by: Hive-style partition columns.
        sort_by: order of rows inside each written file.
        z_order: columns ``lake optimize`` z-orders by; empty means plain compaction, which keeps
            each file's sorted runs (the daily aggregation relies on them for speed).
        description: one line for ``mobility lake info`` and the SQL page.
        merge_written: rows are merged in (``Lake.upsert``, ``Lake.insert_new``). delta-rs
            writes the strings of merged files as ``string_view``, which pyarrow cannot filter,
            so SQL reads such a table without pushing filters into its scan
            (:meth:`lakehouse.storage.Lake.dataset`); merging into a table not declared so is
            refused.
        append_only: rows are only ever appended (``Lake.append``); replacing, merging or
            deleting rows is refused (the audit log).
        restricted: never exposed to SQL (no view, its folder not readable from the sandbox):
            read only by code that checks the reader's role. Restricted tables are not in
            :data:`TABLES`, only in :data:`ALL_TABLES`.
    """

    layer: str
    name: str
    schema: pa.Schema
    keys: tuple[str, ...]
    partition_by: tuple[str, ...] = ()
    sort_by: tuple[str, ...] = ()
    z_order: tuple[str, ...] = ()
    description: str = ""
    merge_written: bool = False
    append_only: bool = False
    restricted: bool = False
    columns: tuple[str, ...] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "columns", tuple(self.schema.names))
        missing = [
            c for c in (*self.keys, *self.partition_by, *self.sort_by) if c not in self.columns
        ]
        if missing:
            raise ValueError(f"{self.path}: unknown columns {missing}")

    @property
    def path(self) -> str:
        """Path of the table relative to the lake root, ``<layer>/<name>``."""
        return f"{self.layer}/{self.name}"

    @property
    def qualified_name(self) -> str:
        """Name of the table's view in DuckDB, ``<layer>.<name>``."""
        return f"{self.layer}.{self.name}"


def _schema(*fields: tuple[str, pa.DataType] | tuple[str, pa.DataType, bool]) -> pa.Schema:
    out = []
    for spec in fields:
        name, dtype = spec[0], spec[1]
        nullable = spec[2] if len(spec) == 3 else True
        out.append(pa.field(name, dtype, nullable=nullable))
    return pa.schema(out)


STEP_SAMPLES = TableSpec(
    layer="bronze",
    name="step_samples",
    schema=_schema(
        ("patient_id", pa.string(), False),
        ("start_ts", UTC_TS, False),
        ("end_ts", UTC_TS, False),
        ("utc_offset_minutes", pa.int16(), False),
        ("steps", pa.float64(), False),
        ("source", pa.string(), False),
        ("month", pa.string(), False),
    ),
    keys=("patient_id", "source", "start_ts", "end_ts"),
    partition_by=("month",),
    # by source too: one device's samples of one hour sit together (see jobs/daily.py)
    sort_by=("patient_id", "source", "start_ts"),
    description="Raw step samples as recorded by each device; month = UTC month of start_ts.",
    merge_written=True,
)

PATIENTS = TableSpec(
    layer="bronze",
    name="patients",
    schema=_schema(
        ("patient_id", pa.string(), False),
        ("disease_group", pa.string(), False),
        ("timezone", pa.string(), False),
        ("sex", pa.string()),
        ("birth_year", pa.int16()),
        ("country", pa.string()),
        ("enrolled_on", pa.date32()),
    ),
    keys=("patient_id",),
    sort_by=("patient_id",),
    description="One row per patient: disease group (MS, PD, RA, OTHER), time zone, demographics.",
    merge_written=True,
)

THERAPIES = TableSpec(
    layer="bronze",
    name="therapies",
    schema=_schema(
        ("patient_id", pa.string(), False),
        ("therapy", pa.string(), False),
        ("start_date", pa.date32(), False),
        ("end_date", pa.date32()),
    ),
    keys=("patient_id", "therapy", "start_date"),
    sort_by=("patient_id", "start_date"),
    description="Therapy courses; end_date null = ongoing.",
    merge_written=True,
)

SIDE_EFFECTS = TableSpec(
    layer="bronze",
    name="side_effects",
    schema=_schema(
        ("patient_id", pa.string(), False),
        ("date", pa.date32(), False),
        ("effect", pa.string(), False),
        ("severity", pa.int16(), False),
    ),
    keys=("patient_id", "date", "effect"),
    sort_by=("patient_id", "date"),
    description="Reported side effects; severity is the CTCAE grade 1 (mild) to 5.",
    merge_written=True,
)

DIAGNOSES = TableSpec(
    layer="bronze",
    name="diagnoses",
    schema=_schema(
        ("patient_id", pa.string(), False),
        ("code", pa.string(), False),
        ("diagnosed_on", pa.date32(), False),
        ("description", pa.string()),
    ),
    keys=("patient_id", "code"),
    sort_by=("patient_id", "diagnosed_on"),
    description="Diagnoses as ICD-10 codes with the date of diagnosis.",
    merge_written=True,
)

QUARANTINE = TableSpec(
    layer="bronze",
    name="quarantine",
    schema=_schema(
        ("source_file", pa.string(), False),
        ("record", pa.int64(), False),
        ("reason", pa.string(), False),
        ("raw", pa.string()),
        ("patient_id", pa.string()),
        ("quarantined_at", UTC_TS, False),
    ),
    keys=("source_file", "record"),
    sort_by=("source_file", "record"),
    description="Rejected input rows with the reason; record = line or element number in the file.",
    merge_written=True,
)

DAILY_STEPS = TableSpec(
    layer="silver",
    name="daily_steps",
    schema=_schema(
        ("patient_id", pa.string(), False),
        ("date", pa.date32(), False),
        ("steps", pa.float64(), False),
        ("coverage_hours", pa.int16(), False),
        ("n_samples", pa.int32(), False),
        ("n_sources", pa.int16(), False),
        ("is_wear_day", pa.bool_(), False),
        ("month", pa.string(), False),
    ),
    keys=("patient_id", "date"),
    partition_by=("month",),
    sort_by=("patient_id", "date"),
    z_order=("patient_id", "date"),
    description="Steps per patient and local calendar day after overlap de-duplication.",
)

FEATURES = TableSpec(
    layer="silver",
    name="features",
    schema=_schema(
        ("patient_id", pa.string(), False),
        ("date", pa.date32(), False),
        *((feature.name, feature.dtype) for feature in FEATURE_DICTIONARY),
        ("month", pa.string(), False),
    ),
    keys=("patient_id", "date"),
    partition_by=("month",),
    sort_by=("patient_id", "date"),
    z_order=("patient_id", "date"),
    description=(
        "Model features per patient-day (lakehouse/feature_dictionary.py); a patient's rows run "
        "from the first day with data to the day after the last one."
    ),
)

FORECASTS = TableSpec(
    layer="gold",
    name="forecasts",
    schema=_schema(
        ("patient_id", pa.string(), False),
        ("model", pa.string(), False),
        ("origin_date", pa.date32(), False),
        ("target_date", pa.date32(), False),
        ("yhat", pa.float64(), False),
        ("yhat_lower", pa.float64()),
        ("yhat_upper", pa.float64()),
        ("origin_month", pa.string(), False),
    ),
    keys=("patient_id", "model", "origin_date", "target_date"),
    # by the month of the origin: a run writes into one or two partitions, older origins stay
    # untouched, and file counts grow with months, not patients
    partition_by=("origin_month",),
    sort_by=("patient_id", "model", "target_date"),
    description="Daily-steps forecasts per patient, model and forecast origin.",
)

EXPLANATIONS = TableSpec(
    layer="gold",
    name="explanations",
    schema=_schema(
        ("patient_id", pa.string(), False),
        ("model", pa.string(), False),
        ("origin_date", pa.date32(), False),
        ("target_date", pa.date32(), False),
        ("feature", pa.string(), False),
        ("contribution", pa.float64(), False),
        ("origin_month", pa.string(), False),
    ),
    keys=("patient_id", "model", "origin_date", "target_date", "feature"),
    partition_by=("origin_month",),
    sort_by=("patient_id", "model", "target_date"),
    description="Additive contributions per forecast row; they sum to the row's yhat.",
)

OUTLOOK = TableSpec(
    layer="gold",
    name="outlook",
    schema=_schema(
        ("patient_id", pa.string(), False),
        ("model", pa.string(), False),
        ("origin_date", pa.date32(), False),
        ("champion", pa.bool_(), False),
        ("baseline_steps", pa.float64()),
        ("next_quarter_steps", pa.float64()),
        ("year_end_steps", pa.float64()),
        ("year_steps", pa.float64(), False),
        ("year_end_change", pa.float64()),
        ("origin_month", pa.string(), False),
        # added later: the patient's own last-year backtest (champion and usual level only)
        ("own_year_mae", pa.float64()),
    ),
    keys=("patient_id", "model", "origin_date"),
    partition_by=("origin_month",),
    sort_by=("patient_id", "model"),
    description=(
        "Per forecast: the patient's 180-day baseline and the mean forecast steps of the next "
        "quarter, the last quarter of the year ahead and the whole year, whether it is the "
        "patient's champion and its error on the patient's own last year (jobs/outlook.py)."
    ),
)

BACKTESTS = TableSpec(
    layer="gold",
    name="backtests",
    schema=_schema(
        ("model", pa.string(), False),
        ("cluster", pa.string(), False),
        ("origin_date", pa.date32(), False),
        ("horizon_days", pa.int32(), False),
        ("mae", pa.float64()),
        ("rmse", pa.float64()),
        ("mase", pa.float64()),
        ("coverage", pa.float64()),
        ("patients", pa.int32()),
        ("days", pa.int32()),
        ("trained_at", UTC_TS),
        # added later: null in rows of trainings before calibrated intervals
        ("width", pa.float64()),
        ("raw_coverage", pa.float64()),
        ("raw_width", pa.float64()),
    ),
    keys=("model", "cluster", "origin_date", "horizon_days"),
    description=(
        "Rolling-origin backtest errors per model, cluster (and ALL), origin and cumulative "
        "horizon (days 1..horizon_days); patients and wear days scored; coverage and mean width "
        "(steps) of the calibrated 80% intervals, out of sample, and (raw_) of the model's own."
    ),
    merge_written=True,
)

REGISTRY = TableSpec(
    layer="models",
    name="registry",
    schema=_schema(
        ("model_id", pa.string(), False),
        ("kind", pa.string(), False),
        ("cluster", pa.string(), False),
        ("version", pa.int32(), False),
        ("trained_at", UTC_TS, False),
        ("params", pa.string()),
        ("metrics", pa.string()),
        ("artifact_uri", pa.string()),
        ("status", pa.string(), False),
        # added later: null in versions trained before calibrated intervals
        ("intervals", pa.string()),
        # added later: null for the baselines and in versions trained before guarded forecasts
        ("shrinkage", pa.string()),
    ),
    keys=("model_id",),
    description=(
        "Trained models with parameters, metrics (JSON), artifact location, status, the "
        "interval calibration (JSON: conformal quantiles per horizon band, pooled or not) and "
        "the shrinkage of a learned model toward the patient's usual level (JSON: the share of "
        "its adjustment served, the backtest patients behind it, pooled or not)."
    ),
    merge_written=True,
)

JOB_RUNS = TableSpec(
    layer="ops",
    name="job_runs",
    schema=_schema(
        ("run_id", pa.string(), False),
        ("job", pa.string(), False),
        ("started_at", UTC_TS, False),
        ("finished_at", UTC_TS, False),
        ("status", pa.string(), False),
        ("rows_in", pa.int64()),
        ("rows_out", pa.int64()),
        ("error", pa.string()),
        ("engine", pa.string()),
        ("wall_seconds", pa.float64()),
        ("cpu_seconds", pa.float64()),
        ("peak_rss_mb", pa.float64()),
        ("details", pa.string()),
        # added later: null in rows of runs recorded before
        ("bytes_read", pa.int64()),
        ("bytes_written", pa.int64()),
    ),
    keys=("run_id",),
    description=(
        "One row per finished job run (succeeded or failed) with its cost figures: wall and CPU "
        "seconds, peak memory, rows and bytes read and written (by the job's process and its "
        "running workers, through the OS)."
    ),
)

MONITOR_CHECKS = TableSpec(
    layer="ops",
    name="monitor_checks",
    schema=_schema(
        ("run_id", pa.string(), False),
        ("checked_at", UTC_TS, False),
        ("check", pa.string(), False),
        ("subject", pa.string(), False),
        ("metric", pa.string(), False),
        ("value", pa.float64()),
        ("reference", pa.float64()),
        ("threshold", pa.float64()),
        ("status", pa.string(), False),
        ("details", pa.string()),
    ),
    keys=("run_id", "check", "subject", "metric"),
    description=(
        "One row per monitoring check and subject per `mobility monitor` run: the measured value, "
        "its reference and threshold, and the status (ok, warning, alert, too little data)."
    ),
)

DRIFT_REFERENCE = TableSpec(
    layer="ops",
    name="drift_reference",
    schema=_schema(
        ("registry_version", pa.int32(), False),
        ("captured_at", UTC_TS, False),
        ("subject", pa.string(), False),
        ("reference", pa.string(), False),
    ),
    keys=("registry_version", "subject"),
    description=(
        "Per training version, the population the models were trained for: decile edges and "
        "shares of each monitored feature and of the champion forecast (JSON), for drift checks."
    ),
    merge_written=True,
)

ALERTS = TableSpec(
    layer="ops",
    name="alerts",
    schema=_schema(
        ("alert_id", pa.string(), False),
        ("raised_at", UTC_TS, False),
        ("check", pa.string(), False),
        ("subject", pa.string(), False),
        ("message", pa.string(), False),
        ("run_id", pa.string(), False),
        ("resolved_at", UTC_TS),
    ),
    keys=("alert_id",),
    description=(
        "Alerts raised by `mobility monitor`: one per check and subject while its condition "
        "holds (open until resolved_at)."
    ),
    merge_written=True,
)

GROUND_TRUTH = TableSpec(
    layer="synthetic",
    name="ground_truth",
    schema=_schema(
        ("patient_id", pa.string(), False),
        ("therapy", pa.string(), False),
        ("effect_steps", pa.float64(), False),
        ("start_date", pa.date32(), False),
        ("end_date", pa.date32()),
        ("ramp_days", pa.int32(), False),
    ),
    keys=("patient_id", "therapy", "start_date"),
    sort_by=("patient_id", "start_date"),
    description="Synthetic population only: the true additive daily effect of each therapy course.",
)

AUDIT_LOG = TableSpec(
    layer="ops",
    name="audit_log",
    schema=_schema(
        ("event_id", pa.string(), False),
        ("at", UTC_TS, False),
        ("user", pa.string(), False),
        ("roles", pa.string(), False),
        ("client", pa.string(), False),
        ("action", pa.string(), False),
        ("page", pa.string(), False),
        ("patient_id", pa.string()),
        ("sql_sha256", pa.string()),
        ("rows", pa.int64()),
        ("outcome", pa.string(), False),
        ("month", pa.string(), False),
        # added later: null in rows written before, and in rows of the CLI and the demo
        ("issuer", pa.string()),
        ("subject", pa.string()),
    ),
    keys=("event_id",),
    partition_by=("month",),
    sort_by=("at",),
    description=(
        "Who saw what: one row per sign-in, page opened, patient viewed, SQL query (its SHA-256 "
        "and row count), refusal and re-identification, naming a signed-in user by the identity "
        "provider's issuer and subject; append-only (lakehouse/audit.py)."
    ),
    append_only=True,
    restricted=True,
)

REIDENTIFICATION = TableSpec(
    layer="admin",
    name="reidentification",
    schema=_schema(
        ("patient_id", pa.string(), False),
        ("source_id", pa.string(), False),
        ("key_id", pa.string(), False),
        ("first_seen_at", UTC_TS, False),
        ("source_file", pa.string()),
    ),
    keys=("patient_id",),
    sort_by=("patient_id",),
    description=(
        "The re-identification map: each pseudonym with the source identifier it was made from "
        "at ingestion (admin role only; never in SQL)."
    ),
    merge_written=True,
    restricted=True,
)

TABLES: tuple[TableSpec, ...] = (
    STEP_SAMPLES,
    PATIENTS,
    THERAPIES,
    SIDE_EFFECTS,
    DIAGNOSES,
    QUARANTINE,
    DAILY_STEPS,
    FEATURES,
    FORECASTS,
    EXPLANATIONS,
    OUTLOOK,
    BACKTESTS,
    REGISTRY,
    JOB_RUNS,
    MONITOR_CHECKS,
    DRIFT_REFERENCE,
    ALERTS,
    GROUND_TRUTH,
)
"""The tables SQL sees (dashboard, ``mobility sql``): every table but the restricted ones."""

RESTRICTED_TABLES: tuple[TableSpec, ...] = (AUDIT_LOG, REIDENTIFICATION)

LAKE_LOCK = TableSpec(
    layer="ops",
    name="lake_lock",
    schema=_schema(
        ("name", pa.string(), False),
        ("holder", pa.string(), False),
        ("purpose", pa.string(), False),
        ("host", pa.string(), False),
        ("pid", pa.int64(), False),
        ("process_started", pa.float64(), False),
        ("acquired_at", UTC_TS, False),
        ("expires_at", UTC_TS, False),
        ("released_at", UTC_TS),
    ),
    keys=("name",),
    description=(
        "The lease that lets one process at a time run the pipeline's stages (lakehouse/lock.py): "
        "one row, rewritten by every acquisition, renewal and release."
    ),
)
"""Internal: never a SQL view (not in :data:`TABLES`), only in :data:`ALL_TABLES` for upkeep."""

ALL_TABLES: tuple[TableSpec, ...] = (*TABLES, *RESTRICTED_TABLES, LAKE_LOCK)
"""Every table of the lake, for upkeep (``mobility lake info|optimize|check``)."""


def table_by_path(path: str) -> TableSpec:
    """The table declared at ``<layer>/<name>`` (raises KeyError if none)."""
    for table in ALL_TABLES:
        if table.path == path:
            return table
    raise KeyError(path)
