"""The one interface every forecasting model shares, and the forecast schema.

A model sees a :class:`ForecastInput`: what is known at a forecast origin for some patients (their
daily steps before the origin, with non-wear days missing, their disease group and therapy
courses). It returns one row per patient and target day: ``patient_id, target_date, yhat,
yhat_lower, yhat_upper`` (an 80% interval). The public :meth:`Forecaster.predict` checks the input
(nothing dated on or after the origin) and the output (one row per patient-day of the horizon,
no negative steps, ordered intervals) around each model's ``_predict``, like darts' models.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from datetime import date
from typing import ClassVar

import polars as pl

from lakehouse.errors import MobilityError

FORECAST_SCHEMA = pl.Schema(
    {
        "patient_id": pl.String,
        "target_date": pl.Date,
        "yhat": pl.Float64,
        "yhat_lower": pl.Float64,
        "yhat_upper": pl.Float64,
    }
)
HISTORY_COLUMNS = ("patient_id", "date", "steps")
# Interval quantiles: an 80% interval.
LOWER_QUANTILE, UPPER_QUANTILE = 0.1, 0.9


class ForecastError(MobilityError, ValueError):
    """A model was given input it cannot use, or produced an impossible forecast."""


@dataclass(frozen=True)
class ForecastInput:
    """What is known at a forecast origin.

    Args:
        origin: the first forecast day; everything dated before it is known.
        history: ``patient_id, date, steps`` for days before the origin, sorted by patient and
            date; ``steps`` is missing on non-wear days (and days may be absent).
        patients: ``patient_id, disease_group, country`` of the patients to forecast.
        therapies: their therapy plan (``patient_id, therapy, start_date, end_date``): the
            recorded courses, planned starts and ends included.
        features: their silver/features rows dated up to the origin (the row dated the origin
            is their state at the origin: it reads only days before it); models that do not use
            features may be given an empty frame.
        derived: frames computed from this input once and shared by the models that need them
            (e.g. the direct forecast rows both EBMs and their explanations read).
    """

    origin: date
    history: pl.DataFrame
    patients: pl.DataFrame
    therapies: pl.DataFrame
    features: pl.DataFrame = field(default_factory=pl.DataFrame)
    derived: dict[tuple[str, int], pl.DataFrame] = field(
        default_factory=dict, repr=False, compare=False
    )

    def wear_days(self) -> pl.DataFrame:
        """History rows with steps (wear days only)."""
        return self.history.filter(pl.col("steps").is_not_null())

    def only(self, patients: pl.DataFrame) -> ForecastInput:
        """The same origin, restricted to ``patients`` (a frame with ``patient_id``, a subset of
        this input's); this input itself when that is all of them."""
        ids = patients.select("patient_id")
        if ids.height == self.patients.height and ids.n_unique() == ids.height:
            return self

        def mine(frame: pl.DataFrame) -> pl.DataFrame:
            return frame.join(ids, on="patient_id") if frame.width else frame

        return ForecastInput(
            self.origin,
            mine(self.history),
            mine(self.patients),
            mine(self.therapies),
            mine(self.features),
        )


def target_days(patients: pl.DataFrame, origin: date, horizon: int) -> pl.DataFrame:
    """``patient_id, target_date`` for every patient and each of the ``horizon`` days from
    ``origin``."""
    days = pl.date_range(origin, origin + pl.duration(days=horizon - 1), "1d", eager=True).alias(
        "target_date"
    )
    return patients.select("patient_id").join(days.to_frame(), how="cross")


class Forecaster(ABC):
    """A forecasting model: fitted (if it learns across patients), then asked for forecasts."""

    name: ClassVar[str]

    def fit(self, training: ForecastInput) -> Forecaster:
        """Learn from the history in ``training`` (models that learn nothing keep this)."""
        return self

    def servable(self, data: ForecastInput) -> pl.DataFrame:
        """``patient_id`` of the patients of ``data`` this model, as fitted, can forecast: all
        of them, unless the model needs more than their history (e.g. a level at the origin)."""
        return data.patients.select("patient_id")

    def predict(self, data: ForecastInput, *, horizon: int = 365) -> pl.DataFrame:
        """Forecasts for every patient of ``data`` and each day of the horizon.

        Raises:
            ForecastError: the history reaches the origin, or the model's output is impossible.
        """
        self.check_horizon(data, horizon)
        return self._checked(self._predict(data, horizon), data, horizon)

    def check_horizon(self, data: ForecastInput, horizon: int) -> None:
        """Raises ForecastError unless ``horizon`` is a day or more and the history of ``data``
        ends before its origin."""
        if horizon < 1:
            raise ForecastError(f"horizon must be at least 1 day, not {horizon}")
        latest = data.history["date"].max()
        if isinstance(latest, date) and latest >= data.origin:
            raise ForecastError(
                f"{self.name}: history reaches {latest}, on or after the origin {data.origin}"
            )

    def _checked(self, made: pl.DataFrame, data: ForecastInput, horizon: int) -> pl.DataFrame:
        """A model's rows in the forecast schema, checked, in (patient, day) order."""
        out = made.select(FORECAST_SCHEMA.names()).cast(FORECAST_SCHEMA)
        _check(self.name, out, data.patients.height * horizon)
        return out.sort("patient_id", "target_date")

    @abstractmethod
    def _predict(self, data: ForecastInput, horizon: int) -> pl.DataFrame: ...


def _check(name: str, out: pl.DataFrame, expected_rows: int) -> None:
    if out.height != expected_rows:
        raise ForecastError(f"{name}: {out.height} forecast rows, expected {expected_rows}")
    if out.select(pl.any_horizontal(pl.all().is_null()).any()).item():
        raise ForecastError(f"{name}: a forecast value is missing")
    if out.filter(pl.col("yhat_lower") < 0).height:
        raise ForecastError(f"{name}: negative steps forecast")
    unordered = (pl.col("yhat_lower") > pl.col("yhat")) | (pl.col("yhat") > pl.col("yhat_upper"))
    if out.filter(unordered).height:
        raise ForecastError(f"{name}: interval not ordered around the forecast")
