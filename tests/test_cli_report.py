"""``mobility report``: a patient's printable report end to end, as a user runs it; the audit
row on record; one-line errors for an unknown patient, a missing folder and a bad date."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from lakehouse import Lake
from lakehouse.catalog import AUDIT_LOG
from tests.dashboard.demo_lake import build_demo_lake
from tests.pdf_pages import pdf_text
from tests.test_cli import assert_one_line_error, mobility

AS_OF = "2024-03-12"


@pytest.fixture(scope="module")
def lake_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The dashboard tests' demo lake (three patients, P001 with a forecast)."""
    lake = build_demo_lake(tmp_path_factory.mktemp("report") / "lake").lake
    return lake.uri


def test_report_writes_the_pdf_and_records_it(lake_dir: str, tmp_path: Path) -> None:
    out = tmp_path / "P001.pdf"
    done = mobility(
        "--lake",
        lake_dir,
        "report",
        "--patient-id",
        "P001",
        "--out",
        str(out),
        "--as-of",
        AS_OF,
        cwd=tmp_path,
        env={"MOBILITY_USER": "dr.kim"},
    )

    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"report: patient P001 as of {AS_OF} -> {out} (")
    assert done.stderr == ""
    pdf = out.read_bytes()
    assert pdf.startswith(b"%PDF-") and pdf.rstrip().endswith(b"%%EOF")
    assert [p.name for p in tmp_path.iterdir()] == ["P001.pdf"]  # no partial file left
    text = pdf_text(pdf, tmp_path)
    assert "Patient P001 · multiple sclerosis (MS)" in text
    assert "Summary as of 12 Mar 2024" in text

    rows = Lake(lake_dir).read(AUDIT_LOG).filter(pl.col("patient_id") == "P001")
    assert rows.select("user", "roles", "client", "action", "page", "outcome").rows() == [
        ("dr.kim", "cli", "cli", "report", "mobility report", "ok")
    ]


def test_an_unknown_patient_is_one_line_and_recorded_as_refused(
    lake_dir: str, tmp_path: Path
) -> None:
    out = tmp_path / "nobody.pdf"
    before = Lake(lake_dir).read(AUDIT_LOG).height if Lake(lake_dir).exists(AUDIT_LOG) else 0
    done = mobility(
        "--lake",
        lake_dir,
        "report",
        "--patient-id",
        "NOBODY",
        "--out",
        str(out),
        cwd=tmp_path,
        env={"MOBILITY_USER": "dr.kim"},
    )

    assert_one_line_error(done, "unknown patient 'NOBODY'")
    assert not out.exists()
    rows = Lake(lake_dir).read(AUDIT_LOG).sort("at").slice(before)
    assert rows.select("user", "action", "patient_id", "outcome").rows() == [
        ("dr.kim", "report", None, "refused: unknown patient")
    ]


def test_a_missing_folder_is_one_line_before_anything_is_read(
    lake_dir: str, tmp_path: Path
) -> None:
    out = tmp_path / "no such folder" / "P001.pdf"
    done = mobility(
        "--lake", lake_dir, "report", "--patient-id", "P001", "--out", str(out), cwd=tmp_path
    )

    assert_one_line_error(done, f"the folder {out.parent} does not exist")
    assert not out.parent.exists()


def test_a_bad_date_is_one_line(lake_dir: str, tmp_path: Path) -> None:
    done = mobility(
        "--lake",
        lake_dir,
        "report",
        "--patient-id",
        "P001",
        "--out",
        str(tmp_path / "P001.pdf"),
        "--as-of",
        "12/03/2024",
        cwd=tmp_path,
    )

    assert_one_line_error(done, "not a date (YYYY-MM-DD): '12/03/2024'")


def test_a_link_at_the_output_path_is_replaced_not_followed(lake_dir: str, tmp_path: Path) -> None:
    """An attacker's symlink where the report goes: the report replaces the link itself, the
    file it pointed at is left as it was."""
    victim = tmp_path / "victim.txt"
    victim.write_text("do not overwrite")
    out = tmp_path / "report.pdf"
    out.symlink_to(victim)
    done = mobility(
        "--lake", lake_dir, "report", "--patient-id", "P001", "--out", str(out),
        "--as-of", AS_OF, cwd=tmp_path,
    )  # fmt: skip

    assert done.returncode == 0, done.stderr
    assert victim.read_text() == "do not overwrite"
    assert not out.is_symlink() and out.read_bytes().startswith(b"%PDF-")
