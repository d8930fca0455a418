"""Helpers of the reliability tests and benchmark (docs/reliability.md): ``mobility`` commands
as child processes that can be SIGKILLed, and lakes compared table by table.

A pipeline is killed with its whole process group (its Prophet and EBM worker processes too), as
when the machine or container running it dies.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl
from polars.testing import assert_frame_equal

from jobs.check import check_keys, check_readable
from lakehouse.catalog import ALL_TABLES, JOB_RUNS
from lakehouse.storage import Lake

# Every training of a reliability run takes seconds (jobs.train.QUICK_TRAINING).
QUICK = {"MOBILITY_QUICK_TRAINING": "1"}
STAGES = ("aggregate", "features", "train", "forecast", "monitor")
# Logs of runs: an interrupted sequence of runs has more of them by nature (a killed run leaves no
# row, each finished one adds its own), so they are checked for readable, unique keys, not equal.
RUN_LOGS = frozenset({"ops/job_runs", "ops/monitor_checks", "ops/lake_lock"})
# Columns that say when something ran, not what it computed.
WHEN = {
    "gold/backtests": ("trained_at",),
    "models/registry": ("trained_at",),
    "ops/drift_reference": ("captured_at",),
    "ops/alerts": ("alert_id", "raised_at", "run_id", "resolved_at"),
}
RUN_TIMEOUT_SECONDS = 600.0


def environment(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """This process's environment with quick training and ``extra``."""
    return {**os.environ, **QUICK, **(extra or {})}


def start(
    lake_uri: str, *args: str, env: Mapping[str, str] | None = None, log: Path | None = None
) -> subprocess.Popen[bytes]:
    """Start ``mobility --lake URI ARGS`` in a process group of its own (stderr to ``log``)."""
    error = log.open("ab") if log is not None else subprocess.DEVNULL
    try:
        return subprocess.Popen(
            [sys.executable, "-m", "jobs", "--lake", lake_uri, *args],
            stdout=subprocess.DEVNULL,
            stderr=error,
            env=dict(env or environment()),
            start_new_session=True,
        )
    finally:
        if log is not None and not isinstance(error, int):
            error.close()


def kill(process: subprocess.Popen[bytes]) -> None:
    """SIGKILL the process and its group (its workers); reap it."""
    with contextlib.suppress(ProcessLookupError):  # it ended by itself meanwhile
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def run(
    lake_uri: str,
    *args: str,
    env: Mapping[str, str] | None = None,
    timeout: float = RUN_TIMEOUT_SECONDS,
) -> float:
    """Run ``mobility --lake URI ARGS`` to its end; its wall seconds (raises when it fails)."""
    with tempfile.NamedTemporaryFile(suffix=".log") as log:
        started = time.perf_counter()
        process = start(lake_uri, *args, env=env, log=Path(log.name))
        try:
            status = process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            kill(process)
            raise
        if status != 0:
            tail = Path(log.name).read_text(errors="replace")[-3000:]
            raise AssertionError(f"mobility {' '.join(args)} exited {status}:\n{tail}")
        return time.perf_counter() - started


def copy_lake(source: Path, target: Path) -> Path:
    """A copy of the lake folder ``source`` at ``target`` (replacing what was there)."""
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(source, target)
    return target


def damage(lake: Lake) -> list[str]:
    """One line per table that is unreadable or holds a key twice."""
    lines = []
    for table in ALL_TABLES:
        if not lake.exists(table):
            continue
        problems, rows = check_readable(lake, table)
        if not problems:
            problems = check_keys(lake, table, rows=rows)
        lines += [str(p) for p in problems]
    return lines


def _registry(frame: pl.DataFrame, lake_uri: str) -> pl.DataFrame:
    """Registry rows without what depends on the clock or on where the lake is."""

    def metrics(text: str | None) -> str | None:
        if text is None:
            return None
        values = json.loads(text)
        values.pop("fit_seconds", None)
        return json.dumps(values, sort_keys=True)

    return frame.with_columns(
        pl.col("metrics").map_elements(metrics, return_dtype=pl.String),
        pl.col("artifact_uri").str.replace(lake_uri, "<lake>", literal=True),
    )


def comparable(lake: Lake) -> dict[str, pl.DataFrame]:
    """Every table but the run logs, as what must be equal after an interrupted and an
    uninterrupted run: without columns saying when, rows sorted (order-independent)."""
    tables: dict[str, pl.DataFrame] = {}
    for table in ALL_TABLES:
        if table.path in RUN_LOGS or not lake.exists(table):
            continue
        frame = lake.read(table).drop(WHEN.get(table.path, ()))
        if table.path == "models/registry":
            frame = _registry(frame, lake.uri)
        tables[table.path] = frame.sort(frame.columns, nulls_last=True)
    return tables


def differences(expected: dict[str, pl.DataFrame], actual: dict[str, pl.DataFrame]) -> list[str]:
    """One line per table that differs between two :func:`comparable` snapshots."""
    lines = []
    for path in sorted(set(expected) | set(actual)):
        if path not in actual or path not in expected:
            lines.append(f"{path}: only in {'expected' if path in expected else 'actual'}")
            continue
        try:
            assert_frame_equal(expected[path], actual[path], check_exact=True)
        except AssertionError as err:
            lines.append(f"{path}: {' '.join(str(err).split())[:400]}")
    return lines


def last_runs_succeeded(lake: Lake) -> list[str]:
    """The stages whose latest recorded run did not succeed."""
    runs = lake.read(JOB_RUNS).sort("finished_at")
    latest = runs.group_by("job").agg(pl.col("status").last())
    return [
        f"{job}: {status}"
        for job, status in latest.iter_rows()
        if job in STAGES and status != "succeeded"
    ]


def stage_reached(lake: Lake, before: int) -> str:
    """The stage a run was in when it was killed: the one after the last stage it recorded
    (``before``: rows in ops/job_runs when it started)."""
    if not lake.exists(JOB_RUNS):
        return STAGES[0]
    runs = lake.read(JOB_RUNS).sort("finished_at")[before:]
    done = [job for job in runs["job"].to_list() if job in STAGES]
    if not done:
        return "start"
    index = STAGES.index(done[-1])
    return STAGES[index + 1] if index + 1 < len(STAGES) else "after monitor"


def job_run_count(lake: Lake) -> int:
    """Rows in ops/job_runs."""
    return lake.info(JOB_RUNS).rows


@dataclass
class Campaign:
    """What a kill campaign did."""

    kills: int = 0
    completed_runs: int = 0
    damaged_after_kill: list[str] = field(default_factory=list)
    different_after_completion: list[str] = field(default_factory=list)
    killed_in: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def passed(self) -> bool:
        """Every table readable after every kill, every completed run equal to the reference."""
        return not self.damaged_after_kill and not self.different_after_completion


def kill_campaign(
    pristine: Path,
    work: Path,
    reference: dict[str, pl.DataFrame],
    *,
    kills: int,
    max_delay: float,
    seed: int,
    env: Mapping[str, str] | None = None,
    on_kill: Callable[[int, str, float], None] | None = None,
) -> Campaign:
    """SIGKILL ``mobility pipeline`` on a copy of ``pristine`` at random moments until ``kills``
    kills are done. After each kill every table must be readable with unique keys; each run that
    ends by itself must leave tables equal to ``reference`` (then the lake starts again from
    ``pristine``, so that kills keep landing in every stage). At the end the pipeline runs to
    completion and is compared once more.

    Args:
        pristine: a lake folder before the pipeline (bronze only).
        work: where the killed lake lives.
        reference: :func:`comparable` of the lake after one uninterrupted pipeline.
        kills: kills to make.
        max_delay: kill moments are drawn uniformly from 0.2 s to this many seconds after the
            start (about one uninterrupted run).
        seed: the moments drawn.
        env: the children's environment.
        on_kill: called with (kill number, stage killed in, delay) after each kill.
    """
    rng = random.Random(seed)
    campaign = Campaign()
    began = time.perf_counter()
    lake_dir = copy_lake(pristine, work)
    lake = Lake(str(lake_dir))
    log = work.parent / f"{work.name}.log"

    def completed() -> None:
        campaign.completed_runs += 1
        found = differences(reference, comparable(lake)) + last_runs_succeeded(lake)
        campaign.different_after_completion += [
            f"completed run {campaign.completed_runs}: {line}" for line in found
        ]

    while campaign.kills < kills:
        before = job_run_count(lake) if lake.exists(JOB_RUNS) else 0
        process = start(str(lake_dir), "pipeline", env=env, log=log)
        delay = rng.uniform(0.2, max_delay)
        try:
            status = process.wait(timeout=delay)
        except subprocess.TimeoutExpired:
            kill(process)
            campaign.kills += 1
            stage = stage_reached(lake, before)
            campaign.killed_in[stage] = campaign.killed_in.get(stage, 0) + 1
            campaign.damaged_after_kill += [
                f"kill {campaign.kills} ({stage}, {delay:.1f} s): {line}" for line in damage(lake)
            ]
            if on_kill is not None:
                on_kill(campaign.kills, stage, delay)
            continue
        if status != 0:
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            raise AssertionError(f"pipeline exited {status} after a kill:\n{tail}")
        completed()
        copy_lake(pristine, lake_dir)
    run(str(lake_dir), "pipeline", env=env)
    completed()
    campaign.seconds = time.perf_counter() - began
    return campaign
