"""The audit log names a signed-in user by the identity provider's issuer and subject; an audit
table from before those columns gains them on its next append and stays append-only."""

from __future__ import annotations

import polars as pl
from deltalake import write_deltalake

from lakehouse import Lake, audit
from lakehouse.catalog import AUDIT_LOG
from lakehouse.storage import conform

NEW_COLUMNS = ("issuer", "subject")


def _signed_in(user: str, subject: str) -> audit.AuditEvent:
    return audit.AuditEvent(
        user=user,
        roles="clinician",
        client="dashboard",
        action="sign-in",
        page="sign-in",
        issuer="https://login.example.org",
        subject=subject,
    )


def test_events_keep_the_issuer_and_subject(lake: Lake) -> None:
    audit.record(lake, [_signed_in("c@example.org", "c-1"), _signed_in("s-2", "s-2")])
    cli = audit.AuditEvent(user="ops", roles="cli", client="cli", action="sql", page="sql")
    audit.record(lake, cli)

    rows = lake.read(AUDIT_LOG).sort("user")
    assert rows.select("user", "issuer", "subject").rows() == [
        ("c@example.org", "https://login.example.org", "c-1"),
        ("ops", None, None),
        ("s-2", "https://login.example.org", "s-2"),
    ]
    assert list(audit.read(lake).columns)[-2:] == list(NEW_COLUMNS)


def test_an_audit_table_from_before_gains_the_subject_columns(lake: Lake) -> None:
    old_columns = [c for c in AUDIT_LOG.columns if c not in NEW_COLUMNS]
    old = audit.AuditEvent(
        user="before@example.org", roles="cli", client="cli", action="sql", page="x"
    )
    before = conform(AUDIT_LOG, pl.DataFrame([old.row()])).select(old_columns)
    write_deltalake(lake.table_uri(AUDIT_LOG), before, mode="append", partition_by=["month"])
    assert not lake.schema_matches(AUDIT_LOG)

    # read before the next append: the new columns are there, null
    early = audit.read(lake)
    assert early["user"].to_list() == ["before@example.org"]
    assert early["subject"].to_list() == [None]

    audit.record(lake, _signed_in("after@example.org", "a-1"))
    assert lake.schema_matches(AUDIT_LOG)
    rows = audit.read(lake).sort("at")
    assert rows.select("user", "subject").rows() == [
        ("before@example.org", None),
        ("after@example.org", "a-1"),
    ]
    # every commit an append: gaining the columns rewrote nothing
    modes = [entry["operationParameters"]["mode"] for entry in lake.delta(AUDIT_LOG).history()]
    assert modes == ["Append", "Append"]
