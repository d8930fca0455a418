"""The secrets scan (scripts/secrets_scan.py, run by ./scripts/test): the tree holds no
credential, and planted ones of each kind are found. The planted values are assembled at run time
so that this file holds none."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "secrets_scan.py"


def _scanner() -> ModuleType:
    spec = importlib.util.spec_from_file_location("secrets_scan", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_the_tree_holds_no_secret() -> None:
    done = subprocess.run(
        [sys.executable, str(SCRIPT)], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr


def _planted() -> dict[str, str]:
    begin, end = "-----BEGIN", "-----"
    return {
        "private key": f"{begin} RSA PRIVATE KEY{end}\nMIIEowIBAAKCAQEA\n",
        "AWS access key id": "aws_access_key_id = " + "AKIA" + "Q3EGRT7XK2LMNOPQ",
        "AWS secret access key": "AWS_SECRET_ACCESS_KEY="
        + "wJalrXUtnFEMI/K7MDENG/bPxRfiCY"
        + "q8Zr2mVxKQ",
        "GitHub token": "token: " + "ghp_" + "a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8",
        "password in a URL": "DATABASE=postgres://"
        + "mobility:s3cr3tPw0rd"
        + "@db.internal:5432/x",
        "secret assignment": 'client_secret = "' + "q8Zr-2mVx" + '7LpW4nT"',
    }


@pytest.mark.parametrize("kind", list(_planted()))
def test_a_planted_secret_is_found_without_printing_it(tmp_path: Path, kind: str) -> None:
    text = _planted()[kind]
    (tmp_path / "config.py").write_text(f"# settings\n{text}\n", encoding="utf-8")
    done = subprocess.run(
        [sys.executable, str(SCRIPT), str(tmp_path)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 1
    assert f"config.py:2: {kind}" in done.stderr or f"config.py:3: {kind}" in done.stderr
    secret_part = text.split("=")[-1].strip().strip('"')[-8:]
    assert secret_part not in done.stderr + done.stdout


@pytest.mark.parametrize(
    "line",
    [
        'cookie_secret = "REPLACE_WITH_A_LONG_RANDOM_STRING"',
        "url = 'postgres://user:${DB_PASSWORD}@db:5432/x'",
        'password = "example-password"',
        'TEST_PSEUDONYM_KEY = "tests-only-pseudonym-key-0123456789abcdef"',
        "lake = 's3://clinic-bucket/mobility'",
    ],
)
def test_placeholders_pass(line: str) -> None:
    assert _scanner().scan_text(line, Path("x.py")) == []
