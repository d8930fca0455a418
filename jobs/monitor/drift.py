"""Feature and prediction drift: the population now against the population the current models
were trained for.

The reference is captured by the first monitoring run after each training (registry version),
for each monitored feature (the EBMs' state inputs, each patient's latest row) and for the
champion forecast's mean daily steps over the year (each patient's latest origin).

The method follows Evidently's default choice by population size:

- up to :data:`KS_MAX_PATIENTS` patients, the two-sample Kolmogorov-Smirnov test of the values
  now against the reference's values (stored with the reference): a p-value of 0.05 or less is
  a warning, of 0.01 or less an alert. Population stability needs many patients: with 30,
  binning noise alone gives PSI values above 0.2 on calm days;
- above that, the population stability index over the reference's deciles (a bin of its own for
  missing values): PSI = sum over bins of (now - reference) x ln(now / reference), shares
  smoothed by half a patient per bin (:func:`psi`); 0.1 or more is a warning (Evidently's default
  threshold for PSI), 0.2 or more an alert (a significant shift).

Thresholds are inclusive: a value equal to its threshold raises its warning or alert.

Fewer than :data:`MIN_PATIENTS` patients give "too little data". The PSI and the shares per bin
are recorded with every check either way, for the Monitoring page's small distributions.
"""

from __future__ import annotations

import json
import math
import warnings
from typing import Any

import polars as pl
from scipy import stats

from jobs.monitor import checks_frame
from models.direct import LEVEL, STATE_FEATURES

PSI_WARNING = 0.1
PSI_ALERT = 0.2
KS_WARNING = 0.05
KS_ALERT = 0.01
KS_MAX_PATIENTS = 1_000
MIN_PATIENTS = 30
EMPTY_SHARE = 1e-4
# Values expected per bin at least: with fewer, chance alone leaves bins nearly empty.
MIN_PER_BIN = 10
MONITORED_FEATURES: tuple[str, ...] = (LEVEL, *STATE_FEATURES)
PREDICTION = "champion forecast, mean daily steps over the year"


def bins_of(values: pl.Series) -> dict[str, Any]:
    """The reference of ``values``: quantile bin edges (deciles, fewer bins when there are fewer
    than :data:`MIN_PER_BIN` values per decile), the share of values in each bin (the last share
    is the missing values'), the number of values, and up to :data:`KS_MAX_PATIENTS` the values
    themselves (for the Kolmogorov-Smirnov test)."""
    present = values.drop_nulls().drop_nans() if values.dtype.is_float() else values.drop_nulls()
    bins = min(10, max(2, len(present) // MIN_PER_BIN))
    cuts = (present.cast(pl.Float64).quantile(q / bins, "linear") for q in range(1, bins))
    edges = sorted({float(c) for c in cuts if c is not None}) if len(present) else []
    reference: dict[str, Any] = {
        "edges": edges,
        "shares": _shares(values, edges),
        "patients": len(values),
    }
    if len(values) <= KS_MAX_PATIENTS:
        reference["values"] = sorted(float(v) for v in present.cast(pl.Float64))
    return reference


def psi(reference: dict[str, Any], values: pl.Series) -> float:
    """The population stability index of ``values`` against a :func:`bins_of` reference.

    Shares are smoothed by half a patient per bin (``(count + 0.5) / (n + 0.5 x bins)``, the
    Jeffreys estimate), so a bin that a few patients leave empty counts for what it is, not as
    a share of 0.0001 (which alone adds about 0.7); with 1,000 patients the smoothing changes
    shares by at most 0.0005. References stored without their number of patients fall back to
    empty bins counted as 0.0001."""
    now = _shares(values, reference["edges"])
    then = reference["shares"]
    patients_then = reference.get("patients")
    if patients_then:
        now = _smoothed(now, len(values))
        then = _smoothed(then, int(patients_then))
    return math.fsum(
        (max(n, EMPTY_SHARE) - max(r, EMPTY_SHARE))
        * math.log(max(n, EMPTY_SHARE) / max(r, EMPTY_SHARE))
        for n, r in zip(now, then, strict=True)
    )


def _smoothed(shares: list[float], patients: int) -> list[float]:
    total = patients + 0.5 * len(shares)
    return [(share * patients + 0.5) / total for share in shares]


def _compare(reference: dict[str, Any], values: pl.Series) -> dict[str, Any]:
    """``metric, value, reference, threshold, status, details`` of one subject."""
    population = psi(reference, values) if len(values) else None
    details = {
        "patients": len(values),
        "reference_patients": reference.get("patients"),
        "psi": None if population is None else round(population, 4),
        "shares_now": [round(s, 4) for s in _shares(values, reference["edges"])],
        "shares_reference": [round(s, 4) for s in reference["shares"]],
    }
    small = "values" in reference and len(values) <= KS_MAX_PATIENTS
    if len(values) < MIN_PATIENTS or population is None:
        metric, value, threshold, status = "psi", population, PSI_ALERT, "too little data"
    elif small:
        present = values.drop_nulls().cast(pl.Float64).drop_nans().to_numpy()
        test = _ks_test(reference["values"], present) if len(present) else None
        value = None if test is None else float(test.pvalue)
        details["ks_statistic"] = None if test is None else round(float(test.statistic), 4)
        metric, threshold = "ks p-value", KS_ALERT
        status = (
            "too little data"
            if value is None
            else "alert"
            if value <= KS_ALERT
            else "warning"
            if value <= KS_WARNING
            else "ok"
        )
    else:
        metric, value, threshold = "psi", population, PSI_ALERT
        status = "alert" if value >= PSI_ALERT else "warning" if value >= PSI_WARNING else "ok"
    return {
        "metric": metric,
        "value": value,
        "reference": None,
        "threshold": threshold,
        "status": status,
        "details": json.dumps(details),
    }


def _ks_test(reference: list[float], now: Any) -> Any:
    """The two-sample Kolmogorov-Smirnov test, exact where scipy can compute it; where it
    cannot (some tied samples), the asymptotic p-value scipy falls back to, without its
    warning."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="ks_2samp: Exact calculation unsuccessful")
        return stats.ks_2samp(reference, now)


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
        rows.append(
            {
                "check": "prediction drift" if is_prediction else "feature drift",
                "subject": subject,
                **_compare(reference, values),
            }
        )
    return checks_frame(rows, "feature drift")
