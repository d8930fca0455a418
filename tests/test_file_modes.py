"""What the product writes is private to its user (issue 18, finding 10, first half).

Each entry point (the CLI, hence the scheduler and every command it starts; the dashboard) sets
the process umask from ``MOBILITY_FILE_MODE`` before writing: ``private`` (the default) gives
files 0600 and folders 0700, ``group`` 0640 and 0750. The tests run the product as a user would,
in child processes started with the usual umask 022, and walk every file and folder written:
delta-rs' Parquet files, Delta logs and checkpoints, the model artifacts, the re-identification
map, the landing files ``generate`` writes, the dashboard's audit log, ingest's staging files.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import polars as pl
import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from jobs.ingest import run as ingest_job
from lakehouse import Lake, get_settings
from lakehouse.catalog import AUDIT_LOG, REIDENTIFICATION
from lakehouse.settings import apply_file_mode
from tests.test_cli import assert_one_line_error, mobility

ROOT = Path(__file__).resolve().parents[1]
APP = ROOT / "dashboard" / "app.py"
ARTIFACT_KEY = "tests-only-artifact-key-0123456789abcdef"


@pytest.fixture
def usual_umask() -> Iterator[None]:
    """This process runs with the common umask 022 (files 0644) and gets it back afterwards."""
    before = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(before)


def _modes(*roots: Path) -> dict[Path, int]:
    """Every file and folder under ``roots`` (the roots included) with its permission bits."""
    found: dict[Path, int] = {}
    for root in roots:
        found[root] = stat.S_IMODE(root.lstat().st_mode)
        for folder, dirs, files in os.walk(root):
            for name in [*dirs, *files]:
                path = Path(folder) / name
                found[path] = stat.S_IMODE(path.lstat().st_mode)
    return found


def _wide(modes: dict[Path, int], allowed: int) -> list[str]:
    """The paths with any permission bit for group or others beyond ``allowed``."""
    return [
        f"{oct(mode)} {path}" for path, mode in sorted(modes.items()) if mode & 0o077 & ~allowed
    ]


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    return {
        "MOBILITY_QUICK_TRAINING": "1",
        "MOBILITY_ARTIFACT_KEY": ARTIFACT_KEY,
        "XDG_CONFIG_HOME": str(tmp_path / "config"),
        "MOBILITY_DEMO": "0",
        **extra,
    }


def _run(tmp_path: Path, *args: str, **extra: str) -> None:
    done = mobility(
        "--lake", str(tmp_path / "lake"), *args, cwd=tmp_path, env=_env(tmp_path, **extra)
    )
    assert done.returncode == 0, done.stderr


@pytest.mark.usefixtures("usual_umask")
def test_the_pipeline_writes_every_file_0600_and_every_folder_0700(tmp_path: Path) -> None:
    landing = tmp_path / "landing"
    generate = ("generate", "--patients", "2", "--seed", "3", "--years", "2")
    _run(tmp_path, *generate, "--landing", str(landing))
    _run(tmp_path, "ingest", str(landing))
    _run(tmp_path, "pipeline")
    _run(tmp_path, "lake", "optimize", "--table", "bronze/step_samples")

    lake = tmp_path / "lake"
    modes = _modes(lake, landing)
    assert _wide(modes, allowed=0) == []
    files = [p for p in modes if p.is_file()]
    assert {modes[p] for p in files} == {0o600}
    assert {modes[p] for p in modes if p.is_dir()} == {0o700}
    written = {p.relative_to(lake).as_posix() for p in files if p.is_relative_to(lake)}
    assert any(p.startswith("models/artifacts/") for p in written), sorted(written)
    assert any(p.startswith("admin/reidentification/") and p.endswith(".parquet") for p in written)
    assert any(p.startswith("bronze/step_samples/month=") for p in written)
    assert any("/_delta_log/" in p and p.endswith(".json") for p in written)
    assert any(p.startswith("ops/job_runs/") for p in written)
    # a checkpoint, written as the product's processes write (delta-rs writes one every 100
    # commits; a test lake has fewer)
    checkpoint = (
        "from deltalake import DeltaTable\n"
        "from lakehouse.settings import apply_file_mode, get_settings\n"
        "apply_file_mode(get_settings())\n"
        f"DeltaTable({str(lake / 'bronze' / 'patients')!r}).create_checkpoint()\n"
    )
    subprocess.run([sys.executable, "-c", checkpoint], check=True, cwd=ROOT, timeout=60)
    log = _modes(lake / "bronze" / "patients" / "_delta_log")
    assert any(p.name.endswith(".checkpoint.parquet") for p in log), log
    assert _wide(log, allowed=0) == []
    assert Lake(str(lake)).read(REIDENTIFICATION).height == 2


@pytest.mark.usefixtures("usual_umask")
def test_group_mode_lets_the_group_read_and_nobody_else(tmp_path: Path) -> None:
    feed = tmp_path / "feed.csv"
    feed.write_text("patient_id,start,end,steps\nA,2024-01-01 08:00,2024-01-01 09:00,-5\n")
    os.chmod(feed, 0o600)
    _run(
        tmp_path,
        "generate",
        "--patients",
        "2",
        "--seed",
        "3",
        "--years",
        "0.2",
        MOBILITY_FILE_MODE="group",
    )
    _run(tmp_path, "ingest", str(feed), "--timezone", "UTC", MOBILITY_FILE_MODE="group")

    modes = _modes(tmp_path / "lake")
    assert _wide(modes, allowed=0o050) == []  # group: read (and enter), never write
    assert {m for p, m in modes.items() if p.is_file()} == {0o640}
    assert {m for p, m in modes.items() if p.is_dir()} == {0o750}
    assert (tmp_path / "lake" / "bronze" / "quarantine").is_dir()


def test_an_unknown_file_mode_is_a_one_line_error(tmp_path: Path) -> None:
    done = mobility(
        "--lake",
        str(tmp_path / "lake"),
        "lake",
        "info",
        cwd=tmp_path,
        env={"MOBILITY_FILE_MODE": "world"},
    )
    assert_one_line_error(done, "MOBILITY_FILE_MODE")


@pytest.mark.usefixtures("usual_umask")
def test_ingest_stages_its_files_privately(
    lake: Lake, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The staging Parquet files (a file's valid samples, before the commit) are 0600 in a 0700
    folder while they exist."""
    seen: dict[Path, int] = {}
    commit = ingest_job._commit_new

    def looking(lake: Lake, staged: Path, *args: object, **kwargs: object) -> int:
        seen.update(_modes(staged.parent))
        return commit(lake, staged, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(ingest_job, "_commit_new", looking)
    feed = tmp_path / "feed.csv"
    feed.write_text("patient_id,start,end,steps\nA,2024-01-01 08:00,2024-01-01 09:00,50\n")
    apply_file_mode(get_settings())

    ingest_job.run(lake, feed, format="generic", timezone="UTC")

    assert any(p.name == "samples.parquet" for p in seen), seen
    assert _wide(seen, allowed=0) == []


@pytest.mark.usefixtures("usual_umask")
def test_the_dashboard_sets_the_mode_before_it_writes_the_audit_log(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from dashboard import data

    root = tmp_path / "lake"
    monkeypatch.setenv("LAKE_URI", str(root))
    monkeypatch.setenv("MOBILITY_DEMO", "1")
    monkeypatch.setenv("MOBILITY_ARTIFACT_KEY", ARTIFACT_KEY)
    get_settings.cache_clear()
    data.clear_caches()
    st.cache_data.clear()
    st.cache_resource.clear()
    try:
        app = AppTest.from_file(str(APP), default_timeout=60).run()
        assert not app.exception, [e.value for e in app.exception]
        assert os.umask(0o077) == 0o077  # what app.py set
        assert Lake(str(root)).read(AUDIT_LOG).filter(pl.col("action") == "page").height >= 1
    finally:
        get_settings.cache_clear()
        data.clear_caches()
        st.cache_data.clear()
        st.cache_resource.clear()
    modes = _modes(root / "ops" / "audit_log")
    assert _wide(modes, allowed=0) == [] and any(p.suffix == ".parquet" for p in modes)
