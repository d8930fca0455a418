"""The lake's lease (lakehouse/lock.py): one holder at a time, taken over once expired or once
its holder on this machine is gone, re-entrant within a process."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from datetime import UTC, datetime

import pytest

from lakehouse import Lake, StorageError
from lakehouse.lock import LakeLock, hold


def test_a_held_lease_keeps_others_out_until_released(lake: Lake) -> None:
    first = LakeLock(lake, purpose="pipeline")
    second = LakeLock(lake, purpose="aggregate")
    first.acquire(wait_seconds=0)
    try:
        holder = second.try_acquire()
        assert holder is not None
        assert holder.holder == first.holder and holder.purpose == "pipeline"
        with pytest.raises(StorageError, match=r"locked by pipeline \(pid \d+ on .*waited 0\.2 s"):
            second.acquire(wait_seconds=0.2)
    finally:
        first.release()
    assert second.try_acquire() is None
    _, lease = second.current()
    assert lease is not None and lease.holder == second.holder


def race_for_lease(lake: Lake, racers: int) -> list[LakeLock]:
    """``racers`` processes' locks trying to take the lease at the same moment; the winners."""
    locks = [LakeLock(lake, purpose=f"racer {i}") for i in range(racers)]
    start = threading.Barrier(racers)
    won: list[LakeLock] = []

    def race(lock: LakeLock) -> None:
        start.wait()
        if lock.try_acquire() is None:
            won.append(lock)

    threads = [threading.Thread(target=race, args=(lock,)) for lock in locks]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return won


def test_racing_acquirers_get_one_winner_per_round(lake: Lake) -> None:
    # the first round also races to create the lock table
    for _ in range(3):
        won = race_for_lease(lake, 4)
        assert len(won) == 1
        _, lease = won[0].current()
        assert lease is not None and lease.holder == won[0].holder
        won[0].release()


def test_an_expired_lease_is_taken_over_and_its_holder_learns_it(lake: Lake) -> None:
    stalled = LakeLock(lake, purpose="pipeline", ttl_seconds=0.5)
    assert stalled.try_acquire() is None  # taken without the renewing thread: as if it stalled
    other = LakeLock(lake, purpose="pipeline", poll_seconds=0.05)
    other.acquire(wait_seconds=10)
    try:
        assert stalled.renew() is False
        with pytest.raises(StorageError, match="lost the lake lock"):
            stalled.check()
    finally:
        other.release()


def test_a_renewed_lease_outlives_its_ttl(lake: Lake) -> None:
    lock = LakeLock(lake, purpose="pipeline", ttl_seconds=0.6)
    lock.acquire(wait_seconds=0)
    try:
        time.sleep(1.5)
        _, lease = lock.current()
        assert lease is not None and not lease.is_free(datetime.now(UTC))
        assert LakeLock(lake, purpose="other").try_acquire() is not None
    finally:
        lock.release()
    _, lease = lock.current()
    assert lease is not None and lease.released_at is not None


def test_the_lease_of_a_killed_process_here_is_free_at_once(lake: Lake) -> None:
    script = (
        "import sys, time\n"
        "from lakehouse import Lake\n"
        "from lakehouse.lock import LakeLock\n"
        "lock = LakeLock(Lake(sys.argv[1]), purpose='pipeline', ttl_seconds=3600)\n"
        "lock.acquire(wait_seconds=0)\n"
        "print('held', flush=True)\n"
        "time.sleep(3600)\n"
    )
    child = subprocess.Popen(
        [sys.executable, "-c", script, lake.uri], stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "held"
        holder = LakeLock(lake, purpose="next").try_acquire()
        assert holder is not None and holder.pid == child.pid
    finally:
        child.kill()
        child.wait()
        if child.stdout is not None:
            child.stdout.close()
    # SIGKILLed with an hour of lease left: free all the same
    assert LakeLock(lake, purpose="next").try_acquire() is None


def test_hold_is_reentrant_and_releases_at_the_outer_end(lake: Lake) -> None:
    with hold(lake, purpose="pipeline", wait_seconds=0) as outer:
        with hold(lake, purpose="aggregate", wait_seconds=0) as inner:
            assert inner is outer
        assert LakeLock(lake, purpose="other").try_acquire() is not None
    assert LakeLock(lake, purpose="other").try_acquire() is None
