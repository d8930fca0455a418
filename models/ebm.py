"""Explainable Boosting Machines on direct multi-horizon rows (:mod:`models.direct`).

One EBM per disease cluster (MS, PD, RA, OTHER; the original design's clustered models with
patient-baseline offset features), or one global EBM with the disease group as an input, for
comparison. Each learns the deviation of a target day's steps from the patient's level at the
origin, so a forecast is ``level + intercept + sum of term contributions``: exactly the rows of
gold/explanations (``baseline`` = the level, ``intercept``, one row per term).

The 80% interval comes from the errors on held-out patients' rows (15% of the training patients),
per horizon band, so it widens with the horizon as the errors do.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl
from interpret.glassbox import ExplainableBoostingRegressor
from joblib import parallel_config

from models.base import LOWER_QUANTILE, UPPER_QUANTILE, Forecaster, ForecastError, ForecastInput
from models.direct import (
    FEATURE_COLUMNS,
    HORIZON,
    LEVEL,
    SCALE,
    THERAPY_FEATURES,
    forecast_rows,
    training_rows,
)

HORIZON_BANDS: tuple[int, ...] = (28, 91, 182, 365)
HOLDOUT_SHARE = 0.15
DEFAULT_PARAMS: dict[str, Any] = {
    "learning_rate": 0.05,
    "max_bins": 256,
    "max_leaves": 3,
    "interactions": 0,
    "outer_bags": 2,
    "max_rounds": 2000,
}


def _band(horizon: pl.Expr) -> pl.Expr:
    band = pl.lit(HORIZON_BANDS[-1])
    for upper in reversed(HORIZON_BANDS[:-1]):
        band = pl.when(horizon <= upper).then(pl.lit(upper)).otherwise(band)
    return band


@dataclass
class _Fitted:
    model: ExplainableBoostingRegressor
    spread: pl.DataFrame  # band, low, high
    columns: tuple[str, ...]
    rows: int = 0
    seconds: float = 0.0
    # per therapy input: the training patients with a start or stop of it (its evidence)
    therapy_patients: dict[str, int] = field(default_factory=dict)


def model_matrix(rows: pl.DataFrame, columns: tuple[str, ...]) -> Any:
    """The model inputs as the pandas frame interpret expects (booleans as 0/1)."""
    frame = rows.select(columns).with_columns(pl.col(pl.Boolean).cast(pl.Int8))
    return frame.to_pandas()


def fit_ebm(
    rows: pl.DataFrame, columns: tuple[str, ...], params: dict[str, Any], seed: int
) -> ExplainableBoostingRegressor:
    """An EBM fitted on ``rows`` (their ``target``) over ``columns``, on both cores."""
    model = ExplainableBoostingRegressor(
        feature_names=list(columns), random_state=seed, n_jobs=2, **params
    )
    with warnings.catch_warnings(), parallel_config(max_nbytes=None):
        # missing inputs are meaningful here (no wear days in a window): EBM scores them in a
        # bin of their own, which our explanations show; its plots would not
        warnings.filterwarnings("ignore", message="Missing values detected")
        # an input nobody of the group has (no diagnosis recorded, say) is all missing: one bin
        warnings.filterwarnings("ignore", message="All-NaN slice encountered")
        # no shared-memory copies of the data for the workers: joblib's tracker of those
        # prints spurious KeyError tracebacks after large fits
        model.fit(model_matrix(rows, columns), rows["target"].to_numpy())
    return model


def _fit_one(
    rows: pl.DataFrame, columns: tuple[str, ...], params: dict[str, Any], seed: int
) -> _Fitted:
    patients = rows["patient_id"].unique().sort()
    rng = np.random.default_rng(seed)
    held = set(
        rng.choice(patients.to_list(), max(1, int(len(patients) * HOLDOUT_SHARE)), replace=False)
    )
    if len(held) >= len(patients):
        held = set()
    learn = rows.filter(~pl.col("patient_id").is_in(list(held)))
    check = rows.filter(pl.col("patient_id").is_in(list(held)))
    started = time.perf_counter()
    model = fit_ebm(learn, columns, params, seed)
    source = check if check.height >= 200 else learn
    errors = source.select(
        _band(pl.col(HORIZON)).alias("band"),
        residual=pl.col("target") - pl.Series(model.predict(model_matrix(source, columns))),
    )
    spread = errors.group_by("band").agg(
        low=pl.col("residual").quantile(LOWER_QUANTILE, "linear"),
        high=pl.col("residual").quantile(UPPER_QUANTILE, "linear"),
    )
    evidence = {
        name: learn.filter(pl.col(name) != 0)["patient_id"].n_unique()
        for name in THERAPY_FEATURES
        if name in learn.columns
    }
    return _Fitted(model, spread, columns, learn.height, time.perf_counter() - started, evidence)


@dataclass
class ClusterEBM(Forecaster):
    """One EBM per disease cluster (``clustered=True``) or one for all patients.

    Args:
        clustered: a model per disease group; else one global model with the group as input.
        params: EBM parameters (see :data:`DEFAULT_PARAMS`).
        max_rows: training rows per model at most (sampled).
        origins_every: days between training origins.
        horizons_per_origin: target days sampled per training origin.
        horizon: the forecast horizon the rows are drawn over.
        seed: randomness of sampling and boosting.
    """

    clustered: bool = True
    params: dict[str, Any] = field(default_factory=lambda: dict(DEFAULT_PARAMS))
    max_rows: int = 150_000
    origins_every: int = 7
    horizons_per_origin: int = 12
    horizon: int = 365
    seed: int = 0
    tuned: dict[str, dict[str, Any]] = field(default_factory=dict)
    fitted: dict[str, _Fitted] = field(default_factory=dict, repr=False)

    def importances(self, cluster: str, *, top: int = 20) -> dict[str, float]:
        """The fitted model's global term importances for ``cluster`` (mean absolute
        contribution, in units of the patient's scale), largest first."""
        fitted = self.fitted.get(cluster if self.clustered else "ALL")
        if fitted is None:
            return {}
        pairs = zip(fitted.model.term_names_, fitted.model.term_importances(), strict=True)
        ranked = sorted(((str(n), float(v)) for n, v in pairs), key=lambda p: -p[1])
        return dict(ranked[:top])

    def covered(self, patients: pl.DataFrame) -> pl.DataFrame:
        """The ``patients`` (with ``disease_group``) whose cluster has a fitted model: a cluster
        without patients at training time has none."""
        if not self.clustered:
            return patients if "ALL" in self.fitted else patients.clear()
        return patients.filter(pl.col("disease_group").is_in(list(self.fitted)))

    def servable(self, data: ForecastInput) -> pl.DataFrame:
        """The patients of ``data`` with a level at the origin (a wear day in the last 112 days:
        the deviations are learnt from it) whose cluster has a fitted model."""
        if not data.features.width:
            return data.patients.select("patient_id").clear()
        levelled = (
            data.features.filter((pl.col("date") == data.origin) & pl.col(LEVEL).is_not_null())
            .select("patient_id")
            .unique()
        )
        return self.covered(data.patients.join(levelled, on="patient_id")).select("patient_id")

    def therapy_evidence(self, cluster: str) -> dict[str, int]:
        """Per therapy input of the model for ``cluster``: how many training patients started or
        stopped that therapy (what its learned effect rests on; artifacts from before this was
        recorded: empty)."""
        fitted = self.fitted.get(cluster if self.clustered else "ALL")
        return {} if fitted is None else dict(getattr(fitted, "therapy_patients", {}))

    def fit_cost(self, cluster: str) -> dict[str, float]:
        """Training rows and seconds of the fitted model for ``cluster``."""
        fitted = self.fitted.get(cluster if self.clustered else "ALL")
        return {} if fitted is None else {"rows": fitted.rows, "fit_seconds": fitted.seconds}

    def params_for(self, cluster: str) -> dict[str, Any]:
        """The EBM parameters used for ``cluster`` (tuned, else the defaults)."""
        key = cluster if self.clustered else "ALL"
        return self.tuned.get(key, self.params)

    def tune(self, training: ForecastInput, *, budget_seconds: float) -> dict[str, float]:
        """Tune each model's parameters by successive halving within the budget (shared by
        the clusters); returns each cluster's validation MAE in steps."""
        from models.tuning import tune_ebm

        rows = self._training(training)
        groups = self._groups(rows, training.patients)
        scores = {}
        for cluster, part in sorted(groups.items()):
            if part.height > self.max_rows:
                part = part.sample(self.max_rows, seed=self.seed)
            params, error, _ = tune_ebm(
                part, self._columns(), budget_seconds=budget_seconds / len(groups), seed=self.seed
            )
            self.tuned[cluster] = params
            scores[cluster] = error
        return scores

    def _columns(self) -> tuple[str, ...]:
        return FEATURE_COLUMNS if self.clustered else (*FEATURE_COLUMNS, "disease_group")

    def _training(self, training: ForecastInput) -> pl.DataFrame:
        rows = training_rows(
            training,
            horizon=self.horizon,
            origins_every=self.origins_every,
            horizons_per_origin=self.horizons_per_origin,
            seed=self.seed,
        )
        if not rows.height:
            raise ForecastError(f"{self.name}: no training rows before {training.origin}")
        return rows

    @property
    def name(self) -> str:  # type: ignore[override]
        return "ebm_cluster" if self.clustered else "ebm_global"

    def _groups(self, rows: pl.DataFrame, patients: pl.DataFrame) -> dict[str, pl.DataFrame]:
        # row order kept: boosting samples rows by position (same rows, same model)
        rows = rows.join(
            patients.select("patient_id", "disease_group"), on="patient_id", maintain_order="left"
        )
        if not self.clustered:
            return {"ALL": rows}
        groups = rows.group_by("disease_group", maintain_order=True)
        return {str(key[0]): part for key, part in groups}

    def fit(self, training: ForecastInput) -> ClusterEBM:
        rows = self._training(training)
        self.fitted = {}
        for cluster, part in sorted(self._groups(rows, training.patients).items()):
            if part.height > self.max_rows:
                part = part.sample(self.max_rows, seed=self.seed)
            params = self.tuned.get(cluster, self.params)
            self.fitted[cluster] = _fit_one(part, self._columns(), params, self.seed)
        return self

    def explain(
        self, data: ForecastInput, *, horizon: int = 365, top: int | None = None
    ) -> pl.DataFrame:
        """``patient_id, target_date, feature, contribution`` for every forecast row: the
        ``baseline`` (the patient's level at the origin), the model's ``intercept`` and one row
        per input, in steps; they sum to the row's ``yhat``. A forecast cut at zero steps gets a
        ``floor_at_zero`` row with the amount added.

        Args:
            data: what is known at the origin.
            horizon: days ahead.
            top: keep only the ``top`` largest inputs by absolute contribution per row (a
                therapy started or stopped since the origin always among them) and sum the
                others into ``other_features`` (the rows still add up to ``yhat``).
        """
        return self._explain(self._parts(data, horizon), top)

    def predict_explained(
        self, data: ForecastInput, *, horizon: int = 365, top: int | None = None
    ) -> tuple[pl.DataFrame, pl.DataFrame]:
        """:meth:`predict` and :meth:`explain` of the same rows, assembled once (the forecast
        job serves both)."""
        self.check_horizon(data, horizon)
        parts = self._parts(data, horizon)
        return self._checked(self._from_parts(parts), data, horizon), self._explain(parts, top)

    def _explain(self, parts: list[tuple[pl.DataFrame, _Fitted]], top: int | None) -> pl.DataFrame:
        extra = ("baseline", "intercept", "floor_at_zero")
        # features as codes into one sorted vocabulary: the rows come out in (patient, day,
        # feature) order by sorting codes within a row and rows by (patient, day), never the long
        # frame of strings (a tenth of the forecast job's time at 100,000 patients)
        vocabulary = sorted(
            {str(n) for _, fitted in parts for n in fitted.model.term_names_}
            | {*extra, "other_features"}
        )
        code_of = {name: i for i, name in enumerate(vocabulary)}
        other_code, absent = code_of["other_features"], len(vocabulary)
        keys, codes, values = [], [], []
        for part, fitted in parts:
            names = [str(name) for name in fitted.model.term_names_]
            name_codes = np.array([code_of[name] for name in names])
            scale = part[SCALE].to_numpy()[:, None]
            terms = fitted.model.eval_terms(model_matrix(part, fitted.columns)) * scale
            baseline = part[LEVEL].to_numpy()
            intercept = float(fitted.model.intercept_) * scale[:, 0]
            raw = baseline + intercept + terms.sum(axis=1)
            n = terms.shape[0]
            if top is not None and top < terms.shape[1]:
                # a therapy that starts or stops in the row is always kept: the clinician
                # asks what the change does, however small the model thinks it is
                changed = np.zeros(terms.shape, dtype=bool)
                for j, name in enumerate(names):
                    if name in THERAPY_FEATURES:
                        changed[:, j] = part[name].to_numpy() != 0
                rank = np.where(changed, np.inf, np.abs(terms))
                keep = np.argpartition(-rank, top - 1, axis=1)[:, :top]
                kept = np.take_along_axis(terms, keep, axis=1)
                other = terms.sum(axis=1) - kept.sum(axis=1)
                # a zero remainder says nothing: no row
                row_codes = np.concatenate(
                    [name_codes[keep], np.where(other != 0, other_code, absent)[:, None]], axis=1
                )
                row_values = np.concatenate([kept, other[:, None]], axis=1)
            else:
                row_codes = np.broadcast_to(name_codes, terms.shape)
                row_values = terms
            floor = np.where(raw < 0, -raw, 0.0)
            row_codes = np.concatenate(
                [
                    row_codes,
                    np.broadcast_to(np.array([code_of[e] for e in extra[:2]]), (n, 2)),
                    np.where(floor != 0, code_of["floor_at_zero"], absent)[:, None],
                ],
                axis=1,
            )
            row_values = np.concatenate(
                [row_values, np.stack([baseline, intercept, floor], axis=1)], axis=1
            )
            keys.append(part.select("patient_id", "target_date"))
            codes.append(row_codes)
            values.append(row_values)
        width = max(c.shape[1] for c in codes)
        # parts of different widths (models with different terms) padded with absent cells
        codes = [
            np.pad(c, ((0, 0), (0, width - c.shape[1])), constant_values=absent) for c in codes
        ]
        values = [np.pad(v, ((0, 0), (0, width - v.shape[1]))) for v in values]
        order = (
            pl.concat(keys)
            .with_row_index("row")
            .sort("patient_id", "target_date")["row"]
            .to_numpy()
        )
        all_codes = np.concatenate(codes)[order]
        all_values = np.concatenate(values)[order]
        within = np.argsort(all_codes, axis=1, kind="stable")
        all_codes = np.take_along_axis(all_codes, within, axis=1).reshape(-1)
        all_values = np.take_along_axis(all_values, within, axis=1).reshape(-1)
        present = all_codes != absent
        rows = np.repeat(order, width)[present]
        row_keys = pl.concat(keys)
        return pl.DataFrame(
            {
                "patient_id": row_keys["patient_id"].gather(rows),
                "target_date": row_keys["target_date"].gather(rows).cast(pl.Date),
                "feature": pl.Series(vocabulary, dtype=pl.String).gather(all_codes[present]),
                "contribution": all_values[present],
            }
        )

    def _parts(self, data: ForecastInput, horizon: int) -> list[tuple[pl.DataFrame, _Fitted]]:
        """The forecast rows split by the model that forecasts them."""
        if not self.fitted:
            raise ForecastError(f"{self.name}: not fitted")
        rows = forecast_rows(data, horizon)
        missing = data.patients.join(
            rows.select("patient_id").unique(), on="patient_id", how="anti"
        )
        if missing.height:
            raise ForecastError(
                f"{self.name}: {missing.height} patient(s) without a level at {data.origin} "
                f"(no wear day in the last 112 days), e.g. {missing['patient_id'][0]!r}"
            )
        parts = []
        for cluster, part in self._groups(rows, data.patients).items():
            fitted = self.fitted.get(cluster)
            if fitted is None:
                raise ForecastError(f"{self.name}: no model for cluster {cluster!r}")
            parts.append((part, fitted))
        return parts

    def _predict(self, data: ForecastInput, horizon: int) -> pl.DataFrame:
        return self._from_parts(self._parts(data, horizon))

    def _from_parts(self, parts: list[tuple[pl.DataFrame, _Fitted]]) -> pl.DataFrame:
        out = []
        for part, fitted in parts:
            deviation = fitted.model.predict(model_matrix(part, fitted.columns))
            out.append(
                part.select(
                    "patient_id",
                    "target_date",
                    (pl.col(LEVEL) + pl.col(SCALE) * pl.Series(deviation)).alias("raw"),
                    pl.col(SCALE),
                    _band(pl.col(HORIZON)).alias("band"),
                ).join(fitted.spread, on="band", how="left")
            )
        joined = pl.concat(out)
        yhat = pl.col("raw").clip(lower_bound=0)
        return joined.select(
            "patient_id",
            "target_date",
            yhat.alias("yhat"),
            (pl.col("raw") + pl.col(SCALE) * pl.min_horizontal(pl.col("low").fill_null(0), 0))
            .clip(lower_bound=0)
            .clip(upper_bound=yhat)
            .alias("yhat_lower"),
            pl.max_horizontal(
                pl.col("raw") + pl.col(SCALE) * pl.col("high").fill_null(0), yhat
            ).alias("yhat_upper"),
        )
