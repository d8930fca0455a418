"""Secrets scan: fail when a file of the tree holds a credential.

Run by ``./scripts/test`` (and by tests/test_secrets_scan.py). Scans the files git tracks plus the
untracked ones it does not ignore (outside a git work tree: every file under the folder but
``.git``, ``.venv``, caches and lakes), and reports ``path:line: kind`` for private keys, cloud
and service tokens, passwords in URLs and secret-looking assignments, never the secret itself.
Placeholders (``REPLACE_WITH_...``, ``example``, ``${VAR}``, an f-string's ``{expression}``, test
and demo values) pass; a line that must hold such a string on purpose can say
``secrets-scan: allow``.

Usage: python scripts/secrets_scan.py [FOLDER]   (default: the repository root). Exit 1 on a find.
Standard library only: nothing is downloaded.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

MAX_BYTES = 2_000_000
SKIPPED_FOLDERS = {
    ".git",
    ".venv",
    "venv",
    "node_modules",
    "__pycache__",
    ".mypy_cache",
    ".ruff_cache",
    ".pytest_cache",
    ".hypothesis",
    "lake",
    "landing",
    "test-artifacts",
}
ALLOW_MARKER = "secrets-scan: allow"

_PLACEHOLDER = re.compile(
    r"^(\$\{?[A-Za-z_][A-Za-z0-9_]*\}?|\{[^{}]*\}|<[^>]*>|x+|\*+|\.+|-+)$|"
    r"(replace|example|placeholder|changeme|change-me|dummy|fake|sample|your[-_]|"
    r"test|demo|not[-_]secret|redacted|xxxx)",
    re.IGNORECASE,
)

PATTERNS: tuple[tuple[str, re.Pattern[str], int | None], ...] = (
    (
        "private key",
        re.compile(r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----"),
        None,
    ),
    (
        "AWS access key id",
        re.compile(r"\b(?:AKIA|ASIA|AGPA|AIDA|AROA|ANPA|AIPA)[0-9A-Z]{16}\b"),
        None,
    ),
    (
        "AWS secret access key",
        re.compile(r"(?i)aws_?secret_?access_?key\W{0,4}[:=]\s*[\"']?([A-Za-z0-9/+=]{40})\b"),
        1,
    ),
    ("GitHub token", re.compile(r"\b(?:gh[pousr]_[A-Za-z0-9]{36,}|github_pat_\w{60,})"), None),
    ("Slack token", re.compile(r"\bxox[abposr]-[A-Za-z0-9-]{10,}"), None),
    ("Google API key", re.compile(r"\bAIza[0-9A-Za-z_\-]{35}\b"), None),
    ("Stripe key", re.compile(r"\b[sr]k_live_[0-9A-Za-z]{20,}"), None),
    (
        "JSON web token",
        re.compile(r"\beyJ[A-Za-z0-9_-]{10,}\.eyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}"),
        None,
    ),
    (
        "password in a URL",
        re.compile(r"\b[a-zA-Z][a-zA-Z0-9+.-]{1,20}://[^/\s:@'\"<>]{1,64}:([^/\s:@'\"<>]{1,128})@"),
        1,
    ),
    (
        "secret assignment",
        re.compile(
            r"(?i)\b[\w.-]*(?:password|passwd|secret|api[_-]?key|access[_-]?token|auth[_-]?token|"
            r"private[_-]?key|pseudonym[_-]?key)[\w.-]*\"?\s*[:=]\s*[\"']([^\"'\s]{8,})[\"']"
        ),
        1,
    ),
)


@dataclass(frozen=True)
class Finding:
    """A credential-looking string: where and what kind (never the value)."""

    path: Path
    line: int
    kind: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.kind}"


def _files(root: Path) -> Iterator[Path]:
    try:
        listed = subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            cwd=root,
            capture_output=True,
            check=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        listed = None
    if listed is not None:
        for name in sorted(set(listed.decode(errors="replace").split("\0"))):
            path = root / name
            if name and path.is_file() and not SKIPPED_FOLDERS & set(Path(name).parts):
                yield path
        return
    for path in sorted(root.rglob("*")):
        if path.is_file() and not SKIPPED_FOLDERS & set(path.relative_to(root).parts):
            yield path


def scan_text(text: str, path: Path) -> list[Finding]:
    """The findings in one file's text."""
    found = []
    for number, line in enumerate(text.splitlines(), start=1):
        if ALLOW_MARKER in line:
            continue
        for kind, pattern, group in PATTERNS:
            for match in pattern.finditer(line):
                value = match.group(group) if group else match.group(0)
                if group and _PLACEHOLDER.search(value):
                    continue
                found.append(Finding(path, number, kind))
                break
    return found


def scan(root: Path) -> list[Finding]:
    """Every finding under ``root``."""
    found: list[Finding] = []
    for path in _files(root):
        try:
            data = path.read_bytes()[:MAX_BYTES]
        except OSError:
            continue
        if b"\0" in data[:8192]:  # binary
            continue
        found.extend(scan_text(data.decode("utf-8", errors="replace"), path.relative_to(root)))
    return found


def main(argv: list[str]) -> int:
    root = Path(argv[1]) if len(argv) > 1 else Path(__file__).resolve().parents[1]
    found = scan(root.resolve())
    for finding in found:
        print(f"secret? {finding}", file=sys.stderr)
    if found:
        print(
            f"secrets scan: {len(found)} finding(s); move the value to the environment (or "
            f"mark a deliberate placeholder line with '{ALLOW_MARKER}')",
            file=sys.stderr,
        )
        return 1
    print("secrets scan: no credential found")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
