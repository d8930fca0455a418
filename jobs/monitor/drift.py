"""Feature and prediction drift: the population now against the population the current models
were trained for, by the population stability index (PSI).

The reference is captured by the first monitoring run after each training (registry version):
the deciles of each monitored feature (the EBMs' state inputs, each patient's latest row) and of
the champion forecast's mean daily steps over the year (each patient's latest origin), with the
share of patients in each bin and a bin of its own for missing values. Later runs bin the
population the same way; PSI = sum over bins of (now - reference) x ln(now / reference), empty
bins counted as 0.0001. Thresholds: PSI of 0.1 or more is a warning (Evidently's default drift
threshold for PSI), 0.2 or more an alert (a significant shift); fewer than
:data:`MIN_PATIENTS` patients give "too little data".
"""

from __future__ import annotations

import json
import math
from typing import Any

import polars as pl

from jobs.monitor import checks_frame
from models.direct import LEVEL, STATE_FEATURES

PSI_WARNING = 0.1
PSI_ALERT = 0.2
MIN_PATIENTS = 30
EMPTY_SHARE = 1e-4
MONITORED_FEATURES: tuple[str, ...] = (LEVEL, *STATE_FEATURES)
PREDICTION = "champion forecast, mean daily steps over the year"


def bins_of(values: pl.Series) -> dict[str, Any]:
    """The reference of ``values``: decile edges and the share of values in each bin (the last
    share is the missing values')."""
    present = values.drop_nulls().drop_nans() if values.dtype.is_float() else values.drop_nulls()
    cuts = (present.cast(pl.Float64).quantile(q / 10, "linear") for q in range(1, 10))
    edges = sorted({float(c) for c in cuts if c is not None}) if len(present) else []
    return {"edges": edges, "shares": _shares(values, edges)}


def psi(reference: dict[str, Any], values: pl.Series) -> float:
    """The population stability index of ``values`` against a :func:`bins_of` reference."""
    now = _shares(values, reference["edges"])
    then = reference["shares"]
    return math.fsum(
        (max(n, EMPTY_SHARE) - max(r, EMPTY_SHARE))
        * math.log(max(n, EMPTY_SHARE) / max(r, EMPTY_SHARE))
        for n, r in zip(now, then, strict=True)
    )


def _shares(values: pl.Series, edges: list[float]) -> list[float]:
    total = len(values)
    if not total:
        return [0.0] * (len(edges) + 2)
    floats = values.cast(pl.Float64)
    missing = floats.is_null() | floats.is_nan()
    # bin i holds values in (edges[i-1], edges[i]]: count with a search in the sorted values
    ordered = floats.filter(~missing).sort()
    positions = ordered.search_sorted(pl.Series(edges, dtype=pl.Float64), side="right")
    bounds = [0, *positions.to_list(), len(ordered)]
    counts = [bounds[i + 1] - bounds[i] for i in range(len(edges) + 1)]
    return [c / total for c in counts] + [int(missing.sum()) / total]


def reference_rows(features: pl.DataFrame, predictions: pl.Series) -> list[dict[str, str]]:
    """``subject, reference`` (JSON) rows for the monitored features and the predictions."""
    rows = [
        {"subject": name, "reference": json.dumps(bins_of(features[name]))}
        for name in MONITORED_FEATURES
        if name in features.columns
    ]
    rows.append({"subject": PREDICTION, "reference": json.dumps(bins_of(predictions))})
    return rows


def drift_checks(
    references: pl.DataFrame, features: pl.DataFrame, predictions: pl.Series
) -> pl.DataFrame:
    """Check rows (``check, subject, metric, value, reference, threshold, status, details``)
    of each referenced subject."""
    rows = []
    for subject, stored in references.select("subject", "reference").iter_rows():
        reference = json.loads(stored)
        is_prediction = subject == PREDICTION
        if not is_prediction and subject not in features.columns:
            continue
        values = predictions if is_prediction else features[subject]
        value = psi(reference, values) if len(values) >= MIN_PATIENTS else None
        status = (
            "too little data"
            if value is None
            else "alert"
            if value >= PSI_ALERT
            else "warning"
            if value >= PSI_WARNING
            else "ok"
        )
        rows.append(
            {
                "check": "prediction drift" if is_prediction else "feature drift",
                "subject": subject,
                "metric": "psi",
                "value": value,
                "reference": None,
                "threshold": PSI_ALERT,
                "status": status,
                "details": json.dumps(
                    {
                        "patients": len(values),
                        "shares_now": [round(s, 4) for s in _shares(values, reference["edges"])],
                        "shares_reference": [round(s, 4) for s in reference["shares"]],
                    }
                ),
            }
        )
    return checks_frame(rows, "feature drift")
