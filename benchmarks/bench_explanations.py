"""Benchmark: do the stored explanations show a therapy's effect, with the right sign, when the
therapy starts or stops inside the forecast? (issue 19, item 3: the true effect's sign on at
least 90% of such days, on populations of 40 and of 300 patients.)

For each population size: ``mobility generate`` writes a synthetic population (with its ground
truth, synthetic/ground_truth: each therapy course's true additive daily effect) into a fresh
lake; the last ``--withhold-days`` of every patient's step samples are deleted from
bronze/step_samples (the therapy plan in bronze/therapies stays whole, so courses recorded there
start or stop inside the forecast's year); then ``mobility pipeline`` aggregates, computes the
features, trains, forecasts and explains.

Then, from each patient's forecast origin (the latest in gold/forecasts) through the 365-day
horizon, a therapy (by its slug, as the models see it: ``therapy_<slug>_change``) has *changed*
on a target day when its planned state that day differs from the state at the origin (started
since: +1, stopped since: -1). The true change of that day is the sum over the slug's courses
of ``effect_steps * (active on the day - active at the origin)`` (a start adds the effect, a
stop takes it away); its sign is what the explanation should show. The explanation's figure is
the sum of the gold/explanations contributions of that therapy's features
(``explanation_family(feature) == "therapy:<slug>"``) of the row. A day counts as *right* when
the signs agree, as *zero* when the sum is exactly 0 (no such row stored: not among the row's
largest contributions, or no explanation at all), as wrong otherwise. This is done for the
champion of each patient's cluster (newest registry version) and for each EBM separately, on the
patients the model forecast. The same is printed, for information, for the days of therapies
that run through the whole forecast (active at the origin and every day of the horizon, the true
effect's sign against the contributions).

    python benchmarks/bench_explanations.py [--patients 40 300] [--seed 7] [--quick] \
        [--withhold-days 180] [--years 3] [--workdir /tmp/mobility-bench-explain] [--out f.json]

``--quick`` trains as tests and demos do (``MOBILITY_QUICK_TRAINING=1``); the default is the
real training. The lakes are deleted afterwards unless ``--keep``.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import time
from dataclasses import asdict, dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import polars as pl
from common import END_DATE, mobility, run_pipeline

from jobs.forecast import champions
from jobs.train import latest_version
from lakehouse.catalog import (
    EXPLANATIONS,
    FORECASTS,
    GROUND_TRUTH,
    PATIENTS,
    REGISTRY,
    STEP_SAMPLES,
    THERAPIES,
)
from lakehouse.feature_dictionary import explanation_family, therapy_slug
from lakehouse.storage import Lake, sql_literal

HORIZON_DAYS = 365
EBMS = ("ebm_cluster", "ebm_global")
CHAMPION = "champion"
TARGET_SHARE = 0.90
THERAPY_FAMILY = "therapy:"
# kinds of therapy days scored
CHANGED = "changed"
THROUGH = "runs through"


@dataclass
class PopulationRun:
    """One population's lake: its size, the withheld days, timings and error if the pipeline
    failed, and the figures."""

    patients: int
    seed: int
    withheld_from: str | None = None
    generate_seconds: float = 0.0
    pipeline_seconds: float = 0.0
    error: str | None = None
    champions: dict[str, str] = field(default_factory=dict)
    shrinkage: list[dict[str, Any]] = field(default_factory=list)
    scores: list[dict[str, Any]] = field(default_factory=list)
    by_direction: list[dict[str, Any]] = field(default_factory=list)


def withhold_last_days(lake: Lake, days: int) -> date:
    """Delete the step samples of the population's last ``days`` days (by the patient's local
    date of the sample; the population shares one last day); returns the first withheld day.

    The months that hold withheld samples are rewritten with the samples they keep, in one
    replace of those partitions of bronze/step_samples.
    """
    local_date = (
        pl.col("start_ts") + pl.duration(minutes=pl.col("utc_offset_minutes").cast(pl.Int64))
    ).dt.date()
    last = lake.scan(STEP_SAMPLES).select(local_date.max()).collect().item()
    if not isinstance(last, date):
        raise SystemExit("the generated lake holds no step samples")
    first_withheld = last - timedelta(days=days - 1)
    # a sample of a local day starts at most 14 hours before it in UTC
    first_month = (first_withheld - timedelta(days=1)).strftime("%Y-%m")
    kept = (
        lake.scan(STEP_SAMPLES)
        .filter(pl.col("month") >= first_month)
        .filter(local_date < first_withheld)
        .collect()
    )
    lake.replace(STEP_SAMPLES, kept, predicate=f"month >= {sql_literal(first_month)}")
    return first_withheld


def forecast_origins(lake: Lake) -> pl.DataFrame:
    """``patient_id, origin_date``: each patient's latest forecast origin."""
    return (
        lake.scan(FORECASTS)
        .group_by("patient_id")
        .agg(pl.col("origin_date").max())
        .collect()
        .sort("patient_id")
    )


def therapy_courses(lake: Lake) -> pl.DataFrame:
    """``patient_id, slug, start_date, end_date, effect_steps``: the therapy plan
    (bronze/therapies) with each course's true effect (synthetic/ground_truth)."""
    keys = ["patient_id", "therapy", "start_date"]
    truth = lake.read(GROUND_TRUTH).select(*keys, "effect_steps")
    plan = lake.read(THERAPIES).join(truth, on=keys, how="inner")
    return plan.with_columns(slug=pl.col("therapy").map_elements(therapy_slug, pl.String)).select(
        "patient_id", "slug", "start_date", "end_date", "effect_steps"
    )


def _active(day: str) -> pl.Expr:
    return (pl.col("start_date") <= pl.col(day)) & (
        pl.col("end_date").is_null() | (pl.col(day) <= pl.col("end_date"))
    )


def therapy_days(origins: pl.DataFrame, courses: pl.DataFrame) -> pl.DataFrame:
    """``patient_id, slug, target_date, kind, direction, true_sign``: the scored therapy days.

    ``changed``: days of the horizon whose planned state of the therapy differs from the
    origin's (``direction`` +1 started since, -1 stopped since), ``true_sign`` the sign of the
    true change (sum of ``effect * (active that day - active at the origin)`` over its courses;
    days where it is 0 are left out). ``runs through``: every day of the horizon of a therapy
    active at the origin and on every one of those days with no course starting or stopping,
    ``true_sign`` the sign of the effects active at the origin.
    """
    days = origins.with_columns(
        target_date=pl.date_ranges(
            "origin_date", pl.col("origin_date") + pl.duration(days=HORIZON_DAYS - 1)
        )
    ).explode("target_date")
    per_course = days.join(courses, on="patient_id").with_columns(
        at_target=_active("target_date").cast(pl.Int8),
        at_origin=_active("origin_date").cast(pl.Int8),
    )
    per_slug = per_course.group_by("patient_id", "slug", "target_date").agg(
        direction=pl.col("at_target").max() - pl.col("at_origin").max(),
        true_change=(pl.col("effect_steps") * (pl.col("at_target") - pl.col("at_origin"))).sum(),
        any_course_change=(pl.col("at_target") != pl.col("at_origin")).any(),
        state=pl.col("at_target").max(),
        origin_effect=(pl.col("effect_steps") * pl.col("at_origin")).sum(),
    )
    changed = per_slug.filter((pl.col("direction") != 0) & (pl.col("true_change") != 0)).select(
        "patient_id",
        "slug",
        "target_date",
        kind=pl.lit(CHANGED),
        direction=pl.col("direction").cast(pl.Int8),
        true_sign=pl.col("true_change").sign().cast(pl.Int8),
    )
    steady = (
        per_slug.group_by("patient_id", "slug")
        .agg(
            steady=(~pl.col("any_course_change").any()) & (pl.col("state").min() == 1),
        )
        .filter("steady")
        .select("patient_id", "slug")
    )
    through = (
        per_slug.join(steady, on=["patient_id", "slug"])
        .filter(pl.col("origin_effect") != 0)
        .select(
            "patient_id",
            "slug",
            "target_date",
            kind=pl.lit(THROUGH),
            direction=pl.lit(0, pl.Int8),
            true_sign=pl.col("origin_effect").sign().cast(pl.Int8),
        )
    )
    return pl.concat([changed, through]).sort("kind", "patient_id", "slug", "target_date")


def therapy_contributions(lake: Lake, origins: pl.DataFrame) -> pl.DataFrame:
    """``patient_id, model, target_date, slug, contribution``: the sum of each therapy's
    contributions in the explanation rows of the patients' latest origin (therapies without a
    stored row are absent)."""
    latest = origins.lazy()
    rows = lake.scan(EXPLANATIONS).join(latest, on=["patient_id", "origin_date"])
    names = rows.select("feature").unique().collect()["feature"].to_list()
    families = pl.DataFrame(
        {"feature": names, "family": [explanation_family(name) for name in names]},
        schema={"feature": pl.String, "family": pl.String},
    ).filter(pl.col("family").str.starts_with(THERAPY_FAMILY))
    return (
        rows.join(families.lazy(), on="feature")
        .group_by("patient_id", "model", "target_date", "family")
        .agg(pl.col("contribution").sum())
        .select(
            "patient_id",
            "model",
            "target_date",
            slug=pl.col("family").str.strip_prefix(THERAPY_FAMILY),
            contribution="contribution",
        )
        .collect()
    )


def served_patients(lake: Lake, origins: pl.DataFrame, winners: dict[str, str]) -> pl.DataFrame:
    """``patient_id, model, explained_by``: the patients each scored model forecast from their
    latest origin; ``model`` is an EBM's name or ``champion``, ``explained_by`` the model whose
    explanation rows count (the cluster's champion for ``champion``)."""
    forecast = (
        lake.scan(FORECASTS)
        .join(origins.lazy(), on=["patient_id", "origin_date"])
        .select("patient_id", "model")
        .unique()
        .collect()
    )
    ebms = forecast.filter(pl.col("model").is_in(EBMS)).with_columns(explained_by="model")
    clusters = lake.read(PATIENTS).select(
        "patient_id",
        explained_by=pl.col("disease_group").replace_strict(
            winners, default=None, return_dtype=pl.String
        ),
    )
    champion = clusters.join(
        forecast, left_on=["patient_id", "explained_by"], right_on=["patient_id", "model"]
    ).select("patient_id", model=pl.lit(CHAMPION), explained_by="explained_by")
    return pl.concat([ebms.select("patient_id", "model", "explained_by"), champion])


def scored_days(
    days: pl.DataFrame, contributions: pl.DataFrame, served: pl.DataFrame
) -> pl.DataFrame:
    """The therapy days of each model's served patients with ``contribution`` (0 when no row
    is stored) and ``right`` (its sign is the true one)."""
    return (
        days.join(served, on="patient_id")
        .join(
            contributions.rename({"model": "explained_by"}),
            on=["patient_id", "explained_by", "target_date", "slug"],
            how="left",
        )
        .with_columns(pl.col("contribution").fill_null(0.0))
        .with_columns(
            right=(pl.col("contribution") != 0)
            & (pl.col("contribution").sign().cast(pl.Int8) == pl.col("true_sign")),
            zero=pl.col("contribution") == 0,
        )
    )


def score_table(scored: pl.DataFrame, days: pl.DataFrame) -> pl.DataFrame:
    """Per model and kind of day: patients, days, share right, share zero, median absolute
    contribution, and the patients with such days the model did not forecast."""
    patients_with = days.group_by("kind").agg(with_days=pl.col("patient_id").n_unique())
    table = (
        scored.group_by("model", "kind")
        .agg(
            patients=pl.col("patient_id").n_unique(),
            days=pl.len(),
            right=pl.col("right").mean(),
            zero=pl.col("zero").mean(),
            median_abs_steps=pl.col("contribution").abs().median(),
        )
        .join(patients_with, on="kind")
        .with_columns(not_forecast=pl.col("with_days") - pl.col("patients"))
        .drop("with_days")
    )
    order = {CHAMPION: 0, **{name: i + 1 for i, name in enumerate(EBMS)}}
    return table.sort(pl.col("kind") != CHANGED, pl.col("model").replace_strict(order))


def direction_table(scored: pl.DataFrame) -> pl.DataFrame:
    """The changed days per model and direction (started / stopped since the origin)."""
    return (
        scored.filter(pl.col("kind") == CHANGED)
        .with_columns(
            change=pl.when(pl.col("direction") > 0)
            .then(pl.lit("started"))
            .otherwise(pl.lit("stopped"))
        )
        .group_by("model", "change")
        .agg(
            patients=pl.col("patient_id").n_unique(),
            days=pl.len(),
            right=pl.col("right").mean(),
            zero=pl.col("zero").mean(),
        )
        .sort("model", "change")
    )


def ebm_shrinkage(lake: Lake) -> pl.DataFrame:
    """``model, cluster, shrinkage`` (the registry's JSON) of the EBMs of the newest version."""
    version = latest_version(lake)
    if version is None:
        return pl.DataFrame(
            schema={"model": pl.String, "cluster": pl.String, "shrinkage": pl.String}
        )
    registry = lake.scan(REGISTRY)
    if "shrinkage" not in registry.collect_schema().names():
        registry = registry.with_columns(shrinkage=pl.lit(None, pl.String))
    return (
        registry.filter(pl.col("version") == version)
        .select(
            model=pl.col("model_id").str.split(":").list.first(),
            cluster="cluster",
            shrinkage="shrinkage",
        )
        .filter(pl.col("model").is_in(EBMS))
        .sort("model", "cluster")
        .collect()
    )


def measure(lake_dir: Path, result: PopulationRun) -> None:
    """Score the explanations of the lake's pipeline run into ``result`` and print them."""
    lake = Lake(str(lake_dir))
    winners = champions(lake)
    result.champions = winners
    shrinkage = ebm_shrinkage(lake)
    result.shrinkage = shrinkage.to_dicts()
    origins = forecast_origins(lake)
    days = therapy_days(origins, therapy_courses(lake))
    served = served_patients(lake, origins, winners)
    scored = scored_days(days, therapy_contributions(lake, origins), served)
    table = score_table(scored, days)
    directions = direction_table(scored)
    result.scores = table.to_dicts()
    result.by_direction = directions.to_dicts()

    title = f"{result.patients} patients, seed {result.seed}"
    print(f"\n## {title}: champions (newest registry version)\n")
    for cluster, model in sorted(winners.items()):
        print(f"{cluster}: {model}")
    print(f"\n## {title}: EBM shrinkage (registry JSON, newest version)\n")
    for model, cluster, text in shrinkage.iter_rows():
        print(f"{model} {cluster}: {text}")
    first, last = origins["origin_date"].min(), origins["origin_date"].max()
    print(
        f"\nforecast origins: {first!s} to {last!s} "
        f"({origins.height} patients forecast; samples withheld from {result.withheld_from})"
    )
    print(f"\n## {title}: therapy contributions with the true effect's sign\n")
    with pl.Config(tbl_rows=40, tbl_cols=12, float_precision=3, tbl_width_chars=200):
        print(table)
        print(f"\n## {title}: changed days by direction\n")
        print(directions)
    changed = table.filter(pl.col("kind") == CHANGED)
    for model, share in changed.select("model", "right").iter_rows():
        verdict = "met" if share >= TARGET_SHARE else "missed"
        print(
            f"{model}: {share:.1%} of changed days right (target >= {TARGET_SHARE:.0%}): {verdict}"
        )


def run_population(args: argparse.Namespace, patients: int) -> PopulationRun:
    """Generate, withhold, run the pipeline and measure one population."""
    result = PopulationRun(patients=patients, seed=args.seed)
    lake_dir = Path(args.workdir) / f"lake-{patients}-seed{args.seed}"
    shutil.rmtree(lake_dir, ignore_errors=True)
    lake_dir.parent.mkdir(parents=True, exist_ok=True)
    print(f"\n# {patients} patients: lake {lake_dir}\n", flush=True)
    started = time.perf_counter()
    mobility(
        "--lake",
        str(lake_dir),
        "generate",
        "--patients",
        str(patients),
        "--seed",
        str(args.seed),
        "--years",
        str(args.years),
        "--end-date",
        END_DATE,
    )
    withheld = withhold_last_days(Lake(str(lake_dir)), args.withhold_days)
    result.withheld_from = withheld.isoformat()
    result.generate_seconds = time.perf_counter() - started
    print(f"generate + withhold from {withheld}: {result.generate_seconds:.0f} s", flush=True)
    result.pipeline_seconds, result.error = run_pipeline(lake_dir, quick=args.quick)
    print(f"pipeline: {result.pipeline_seconds:.0f} s", flush=True)
    if result.error is not None:
        print(f"pipeline FAILED:\n{result.error}", flush=True)
    else:
        measure(lake_dir, result)
    if not args.keep:
        shutil.rmtree(lake_dir, ignore_errors=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--patients", type=int, nargs="+", default=[40, 300])
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--years", type=float, default=3.0, help="years of generated history")
    parser.add_argument("--withhold-days", type=int, default=180)
    parser.add_argument("--workdir", default="/tmp/mobility-bench-explain")
    parser.add_argument("--quick", action="store_true", help="MOBILITY_QUICK_TRAINING=1")
    parser.add_argument("--keep", action="store_true", help="keep the generated lakes")
    parser.add_argument("--out", type=Path, default=None, help="figures as JSON")
    args = parser.parse_args()
    # Throwaway lakes: training signs its artifacts with a key from the environment, a random one
    # per run unless the caller set it (never stored anywhere), as common does for pseudonyms.
    os.environ.setdefault("MOBILITY_ARTIFACT_KEY", secrets.token_hex(32))
    runs = [run_population(args, patients) for patients in args.patients]
    if args.out is not None:
        figures = {
            "quick_training": args.quick,
            "withhold_days": args.withhold_days,
            "years": args.years,
            "target_share": TARGET_SHARE,
            "populations": [asdict(run) for run in runs],
        }
        args.out.write_text(json.dumps(figures, indent=1, default=str))
        print(f"\nfigures written to {args.out}")


if __name__ == "__main__":
    main()
