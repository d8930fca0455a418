"""A lease on the lake: one process at a time runs the pipeline's stages.

Why a lock as well as idempotent commits: each stage's commits are idempotent on their own
(replace by predicate, merge on keys, app transactions) and Delta commit conflicts are retried, but
two runs racing each other still decide from stale reads: both trainings register version
"latest + 1" (the second a version 2 one run would not have made), both monitoring runs raise the
same alert. With the stages serialised, two schedulers started at once end with the tables of one
run: the second finds its work done (aggregate and features up to date, training not due) and
only re-forecasts the same rows and records a second monitoring run.

How: the lease is the one row of the Delta table ``ops/lake_lock``. Taking it is a Delta commit
that overwrites that row, based on the snapshot in which the lease was seen free. Two processes
racing for it commit against the same snapshot and Delta lets exactly one win: the other's
overwrite conflicts ("a concurrent transaction deleted data this operation read"), and it reads
again and waits. Delta commits are atomic put-if-absent writes of the next log entry: a rename on a
local folder, a conditional put (``If-None-Match``) on S3, which delta-rs 1.x uses without any
DynamoDB lock table. So the lease works wherever the lake does, with nothing else to run.

A held lease is renewed every ``ttl / 3`` seconds by a background thread. It is free once released,
once it expired (its holder died or stalled for longer than the TTL), and at once when its holder is
a process on this machine that no longer runs: the next run after a SIGKILLed pipeline does not
wait out the TTL. A holder whose lease was taken over meanwhile (it stalled beyond the TTL) learns
it when renewing and stops at the next stage boundary (:meth:`LakeLock.check`).
"""

from __future__ import annotations

import os
import random
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta

import polars as pl
import psutil
from deltalake import CommitProperties, DeltaTable, write_deltalake
from deltalake.exceptions import CommitFailedError, DeltaError, TableNotFoundError

from lakehouse.catalog import LAKE_LOCK
from lakehouse.errors import StorageError
from lakehouse.settings import LOCK_TTL_SECONDS, LOCK_WAIT_SECONDS, get_settings
from lakehouse.storage import Lake, conform, one_line

LOCK_NAME = "pipeline"
# Commits lost to another process before the lease's state is settled (taken or not).
_RACE_ATTEMPTS = 20
# Leases are rewritten often: the log of this one-row table need not be kept long.
_TABLE_CONFIGURATION = {
    "delta.logRetentionDuration": "interval 2 days",
    "delta.deletedFileRetentionDuration": "interval 1 days",
}


@dataclass(frozen=True)
class Lease:
    """Who holds (or last held) the lake's lock."""

    holder: str
    purpose: str
    host: str
    pid: int
    process_started: float
    acquired_at: datetime
    expires_at: datetime
    released_at: datetime | None = None

    def is_free(self, now: datetime) -> bool:
        """Released, expired, or held by a process of this machine that has ended."""
        if self.released_at is not None or self.expires_at <= now:
            return True
        return not _runs_here(self)

    def describe(self) -> str:
        """One line: what holds it, where, since when."""
        return (
            f"{self.purpose} (pid {self.pid} on {self.host}, since "
            f"{self.acquired_at:%Y-%m-%d %H:%M:%S} UTC, lease until {self.expires_at:%H:%M:%S})"
        )


def _process_started(pid: int) -> float | None:
    try:
        return float(psutil.Process(pid).create_time())
    except psutil.Error:
        return None


def _runs_here(lease: Lease) -> bool:
    """Whether the lease's holder may still run: always for another machine's process (only its
    lease's expiry tells); on this machine, whether that pid runs and is the same process (pids
    are reused)."""
    if lease.host != socket.gethostname():
        return True
    started = _process_started(lease.pid)
    return started is not None and abs(started - lease.process_started) < 1.0


class LakeLock:
    """The lake's lease, for one holder (this process, one acquisition).

    Args:
        lake: the lake.
        purpose: what the holder does (shown to those who wait, e.g. ``pipeline``).
        ttl_seconds: how long the lease lasts unless renewed.
        poll_seconds: how often a waiting process looks again.
    """

    def __init__(
        self,
        lake: Lake,
        *,
        purpose: str,
        ttl_seconds: float = LOCK_TTL_SECONDS,
        poll_seconds: float = 1.0,
    ) -> None:
        if ttl_seconds <= 0:
            raise ValueError("ttl_seconds must be positive")
        self.lake = lake
        self.purpose = purpose
        self.ttl = timedelta(seconds=ttl_seconds)
        self.poll_seconds = poll_seconds
        self.holder = uuid.uuid4().hex
        self.lost: str | None = None  # set when a renewal finds the lease taken over
        self._acquired_at: datetime | None = None
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None

    # ------------------------------------------------------------------ state

    def _uri(self) -> str:
        return self.lake.table_uri(LAKE_LOCK)

    def current(self) -> tuple[DeltaTable | None, Lease | None]:
        """The lock table's snapshot and its lease (None, None before the first lease)."""
        try:
            table = DeltaTable(self._uri(), storage_options=self.lake.storage_options or None)
        except TableNotFoundError:
            return None, None
        rows = pl.from_arrow(table.to_pyarrow_table())
        assert isinstance(rows, pl.DataFrame)
        rows = rows.filter(pl.col("name") == LOCK_NAME)
        if not rows.height:
            return table, None
        row = rows.row(0, named=True)
        return table, Lease(
            holder=row["holder"],
            purpose=row["purpose"],
            host=row["host"],
            pid=int(row["pid"]),
            process_started=float(row["process_started"]),
            acquired_at=row["acquired_at"],
            expires_at=row["expires_at"],
            released_at=row["released_at"],
        )

    def _lease(self, now: datetime, *, released: bool = False) -> Lease:
        pid = os.getpid()
        return Lease(
            holder=self.holder,
            purpose=self.purpose,
            host=socket.gethostname(),
            pid=pid,
            process_started=_process_started(pid) or 0.0,
            acquired_at=self._acquired_at or now,
            expires_at=now if released else now + self.ttl,
            released_at=now if released else None,
        )

    def _write(self, base: DeltaTable, lease: Lease) -> None:
        """Commit ``lease`` as the only row, replacing every row of the snapshot ``base``: the
        commit fails if another one came after that snapshot (even an empty one: the replace of
        "every row" also conflicts with rows added meanwhile)."""
        row = conform(LAKE_LOCK, pl.DataFrame([{"name": LOCK_NAME, **asdict(lease)}]))
        who = {"purpose": lease.purpose, "holder": lease.holder}
        commit = CommitProperties(custom_metadata=who)
        write_deltalake(base, row, mode="overwrite", predicate="true", commit_properties=commit)

    def _create(self) -> None:
        """Create the lock table without a lease. Two processes creating it at once are
        harmless: the second commit adds no row, or fails."""
        try:
            write_deltalake(
                self._uri(),
                LAKE_LOCK.schema.empty_table(),
                mode="error",
                storage_options=self.lake.storage_options or None,
                configuration=_TABLE_CONFIGURATION,
            )
        except (DeltaError, OSError, ValueError):  # CommitFailedError too
            if self.current()[0] is None:
                raise

    # ------------------------------------------------------------------ taking and giving back

    def try_acquire(self) -> Lease | None:
        """Take the lease if it is free. Returns None when taken, else the holder's lease."""
        try:
            for _ in range(_RACE_ATTEMPTS):
                base, lease = self.current()
                if base is None:
                    self._create()
                    continue
                now = datetime.now(UTC)
                if lease is not None and not lease.is_free(now):
                    return lease
                self._acquired_at = now
                try:
                    self._write(base, self._lease(now))
                    return None
                except CommitFailedError:
                    # another process committed after our snapshot: look again
                    time.sleep(random.uniform(0.0, 0.05))
        except (DeltaError, OSError, ValueError) as err:
            raise StorageError(f"lake lock: {one_line(err)}") from err
        raise StorageError(f"lake lock: still contended after {_RACE_ATTEMPTS} attempts")

    def acquire(
        self, *, wait_seconds: float, on_wait: Callable[[Lease], None] | None = None
    ) -> None:
        """Take the lease, waiting up to ``wait_seconds`` while another process holds it, and
        start renewing it.

        Raises:
            StorageError: still held by another process after ``wait_seconds`` (one line saying
                by what), or the lock table could not be read or written.
        """
        deadline = time.monotonic() + wait_seconds
        told = False
        while True:
            holder = self.try_acquire()
            if holder is None:
                break
            if time.monotonic() >= deadline:
                raise StorageError(
                    f"the lake {self.lake.uri} is locked by {holder.describe()}; waited "
                    f"{wait_seconds:g} s (MOBILITY_LOCK_WAIT)"
                )
            if on_wait is not None and not told:
                on_wait(holder)
                told = True
            time.sleep(self.poll_seconds * (0.5 + random.random()))
        self._stop.clear()
        self._renewer = threading.Thread(target=self._renew_until_stopped, daemon=True)
        self._renewer.start()

    def renew(self) -> bool:
        """Extend the lease by the TTL; False (and :attr:`lost` set) when another process holds
        it now."""
        for _ in range(5):
            base, lease = self.current()
            if (
                base is None
                or lease is None
                or lease.holder != self.holder
                or lease.released_at is not None
            ):
                self.lost = "taken over by " + (lease.describe() if lease else "nobody")
                return False
            try:
                self._write(base, self._lease(datetime.now(UTC)))
                return True
            except CommitFailedError:
                continue  # e.g. `lake optimize` rewrote the table: read again
        return True  # still ours, renewal kept conflicting: the next tick tries again

    def _renew_until_stopped(self) -> None:
        interval = self.ttl.total_seconds() / 3
        while not self._stop.wait(interval):
            try:
                if not self.renew():
                    return
            except Exception:  # a failed renewal (storage stalled) is retried on the next tick
                continue

    def release(self) -> None:
        """Stop renewing and give the lease back (if it is still ours)."""
        self._stop.set()
        if self._renewer is not None:
            self._renewer.join()
            self._renewer = None
        for _ in range(5):
            try:
                base, lease = self.current()
                if base is None or lease is None or lease.holder != self.holder:
                    return
                self._write(base, self._lease(datetime.now(UTC), released=True))
                return
            except CommitFailedError:
                continue
            except (DeltaError, OSError):
                return  # storage unreachable: the lease expires by itself within its TTL

    def check(self) -> None:
        """Raise when the lease was lost (taken over after it expired): stop before the next
        stage rather than run it beside another process."""
        if self.lost is not None:
            raise StorageError(f"lost the lake lock ({self.lost}); stopped before the next stage")


# The lock this process holds per lake: the pipeline takes it once, its stages re-enter it.
_held: dict[str, LakeLock] = {}


@contextmanager
def hold(
    lake: Lake,
    *,
    purpose: str,
    wait_seconds: float = LOCK_WAIT_SECONDS,
    ttl_seconds: float = LOCK_TTL_SECONDS,
    on_wait: Callable[[Lease], None] | None = None,
) -> Iterator[LakeLock]:
    """Hold the lake's lock for the block (re-entrant within this process).

    Args:
        lake: the lake.
        purpose: what the holder does, shown to those who wait.
        wait_seconds: how long to wait for another holder to finish.
        ttl_seconds: the lease's time to live (renewed every third of it).
        on_wait: called once with the holder's lease when this process has to wait.

    Raises:
        StorageError: the lock stayed taken for ``wait_seconds``, or was lost.
    """
    held = _held.get(lake.uri)
    if held is not None:
        held.check()
        yield held
        return
    lock = LakeLock(lake, purpose=purpose, ttl_seconds=ttl_seconds)
    lock.acquire(wait_seconds=wait_seconds, on_wait=on_wait)
    _held[lake.uri] = lock
    try:
        yield lock
    finally:
        del _held[lake.uri]
        lock.release()


@contextmanager
def lease(
    lake: Lake, *, purpose: str, on_wait: Callable[[Lease], None] | None = None
) -> Iterator[LakeLock]:
    """Hold the lake's lease for the block: re-entered if this process holds it already, else
    taken, waiting up to ``MOBILITY_LOCK_WAIT`` seconds for another holder.

    Args:
        lake: the lake.
        purpose: what the holder does, shown to those who wait (``pipeline``, ``simulate
            advance``).
        on_wait: called once with the other holder's lease when this process has to wait.

    Raises:
        StorageError: still held by another process after the wait, or lost meanwhile.
    """
    settings = get_settings()
    with hold(
        lake,
        purpose=purpose,
        wait_seconds=settings.lock_wait_seconds,
        ttl_seconds=settings.lock_ttl_seconds,
        on_wait=on_wait,
    ) as lock:
        yield lock
