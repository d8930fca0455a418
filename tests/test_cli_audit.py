"""``mobility sql`` records each query in the audit log: who (MOBILITY_USER, else the operating
system's user), the query's SHA-256 and row count; refused queries too."""

from __future__ import annotations

import getpass
from pathlib import Path

from lakehouse import Lake
from lakehouse.audit import sql_sha256
from lakehouse.catalog import AUDIT_LOG
from tests.test_cli import mobility


def test_sql_queries_are_audited(tmp_path: Path) -> None:
    lake_dir = str(tmp_path / "lake")
    query = "select 1 as x union all select 2"
    done = mobility("--lake", lake_dir, "sql", query, cwd=tmp_path, env={"MOBILITY_USER": "ana"})
    assert done.returncode == 0, done.stderr
    refused = "copy (select 1) to 'stolen.csv'"
    done = mobility("--lake", lake_dir, "sql", refused, cwd=tmp_path, env={"MOBILITY_USER": ""})
    assert done.returncode == 2
    assert not (tmp_path / "stolen.csv").exists()

    rows = Lake(lake_dir).read(AUDIT_LOG).sort("at")
    assert rows.select("user", "roles", "client", "action", "page").rows() == [
        ("ana", "cli", "cli", "sql", "mobility sql"),
        (getpass.getuser(), "cli", "cli", "sql", "mobility sql"),
    ]
    assert rows["sql_sha256"].to_list() == [sql_sha256(query), sql_sha256(refused)]
    assert rows["rows"].to_list() == [2, None]
    assert rows["outcome"][0] == "ok"
    assert rows["outcome"][1] == "refused: COPY statement"
