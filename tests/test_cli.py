"""The ``mobility`` command line: lake selection, one-line errors, SQL as CSV, lake upkeep."""

from __future__ import annotations

import csv
import io
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from jobs.cli import app
from lakehouse import Lake, get_settings
from lakehouse.catalog import DAILY_STEPS, FEATURES, JOB_RUNS, PATIENTS, TABLES
from lakehouse.feature_dictionary import FEATURE_NAMES
from tests.lakehouse.frames import edge_rows


def mobility(
    *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m jobs`` as a user would, with a clean environment plus ``env``."""
    base = {
        k: v for k, v in os.environ.items() if k not in ("LAKE_URI", "MOBILITY_ENGINE", "COLUMNS")
    }
    return subprocess.run(
        [sys.executable, "-m", "jobs", *args],
        cwd=cwd,
        env={**base, **(env or {})},
        capture_output=True,
        text=True,
        timeout=120,
    )


def assert_one_line_error(done: subprocess.CompletedProcess[str], fragment: str) -> None:
    assert done.returncode == 2, done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("error: ")
    assert fragment in lines[0]
    assert "Traceback" not in done.stderr
    assert done.stdout == ""


@pytest.fixture
def runner(monkeypatch: pytest.MonkeyPatch) -> Iterator[CliRunner]:
    """An in-process runner with no lake or engine taken from this machine's environment."""
    monkeypatch.delenv("LAKE_URI", raising=False)
    monkeypatch.delenv("MOBILITY_ENGINE", raising=False)
    get_settings.cache_clear()
    yield CliRunner()
    get_settings.cache_clear()


# ------------------------------------------------------------------ as a subprocess


def test_sql_prints_csv(tmp_path: Path) -> None:
    done = mobility("--lake", str(tmp_path / "lake"), "sql", "select 1 as x", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "x\n1\n"


def test_sql_error_is_one_line_without_traceback(tmp_path: Path) -> None:
    done = mobility("--lake", str(tmp_path / "lake"), "sql", "select * from nope", cwd=tmp_path)
    assert_one_line_error(done, "nope")


def test_long_error_message_is_not_wrapped(tmp_path: Path) -> None:
    name = "a_table_name_long_enough_to_overflow_an_eighty_column_terminal_on_its_own"
    done = mobility("--lake", str(tmp_path / "lake"), "sql", f"select * from {name}", cwd=tmp_path)
    assert_one_line_error(done, name)


def test_sql_timeout_is_one_line(tmp_path: Path) -> None:
    done = mobility(
        "--lake",
        str(tmp_path / "lake"),
        "sql",
        "select count(*) from range(100000000) a, range(100000000) b",
        "--timeout",
        "0.5",
        cwd=tmp_path,
    )
    assert_one_line_error(done, "time limit")


def test_spark_engine_starts_only_for_the_stages_that_use_it(tmp_path: Path) -> None:
    """``lake info`` has nothing to run on Spark: no session is started (the stages on Spark:
    tests/jobs/test_spark_engine.py)."""
    done = mobility(
        "--lake", str(tmp_path / "lake"), "--engine", "spark", "lake", "info", cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr
    assert "Spark" not in done.stderr


def test_bad_engine_in_environment_is_a_one_line_error(tmp_path: Path) -> None:
    done = mobility(
        "--lake", str(tmp_path / "lake"), "lake", "info", cwd=tmp_path, env={"MOBILITY_ENGINE": "x"}
    )
    assert_one_line_error(done, "MOBILITY_ENGINE")


def test_optimize_unknown_table_is_a_one_line_error(tmp_path: Path) -> None:
    done = mobility(
        "--lake", str(tmp_path / "lake"), "lake", "optimize", "--table", "nope/x", cwd=tmp_path
    )
    assert_one_line_error(done, "nope/x")


@pytest.mark.parametrize(
    "args",
    [("generate", "--patients", "0"), ("generate", "--patients", "x"), ("--bogus",)],
)
def test_usage_errors_exit_2_without_traceback(tmp_path: Path, args: tuple[str, ...]) -> None:
    done = mobility("--lake", str(tmp_path / "lake"), *args, cwd=tmp_path)
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert "Usage: mobility" in done.stderr
    assert not (tmp_path / "lake" / "bronze").exists()


def test_aggregate_on_empty_lake_succeeds_and_records_its_run(tmp_path: Path) -> None:
    lake = Lake(str(tmp_path / "lake"))
    done = mobility("--lake", lake.uri, "aggregate", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    runs = lake.read(JOB_RUNS)
    assert runs["job"].to_list() == ["aggregate"]
    assert runs["status"].to_list() == ["succeeded"]


def test_pipeline_builds_daily_steps_and_features_then_has_nothing_to_do(tmp_path: Path) -> None:
    lake = Lake(str(tmp_path / "lake"))
    assert (
        mobility(
            "--lake", lake.uri, "generate", "--patients", "2", "--years", "0.3", cwd=tmp_path
        ).returncode
        == 0
    )
    done = mobility("--lake", lake.uri, "pipeline", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "aggregate: full" in done.stdout
    assert "features: full" in done.stdout
    days = lake.read(DAILY_STEPS)
    features = lake.read(FEATURES)
    # every patient's record runs from the first day with data to the day after the last
    assert features.height == sum(
        (group["date"].max() - group["date"].min()).days + 2  # type: ignore[operator]
        for _, group in days.group_by("patient_id")
    )
    again = mobility("--lake", lake.uri, "features", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert "features: up-to-date" in again.stdout
    assert lake.read(JOB_RUNS)["job"].to_list().count("features") == 2


def test_feature_dictionary_prints_every_feature_and_refuses_an_unknown_family(
    tmp_path: Path,
) -> None:
    done = mobility("feature-dictionary", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    rows = list(csv.DictReader(io.StringIO(done.stdout)))
    assert [r["name"] for r in rows] == list(FEATURE_NAMES)
    assert all(r["definition"] and r["label"] and r["window"] for r in rows)
    lags = mobility("feature-dictionary", "--family", "lag", cwd=tmp_path)
    assert [r["name"] for r in csv.DictReader(io.StringIO(lags.stdout))] == [
        f"lag_{k}d" for k in (1, 2, 3, 7, 14, 28)
    ]
    assert_one_line_error(
        mobility("feature-dictionary", "--family", "lags", cwd=tmp_path), "unknown feature family"
    )


def test_features_on_empty_lake_succeeds(tmp_path: Path) -> None:
    lake = Lake(str(tmp_path / "lake"))
    done = mobility("--lake", lake.uri, "features", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "features: up-to-date, 0 patient-days" in done.stdout
    assert not lake.exists(FEATURES)


def test_lake_option_beats_environment_which_beats_default(tmp_path: Path) -> None:
    flag_lake, env_lake = Lake(str(tmp_path / "flag")), Lake(str(tmp_path / "env"))
    env = {"LAKE_URI": env_lake.uri}

    assert mobility("--lake", flag_lake.uri, "aggregate", cwd=tmp_path, env=env).returncode == 0
    assert lake_runs(flag_lake) == 1
    assert lake_runs(env_lake) == 0

    assert mobility("aggregate", cwd=tmp_path, env=env).returncode == 0
    assert lake_runs(flag_lake) == 1
    assert lake_runs(env_lake) == 1

    assert mobility("aggregate", cwd=tmp_path).returncode == 0
    assert lake_runs(Lake(str(tmp_path / "lake"))) == 1


def lake_runs(lake: Lake) -> int:
    return lake.read(JOB_RUNS).height


# ------------------------------------------------------------------ in process


def test_lake_info_on_empty_lake_lists_every_table(runner: CliRunner, tmp_path: Path) -> None:
    result = runner.invoke(
        app, ["--lake", str(tmp_path / "lake"), "lake", "info"], terminal_width=200
    )
    assert result.exit_code == 0, result.output
    for table in TABLES:
        assert table.path in result.stdout


def test_lake_info_shows_rows_and_files(runner: CliRunner, tmp_path: Path) -> None:
    lake = Lake(str(tmp_path / "lake"))
    lake.append(PATIENTS, edge_rows(PATIENTS))
    result = runner.invoke(app, ["--lake", lake.uri, "lake", "info"], terminal_width=200)
    assert result.exit_code == 0, result.output
    line = next(row for row in result.stdout.splitlines() if "bronze/patients" in row)
    cells = [cell.strip() for cell in line.split("│")[1:-1]]
    assert cells[:4] == ["bronze/patients", "0", "3", "1"]  # table, version, rows, files


def test_sql_csv_quotes_awkward_values(runner: CliRunner, tmp_path: Path) -> None:
    lake = Lake(str(tmp_path / "lake"))
    lake.append(PATIENTS, edge_rows(PATIENTS))
    result = runner.invoke(
        app,
        ["--lake", lake.uri, "sql", "select patient_id from bronze.patients order by patient_id"],
    )
    assert result.exit_code == 0, result.output
    assert result.stdout == 'patient_id\nO\'Brien-ü\nP-000001\n"Z ""quoted"" 患者"\n'


def test_sql_row_cap_truncates_and_says_so(runner: CliRunner, tmp_path: Path) -> None:
    result = runner.invoke(
        app,
        ["--lake", str(tmp_path / "lake"), "sql", "--max-rows", "2", "select * from range(5) t(n)"],
    )
    assert result.exit_code == 0, result.output
    assert result.stdout == "n\n0\n1\n"
    assert "truncated to 2 rows" in result.stderr


def test_optimize_compacts_a_table(runner: CliRunner, tmp_path: Path) -> None:
    lake = Lake(str(tmp_path / "lake"))
    for row in (0, 1, 2):
        lake.append(PATIENTS, edge_rows(PATIENTS, (row,)))
    result = runner.invoke(
        app, ["--lake", lake.uri, "lake", "optimize", "--table", "bronze/patients"]
    )
    assert result.exit_code == 0, result.output
    assert "bronze/patients: 3 -> 1 files" in result.stdout
    assert lake.info(PATIENTS).files == 1
    assert lake.read(PATIENTS).height == 3
