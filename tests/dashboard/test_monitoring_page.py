"""The Monitoring page as a reader sees it: statuses as coloured words (no emoji), numbers in their
units, no "None" and no raw or "-" column headers; on the fixture lake and on a lake whose data
stopped 40 days ago, checked by the real monitoring job."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import polars as pl
import pytest
from streamlit.testing.v1 import AppTest

from dashboard.monitoring_table import (
    STATUS_BADGES,
    STATUS_COLOURS,
    details_text,
    problem_lines,
    shown_checks,
    status_style,
    threshold_text,
    value_text,
)
from jobs import aggregate, generate
from jobs.monitor import run as monitor_job
from jobs.monitor.cost import CATEGORIES, Prices
from jobs.recent_activity import as_of
from lakehouse.storage import Lake
from tests.dashboard.conftest import forget_caches
from tests.dashboard.demo_lake import APP
from tests.dashboard.displayed import (
    assert_reads_cleanly,
    displayed_cells,
    displayed_rows,
    headers,
    status_colours,
)
from tests.dashboard.identities import signed_in
from tests.dashboard.rendered import shown, tags

MONITORING = "views/monitoring.py"
TIMEOUT = 30


def _open(page: str) -> AppTest:
    app = signed_in(AppTest.from_file(APP, default_timeout=TIMEOUT), "admin")
    app.run()
    app.switch_page(page).run()
    assert not app.exception, [e.value for e in app.exception]
    return app


# -------------------------------------------------------------------------- the fixture lake


@pytest.mark.usefixtures("demo_lake")
def test_monitoring_page_reads_as_text_in_units() -> None:
    app = _open(MONITORING)

    assert_reads_cleanly(app)
    metrics = {m.label: m.value for m in app.metric}
    assert metrics["Checks alerting"] == "2" and metrics["Checks warning"] == "0"
    tables = {tuple(headers(frame)): frame for frame in app.dataframe}
    accuracy = next(f for h, f in tables.items() if "backtest MAE" in h)
    row = displayed_rows(accuracy)[0]
    assert (row["status"], row["MAE now"], row["backtest MAE"], row["alert at"]) == (
        "alert",
        "1,500",
        "1,000",
        "≥ 1,100",
    )
    assert status_colours(accuracy) == {
        "alert": f"color: {STATUS_COLOURS['alert']}; font-weight: 600"
    }
    health = next(f for f in app.dataframe if "a failure" in str(displayed_cells(f)))
    row = displayed_rows(health)[0]
    assert (row["value"], row["alert at"]) == ("succeeded", "a failure")  # not "0.0 / 0.0"
    cost = next(f for h, f in tables.items() if "budget" in h)
    total = next(row for row in displayed_rows(cost) if row["subject"] == "total")
    assert (total["measured"], total["projected"], total["budget"]) == ("$0.71", "$240", "≥ $500")


# ------------------------------------------------- a lake whose data stopped 40 days ago


def _prices() -> Prices:
    return Prices(
        storage_usd_per_gb_month=0.023,
        usd_per_vcpu_hour=dict.fromkeys(CATEGORIES, 0.05),
        jobs={"processing": ("aggregate",), "training": ("train",), "inference": ("forecast",)},
        budget_usd_per_month=0.01,
        budget_patients=100_000,
    )


@pytest.fixture(scope="module")
def stale_root(tmp_path_factory: pytest.TempPathFactory) -> Lake:
    lake = Lake(str(tmp_path_factory.mktemp("stale") / "lake"))
    generate.run(lake, patients=5, seed=31, years=0.3, end_date=as_of() - timedelta(days=40))
    aggregate.run(lake)
    monitor_job.run(lake, prices=_prices())
    return lake


@pytest.fixture
def stale(stale_root: Lake, monkeypatch: pytest.MonkeyPatch) -> Iterator[Lake]:
    monkeypatch.setenv("LAKE_URI", stale_root.uri)
    forget_caches()
    yield stale_root
    forget_caches()


def test_stale_data_shows_as_an_alert_a_warning_and_counts(stale: Lake) -> None:
    app = _open(MONITORING)

    assert_reads_cleanly(app)
    freshness = next(
        frame
        for frame in app.dataframe
        if "status" in headers(frame)  # the checks, not the alerts they raised
        and any(row.get("subject") == "newest data" for row in displayed_rows(frame))
    )
    rows = {row["subject"]: row for row in displayed_rows(freshness)}
    newest = rows["newest data"]
    assert newest["status"] == "alert" and newest["threshold"] == "≥ 2"
    assert int(newest["value"]) >= 40
    silent = rows["patients without data"]
    assert (silent["status"], silent["value"], silent["threshold"]) == ("warning", "100%", "≥ 20%")
    assert silent["details"].startswith("5 of 5 patients (100%)")
    assert set(status_colours(freshness)) == {"alert", "warning"}
    # each, details whole, as a coloured badge under the table (a table cuts long details)
    badged = [str(m.value) for m in app.markdown if "-badge[" in str(m.value)]
    lines = [line for text in badged for line in text.split("  \n")]
    assert any(line.startswith(":red-badge[alert] **newest data**: ") for line in lines)
    assert any(
        line.startswith(":orange-badge[warning] **patients without data**: ") for line in lines
    )
    quality = next(
        frame
        for frame in app.dataframe
        if "status" in headers(frame)
        and any(row.get("subject") == "low wear" for row in displayed_rows(frame))
    )
    assert "reference" not in headers(quality) and "-" not in headers(quality)
    # the projection over the budget: a warning above the cost table, not "too little data"
    assert any("budget" in str(w.value) for w in app.warning)
    metrics = {m.label: m.value for m in app.metric}
    assert int(metrics["Open alerts"]) >= 1 and metrics["Checks warning"] != "0"


# ------------------------------------------------------------------------- formatting rules


def test_values_thresholds_and_details_in_their_units() -> None:
    assert value_text("share of patients", 0.2) == "20%"
    assert value_text("quarantined share", 0.012) == "1.2%"
    assert value_text("usd_per_month", 671.3) == "$671"
    assert value_text("usd_per_month", 0.713) == "$0.71"
    assert value_text("usd_per_month", 0.001) == "< $0.01"  # not "$0.00"
    assert value_text("usd_per_month", 0.0) == "$0.00"
    assert value_text("hours since success", 0.25) == "15 min"
    assert value_text("hours since success", 2.5) == "2.5 h"
    assert value_text("hours since success", 30.2) == "30 h"
    assert value_text("mae", 1310906.0) == "1,310,906"
    assert value_text("days", 3.0) == "3"
    assert value_text("latest run failed", 1.0) == "failed"
    assert value_text("hours since success", None) == "never"
    assert value_text("ks p-value", 0.00001) == "< 0.001"
    assert value_text("psi", None) == "" and value_text("mae", float("nan")) == ""
    assert threshold_text("share of patients", 0.2) == "≥ 20%"
    assert threshold_text("ks p-value", 0.01) == "≤ 0.01"
    assert threshold_text("latest run failed", 1.0) == "a failure"
    assert threshold_text("usd_per_month", None) == ""
    accuracy = json.dumps(
        {
            "rmse": 1820.4,
            "days": 412,
            "patients": 18,
            "ratio": 1.234,
            "mae_lower_95": 1210.0,
            "champion": True,
        }
    )
    assert details_text(accuracy) == (
        "123% of the backtest MAE; lower 95% bound 1,210; RMSE 1,820; 412 days of 18 patients; "
        "the cluster's champion"
    )
    assert details_text("{}") == "" and details_text(None) == ""
    assert details_text("aggregate failed: disk full") == "aggregate failed: disk full"
    assert status_style("warning") == f"color: {STATUS_COLOURS['warning']}; font-weight: 600"
    assert status_style("unknown") == ""


def test_shown_checks_have_no_missing_cells() -> None:
    checks = pl.DataFrame(
        {
            "check": ["job health"],
            "subject": ["job train · daily success"],
            "metric": ["hours since success"],
            "value": [None],
            "reference": [None],
            "threshold": [26.0],
            "status": ["alert"],
            "details": [None],
        },
        schema_overrides={"value": pl.Float64, "reference": pl.Float64, "details": pl.String},
    )
    shown = shown_checks(checks)
    assert shown.null_count().sum_horizontal().item() == 0
    assert shown.row(0, named=True) == {
        "status": "alert",
        "check": "job health",
        "subject": "job train · daily success",
        "metric": "hours since success",
        "value": "never",
        "reference": "",
        "threshold": "≥ 26 h",
        "details": "",
    }


@pytest.mark.usefixtures("empty_lake")
def test_monitoring_page_on_an_empty_lake_reads_cleanly(tmp_path: Path) -> None:
    app = _open(MONITORING)

    assert_reads_cleanly(app)


def test_checks_that_warn_or_alert_read_as_badged_lines() -> None:
    checks = pl.DataFrame(
        {
            "check": ["data quality"] * 3,
            "subject": ["outliers", "low wear", "**bold** :red[x]"],
            "metric": ["days", "share of patients", "share of patients"],
            "value": [0.0, 0.5, 0.9],
            "reference": [None, None, None],
            "threshold": [1.0, 0.3, 0.3],
            "status": ["ok", "warning", "alert"],
            "details": [None, "5 of 10 patients (50%) wore it little", None],
        },
        schema_overrides={"reference": pl.Float64},
    )
    alert, warning = problem_lines(checks)  # alerts first; ok checks have no line
    assert alert.startswith(":red-badge[alert] **")
    # the subject is data: shown as written, no bold, no directive of its own
    assert shown(alert) == ":red-badge[alert] **bold** :red[x]"
    assert tags(alert) == ["<p>", "<strong>", "</strong>", "</p>"]
    assert warning.startswith(":orange-badge[warning] **low wear**: ")
    assert shown(warning) == (
        ":orange-badge[warning] low wear: 5 of 10 patients (50%) wore it little"
    )
    assert set(STATUS_BADGES) == set(STATUS_COLOURS)
