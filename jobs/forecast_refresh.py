"""Which patients a forecast run forecasts again (the refresh rule).

A 365-day forecast changes little with one more day of data, and forecasting is the costliest
stage of the daily run (at 100,000 patients it took longer than everything else together,
docs/scale.md). So a run forecasts a patient when:

- they have no forecast yet, or the run is asked to forecast everyone (``mobility forecast
  --all``), or the models changed since the last forecast run (a training registered new ones),
  or what changed since that run cannot be told (a rebuilt table, vacuumed versions);
- their clinical rows changed since the last forecast run (a therapy, side effect, diagnosis or
  their disease group added, corrected or withdrawn): the forecast and its explanation must say
  what the change does the next morning;
- their daily steps changed on a day before their latest forecast's origin (late data, a
  correction, a withdrawal): that forecast was made from a history that no longer holds;
- their worn days since their latest forecast's origin (at least :data:`DEPARTURE_MIN_DAYS`)
  average outside that forecast's 80% interval (the usual level's, or the cluster level's),
  averaged over the same days: their mobility has left what the forecast expects;
- they have days of data after their latest forecast's origin, and that forecast is
  ``refresh_days`` days old or more, or today is their refresh day: each patient has a fixed
  day in every ``refresh_days`` (a hash of the pseudonym), so about one in ``refresh_days``
  patients is refreshed each day instead of everyone at once.

With ``refresh_days=1``, or while no more than :data:`DAILY_UP_TO` patients have new data,
every patient with new data is forecast every day. A patient whose
latest forecast is from their current origin (no new data) is never forecast again unless one of
the first three holds. The patient page and report say which day the forecast is from.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from datetime import date
from typing import Any

import polars as pl

from jobs.features.changes import Inputs, changes_since
from jobs.runs import last_succeeded_details
from lakehouse.catalog import DAILY_STEPS, FORECASTS, OUTLOOK
from lakehouse.storage import Lake
from models.cluster_level import NAME as CLUSTER_LEVEL
from models.guard import ANCHOR

REFRESH_DAYS = 7
# Up to this many patients with new data, each is forecast every day (about 3 minutes on 2 cores):
# the weekly cadence only bounds the daily run of large cohorts.
DAILY_UP_TO = 5_000
# Worn days since the origin before their mean is compared with the forecast's interval.
DEPARTURE_MIN_DAYS = 2
_DUE_SCHEMA = {"patient_id": pl.String, "origin": pl.Date}


@dataclass(frozen=True)
class Refresh:
    """The patients of this run and why, counted."""

    due: pl.DataFrame  # patient_id, origin: the rows of ``ends`` to forecast, sorted by patient
    everyone: str  # why everyone is forecast, empty when not
    new: int = 0  # without a forecast
    changed: int = 0  # clinical rows, or days before their forecast's origin, changed
    departed: int = 0  # their worn days since the origin left the forecast's interval
    stale: int = 0  # new days, and their forecast is old enough or today is their day
    current: int = 0  # not forecast: their latest forecast is recent enough

    def describe(self) -> str:
        """Why this run's patients are forecast, for the command line."""
        if self.everyone:
            return f"everyone: {self.everyone}"
        return (
            f"{self.new:,} new, {self.changed:,} changed, {self.departed:,} departed from their "
            f"forecast, {self.stale:,} due for refresh"
        )

    def as_details(self) -> dict[str, Any]:
        return {
            "everyone": self.everyone or None,
            "new": self.new,
            "changed": self.changed,
            "departed": self.departed,
            "stale": self.stale,
            "kept": self.current,
        }


def refresh_slot(patient_id: str, refresh_days: int) -> int:
    """The patient's refresh day among every ``refresh_days`` (stable across versions)."""
    return zlib.crc32(patient_id.encode()) % refresh_days


def _is_refresh_day(origin: date, slot: int, refresh_days: int) -> bool:
    return origin.toordinal() % refresh_days == slot


def latest_origins(lake: Lake) -> pl.DataFrame:
    """``patient_id, stored``: each patient's latest forecast origin (gold/outlook has a row per
    patient, model and origin forecast: a few per patient, not 365)."""
    if not lake.exists(OUTLOOK):
        return pl.DataFrame(schema={"patient_id": pl.String, "stored": pl.Date})
    return (
        lake.scan(OUTLOOK).group_by("patient_id").agg(stored=pl.col("origin_date").max()).collect()
    )


def plan_refresh(
    lake: Lake,
    ends: pl.DataFrame,
    inputs: Inputs,
    models: int | None,
    *,
    job: str,
    refresh_days: int = REFRESH_DAYS,
    everyone: bool = False,
    daily_up_to: int = DAILY_UP_TO,
) -> Refresh:
    """The patients of ``ends`` (``patient_id, origin``: the day after each one's last day of
    data) this run forecasts (module docstring).

    Args:
        lake: the lake.
        ends: every patient's current origin.
        inputs: the input versions this run reads (recorded by it as ``inputs``).
        models: the registry version this run serves (recorded as ``registry_version``;
            None: nothing trained yet).
        job: the forecast job's name in ops/job_runs.
        refresh_days: a forecast is refreshed at least this often while new data arrives.
        everyone: forecast every patient.
        daily_up_to: while no more patients than this have new data, each is forecast daily.
    """
    if refresh_days < 1:
        raise ValueError(f"refresh days must be 1 or more, not {refresh_days}")
    ends = ends.cast(_DUE_SCHEMA).sort("patient_id")  # type: ignore[arg-type]
    last = last_succeeded_details(lake, job, having="inputs")
    why = (
        "asked"
        if everyone
        else "first run"
        if last is None
        else "models changed"
        if last.get("registry_version") != models
        else ""
    )
    changed = None if why else changes_since(lake, last["inputs"] if last else {}, inputs)
    if changed is None and not why:
        why = "changes since the last run cannot be told"
    if why:
        return Refresh(ends, why)
    assert changed is not None
    rows = ends.join(latest_origins(lake), on="patient_id", how="left").join(
        changed, on="patient_id", how="left"
    )
    slots = [refresh_slot(p, refresh_days) for p in rows["patient_id"].to_list()]
    rows = rows.with_columns(
        slot_today=pl.Series(
            [
                _is_refresh_day(origin, slot, refresh_days)
                for origin, slot in zip(rows["origin"].to_list(), slots, strict=True)
            ],
            dtype=pl.Boolean,
        ),
        is_changed=pl.col("patient_id").is_in(changed["patient_id"].implode()),
    )
    rows = rows.with_columns(
        departed=pl.col("patient_id").is_in(
            departed(lake, rows.filter(pl.col("origin") > pl.col("stored")))["patient_id"].implode()
        )
    )
    new = pl.col("stored").is_null()
    touched = (
        ~new
        & pl.col("is_changed")
        & (pl.col("from").is_null() | (pl.col("from") < pl.col("stored")))
    )
    later = pl.col("origin") > pl.col("stored")
    if rows.select(later.sum()).item() <= daily_up_to:
        refresh_days = 1
    left = ~new & ~touched & later & pl.col("departed")
    stale = (
        ~new
        & ~touched
        & ~left
        & later
        & (
            ((pl.col("origin") - pl.col("stored")).dt.total_days() >= refresh_days)
            | pl.col("slot_today")
        )
    )
    counted = rows.select(
        new=new.sum(), changed=touched.sum(), left=left.sum(), stale=stale.sum(), total=pl.len()
    ).row(0, named=True)
    due = rows.filter(new | touched | left | stale).select("patient_id", "origin")
    return Refresh(
        due,
        "",
        new=int(counted["new"]),
        changed=int(counted["changed"]),
        departed=int(counted["left"]),
        stale=int(counted["stale"]),
        current=int(counted["total"]) - due.height,
    )


def departed(lake: Lake, candidates: pl.DataFrame) -> pl.DataFrame:
    """``patient_id`` of the ``candidates`` (``patient_id, stored, origin``: their latest
    forecast's origin and their origin now) whose worn days in [stored, origin), at least
    :data:`DEPARTURE_MIN_DAYS` of them, average below the mean lower or above the mean upper
    bound of that forecast's 80% interval on the same days (the usual level's forecast, or the
    cluster level's for a patient with too little history)."""
    empty = pl.DataFrame(schema={"patient_id": pl.String})
    if not candidates.height or not lake.exists(FORECASTS) or not lake.exists(DAILY_STEPS):
        return empty
    first, last = candidates["stored"].min(), candidates["origin"].max()
    worn = (
        lake.scan(DAILY_STEPS)
        .filter((pl.col("date") >= first) & (pl.col("date") < last) & pl.col("is_wear_day"))
        .select("patient_id", "date", "steps")
        .join(candidates.lazy(), on="patient_id")
        .filter((pl.col("date") >= pl.col("stored")) & (pl.col("date") < pl.col("origin")))
    )
    bounds = (
        lake.scan(FORECASTS)
        .filter(
            (pl.col("origin_date") >= first)
            & (pl.col("target_date") < last)
            & pl.col("model").is_in([ANCHOR, CLUSTER_LEVEL])
        )
        .select("patient_id", "model", "origin_date", "target_date", "yhat_lower", "yhat_upper")
    )
    return (
        worn.join(
            bounds,
            left_on=["patient_id", "stored", "date"],
            right_on=["patient_id", "origin_date", "target_date"],
        )
        .group_by("patient_id", "model")
        .agg(
            days=pl.len(),
            steps=pl.col("steps").mean(),
            low=pl.col("yhat_lower").mean(),
            high=pl.col("yhat_upper").mean(),
        )
        .filter(
            (pl.col("days") >= DEPARTURE_MIN_DAYS)
            & ((pl.col("steps") < pl.col("low")) | (pl.col("steps") > pl.col("high")))
        )
        .select("patient_id")
        .unique()
        .collect(engine="streaming")  # reads the forecasts of the latest origins
    )
