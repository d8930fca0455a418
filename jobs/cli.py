"""The ``mobility`` command line (also ``python -m jobs``).

Every command takes the lake from ``--lake``, else ``LAKE_URI``, else ``./lake``. Errors a user can
cause print one line and exit with status 2; nothing is half-written.
"""

from __future__ import annotations

import csv
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from lakehouse import csv_export
from lakehouse.catalog import ALL_TABLES
from lakehouse.errors import InputError, MobilityError
from lakehouse.settings import apply_file_mode, get_settings
from lakehouse.storage import Lake

if TYPE_CHECKING:
    from jobs.engine import Engine
    from jobs.pipeline import Stage, StageSummary, Training
    from lakehouse.lock import Lease

app = typer.Typer(
    name="mobility",
    help="Clinical mobility lakehouse: generate, ingest, aggregate, query.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
lake_app = typer.Typer(help="Inspect and maintain the lake's tables.", no_args_is_help=True)
app.add_typer(lake_app, name="lake")

console = Console(stderr=True)


@dataclass
class Context:
    """What every command receives from the global options."""

    lake: Lake
    engine_name: str
    spark_master: str = "local[*]"
    _engine: Engine | None = field(default=None, repr=False)

    def engine(self) -> Engine:
        """The engine of ``--engine`` (started on first use, stopped when the command ends)."""
        if self._engine is None:
            from jobs.engine import start_engine

            self._engine = start_engine(self.engine_name, master=self.spark_master)
        return self._engine

    def close(self) -> None:
        """Stop the engine if one was started."""
        if self._engine is not None:
            self._engine.stop()
            self._engine = None


def _context(ctx: typer.Context) -> Context:
    obj = ctx.find_root().obj
    assert isinstance(obj, Context)
    return obj


@app.callback()
def _global_options(
    ctx: typer.Context,
    lake: Annotated[
        str | None, typer.Option("--lake", help="Lake root: a folder or s3://bucket/prefix.")
    ] = None,
    engine: Annotated[
        str | None,
        typer.Option(
            "--engine",
            help="Where aggregate, features and forecast run: local (this process) or spark "
            "(master from SPARK_MASTER, default local[*]; needs the spark extra and Java 17).",
        ),
    ] = None,
) -> None:
    from jobs.engine import ENGINES

    settings = get_settings()
    chosen = engine or settings.engine
    if chosen not in ENGINES:
        raise InputError(f"unknown engine {chosen!r}: use {' or '.join(ENGINES)}")
    context = Context(
        lake=Lake(lake or settings.lake_uri, storage_options=settings.storage_options()),
        engine_name=chosen,
        spark_master=settings.spark_master,
    )
    ctx.obj = context
    ctx.call_on_close(context.close)


def _say_waiting(holder: Lease) -> None:
    console.print(
        f"waiting for the lake lock, held by {holder.describe()}",
        markup=False,
        highlight=False,
        soft_wrap=True,
    )


@contextmanager
def _locked(ctx: typer.Context, purpose: str) -> Iterator[None]:
    """Hold the lake's lock (docs/reliability.md) for a command; its stages re-enter it."""
    from lakehouse.lock import lease

    with lease(_context(ctx).lake, purpose=purpose, on_wait=_say_waiting):
        yield


@contextmanager
def _progress(description: str, total: int | None) -> Iterator[Progress]:
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console, transient=True) as progress:
        progress.add_task(description, total=total)
        yield progress


# The stages that show a progress bar, and its label.
_PROGRESS_BARS = {"aggregate": "aggregating samples", "features": "computing features (patients)"}


class _StagesShown:
    """The stages as the command line shows them: a progress bar while aggregate and features
    run, each stage's summary line when it ends."""

    @contextmanager
    def running(self, stage: Stage) -> Iterator[Callable[[int], None] | None]:
        label = _PROGRESS_BARS.get(stage)
        if label is None:
            yield None
            return
        with _progress(label, None) as progress:
            yield lambda done: progress.advance(progress.task_ids[0], done)

    def done(self, stage: Stage, summary: StageSummary) -> None:
        typer.echo(summary.describe())


def _run_stages(
    ctx: typer.Context,
    purpose: str,
    only: Sequence[Stage],
    *,
    full: bool = False,
    training: Training | None = None,
) -> None:
    """Run pipeline stages (jobs/pipeline.py) under the lake's lock, shown as they go; the
    engine is started first if one of them runs on it."""
    from jobs import pipeline as daily_pipeline

    context = _context(ctx)
    engine = context.engine() if daily_pipeline.ON_ENGINE & set(only) else None
    options = daily_pipeline.Options(
        full=full, training=training or daily_pipeline.Training(), engine=engine
    )
    with _locked(ctx, purpose):
        daily_pipeline.run(context.lake, options, only=only, watcher=_StagesShown())


def _training(
    *, force: bool, patients_per_cluster: int, origins: int, tune_seconds: float
) -> Training:
    """The training asked for (jobs.pipeline.run applies MOBILITY_QUICK_TRAINING)."""
    from jobs import pipeline as daily_pipeline

    return daily_pipeline.Training(
        force=force,
        patients_per_cluster=patients_per_cluster,
        origins=origins,
        tune_seconds=tune_seconds,
    )


@app.command()
def generate(
    ctx: typer.Context,
    patients: Annotated[int, typer.Option(min=1, help="Number of synthetic patients.")],
    seed: Annotated[int, typer.Option(min=0, help="Random seed (same seed, same data).")] = 42,
    years: Annotated[float, typer.Option(min=0.1, max=20, help="Years of history.")] = 3.0,
    landing: Annotated[
        Path | None,
        typer.Option(help="Write landing files (device exports, clinical CSVs) here instead."),
    ] = None,
    end_date: Annotated[
        str | None,
        typer.Option(
            help="Last day of history, YYYY-MM-DD (default: yesterday). The same seed and end "
            "date always give the same data."
        ),
    ] = None,
    watch_detail: Annotated[
        bool,
        typer.Option(
            help="With --landing: Apple exports also hold the watch's heart-rate and energy "
            "records (large, realistic exports for ingest benchmarks)."
        ),
    ] = False,
) -> None:
    """Create a synthetic patient population (bronze tables, or landing files)."""
    from jobs import generate as generate_job

    last_day = _parse_date(end_date) if end_date else None
    with _progress("generating patients", patients) as progress:
        summary = generate_job.run(
            _context(ctx).lake,
            patients=patients,
            seed=seed,
            years=years,
            landing=landing,
            end_date=last_day,
            watch_detail=watch_detail,
            progress=lambda done: progress.update(progress.task_ids[0], completed=done),
        )
    typer.echo(summary.describe())


@app.command()
def ingest(
    ctx: typer.Context,
    path: Annotated[
        Path,
        typer.Argument(help="The file to ingest, or a landing folder (every known file in it)."),
    ],
    format: Annotated[
        str,
        typer.Option(
            "--format",
            help=(
                "auto (from the file), apple-health, fitbit (Fitabase CSV, steps-*.json), "
                "google-fit, generic (CSV/Parquet of step samples), clinical, patients, "
                "therapies, side-effects or diagnoses."
            ),
        ),
    ] = "auto",
    patient_id: Annotated[
        str | None,
        typer.Option(
            "--patient-id",
            help=(
                "Whose export it is (default: the folder name in apple-health/<id>/export.*; "
                "files with a patient column name their patients)."
            ),
        ),
    ] = None,
    timezone: Annotated[
        str | None,
        typer.Option(
            help=(
                "IANA time zone of naive timestamps (default: the patient's, else UTC) and of a "
                "new patient (default: from the samples' offsets)."
            )
        ),
    ] = None,
    column: Annotated[
        list[str] | None,
        typer.Option(
            "--column",
            help="Generic files: ROLE=NAME, roles patient_id, start, end, steps, source "
            "(repeat the option; default: columns named like the roles).",
        ),
    ] = None,
    timestamp_format: Annotated[
        str | None,
        typer.Option(
            help="Generic files: strptime format, e.g. '%d-%b-%Y %H:%M' (default: detect)."
        ),
    ] = None,
    period: Annotated[
        str | None,
        typer.Option(
            help="Generic files without an end column: day, hour or minute (default: detect)."
        ),
    ] = None,
    source: Annotated[
        str | None,
        typer.Option(help="Generic files without a source column: the device or app."),
    ] = None,
) -> None:
    """Ingest device exports and clinical CSVs into bronze; rejected rows go to bronze/quarantine.

    Counts are printed per file: records read = accepted + quarantined + skipped.
    """
    from jobs.ingest import generic
    from jobs.ingest import run as ingest_job

    lake = _context(ctx).lake
    if path.is_dir():
        given = {"--format": format != "auto", "--patient-id": patient_id, "--column": column}
        given |= {"--timestamp-format": timestamp_format, "--period": period, "--source": source}
        named = [name for name, value in given.items() if value]
        if named:
            raise InputError(f"{path} is a folder: {', '.join(named)}: for single files only")
        failed = left = done = 0
        for result in ingest_job.run_folder(lake, path, timezone=timezone):
            if result.summary is not None:
                done += 1
                typer.echo(result.summary.describe())
            else:
                left += result.left
                failed += not result.left
                prefix = "left alone" if result.left else "error"
                typer.echo(f"{prefix}: {result.error}", err=True)
        typer.echo(f"ingest {path}: {done} file(s) ingested, {failed} failed, {left} left alone")
        if failed:
            raise typer.Exit(2)
        return
    summary = ingest_job.run(
        lake,
        path,
        format=format,
        patient_id=patient_id,
        timezone=timezone,
        columns=generic.parse_columns(column or []),
        timestamp_format=timestamp_format,
        period=period,
        source=source,
    )
    typer.echo(summary.describe())


@app.command()
def aggregate(
    ctx: typer.Context,
    full: Annotated[bool, typer.Option(help="Recompute every patient-day.")] = False,
) -> None:
    """Aggregate raw step samples into silver/daily_steps (only what changed)."""
    _run_stages(ctx, "aggregate", ("aggregate",), full=full)


@app.command()
def features(
    ctx: typer.Context,
    full: Annotated[bool, typer.Option(help="Recompute every patient-day.")] = False,
) -> None:
    """Compute model features per patient-day into silver/features (only what changed)."""
    _run_stages(ctx, "features", ("features",), full=full)


@app.command()
def train(
    ctx: typer.Context,
    force: Annotated[bool, typer.Option(help="Train now even if not due.")] = False,
    patients_per_cluster: Annotated[
        int, typer.Option(min=1, help="Patients per disease cluster in the backtests.")
    ] = 200,
    origins: Annotated[int, typer.Option(min=1, help="Rolling forecast origins.")] = 3,
    tune_seconds: Annotated[
        float, typer.Option(min=0, help="Time budget for EBM tuning (0: default parameters).")
    ] = 120.0,
) -> None:
    """Backtest every model, choose each cluster's champion, register the models (weekly)."""
    training = _training(
        force=force,
        patients_per_cluster=patients_per_cluster,
        origins=origins,
        tune_seconds=tune_seconds,
    )
    _run_stages(ctx, "train", ("train",), training=training)


@app.command()
def forecast(
    ctx: typer.Context,
    everyone: Annotated[
        bool,
        typer.Option(
            "--all",
            help="Forecast every patient, not only those due (new or changed data, a forecast "
            "a week old, their refresh day, or new models).",
        ),
    ] = False,
) -> None:
    """Forecast 365 days for the patients due and every model, with EBM explanations."""
    _run_stages(ctx, "forecast", ("forecast",), full=everyone)


@app.command("export-forecast")
def export_forecast(
    ctx: typer.Context,
    patient_id: Annotated[str, typer.Option("--patient-id", help="The patient.")],
    out: Annotated[Path, typer.Option("--out", help="CSV file to write.")],
) -> None:
    """Write a patient's 365-day forecast (every model, champion marked) as CSV.

    The patient is named by their stored id (a pseudonym) or by the source identifier ingestion
    was given (turned into its pseudonym with MOBILITY_PSEUDONYM_KEY)."""
    from jobs.forecast import patient_forecast
    from lakehouse.pseudonyms import resolve_patient_id

    if not out.parent.is_dir():
        raise InputError(f"cannot write {out}: the folder {out.parent} does not exist")
    lake = _context(ctx).lake
    rows = patient_forecast(lake, resolve_patient_id(lake, patient_id, get_settings()))
    try:
        # text cells neutralised against spreadsheet formulas (lakehouse.csv_export)
        out.write_text(csv_export.frame_csv(rows), encoding="utf-8", newline="")
    except OSError as err:
        raise InputError(f"cannot write {out}: {err.strerror or err}") from err
    typer.echo(f"export-forecast: {rows.height:,} rows for {patient_id} -> {out}")


@app.command()
def report(
    ctx: typer.Context,
    patient_id: Annotated[str, typer.Option("--patient-id", help="The patient.")],
    out: Annotated[Path, typer.Option("--out", help="PDF file to write (replaced if present).")],
    as_of: Annotated[
        str | None,
        typer.Option(
            "--as-of",
            help="The day the summary is measured up to, YYYY-MM-DD (default: yesterday, the "
            "last complete day).",
        ),
    ] = None,
) -> None:
    """Write a patient's printable report: a PDF of one or two A4 pages for the patient record
    (summary as of yesterday, diagnoses, current therapies, the patient page's chart, the
    forecast with its explanation, data completeness), as the dashboard's patient page prints it.

    The patient is named by their stored id (a pseudonym) or by the source identifier ingestion
    was given. Every report is recorded in the audit log (ops/audit_log: the user from
    MOBILITY_USER, else the operating system's) before the file is written; the file appears
    whole or not at all."""
    from jobs.recent_activity import as_of as yesterday
    from lakehouse import audit
    from lakehouse.pseudonyms import resolve_patient_id

    reference = _parse_date(as_of) if as_of else yesterday()
    if not out.parent.is_dir():
        raise InputError(f"cannot write {out}: the folder {out.parent} does not exist")
    _quiet_streamlit()
    from dashboard import chart_image
    from dashboard.report import audited_patient_report

    lake = _context(ctx).lake
    event = audit.AuditEvent(
        user=get_settings().command_line_user(),
        roles="cli",
        client="cli",
        action="report",
        page="mobility report",
    )
    stored_id = resolve_patient_id(lake, patient_id, get_settings())
    try:
        pdf = audited_patient_report(lake, stored_id, reference, event=event)
    finally:
        chart_image.shutdown()
    _write_whole(out, pdf)
    typer.echo(f"report: patient {stored_id} as of {reference} -> {out} ({len(pdf) / 1e3:,.0f} kB)")


def _quiet_streamlit() -> None:
    """The dashboard's queries cache through Streamlit, which warns at each cache it makes
    outside a running app ("No runtime found"): expected on the command line, so only its
    errors are shown."""
    from streamlit import logger

    logger.set_log_level("error")


def _write_whole(out: Path, content: bytes) -> None:
    """Write ``content`` to ``out`` whole or not at all: into a new file beside it (created with
    the process's file mode), then renamed over it."""
    import os
    import secrets

    partial = out.with_name(f".{out.name}.{secrets.token_hex(6)}.partial")
    try:
        descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
        with os.fdopen(descriptor, "wb") as stream:
            stream.write(content)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(partial, out)
    except OSError as err:
        partial.unlink(missing_ok=True)
        raise InputError(f"cannot write {out}: {err.strerror or err}") from err


@app.command()
def backtest(
    ctx: typer.Context,
    horizon: Annotated[int, typer.Option(min=1, help="Days ahead scored.")] = 7,
    origins: Annotated[int, typer.Option(min=1, help="Origins per patient.")] = 3,
    spacing_days: Annotated[int, typer.Option(min=1, help="Days between origins.")] = 7,
    min_history_days: Annotated[
        int, typer.Option(min=1, help="Wear days a patient needs before an origin.")
    ] = 14,
    patient_id: Annotated[
        list[str] | None, typer.Option("--patient-id", help="Only these patients (repeat).")
    ] = None,
) -> None:
    """Score the registered models and the baselines on each patient's last weeks (MAE per
    model and cluster, best first); writes nothing."""
    from jobs import recent_accuracy
    from models.backtest import league_table

    rows = recent_accuracy.run(
        _context(ctx).lake,
        horizon=horizon,
        origins=origins,
        spacing_days=spacing_days,
        min_history_wear_days=min_history_days,
        patients=patient_id,
    )
    league = league_table(rows, horizon_days=horizon)
    table = Table(title=f"backtest: MAE over the first {horizon} days, mean over origins")
    for column in ("cluster", "model", "mae", "rmse", "mase", "coverage", "origins", "patients"):
        table.add_column(column, justify="left" if column in ("cluster", "model") else "right")
    for row in league.iter_rows(named=True):
        table.add_row(
            row["cluster"],
            row["model"],
            f"{row['mae']:,.0f}",
            f"{row['rmse']:,.0f}",
            "-" if row["mase"] is None else f"{row['mase']:.2f}",
            f"{row['coverage']:.0%}",
            str(row["origins"]),
            str(row["patients"]),
        )
    Console(width=120).print(table)


@app.command("feature-dictionary")
def feature_dictionary(
    family: Annotated[
        str | None, typer.Option(help="Only this family (lag, roll, ewm, trend, ...).")
    ] = None,
) -> None:
    """Print the feature dictionary as CSV: name, family, label, window, type, definition."""
    from lakehouse.feature_dictionary import FAMILIES, FEATURES

    if family is not None and family not in FAMILIES:
        raise InputError(f"unknown feature family {family!r}: use one of {', '.join(FAMILIES)}")
    writer = csv.writer(sys.stdout, lineterminator="\n")
    writer.writerow(["name", "family", "label", "window", "type", "definition"])
    for feature in FEATURES:
        if family is None or feature.family == family:
            writer.writerow(
                [
                    feature.name,
                    feature.family,
                    feature.label,
                    feature.window,
                    str(feature.dtype),
                    feature.definition,
                ]
            )


@app.command()
def monitor(ctx: typer.Context) -> None:
    """Check data freshness against yesterday, data quality and wear, forecast accuracy against
    the backtests, feature and prediction drift, job health and cost; raise and resolve alerts
    (ops/monitor_checks, ops/alerts)."""
    _run_stages(ctx, "monitor", ("monitor",))


@app.command()
def pipeline(ctx: typer.Context) -> None:
    """Run every stage that is due, in order: aggregate, features, train (weekly, or after an
    accuracy alert), forecast, monitor. With --engine spark, aggregate, features and forecast
    run on Spark (one session for the three); train and monitor always run in this process.

    The stages run under the lake's lock: a second pipeline started meanwhile waits for this one
    (MOBILITY_LOCK_WAIT), then finds its work done (docs/reliability.md)."""
    from jobs.pipeline import STAGES

    training = _training(force=False, patients_per_cluster=200, origins=3, tune_seconds=120.0)
    _run_stages(ctx, "pipeline", STAGES, training=training)


@app.command()
def sql(
    ctx: typer.Context,
    query: Annotated[str, typer.Argument(help="One read-only SQL query over the lake views.")],
    max_rows: Annotated[int, typer.Option(min=1, help="Row cap.")] = 10_000,
    timeout: Annotated[float, typer.Option(min=0.1, help="Time limit in seconds.")] = 30.0,
    max_mb: Annotated[
        int, typer.Option(min=1, help="Size cap of the result in MB (refused beyond).")
    ] = 256,
) -> None:
    """Query the lake through the read-only SQL sandbox; prints CSV.

    Every query is recorded in the audit log (ops/audit_log: the user from MOBILITY_USER, else
    the operating system's; the query's SHA-256 and row count) before its rows are printed."""
    from lakehouse import audit, sandbox

    lake = _context(ctx).lake

    def audited(rows: int | None, outcome: str) -> None:
        event = audit.AuditEvent(
            user=get_settings().command_line_user(),
            roles="cli",
            client="cli",
            action="sql",
            page="mobility sql",
            sql_sha256=audit.sql_sha256(query),
            rows=rows,
            outcome=outcome,
        )
        audit.record(lake, event)

    limits = sandbox.Limits(timeout_seconds=timeout, row_cap=max_rows, byte_cap=max_mb * 10**6)
    try:
        result = sandbox.run(lake, query, limits=limits)
    except sandbox.QueryRefused as err:
        # the reason only: DuckDB's message may quote a value of the data
        audited(None, f"refused: {err.reason}")
        raise
    audited(result.table.num_rows, "ok")
    # text cells neutralised against spreadsheet formulas (lakehouse.csv_export)
    csv_export.write_rows(
        sys.stdout, result.table.column_names, (row.values() for row in result.table.to_pylist())
    )
    if result.truncated:
        console.print(f"[yellow]result truncated to {max_rows:,} rows[/yellow]")


@app.command()
def pseudonym(
    ctx: typer.Context,
    source_id: Annotated[
        list[str], typer.Argument(help="Source patient identifiers, as ingestion receives them.")
    ],
) -> None:
    """Print the pseudonym ingestion stores for each source identifier (needs
    MOBILITY_PSEUDONYM_KEY): to find a patient in SQL or the dashboard."""
    from lakehouse.pseudonyms import from_settings

    pseudonyms = from_settings(get_settings(), lake_uri=_context(ctx).lake.uri)
    writer = csv.writer(sys.stdout, lineterminator="\n")
    writer.writerow(["source_id", "patient_id"])
    for source in source_id:
        writer.writerow([source, pseudonyms.of(source)])


@app.command()
def scheduler(ctx: typer.Context) -> None:
    """The Procfile worker: landing files (MOBILITY_LANDING) and the pipeline daily at 02:00 UTC
    with retries, the retraining check every 6 hours."""
    from jobs.schedule import run_forever

    run_forever(_context(ctx).lake)


simulate_app = typer.Typer(
    help="A synthetic population that lives on day by day (demos, monitoring).",
    no_args_is_help=True,
)
app.add_typer(simulate_app, name="simulate")


@simulate_app.command("start")
def simulate_start(
    ctx: typer.Context,
    patients: Annotated[int, typer.Option(min=1, help="Number of patients.")] = 60,
    seed: Annotated[int, typer.Option(min=0, help="Population seed.")] = 42,
    years: Annotated[float, typer.Option(help="Years of history before the start day.")] = 2.0,
    start_day: Annotated[
        str | None,
        typer.Option(help="The last day known at the start (YYYY-MM-DD; default 2026-10-31)."),
    ] = None,
    days_ahead: Annotated[int, typer.Option(help="Days that can be released later.")] = 90,
    landing: Annotated[
        Path | None,
        typer.Option(help="Landing folder (default: MOBILITY_LANDING, else next to the lake)."),
    ] = None,
    tune_seconds: Annotated[
        float, typer.Option(min=0, help="EBM tuning budget of each training.")
    ] = 0.0,
) -> None:
    """Simulate the patients' lives, ingest what was known on the start day through the landing
    folder and run the pipeline (training forced), under the lake's lock."""
    from jobs import simulate as simulate_job

    lake = _context(ctx).lake
    folder = landing or _simulation_landing(lake)
    simulation = simulate_job.start(
        lake,
        patients=patients,
        seed=seed,
        landing=folder,
        years=years,
        days_ahead=days_ahead,
        training={"tune_seconds": tune_seconds},
        on_wait=_say_waiting,
        **({"start_day": _parse_date(start_day)} if start_day else {}),
    )
    typer.echo(
        f"simulate: {simulation.patients} patients known through {simulation.today}; "
        f"`mobility simulate advance --days N` releases up to {simulation.last_day} "
        f"(landing folder {folder})"
    )


@simulate_app.command("advance")
def simulate_advance(
    ctx: typer.Context,
    days: Annotated[int, typer.Option(min=1, help="Days to release, one at a time.")] = 1,
    shift: Annotated[
        float | None,
        typer.Option(help="From the first of these days, steps times this factor (0.6: -40%)."),
    ] = None,
    group: Annotated[
        list[str] | None, typer.Option(help="Shift only this disease group (repeatable).")
    ] = None,
    bad_rows: Annotated[
        int, typer.Option(min=0, help="Broken rows in the first of these days' feed.")
    ] = 0,
    extra_column: Annotated[
        str | None, typer.Option(help="A column the feed carries from the first of these days.")
    ] = None,
) -> None:
    """Release days of the simulation: each day's device feed goes through the landing folder,
    then the daily pipeline and monitoring run, under the lake's lock."""
    from jobs import simulate as simulate_job

    change = None if shift is None else simulate_job.Shift(date.min, shift, tuple(group or ()))
    if group and shift is None:
        raise InputError("--group needs --shift")
    simulate_job.advance(
        _context(ctx).lake,
        days=days,
        shift=change,
        bad_rows=bad_rows,
        extra_column=extra_column,
        on_day=lambda report: typer.echo(report.describe()),
        on_wait=_say_waiting,
    )


def _simulation_landing(lake: Lake) -> Path:
    configured = get_settings().landing
    if configured:
        return Path(configured)
    if not lake.is_local:
        raise InputError("give --landing (a local folder) for a lake on object storage")
    return Path(lake.uri).parent / "landing"


@lake_app.command("info")
def lake_info(ctx: typer.Context) -> None:
    """List tables with their version, rows, files and size."""
    lake = _context(ctx).lake
    table = Table(title=f"lake {lake.uri}")
    for column in ("table", "version", "rows", "files", "size MB"):
        table.add_column(column, justify="left" if column == "table" else "right")
    for spec in ALL_TABLES:
        info = lake.info(spec)
        if not info.exists:
            table.add_row(spec.path, "-", "-", "-", "-")
            continue
        table.add_row(
            spec.path,
            str(info.version),
            f"{info.rows:,}",
            f"{info.files:,}",
            f"{info.size_bytes / 1e6:,.1f}",
        )
    Console().print(table)


@lake_app.command("check")
def lake_check(
    ctx: typer.Context,
    sample_patients: Annotated[
        int,
        typer.Option(min=1, help="Patients whose daily totals are recomputed from bronze."),
    ] = 50,
    seed: Annotated[int, typer.Option(min=0, help="Which patients are sampled.")] = 0,
) -> None:
    """Verify the tables' invariants: readable, keys unique, daily totals consistent with bronze,
    features and forecasts complete. Prints one line per problem; exit status 1 when any."""
    from jobs import check as check_job
    from lakehouse.lock import LakeLock

    lake = _context(ctx).lake
    _, lease = LakeLock(lake, purpose="lake check").current()
    if lease is not None and not lease.is_free(datetime.now(UTC)):
        typer.echo(f"note: the lake is locked by {lease.describe()}: a stage is running")
    report = check_job.run(lake, sample_patients_count=sample_patients, seed=seed)
    for problem in report.problems:
        typer.echo(str(problem))
    if not report.ok:
        typer.echo(f"lake check: {len(report.problems)} problem(s)", err=True)
        raise typer.Exit(1)
    typer.echo(report.describe())


@lake_app.command("optimize")
def lake_optimize(
    ctx: typer.Context,
    table: Annotated[
        str | None, typer.Option(help="Only this table, as layer/name (default: all).")
    ] = None,
    vacuum_hours: Annotated[
        int, typer.Option(min=0, help="Delete files unreferenced for this many hours.")
    ] = 168,
) -> None:
    """Compact small files (z-ordered by patient and time) and vacuum old ones (under the
    lake's lock: a vacuum must not delete files a running stage still reads)."""
    lake = _context(ctx).lake
    chosen = [t for t in ALL_TABLES if table is None or t.path == table]
    if not chosen:
        raise InputError(f"unknown table {table!r}; see `mobility lake info`")
    with _locked(ctx, "lake optimize"):
        for spec in chosen:
            if not lake.exists(spec):
                continue
            before = lake.info(spec).files
            metrics = lake.optimize(spec, vacuum_hours=vacuum_hours)
            typer.echo(
                f"{spec.path}: {before} -> {lake.info(spec).files} files, "
                f"{metrics.get('vacuumed_files', 0)} vacuumed"
            )


def _parse_date(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError as err:
        raise InputError(f"not a date (YYYY-MM-DD): {text!r}") from err


def main() -> None:
    """Entry point: run the CLI, turning expected errors into one line and exit status 2.

    Usage errors (unknown option, value out of range) are reported by Typer itself, also in one
    line after the usage, with exit status 2.
    """
    try:
        # files 0600 and folders 0700 (or as MOBILITY_FILE_MODE says) for all this process and
        # the commands it starts (the scheduler's) write
        apply_file_mode(get_settings())
        app(prog_name="mobility")
    except MobilityError as err:
        message = " ".join(str(err).splitlines())
        # soft_wrap: the console must not fold a long message onto several lines.
        console.print(f"error: {message}", markup=False, highlight=False, soft_wrap=True)
        sys.exit(2)
    except OSError as err:
        # object storage (or the disk) failed past every retry, somewhere a read did not pass
        # through the lake's own error handling: one line all the same (docs/reliability.md)
        from lakehouse.storage import one_line

        message = f"error: storage failed: {one_line(err)}"
        console.print(message, markup=False, highlight=False, soft_wrap=True)
        sys.exit(2)
