"""``mobility lake check``: verify the lake's invariants and say what is wrong, one line each.

Read-only. What it checks (docs/reliability.md):

- **readable**: every table's log loads, every data file it references is there and is Parquet
  with the row count the log records; tables up to :data:`FULL_SCAN_ROWS` rows are decoded whole.
- **keys**: no two rows share the table's catalog keys (tables over :data:`FULL_SCAN_ROWS` rows:
  the sampled patients' rows).
- **daily totals**: a sample of patients' silver/daily_steps rows equal what the same daily
  transform (:func:`jobs.daily.daily_steps`) makes of their bronze samples now: no day missing,
  none extra, the same steps, coverage, sample and source counts.
- **features**: every patient's features reach the day after their last day of data.
- **forecasts**: every patient with a wear day has forecasts from an origin at most
  :data:`~jobs.forecast_refresh.REFRESH_DAYS` days before their latest one (the day after their
  last day of data: the forecast job refreshes a patient's forecast weekly, or sooner when their
  data or clinical rows change, :mod:`jobs.forecast_refresh`); at that origin each model has
  all ``horizon`` days with finite values inside their interval, every patient has the three
  baselines (or the cluster-level forecast), and a sample of EBM forecasts' explanations sum to
  their ``yhat``.

A pipeline running while this runs can make its half-done state look like a problem; the
command says when one holds the lake's lock.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import date, timedelta

import polars as pl

from jobs.daily import daily_steps
from jobs.forecast_refresh import REFRESH_DAYS
from lakehouse.catalog import (
    ALL_TABLES,
    DAILY_STEPS,
    EXPLANATIONS,
    FEATURES,
    FORECASTS,
    PATIENTS,
    STEP_SAMPLES,
    TableSpec,
)
from lakehouse.storage import Lake, one_line
from models import baselines
from models.cluster_level import NAME as CLUSTER_LEVEL

# Tables up to this many rows are read whole (decoded, keys compared over every row).
FULL_SCAN_ROWS = 20_000_000
BASELINES = tuple(model.name for model in baselines.BASELINES)
HORIZON = 365
# Relative difference of recomputed daily steps still counted as equal (float summation order).
STEPS_TOLERANCE = 1e-9
# Steps by which an EBM forecast's explanation rows may miss its yhat.
EXPLANATION_TOLERANCE = 1e-3
_EXAMPLES = 3


@dataclass(frozen=True)
class Problem:
    """One thing wrong with one table."""

    table: str
    message: str

    def __str__(self) -> str:
        return f"{self.table}: {self.message}"


@dataclass
class CheckReport:
    """What ``lake check`` found: problems, and what was checked (for the all-clear line)."""

    problems: list[Problem] = field(default_factory=list)
    tables: int = 0
    sampled_patients: int = 0
    sampled_days: int = 0
    forecast_patients: int = 0

    @property
    def ok(self) -> bool:
        """No problem found."""
        return not self.problems

    def describe(self) -> str:
        """One line summing up what was checked."""
        return (
            f"lake check: {self.tables} tables readable with unique keys; daily totals of "
            f"{self.sampled_patients} sampled patients ({self.sampled_days:,} patient-days) "
            f"match bronze; forecasts of {self.forecast_patients} patients complete"
        )


def _examples(frame: pl.DataFrame, columns: list[str]) -> str:
    rows = frame.select(columns).head(_EXAMPLES).iter_rows()
    return "; ".join(
        ", ".join(f"{c}={v}" for c, v in zip(columns, row, strict=True)) for row in rows
    )


def _first_line(err: BaseException) -> str:
    return f"{type(err).__name__}: {one_line(err)}"[:300]


def check_readable(lake: Lake, table: TableSpec) -> tuple[list[Problem], int]:
    """The table's log, files and rows can be read; returns problems and its row count."""
    try:
        delta = lake.delta(table)
        logged = lake.file_stats(table)
        dataset = delta.to_pyarrow_dataset()
        in_footers = 0
        for fragment in dataset.get_fragments():
            metadata = fragment.metadata  # reads the Parquet footer
            in_footers += int(metadata.num_rows)
        in_log = int(logged["num_records"].sum()) if logged.height else 0
        problems = []
        if logged.height and logged["num_records"].null_count() == 0 and in_log != in_footers:
            problems.append(
                Problem(
                    table.path, f"the log records {in_log:,} rows, its files hold {in_footers:,}"
                )
            )
        if in_footers <= FULL_SCAN_ROWS:
            for _ in dataset.to_batches():  # decode every page
                pass
        return problems, in_footers
    except Exception as err:  # anything: the point is to report it, in one line
        return [Problem(table.path, f"unreadable ({_first_line(err)})")], 0


def check_keys(
    lake: Lake, table: TableSpec, *, rows: int, patients: list[str] | None = None
) -> list[Problem]:
    """No two rows share the table's keys (for big tables: among ``patients``' rows)."""
    scan = lake.scan(table)
    scope = ""
    if rows > FULL_SCAN_ROWS:
        if patients is None or "patient_id" not in table.columns:
            return []
        scan = scan.filter(pl.col("patient_id").is_in(patients))
        scope = f" among {len(patients)} sampled patients"
    try:
        repeated = (
            scan.group_by(list(table.keys))
            .agg(copies=pl.len())
            .filter(pl.col("copies") > 1)
            .sort(list(table.keys))
            .collect()
        )
    except Exception as err:
        return [Problem(table.path, f"keys unreadable ({_first_line(err)})")]
    if not repeated.height:
        return []
    extra = int(repeated["copies"].sum()) - repeated.height
    return [
        Problem(
            table.path,
            f"{repeated.height:,} keys ({', '.join(table.keys)}) occur more than once{scope}, "
            f"{extra:,} duplicated rows (e.g. {_examples(repeated, [*table.keys, 'copies'])})",
        )
    ]


def sample_patients(lake: Lake, count: int, seed: int) -> list[str]:
    """Up to ``count`` patients drawn at random (seeded) from bronze/patients and
    silver/daily_steps."""
    known: set[str] = set()
    for table in (PATIENTS, DAILY_STEPS):
        if lake.exists(table):
            ids = lake.scan(table).select("patient_id").unique().collect()["patient_id"]
            known.update(ids.to_list())
    ordered = sorted(known)
    return sorted(random.Random(seed).sample(ordered, min(count, len(ordered))))


def check_daily_totals(lake: Lake, patients: list[str]) -> tuple[list[Problem], int]:
    """The patients' silver/daily_steps rows equal the daily transform of their bronze
    samples; returns problems and the number of patient-days compared."""
    if not patients or not lake.exists(STEP_SAMPLES):
        return [], 0
    samples = lake.scan(STEP_SAMPLES).filter(pl.col("patient_id").is_in(patients)).collect()
    expected = daily_steps(samples)
    stored = (
        lake.scan(DAILY_STEPS)
        .filter(pl.col("patient_id").is_in(patients))
        .select(expected.columns)
        .collect()
        if lake.exists(DAILY_STEPS)
        else expected.clear()
    )
    keys = ["patient_id", "date"]
    both = expected.join(stored, on=keys, how="full", coalesce=True, suffix="_stored")
    missing = both.filter(pl.col("steps_stored").is_null() & pl.col("steps").is_not_null())
    extra = both.filter(pl.col("steps").is_null() & pl.col("steps_stored").is_not_null())
    matched = both.filter(pl.col("steps").is_not_null() & pl.col("steps_stored").is_not_null())
    exact = ["coverage_hours", "n_samples", "n_sources", "is_wear_day"]
    differs = pl.lit(False)
    for column in exact:
        differs |= pl.col(column) != pl.col(f"{column}_stored")
    tolerance = STEPS_TOLERANCE * pl.max_horizontal(pl.col("steps").abs(), pl.lit(1.0))
    differs |= (pl.col("steps") - pl.col("steps_stored")).abs() > tolerance
    wrong = matched.filter(differs)
    problems = []
    hint = "; run `mobility aggregate`"
    if missing.height:
        problems.append(
            Problem(
                DAILY_STEPS.path,
                f"{missing.height:,} patient-days with bronze samples are missing "
                f"(e.g. {_examples(missing, keys)}){hint}",
            )
        )
    if extra.height:
        problems.append(
            Problem(
                DAILY_STEPS.path,
                f"{extra.height:,} patient-days have no bronze samples any more "
                f"(e.g. {_examples(extra, keys)}){hint}",
            )
        )
    if wrong.height:
        problems.append(
            Problem(
                DAILY_STEPS.path,
                f"{wrong.height:,} of {matched.height:,} sampled patient-days differ from their "
                f"bronze samples (e.g. {_examples(wrong, [*keys, 'steps', 'steps_stored'])}){hint}",
            )
        )
    return problems, both.height


def _last_days(lake: Lake) -> pl.DataFrame:
    """``patient_id, last, wear_days`` per patient of silver/daily_steps."""
    return (
        lake.scan(DAILY_STEPS)
        .group_by("patient_id")
        .agg(last=pl.col("date").max(), wear_days=pl.col("is_wear_day").sum())
        .collect()
    )


def check_features(lake: Lake, last_days: pl.DataFrame) -> list[Problem]:
    """Every patient's features reach the day after their last day of data."""
    if not last_days.height:
        return []
    if not lake.exists(FEATURES):
        return [Problem(FEATURES.path, "missing; run `mobility features`")]
    reach = lake.scan(FEATURES).group_by("patient_id").agg(until=pl.col("date").max()).collect()
    behind = (
        last_days.join(reach, on="patient_id", how="left")
        .filter(
            pl.col("until").is_null() | (pl.col("until") < pl.col("last") + pl.duration(days=1))
        )
        .sort("patient_id")
    )
    if not behind.height:
        return []
    return [
        Problem(
            FEATURES.path,
            f"{behind.height:,} patients' features end before the day after their last day of "
            f"data (e.g. {_examples(behind, ['patient_id', 'last', 'until'])}); "
            "run `mobility features`",
        )
    ]


def check_forecasts(
    lake: Lake, last_days: pl.DataFrame, patients: list[str], *, horizon: int = HORIZON
) -> tuple[list[Problem], int]:
    """Every patient with a wear day has a complete forecast from a recent origin (module
    docstring); returns problems and the number of patients checked. Read by aggregates, never
    the forecast rows whole (100,000 patients: about 250 million rows an origin)."""
    wearing = last_days.filter(pl.col("wear_days") > 0).select(
        "patient_id", latest=pl.col("last") + pl.duration(days=1)
    )
    if not wearing.height:
        return [], 0
    if not lake.exists(FORECASTS):
        return [Problem(FORECASTS.path, "missing; run `mobility forecast`")], wearing.height
    earliest = wearing["latest"].min()
    assert isinstance(earliest, date)
    recent = lake.scan(FORECASTS).filter(
        pl.col("origin_date") >= earliest - timedelta(days=REFRESH_DAYS)
    )
    # each patient's newest origin at most REFRESH_DAYS before their latest one
    origins = (
        recent.select("patient_id", "origin_date")
        .unique()
        .join(wearing.lazy(), on="patient_id")
        .filter(
            (pl.col("origin_date") <= pl.col("latest"))
            & (pl.col("origin_date") >= pl.col("latest") - pl.duration(days=REFRESH_DAYS))
        )
        .group_by("patient_id")
        .agg(pl.col("origin_date").max())
        .collect(engine="streaming")  # 100,000 patients: 0.6 GB, in memory 19.7 GB
    )
    rows = recent.join(origins.lazy(), on=["patient_id", "origin_date"]).select(
        "patient_id", "model", "origin_date", "target_date", "yhat", "yhat_lower", "yhat_upper"
    )
    problems: list[Problem] = []
    hint = "; run `mobility forecast`"
    without = wearing.join(origins, on="patient_id", how="anti")
    if without.height:
        problems.append(
            Problem(
                FORECASTS.path,
                f"{without.height:,} patients have no forecast from the last {REFRESH_DAYS} days "
                f"before their latest origin (e.g. "
                f"{_examples(without.sort('patient_id'), ['patient_id', 'latest'])}){hint}",
            )
        )
    every_day = _all_days_present(horizon)
    per_model = (
        rows.with_columns(**_days_present(horizon))
        .group_by("patient_id", "model", "origin_date")
        .agg(pl.len().alias("days"), pl.col(list(every_day)).bitwise_or())
        .collect(engine="streaming")
    )
    # every day of the horizon once, nothing else: as many rows as days, each day's bit set
    complete = pl.all_horizontal(pl.col(name) == word for name, word in every_day.items()) & (
        pl.col("days") == horizon
    )
    short = per_model.filter(~complete).drop(every_day).sort("patient_id", "model")
    if short.height:
        problems.append(
            Problem(
                FORECASTS.path,
                f"{short.height:,} forecasts from the latest origin lack some of the {horizon} "
                f"days (e.g. {_examples(short, ['patient_id', 'model', 'days'])}){hint}",
            )
        )
    bad = rows.filter(
        ~pl.col("yhat").is_finite()
        | pl.col("yhat").is_null()
        | (pl.col("yhat_lower") > pl.col("yhat") + EXPLANATION_TOLERANCE)
        | (pl.col("yhat_upper") < pl.col("yhat") - EXPLANATION_TOLERANCE)
    ).collect(engine="streaming")
    if bad.height:
        problems.append(
            Problem(
                FORECASTS.path,
                f"{bad.height:,} forecast days are not finite or lie outside their interval "
                f"(e.g. {_examples(bad, ['patient_id', 'model', 'target_date', 'yhat'])})",
            )
        )
    models = per_model.group_by("patient_id").agg(pl.col("model").unique())
    lacking = models.filter(
        ~pl.col("model").list.contains(CLUSTER_LEVEL)
        & ~pl.all_horizontal(pl.col("model").list.contains(name) for name in BASELINES)
    ).sort("patient_id")
    if lacking.height:
        problems.append(
            Problem(
                FORECASTS.path,
                f"{lacking.height:,} patients lack a baseline forecast from their latest origin "
                f"(e.g. {_examples(lacking, ['patient_id'])}){hint}",
            )
        )
    sampled = rows.filter(pl.col("patient_id").is_in(patients)).collect(engine="streaming")
    problems += _check_explanations(lake, sampled)
    return problems, wearing.height


def _days_present(horizon: int) -> dict[str, pl.Expr]:
    """Columns marking the day of the horizon a forecast row is for: bit ``k`` of word ``w`` is
    set for the day ``64 w + k`` after the origin (days outside the horizon set no bit), to be
    combined per forecast by a bitwise OR. That streams in little memory, where counting
    distinct days held every forecast row (14 GB at 100,000 patients)."""
    offset = (pl.col("target_date") - pl.col("origin_date")).dt.total_days()
    bit = pl.lit(2, pl.UInt64).pow(offset % 64)  # exact in 64 bits; a look-up would not stream
    return {
        f"_days_{word}": pl.when((offset >= 0) & (offset < horizon) & (offset // 64 == word))
        .then(bit)
        .otherwise(pl.lit(0, pl.UInt64))
        for word in range((horizon + 63) // 64)
    }


def _all_days_present(horizon: int) -> dict[str, int]:
    """The words of :func:`_days_present` when every day of the horizon has a row."""
    return {
        f"_days_{word}": (1 << min(64, horizon - 64 * word)) - 1
        for word in range((horizon + 63) // 64)
    }


def _check_explanations(lake: Lake, forecasts: pl.DataFrame) -> list[Problem]:
    """The EBM rows among ``forecasts`` have explanations summing to their yhat."""
    ebm = forecasts.filter(pl.col("model").str.starts_with("ebm_"))
    if not ebm.height:
        return []
    keys = ["patient_id", "model", "origin_date", "target_date"]
    sums = (
        lake.scan(EXPLANATIONS)
        # the sampled patients first: their files alone are read (the whole table is about
        # 1 billion rows at 100,000 patients; joined unfiltered it took 14 GB)
        .filter(pl.col("patient_id").is_in(ebm["patient_id"].unique().to_list()))
        .join(ebm.select(keys).lazy(), on=keys)
        .group_by(keys)
        .agg(total=pl.col("contribution").sum())
        .collect()
        if lake.exists(EXPLANATIONS)
        else pl.DataFrame(schema={**dict(ebm.select(keys).schema), "total": pl.Float64})
    )
    compared = ebm.join(sums, on=keys, how="left")
    wrong = compared.filter(
        pl.col("total").is_null()
        | ((pl.col("total") - pl.col("yhat")).abs() > EXPLANATION_TOLERANCE)
    ).sort(keys)
    if not wrong.height:
        return []
    return [
        Problem(
            EXPLANATIONS.path,
            f"{wrong.height:,} of {compared.height:,} sampled EBM forecast days have explanations "
            f"missing or not summing to yhat (e.g. {_examples(wrong, [*keys, 'yhat', 'total'])}); "
            "run `mobility forecast`",
        )
    ]


def run(
    lake: Lake, *, sample_patients_count: int = 50, seed: int = 0, horizon: int = HORIZON
) -> CheckReport:
    """Check every invariant of the lake (module docstring).

    Args:
        lake: the lake.
        sample_patients_count: patients whose daily totals are recomputed from bronze and whose
            explanations are summed (and whose keys are compared in tables too big to read whole).
        seed: which patients are sampled.
        horizon: the forecast days every model must have from each patient's latest origin.
    """
    report = CheckReport()
    patients: list[str] = []
    readable: dict[str, int] = {}
    for table in ALL_TABLES:
        if not lake.exists(table):
            continue
        problems, rows = check_readable(lake, table)
        report.problems += problems
        report.tables += 1
        if not problems:
            readable[table.path] = rows
    try:
        patients = sample_patients(lake, sample_patients_count, seed)
    except Exception as err:
        report.problems.append(Problem("bronze/patients", f"unreadable ({_first_line(err)})"))
    for table in ALL_TABLES:
        if table.path in readable:
            report.problems += check_keys(lake, table, rows=readable[table.path], patients=patients)
    if STEP_SAMPLES.path in readable and (
        DAILY_STEPS.path in readable or not lake.exists(DAILY_STEPS)
    ):
        problems, days = check_daily_totals(lake, patients)
        report.problems += problems
        report.sampled_patients, report.sampled_days = len(patients), days
    if DAILY_STEPS.path in readable:
        last_days = _last_days(lake)
        if FEATURES.path in readable or not lake.exists(FEATURES):
            report.problems += check_features(lake, last_days)
        if FORECASTS.path in readable or not lake.exists(FORECASTS):
            problems, report.forecast_patients = check_forecasts(
                lake, last_days, patients, horizon=horizon
            )
            report.problems += problems
    return report
