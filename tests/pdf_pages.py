"""PDF files read back as a reader sees them: their text (poppler's ``pdftotext``) and their pages
as PNG images (``pdftoppm``), for the report's tests. Without poppler-utils the tests that need
it skip (``apt-get install poppler-utils``; ``scripts/test`` installs it when it can)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
ARTIFACTS = REPO / "test-artifacts" / "report"
# A4 in PostScript points (1/72 inch)
A4_POINTS = (595.28, 841.89)


def poppler(tool: str) -> str:
    """The path of a poppler tool, or a skip saying how to install it."""
    found = shutil.which(tool)
    if found is None:
        pytest.skip(
            f"{tool} is missing (poppler-utils): apt-get install poppler-utils, or run "
            "./scripts/test as root to install it"
        )
    return found


def pdf_text(pdf: bytes, tmp_path: Path) -> str:
    """The text of every page of ``pdf`` in reading order, white space runs as one space."""
    source = tmp_path / "text-of.pdf"
    source.write_bytes(pdf)
    done = subprocess.run(
        [poppler("pdftotext"), "-enc", "UTF-8", str(source), "-"],
        capture_output=True,
        check=True,
        timeout=60,
    )
    return " ".join(done.stdout.decode("utf-8").split())


def pdf_pages(pdf: bytes, out_dir: Path, *, name: str, dpi: int = 100) -> list[Path]:
    """The pages of ``pdf`` as PNG files ``<name>-<page>.png`` in ``out_dir``, at ``dpi``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for old in out_dir.glob(f"{name}-*.png"):
        old.unlink()
    source = out_dir / f"{name}.pdf"
    source.write_bytes(pdf)
    subprocess.run(
        [poppler("pdftoppm"), "-r", str(dpi), "-png", str(source), str(out_dir / name)],
        capture_output=True,
        check=True,
        timeout=120,
    )
    return sorted(out_dir.glob(f"{name}-*.png"))


def pdf_images(pdf: bytes, tmp_path: Path) -> list[tuple[int, int, int]]:
    """The images in ``pdf``: the page each is on, its width and height in pixels."""
    source = tmp_path / "images-of.pdf"
    source.write_bytes(pdf)
    done = subprocess.run(
        [poppler("pdfimages"), "-list", str(source)],
        capture_output=True,
        check=True,
        timeout=60,
    )
    rows = [line.split() for line in done.stdout.decode().splitlines()[2:]]  # after the header
    return [(int(row[0]), int(row[3]), int(row[4])) for row in rows]


def ink(page: Path) -> float:
    """The share of the page's pixels that are not white."""
    with Image.open(page) as image:
        grey = np.asarray(image.convert("L"))
    return float((grey < 245).mean())


def colour(page: Path) -> float:
    """The share of the page's pixels in a clear colour (not grey): the chart and the headings."""
    with Image.open(page) as image:
        rgb = np.asarray(image.convert("RGB")).astype(np.int16)
    spread = rgb.max(axis=2) - rgb.min(axis=2)
    return float((spread > 60).mean())
