"""Successive-halving (ASHA-style) tuning of the EBM within a time budget (optuna).

Each trial draws EBM parameters (learning rate, max_bins, max_leaves, interactions, outer_bags)
and is trained on a growing share of the training rows (1/9, 1/3, all): at each rung it reports
its error on held-out patients, and optuna's successive-halving pruner stops the trials that fall
behind, so the budget goes to promising settings. The error is the mean absolute error in steps
(deviations times the patient's scale).
"""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np
import optuna
import polars as pl

from models.direct import SCALE
from models.ebm import fit_ebm, model_matrix

RUNGS = (1 / 9, 1 / 3, 1.0)
VALIDATION_SHARE = 0.2


def _space(trial: optuna.Trial) -> dict[str, Any]:
    return {
        "learning_rate": trial.suggest_float("learning_rate", 0.01, 0.2, log=True),
        "max_bins": trial.suggest_categorical("max_bins", [64, 128, 256, 512]),
        "max_leaves": trial.suggest_int("max_leaves", 2, 4),
        "interactions": trial.suggest_categorical("interactions", [0, 3, 5, 10]),
        "outer_bags": trial.suggest_categorical("outer_bags", [1, 2, 4]),
        "max_rounds": 2000,
    }


def tune_ebm(
    rows: pl.DataFrame,
    columns: tuple[str, ...],
    *,
    budget_seconds: float,
    seed: int = 0,
    max_trials: int = 60,
) -> tuple[dict[str, Any], float, int]:
    """The best parameters found within ``budget_seconds``, their validation MAE (steps) and the
    number of trials run.

    Args:
        rows: training rows with ``patient_id``, ``target`` (scaled deviation), ``scale`` and
            the input ``columns``.
        columns: model inputs.
        budget_seconds: wall-clock budget (a running trial finishes its rung).
        seed: sampling and boosting seed.
        max_trials: upper bound on trials.
    """
    optuna.logging.set_verbosity(logging.WARNING)
    rng = np.random.default_rng(seed)
    patients = rows["patient_id"].unique().sort().to_list()
    held = set(rng.choice(patients, max(1, int(len(patients) * VALIDATION_SHARE)), replace=False))
    learn = rows.filter(~pl.col("patient_id").is_in(list(held))).sample(
        fraction=1.0, shuffle=True, seed=seed
    )
    check = rows.filter(pl.col("patient_id").is_in(list(held)))
    check_x = model_matrix(check, columns)
    truth = check["target"].to_numpy()
    scale = check[SCALE].to_numpy()

    def objective(trial: optuna.Trial) -> float:
        params = _space(trial)
        error = float("inf")
        for rung, share in enumerate(RUNGS):
            part = learn.head(max(200, int(learn.height * share)))
            model = fit_ebm(part, columns, params, seed)
            error = float(np.mean(np.abs(model.predict(check_x) - truth) * scale))
            trial.report(error, rung)
            if trial.should_prune():
                raise optuna.TrialPruned()
        return error

    study = optuna.create_study(
        direction="minimize",
        sampler=optuna.samplers.TPESampler(seed=seed),
        pruner=optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=3),
    )
    started = time.monotonic()
    study.optimize(objective, n_trials=max_trials, timeout=budget_seconds)
    completed = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    if not completed:
        raise RuntimeError(f"no tuning trial completed in {time.monotonic() - started:.0f} s")
    best = study.best_trial
    return {**_space_from(best.params)}, float(best.value or 0.0), len(study.trials)


def _space_from(params: dict[str, Any]) -> dict[str, Any]:
    return {**params, "max_rounds": 2000}
