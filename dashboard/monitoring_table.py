"""Monitoring checks as a reader sees them: every value as text in its own unit (a share as a
percentage, a cost in dollars, a count with thousands separators, a failed run as "failed"), the
threshold with its direction (thresholds are inclusive: "≥ 20%"), JSON details as a sentence, no
"None", and the status as coloured text (not emoji: browsers without an emoji font show empty
boxes).

The Monitoring page lays these out; nothing here reads the lake.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import polars as pl

from dashboard.literal import markdown_literal

# the status words, coloured as text (a pandas Styler: st.dataframe's columns cannot colour
# single cells); tones readable on the light theme, each with its word so colour is never the
# only sign
STATUS_COLOURS = {
    "alert": "#d92d20",
    "warning": "#b54708",
    "ok": "#067647",
    "too little data": "#667085",
}
# the same statuses as Streamlit Markdown badges, for the lines under a table
STATUS_BADGES = {
    "alert": ":red-badge[alert]",
    "warning": ":orange-badge[warning]",
    "ok": ":green-badge[ok]",
    "too little data": ":gray-badge[too little data]",
}
SHOWN_COLUMNS = (
    "status",
    "check",
    "subject",
    "metric",
    "value",
    "reference",
    "threshold",
    "details",
)
METRIC_LABELS = {
    "mae": "MAE (steps a day)",
    "psi": "PSI",
    "ks p-value": "K-S p-value",
    "usd_per_month": "$ a month",
    "quarantined share": "share quarantined",
    "latest run failed": "latest run",
    "days": "wear days",
}
SHARES = {"share of patients", "quarantined share"}
COUNTS = {"days", "columns changed", "days without data"}


def shown_checks(checks: pl.DataFrame) -> pl.DataFrame:
    """``checks`` (ops/monitor_checks rows) as text columns :data:`SHOWN_COLUMNS`, empty where a
    check has no such value."""
    rows = [
        {
            "status": row["status"] or "",
            "check": row["check"] or "",
            "subject": row["subject"] or "",
            "metric": METRIC_LABELS.get(row["metric"], row["metric"] or ""),
            "value": value_text(row["metric"], row["value"]),
            # a missing reference is no reference ("never" is a missing value's meaning only)
            "reference": (
                "" if row["reference"] is None else value_text(row["metric"], row["reference"])
            ),
            "threshold": threshold_text(row["metric"], row["threshold"]),
            "details": details_text(row["details"]),
        }
        for row in checks.iter_rows(named=True)
    ]
    return pl.DataFrame(rows, schema=dict.fromkeys(SHOWN_COLUMNS, pl.String))


def value_text(metric: str | None, value: float | None) -> str:
    """A check's value (or reference) in its metric's unit; empty when missing."""
    if metric == "latest run failed":
        return "" if value is None else "failed" if value >= 1 else "succeeded"
    if metric == "hours since success" and value is None:
        return "never"
    if value is None or value != value:  # missing or NaN
        return ""
    return _FORMATS.get(metric or "", _plain)(value)


def threshold_text(metric: str | None, threshold: float | None) -> str:
    """A check's threshold with its direction: the value at which it warns or alerts
    (inclusive); empty when the check has none."""
    if threshold is None or threshold != threshold:
        return ""
    if metric == "latest run failed":
        return "a failure"
    if metric == "ks p-value":  # small p-values are the drift
        return f"≤ {threshold:g}"
    return f"≥ {value_text(metric, threshold)}"


def details_text(details: str | None) -> str:
    """A check's details as a sentence: JSON details (accuracy, drift) summarised; others as
    written; empty when there are none."""
    if not details:
        return ""
    if not details.lstrip().startswith("{"):
        return details
    try:
        parsed = json.loads(details)
    except ValueError:
        return details
    if not isinstance(parsed, dict) or not parsed:
        return ""
    if "ratio" in parsed:
        return _accuracy_details(parsed)
    if "shares_now" in parsed:
        return _drift_details(parsed)
    return "; ".join(f"{key} {_any(value)}" for key, value in parsed.items() if value is not None)


def problem_lines(checks: pl.DataFrame) -> list[str]:
    """One Markdown line per check of ``checks`` that warns or alerts, alerts first: its status as
    a coloured badge, its subject in bold and its details as a sentence (a table cuts long
    details; these lines wrap). Text from data is escaped (:func:`markdown_literal`)."""
    order = {"alert": 0, "warning": 1}
    problems = sorted(
        (row for row in checks.iter_rows(named=True) if row["status"] in order),
        key=lambda row: order[row["status"]],
    )
    lines = []
    for row in problems:
        details = details_text(row["details"])
        lines.append(
            f"{STATUS_BADGES[row['status']]} **{markdown_literal(row['subject'] or '')}**"
            + (f": {markdown_literal(details)}" if details else "")
        )
    return lines


def status_style(status: object) -> str:
    """The CSS of a status cell: its colour, in bold."""
    colour = STATUS_COLOURS.get(str(status))
    return f"color: {colour}; font-weight: 600" if colour else ""


def styled(shown: pl.DataFrame) -> Any:
    """``shown`` (text columns, a ``status`` column among them) as a pandas Styler with the
    status coloured, for ``st.dataframe``."""
    return shown.to_pandas().style.map(status_style, subset=["status"])


def _percent(value: float) -> str:
    return f"{value:.1%}" if 0 < abs(value) < 0.1 else f"{value:.0%}"


def _dollars(value: float) -> str:
    if 0 < abs(value) < 0.005:  # would read "$0.00": something, under a cent
        return "< $0.01"
    return f"${value:,.2f}" if abs(value) < 10 else f"${value:,.0f}"


def _hours(value: float) -> str:
    if abs(value) < 1:  # a run just now reads "0.2 h" otherwise
        return f"{round(value * 60)} min"
    return f"{value:,.1f} h" if abs(value) < 10 else f"{value:,.0f} h"


def _p_value(value: float) -> str:
    return "< 0.001" if value < 0.001 else f"{value:.3f}"


def _plain(value: float) -> str:
    return f"{value:,.0f}" if float(value).is_integer() else f"{value:,.3g}"


_FORMATS: dict[str, Callable[[float], str]] = {
    **dict.fromkeys(SHARES, _percent),
    **dict.fromkeys(COUNTS, lambda value: f"{value:,.0f}"),
    "usd_per_month": _dollars,
    "mae": lambda value: f"{value:,.0f}",
    "psi": lambda value: f"{value:.3f}",
    "ks p-value": _p_value,
    "hours since success": _hours,
}


def _accuracy_details(parsed: dict[str, Any]) -> str:
    parts = []
    if isinstance(parsed.get("ratio"), int | float):
        parts.append(f"{parsed['ratio']:.0%} of the backtest MAE")
    if isinstance(parsed.get("mae_lower_95"), int | float):
        parts.append(f"lower 95% bound {parsed['mae_lower_95']:,.0f}")
    if isinstance(parsed.get("rmse"), int | float):
        parts.append(f"RMSE {parsed['rmse']:,.0f}")
    if isinstance(parsed.get("days"), int) and isinstance(parsed.get("patients"), int):
        parts.append(f"{parsed['days']:,} days of {parsed['patients']:,} patients")
    if parsed.get("champion") is True:
        parts.append("the cluster's champion")
    return "; ".join(parts)


def _drift_details(parsed: dict[str, Any]) -> str:
    parts = []
    now, then = parsed.get("patients"), parsed.get("reference_patients")
    if isinstance(now, int):
        parts.append(f"{now:,} patients now" + (f", {then:,} at training" if then else ""))
    if isinstance(parsed.get("psi"), int | float):
        parts.append(f"PSI {parsed['psi']:.3f}")
    if isinstance(parsed.get("ks_statistic"), int | float):
        parts.append(f"K-S statistic {parsed['ks_statistic']:.3f}")
    return "; ".join(parts)


def _any(value: object) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int | float):
        return _plain(float(value))
    return str(value)
