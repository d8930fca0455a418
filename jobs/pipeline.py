"""The daily pipeline: its stages, their order, and the lake's lease they run under.

aggregate -> features -> train (when due, or forced) -> forecast -> monitor: one definition, run
by ``mobility pipeline`` and each stage command (jobs/cli.py, which shows progress and summaries)
and by every simulated day (jobs/simulate.py). Each stage records its own run in
``ops/job_runs`` (jobs/runs.py), whoever calls it.

The lease (docs/reliability.md): :func:`lakehouse.lock.lease` takes it with the settings' wait
and time to live. :func:`run` enters it again before each stage. Under a caller that holds
it already (the pipeline command, a simulated day with its ingestion) that is a re-entry: it
waits for nothing, keeps the caller's lease across the stages, and stops the run at the stage
boundary if the lease was lost meanwhile (its holder stalled past the TTL). Re-entry is by this
process and the lake's URI: the stages are given the very lake the caller's lease was taken on.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal, Protocol, TypeVar

from jobs import aggregate, forecast, train
from jobs.aggregate import AggregateSummary
from jobs.features import run as features_job
from jobs.features.run import FeaturesSummary
from jobs.forecast import ForecastSummary
from jobs.forecast_refresh import REFRESH_DAYS
from jobs.monitor import run as monitor_job
from jobs.monitor.run import MonitorSummary
from jobs.train import TrainSummary
from lakehouse.lock import lease
from lakehouse.settings import get_settings
from lakehouse.storage import Lake

if TYPE_CHECKING:
    from jobs.engine import Engine

Stage = Literal["aggregate", "features", "train", "forecast", "monitor"]
STAGES: tuple[Stage, ...] = ("aggregate", "features", "train", "forecast", "monitor")
# The stages whose tasks run on the chosen engine (``--engine``); train and monitor run in this
# process.
ON_ENGINE: frozenset[Stage] = frozenset({"aggregate", "features", "forecast"})
StageSummary = AggregateSummary | FeaturesSummary | TrainSummary | ForecastSummary | MonitorSummary
Progress = Callable[[int], None]
_Summary = TypeVar("_Summary", bound=StageSummary)


@dataclass(frozen=True)
class Training:
    """How the train stage trains (see :func:`jobs.train.run`).

    Args:
        force: train even if not due.
        patients_per_cluster: patients per disease cluster in the backtests.
        origins: rolling forecast origins.
        tune_seconds: EBM tuning budget (0: default parameters).
        prophet_workers: processes fitting Prophet in the backtests.
        ebm_params: the EBMs' parameters instead of the defaults.
    """

    force: bool = False
    patients_per_cluster: int = 200
    origins: int = 3
    tune_seconds: float = 0.0
    prophet_workers: int = 2
    ebm_params: dict[str, Any] | None = None


@dataclass(frozen=True)
class Options:
    """What the stages are asked to do.

    Args:
        full: aggregate and features recompute every patient-day, not only what changed, and
            the forecast stage forecasts every patient, not only those due
            (:mod:`jobs.forecast_refresh`).
        forecast_refresh_days: a patient with new data is forecast again at least this often.
        training: the train stage's options.
        forecast_workers: processes fitting Prophet in the forecast stage (local engine).
        engine: where the stages :data:`ON_ENGINE` run their tasks (None: this process).
        now: the time training (whether it is due, when it was trained) and monitoring measure
            against (None: the wall clock); a simulation of past days sets its own day.
    """

    full: bool = False
    training: Training = field(default_factory=Training)
    forecast_workers: int = 2
    forecast_refresh_days: int = REFRESH_DAYS
    engine: Engine | None = None
    now: datetime | None = None


@dataclass
class PipelineRun:
    """Each stage's summary, by the stage's name; None for a stage that was not asked to run."""

    aggregate: AggregateSummary | None = None
    features: FeaturesSummary | None = None
    train: TrainSummary | None = None
    forecast: ForecastSummary | None = None
    monitor: MonitorSummary | None = None


class Watcher(Protocol):
    """How a caller follows the stages (the command line: progress bars, summary lines)."""

    def running(self, stage: Stage) -> AbstractContextManager[Progress | None]:
        """Entered around the stage; gives a callback for its progress (aggregate: samples,
        features: patients, as each batch ends), or None."""
        ...

    def done(self, stage: Stage, summary: StageSummary) -> None:
        """Called with the stage's summary when it ended."""
        ...


class _Unwatched:
    def running(self, stage: Stage) -> AbstractContextManager[Progress | None]:
        return nullcontext()

    def done(self, stage: Stage, summary: StageSummary) -> None:
        return None


def run(
    lake: Lake,
    options: Options | None = None,
    *,
    only: Sequence[Stage] = STAGES,
    watcher: Watcher | None = None,
) -> PipelineRun:
    """Run the stages in their order (of them ``only`` those asked for), each under the lake's
    lease: the caller's if it holds it, else taken for the stage.

    Args:
        lake: the lake.
        options: what the stages are asked to do (default: what is due, locally).
        only: the stages to run; they run in the pipeline's order whatever the order given.
        watcher: follows the stages (default: nobody).

    Raises:
        StorageError: the lease is held by another process past the wait, or was lost (the run
            stops before the next stage).
    """
    options = options or Options()
    watcher = watcher or _Unwatched()
    unknown = set(only) - set(STAGES)
    if unknown:
        raise ValueError(f"unknown stages: {', '.join(sorted(unknown))}")
    settings = get_settings()
    training = options.training
    if settings.quick_training:  # MOBILITY_QUICK_TRAINING: every training in seconds
        training = replace(training, **train.QUICK_TRAINING)

    def stage(name: Stage, call: Callable[[Progress | None], _Summary]) -> _Summary | None:
        if name not in only:
            return None
        with lease(lake, purpose=name), watcher.running(name) as progress:
            summary = call(progress)
        watcher.done(name, summary)
        return summary

    done = PipelineRun()
    done.aggregate = stage(
        "aggregate",
        lambda progress: aggregate.run(
            lake,
            batch_samples=settings.aggregate_batch_samples,
            full=options.full,
            progress=progress,
            engine=options.engine,
        ),
    )
    done.features = stage(
        "features",
        lambda progress: features_job.run(
            lake,
            full=options.full,
            batch_days=settings.features_batch_days,
            progress=progress,
            engine=options.engine,
        ),
    )
    done.train = stage(
        "train",
        lambda _: train.run(
            lake,
            force=training.force,
            patients_per_cluster=training.patients_per_cluster,
            origins=training.origins,
            tune_seconds=training.tune_seconds,
            prophet_workers=training.prophet_workers,
            ebm_params=training.ebm_params,
            now=options.now,
        ),
    )
    done.forecast = stage(
        "forecast",
        lambda _: forecast.run(
            lake,
            prophet_workers=options.forecast_workers,
            engine=options.engine,
            everyone=options.full,
            refresh_days=options.forecast_refresh_days,
        ),
    )
    done.monitor = stage("monitor", lambda _: monitor_job.run(lake, now=options.now))
    return done
