"""The audit log ``ops/audit_log``: who saw what, when. Append-only.

Every sign-in, page opened, patient viewed, patient report made (PDF, dashboard and
``mobility report``), SQL query (dashboard and ``mobility sql``), refusal and re-identification
is one row, written *before* the data is shown (a report: before it is made): when the row
cannot be written, the data is not shown either. SQL is recorded by the SHA-256 of its text (the
text may name patients), with the rows returned. Patients are named by their pseudonym. A
dashboard user is named as their identity provider knows them (``issuer`` and ``subject``: the
token's ``iss`` and ``sub``); ``user`` is their verified email, else ``sub:`` and that subject.

The table is restricted (never a SQL view) and declared ``append_only``: the storage layer refuses
to replace, merge or delete its rows.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal

import polars as pl

from lakehouse.catalog import AUDIT_LOG
from lakehouse.errors import MobilityError, StorageError
from lakehouse.storage import Lake, one_line

Action = Literal[
    "sign-in",
    "sign-out",
    "expired",
    "page",
    "patient",
    "report",
    "sql",
    "refused",
    "reidentify",
]
Client = Literal["dashboard", "cli"]


def sql_sha256(sql: str) -> str:
    """The fingerprint of a query's text as run (SHA-256, hex)."""
    return hashlib.sha256(sql.encode()).hexdigest()


@dataclass(frozen=True)
class AuditEvent:
    """One row of the audit log.

    Args:
        user: who (the identity's verified email, else ``sub:<subject>``; the OS user for the
            CLI, ``demo`` in demo mode).
        roles: their roles, comma-separated (``cli`` for the command line).
        client: ``dashboard`` or ``cli``.
        action: what happened.
        page: where (the dashboard page's path, or the command).
        patient_id: the patient's pseudonym, for a patient view or re-identification.
        sql_sha256: the query's fingerprint (:func:`sql_sha256`).
        rows: rows the query returned.
        outcome: ``ok``, or why it was refused or failed (one line).
        issuer: the identity provider that signed the user in (its ``iss``; None for the CLI
            and the demo).
        subject: the user's ``sub`` at that issuer (None for the CLI and the demo).
        at: when (UTC; now by default).
    """

    user: str
    roles: str
    client: Client
    action: Action
    page: str
    patient_id: str | None = None
    sql_sha256: str | None = None
    rows: int | None = None
    outcome: str = "ok"
    issuer: str | None = None
    subject: str | None = None
    at: datetime = field(default_factory=lambda: datetime.now(UTC))

    def row(self) -> dict[str, object]:
        """The event as a row of ``ops/audit_log``."""
        return {
            "event_id": uuid.uuid4().hex,
            "at": self.at,
            "user": self.user,
            "roles": self.roles,
            "client": self.client,
            "action": self.action,
            "page": self.page,
            "patient_id": self.patient_id,
            "sql_sha256": self.sql_sha256,
            "rows": self.rows,
            "outcome": " ".join(self.outcome.split())[:500],
            "month": self.at.strftime("%Y-%m"),
            "issuer": self.issuer,
            "subject": self.subject,
        }


def record(lake: Lake, events: AuditEvent | Iterable[AuditEvent]) -> None:
    """Append events to the audit log (one commit).

    Raises:
        StorageError: the rows could not be written; the caller must then not show the data.
    """
    batch = [events] if isinstance(events, AuditEvent) else list(events)
    if not batch:
        return
    frame = pl.DataFrame(
        [event.row() for event in batch], schema=pl.Schema(AUDIT_LOG.schema), orient="row"
    )
    try:
        lake.append(AUDIT_LOG, frame, metadata={"job": "audit"})
    except MobilityError:
        raise
    except Exception as err:  # any storage failure: the caller must not show the data
        raise StorageError(
            f"could not write the audit log: {type(err).__name__}: {one_line(err)}"
        ) from err


def read(
    lake: Lake,
    *,
    since: datetime | None = None,
    user: str | None = None,
    action: str | None = None,
    patient_id: str | None = None,
    limit: int = 1000,
) -> pl.DataFrame:
    """Audit events, newest first, optionally filtered (``user`` matches part of the name,
    case-insensitive)."""
    events = lake.scan(AUDIT_LOG)
    # a table written before the catalog gained a column has it from its next append on
    schema, present = pl.Schema(AUDIT_LOG.schema), events.collect_schema().names()
    events = events.with_columns(
        pl.lit(None, dtype=schema[c]).alias(c) for c in AUDIT_LOG.columns if c not in present
    )
    if since is not None:
        utc = since.astimezone(UTC)  # the month partitions are UTC months
        events = events.filter(pl.col("month") >= utc.strftime("%Y-%m"), pl.col("at") >= utc)
    if user:
        events = events.filter(
            pl.col("user").str.to_lowercase().str.contains(user.strip().lower(), literal=True)
        )
    if action:
        events = events.filter(pl.col("action") == action)
    if patient_id:
        events = events.filter(pl.col("patient_id") == patient_id.strip())
    return (
        events.sort("at", descending=True)
        .head(limit)
        .select(c for c in AUDIT_LOG.columns if c not in ("event_id", "month"))
        .collect()
    )
