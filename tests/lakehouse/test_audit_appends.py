"""Appends to the audit log, which keeps its table handle between appends (lakehouse/storage.py
``_AppendHandles``): every event lands exactly once, whoever else writes to the table."""

from __future__ import annotations

import threading

import polars as pl
import pytest
from deltalake import DeltaTable, write_deltalake

from lakehouse import Lake, StorageError, audit
from lakehouse.catalog import AUDIT_LOG
from lakehouse.storage import conform


def _event(user: str) -> audit.AuditEvent:
    return audit.AuditEvent(user=user, roles="ops", client="cli", action="sql", page="sql")


def _users(lake: Lake) -> list[str]:
    return sorted(lake.read(AUDIT_LOG)["user"].to_list())


def test_appends_see_commits_made_elsewhere_in_between(lake: Lake) -> None:
    audit.record(lake, _event("a"))
    audit.record(lake, _event("b"))  # through the kept handle
    # another process appends (its own handle): this one's handle is behind by one commit
    other = conform(AUDIT_LOG, pl.DataFrame([_event("elsewhere").row()]))
    write_deltalake(lake.table_uri(AUDIT_LOG), other, mode="append", partition_by=["month"])
    audit.record(lake, _event("c"))

    assert _users(lake) == ["a", "b", "c", "elsewhere"]
    history = DeltaTable(lake.table_uri(AUDIT_LOG)).history()
    assert sorted(entry["version"] for entry in history) == [0, 1, 2, 3]


def test_concurrent_appends_in_one_process_all_land(lake: Lake) -> None:
    audit.record(lake, _event("first"))
    errors: list[BaseException] = []

    def views(thread: int) -> None:
        try:
            for view in range(5):
                audit.record(lake, _event(f"t{thread}-{view}"))
        except BaseException as err:
            errors.append(err)

    threads = [threading.Thread(target=views, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert not errors
    assert _users(lake) == sorted(["first", *(f"t{t}-{v}" for t in range(4) for v in range(5))])


def test_after_a_failed_append_the_next_one_lands(
    lake: Lake, monkeypatch: pytest.MonkeyPatch
) -> None:
    audit.record(lake, _event("a"))

    def refuse(*_args: object, **_kwargs: object) -> None:
        raise ValueError("disk full")

    with monkeypatch.context() as patched:
        patched.setattr("lakehouse.storage.write_deltalake", refuse)
        with pytest.raises(StorageError, match=r"could not write the audit log: .*disk full"):
            audit.record(lake, _event("lost"))
    audit.record(lake, _event("b"))

    assert _users(lake) == ["a", "b"]
