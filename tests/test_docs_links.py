"""Every relative link in README.md and docs/*.md leads somewhere: the file exists, and an anchor
(``page.md#section``, ``#section``) names a heading of that page, as GitHub spells it."""

from __future__ import annotations

import os
import re
from collections import Counter
from pathlib import Path
from urllib.parse import unquote

import pytest

REPO = Path(__file__).resolve().parents[1]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]

FENCE = re.compile(r"^(```|~~~).*?^\1\s*$", re.M | re.S)
INLINE_CODE = re.compile(r"(`+)(?!`).*?(?<!`)\1(?!`)", re.S)
# [text](target) and ![alt](target); the text may hold code spans and one level of brackets
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\[\]]*\])*\]\(\s*<?([^()\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$", re.M)
OUTSIDE = re.compile(r"^[a-z][a-z0-9+.-]*:", re.I)  # http:, https:, mailto: ...


def _prose(markdown: str) -> str:
    """The page without its fenced code blocks (a link or heading there is only text)."""
    return FENCE.sub("", markdown)


def github_anchor(heading: str) -> str:
    """The anchor GitHub gives a heading: its text lower-cased, without markup and punctuation
    (letters, digits, ``_`` and ``-`` stay), spaces as hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link keeps its text
    text = re.sub(r"<[^>]+>", "", text).lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    """The anchors of ``page``'s headings; a repeated one gets ``-1``, ``-2``... as on GitHub."""
    seen: Counter[str] = Counter()
    found = set()
    for heading in HEADING.findall(_prose(page.read_text(encoding="utf-8"))):
        anchor = github_anchor(heading)
        found.add(anchor if not seen[anchor] else f"{anchor}-{seen[anchor]}")
        seen[anchor] += 1
    return found


def relative_links(page: Path) -> list[str]:
    """The targets of ``page``'s links that stay in the repository (no scheme)."""
    text = _prose(page.read_text(encoding="utf-8"))
    # a code span's brackets are not a link ([`name`](page.md) stays one: its text becomes x)
    text = INLINE_CODE.sub("x", text)
    return [target for target in LINK.findall(text) if not OUTSIDE.match(target)]


def broken(page: Path) -> list[str]:
    problems = []
    for target in relative_links(page):
        path, _, anchor = target.partition("#")
        goal = (page.parent / unquote(path)).resolve() if path else page
        if not goal.exists():
            problems.append(f"{target}: no file {os.path.relpath(goal, page.parent)}")
        elif anchor and goal.suffix == ".md" and unquote(anchor) not in anchors(goal):
            problems.append(f"{target}: no heading with anchor #{anchor} in {goal.name}")
    return problems


@pytest.mark.parametrize("page", PAGES, ids=[str(p.relative_to(REPO)) for p in PAGES])
def test_relative_links_resolve(page: Path) -> None:
    problems = broken(page)
    assert not problems, f"broken links in {page.relative_to(REPO)}:\n" + "\n".join(problems)


def test_the_checker_catches_a_broken_link_and_anchor(tmp_path: Path) -> None:
    (tmp_path / "other.md").write_text("# Other\n\n## Sample validation (`jobs/validation.py`)\n")
    page = tmp_path / "page.md"
    page.write_text(
        "# Page\n\n## Two commands\n\n"
        "[ok](other.md#sample-validation-jobsvalidationpy) [ok](#two-commands) "
        "[ok](https://example.org/x.md) `[not a link](gone.md)`\n"
        "[file](gone.md) [anchor](other.md#validation) ![picture](gone.png) [here](#three)\n"
        "```\n[in a code block](gone-too.md)\n```\n"
    )
    assert broken(page) == [
        "gone.md: no file gone.md",
        "other.md#validation: no heading with anchor #validation in other.md",
        "gone.png: no file gone.png",
        "#three: no heading with anchor #three in page.md",
    ]


def test_github_anchor() -> None:
    assert github_anchor("Sample validation (`jobs/validation.py`)") == (
        "sample-validation-jobsvalidationpy"
    )
    assert github_anchor("Never worse than the patient's usual level without evidence") == (
        "never-worse-than-the-patients-usual-level-without-evidence"
    )
    assert github_anchor("1. The statement check, on DuckDB's parse tree") == (
        "1-the-statement-check-on-duckdbs-parse-tree"
    )
    assert github_anchor("The worker: `mobility scheduler`") == "the-worker-mobility-scheduler"
