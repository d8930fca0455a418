"""Clinical features: therapy state, recent side effects, disease group and time since diagnosis.

Small-table joins onto the patient-day calendar. Clinical state known on D is used as of D
(a course starting on D is active on D, a side effect dated D counts on D).
"""

from __future__ import annotations

import polars as pl

from jobs.ingest.clinical import GROUP_CODES
from lakehouse.feature_dictionary import (
    DAYS_PER_YEAR,
    OTHER_THERAPY,
    SIDE_EFFECT_WINDOWS,
    THERAPIES,
    therapy_slug,
)

PATIENT = "patient_id"
_KEY = [PATIENT, "date"]
_SEVERITIES = range(1, 6)
THERAPY_SLUGS = (*(t.slug for t in THERAPIES), OTHER_THERAPY)


def therapy_features(days: pl.LazyFrame, therapies: pl.DataFrame) -> pl.LazyFrame:
    """Add ``therapy_<slug>_active / _days_since_start / _days_since_stop`` and the count.

    Args:
        days: ``patient_id, date`` at least.
        therapies: bronze/therapies rows of these patients.
    """
    courses = therapies.select(
        PATIENT,
        "start_date",
        "end_date",
        slug=pl.col("therapy").map_elements(therapy_slug, pl.String),
        # two spellings of one therapy are one therapy in the count
        same=pl.col("therapy").map_elements(
            lambda name: (
                f"{therapy_slug(name)}:{name.strip().lower()}"
                if therapy_slug(name) == OTHER_THERAPY
                else therapy_slug(name)
            ),
            pl.String,
        ),
    )
    day = pl.col("date")
    active = (pl.col("start_date") <= day) & (
        pl.col("end_date").is_null() | (day <= pl.col("end_date"))
    )
    aggregations: list[pl.Expr] = []
    for slug in THERAPY_SLUGS:
        this = pl.col("slug") == slug
        aggregations += [
            (this & active).any().alias(f"therapy_{slug}_active"),
            pl.col("start_date")
            .filter(this & (pl.col("start_date") <= day))
            .max()
            .alias(f"_{slug}_start"),
            pl.col("end_date")
            .filter(this & (pl.col("end_date") < day))
            .max()
            .alias(f"_{slug}_stop"),
        ]
    aggregations.append(pl.col("same").filter(active).n_unique().alias("therapy_active_count"))
    state = (
        days.select(_KEY)
        .join(courses.lazy(), on=PATIENT, how="inner")
        .group_by(_KEY)
        .agg(aggregations)
    )
    since = []
    for slug in THERAPY_SLUGS:
        since += [
            (day - pl.col(f"_{slug}_start"))
            .dt.total_days()
            .alias(f"therapy_{slug}_days_since_start"),
            (day - pl.col(f"_{slug}_stop"))
            .dt.total_days()
            .alias(f"therapy_{slug}_days_since_stop"),
        ]
    flags = [f"therapy_{slug}_active" for slug in THERAPY_SLUGS]
    return (
        days.join(state, on=_KEY, how="left", maintain_order="left")
        .with_columns(*since)
        .with_columns(
            *(pl.col(flag).fill_null(False) for flag in flags),
            pl.col("therapy_active_count").fill_null(0),
        )
        .drop([f"_{slug}_{edge}" for slug in THERAPY_SLUGS for edge in ("start", "stop")])
    )


def side_effect_features(days: pl.LazyFrame, side_effects: pl.DataFrame) -> pl.LazyFrame:
    """Add ``side_effect_count_<w>d`` and ``side_effect_worst_severity_<w>d``.

    Counts come from running totals per patient: the effects dated in D-w+1 .. D are those up to
    D minus those up to D-w, for every severity threshold; the worst grade is the highest
    threshold with any left.
    """
    running = (
        side_effects.group_by(_KEY)
        .agg(
            pl.col("severity").filter(pl.col("severity") >= k).len().alias(f"_ge{k}")
            for k in _SEVERITIES
        )
        .sort(_KEY)
        .with_columns(pl.col(f"_ge{k}").cum_sum().over(PATIENT) for k in _SEVERITIES)
        .lazy()
    )
    totals = [f"_ge{k}" for k in _SEVERITIES]

    def totals_until(frame: pl.LazyFrame, shift_days: int, suffix: str) -> pl.LazyFrame:
        probe = frame.with_columns(_probe=pl.col("date") - pl.duration(days=shift_days))
        found = probe.join_asof(
            running.rename({"date": "_probe"}),
            on="_probe",
            by=PATIENT,
            strategy="backward",
            check_sortedness=False,
        )
        return (
            found.drop("_probe")
            .rename({t: f"{t}{suffix}" for t in totals})
            .with_columns(pl.col(f"{t}{suffix}").fill_null(0) for t in totals)
        )

    out = totals_until(days, 0, "_now")
    features = []
    for window in SIDE_EFFECT_WINDOWS:
        out = totals_until(out, window, f"_{window}")
        in_window = {k: pl.col(f"_ge{k}_now") - pl.col(f"_ge{k}_{window}") for k in _SEVERITIES}
        worst = pl.lit(0)
        for k in _SEVERITIES:
            worst = pl.when(in_window[k] > 0).then(pl.lit(k)).otherwise(worst)
        features += [
            in_window[1].cast(pl.Int16).alias(f"side_effect_count_{window}d"),
            worst.cast(pl.Int8).alias(f"side_effect_worst_severity_{window}d"),
        ]
    helpers = [
        f"{t}{suffix}"
        for t in totals
        for suffix in ("_now", *(f"_{w}" for w in SIDE_EFFECT_WINDOWS))
    ]
    return out.with_columns(features).drop(helpers)


def diagnosis_features(
    days: pl.LazyFrame, patients: pl.DataFrame, diagnoses: pl.DataFrame
) -> pl.LazyFrame:
    """Add ``dx_disease_group`` and ``dx_years_since_diagnosis``."""
    group = pl.col("disease_group")
    matches = pl.lit(False)
    for name, prefixes in GROUP_CODES.items():
        of_group = pl.any_horizontal(pl.col("code").str.starts_with(p) for p in prefixes)
        matches = pl.when(group == name).then(of_group).otherwise(matches)
    matches = pl.when(~group.is_in(list(GROUP_CODES))).then(True).otherwise(matches)
    first_diagnosis = (
        diagnoses.join(patients.select(PATIENT, "disease_group"), on=PATIENT, how="inner")
        .filter(matches)
        .group_by(PATIENT)
        .agg(_diagnosed=pl.col("diagnosed_on").min())
    )
    years = (pl.col("date") - pl.col("_diagnosed")).dt.total_days() / DAYS_PER_YEAR
    return (
        days.join(
            patients.lazy().select(PATIENT, dx_disease_group="disease_group"),
            on=PATIENT,
            how="left",
            maintain_order="left",
        )
        .join(first_diagnosis.lazy(), on=PATIENT, how="left", maintain_order="left")
        .with_columns(
            dx_years_since_diagnosis=pl.when(pl.col("_diagnosed") <= pl.col("date")).then(years)
        )
        .drop("_diagnosed")
    )
