"""Worker processes simulating batches of patients while ``mobility generate`` writes.

Each worker is a fresh interpreter (``python -m jobs.simulation_workers DIR``) that reads
requests (patient ranges) from its standard input and answers each with a pickle on its standard
output. The batch's sample columns do not go through the pipe (a few hundred MB/s here, slower
than the simulation): the worker builds each column in a file of its own in DIR, in memory
(``/dev/shm``) where there is one, and the parent maps those files and uses the arrays where
they lie (pickle protocol 5 out-of-band buffers), so no sample is copied on the way. The files
of a batch (a slot) are used again for a later batch once the parent has let go of every array
in them (closing its mapping succeeds): memory touched for the first time costs more than
filling it.

Not :mod:`multiprocessing`: its 'spawn' and 'forkserver' children import the parent's
``__main__`` script again, whatever that is (a Streamlit page, a test runner), and 'fork' would
copy this process's delta-rs and Polars thread pools in an unknown state.

Batches come back in request order. A worker is sent its next request only when the parent has
taken its previous batch, so a worker holds at most three slots however many patients there are.
"""

from __future__ import annotations

import ctypes
import mmap
import os
import pickle
import shutil
import subprocess
import sys
import tempfile
import traceback
from collections.abc import Iterator, Sequence
from datetime import date
from pathlib import Path
from typing import IO, Any, NamedTuple

import numpy as np
from numpy.typing import NDArray

from jobs.sources import source_label
from synthetic.population import Allocator, SimulatedBatch, simulate_batch


class BatchRequest(NamedTuple):
    """Patients ``first`` to ``last`` (inclusive) of a population."""

    seed: int
    first: int
    last: int
    years: float
    end_date: date


class _Reply(NamedTuple):
    data: bytes  # the pickled batch
    slot: int
    columns: list[tuple[str, int]]  # file and size of each out-of-band buffer, in order


def simulate(request: BatchRequest, allocate: Allocator | None = None) -> SimulatedBatch:
    """Simulate one batch (in whichever process), with source names as stored in bronze."""
    return simulate_batch(
        request.seed,
        request.first,
        request.last,
        years=request.years,
        end_date=request.end_date,
        label=source_label,
        allocate=allocate,
    )


def simulated_batches(requests: Sequence[BatchRequest], workers: int) -> Iterator[SimulatedBatch]:
    """The batches of ``requests`` in order, simulated by ``workers`` processes.

    Raises:
        RuntimeError: a worker failed (its traceback is in the message) or exited.
    """
    exchange = Path(tempfile.mkdtemp(prefix="mobility-generate-", dir=_exchange_parent()))
    processes: list[subprocess.Popen[bytes]] = []
    # Per worker, the mappings of the slots whose batches the parent has received.
    taken: list[dict[int, list[mmap.mmap]]] = []
    try:
        for number in range(min(workers, len(requests))):
            processes.append(_start(exchange, number))
            taken.append({})
        # Round robin, two requests queued per worker, so that it goes on with its next batch
        # while the parent takes the previous one.
        for number, request in enumerate(requests[: 2 * len(processes)]):
            _send(processes[number % len(processes)], request, [])
        for number in range(len(requests)):
            worker = number % len(processes)
            slot, mappings, batch = _receive(processes[worker])
            following = number + 2 * len(processes)
            if following < len(requests):
                _send(processes[worker], requests[following], _released(taken[worker]))
            taken[worker][slot] = mappings
            yield batch
            del batch
    finally:
        _stop(processes)
        for slots in taken:
            _released(slots)
        shutil.rmtree(exchange, ignore_errors=True)


def _released(slots: dict[int, list[mmap.mmap]]) -> list[int]:
    """The slots (taken out of ``slots``) whose arrays are no longer used: closing a mapping
    fails while any array still lies in it."""
    released = []
    for slot, mappings in list(slots.items()):
        try:
            for mapping in mappings:
                mapping.close()
        except BufferError:
            continue
        released.append(slot)
        del slots[slot]
    return released


def _exchange_parent() -> str | None:
    """``/dev/shm`` when it exists with room for a few batches, else the temporary directory."""
    shm = Path("/dev/shm")
    try:
        if shm.is_dir() and shutil.disk_usage(shm).free > 2 << 30:
            return str(shm)
    except OSError:
        pass
    return None


def _start(exchange: Path, number: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "jobs.simulation_workers", str(exchange), f"worker{number}"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )


def _send(process: subprocess.Popen[bytes], request: BatchRequest, released: list[int]) -> None:
    stdin = process.stdin
    assert stdin is not None
    pickle.dump((request, released), stdin, protocol=pickle.HIGHEST_PROTOCOL)
    stdin.flush()


def _receive(process: subprocess.Popen[bytes]) -> tuple[int, list[mmap.mmap], SimulatedBatch]:
    stdout = process.stdout
    assert stdout is not None
    try:
        reply = pickle.load(stdout)
    except (EOFError, pickle.UnpicklingError) as err:
        code = process.wait()
        raise RuntimeError(f"a simulation worker exited (code {code})") from err
    if isinstance(reply, str):
        raise RuntimeError(f"a simulation worker failed:\n{reply}")
    assert isinstance(reply, _Reply)
    mappings = []
    for path, _ in reply.columns:
        with Path(path).open("rb") as file:
            mappings.append(mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ))
    buffers = [
        memoryview(mapping)[:size]
        for mapping, (_, size) in zip(mappings, reply.columns, strict=True)
    ]
    batch = pickle.loads(reply.data, buffers=buffers)
    del buffers
    assert isinstance(batch, SimulatedBatch)
    return reply.slot, mappings, batch


def _mapped_file(path: str, nbytes: int) -> tuple[mmap.mmap, NDArray[np.uint8]]:
    """A new file, mapped, with room for ``nbytes`` and a quarter more (the next batches are
    a little larger or smaller)."""
    with open(path, "w+b") as file:
        file.truncate(nbytes + nbytes // 4)
        mapping = mmap.mmap(file.fileno(), 0)
    return mapping, np.frombuffer(mapping, dtype=np.uint8)


class _Slot:
    """Files of the exchange directory, mapped, that hold one batch's sample columns."""

    def __init__(self, prefix: Path) -> None:
        self._prefix = prefix
        self._files: list[tuple[mmap.mmap, NDArray[np.uint8]]] = []
        self._used = 0
        self._columns: dict[int, tuple[str, int]] = {}  # address -> file, size of each column
        self.sent: list[tuple[str, int]] = []  # the columns pickled out of band, in order

    def reset(self) -> None:
        """Start a new batch (the previous one's arrays must be gone)."""
        self._used = 0
        self._columns.clear()
        self.sent = []

    def __call__(self, size: int, dtype: np.dtype[Any]) -> NDArray[Any]:
        """The allocator of :func:`synthetic.population.simulate_batch`."""
        if size == 0:
            return np.empty(0, dtype=dtype)
        nbytes = size * dtype.itemsize
        number = self._used
        self._used += 1
        path = f"{self._prefix}-{number}.bin"
        if number == len(self._files):
            self._files.append(_mapped_file(path, nbytes))
        elif self._files[number][1].size < nbytes:
            stale = self._files[number][0]
            self._files[number] = _mapped_file(path, nbytes)
            stale.close()
        column = self._files[number][1][:nbytes].view(dtype)
        self._columns[column.ctypes.data] = (path, nbytes)
        return column

    def out_of_band(self, buffer: pickle.PickleBuffer) -> bool:
        """Pickle ``buffer_callback``: a whole column goes out of band (False: its file is
        named in the reply), anything else in band (True)."""
        with buffer.raw() as raw:
            address = np.frombuffer(raw, dtype=np.uint8).ctypes.data if raw.nbytes else 0
            path, size = self._columns.get(address, ("", -1))
            if size != raw.nbytes:
                return True
        self.sent.append((path, size))
        return False


def _stop(processes: list[subprocess.Popen[bytes]]) -> None:
    for process in processes:
        if process.stdin is not None:
            process.stdin.close()
    for process in processes:
        # A worker of a failed run may be busy with a batch nobody will read: end it.
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if process.stdout is not None:
            process.stdout.close()


def _keep_freed_memory() -> None:
    """Let glibc keep freed memory for reuse instead of returning it to the system at once.

    The simulation allocates and frees arrays of a few hundred kB many times per patient; with
    the default thresholds each is a fresh mapping whose pages fault in again, which nearly
    doubles the simulation time. Memory still stays flat: freed blocks are reused.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc: nothing to tune
        return
    m_trim_threshold, m_top_pad, m_mmap_threshold = -1, -2, -3
    libc.mallopt(m_mmap_threshold, 32 << 20)
    libc.mallopt(m_trim_threshold, 512 << 20)
    libc.mallopt(m_top_pad, 64 << 20)


def serve(requests: IO[bytes], replies: IO[bytes], slots_prefix: Path) -> None:
    """The worker's loop: per request, the batch (its sample columns in the files of a slot) or
    the traceback of its failure."""
    slots: list[_Slot] = []
    free: list[int] = []
    while True:
        try:
            request, released = pickle.load(requests)
        except EOFError:
            return
        free += released
        try:
            if not free:
                free.append(len(slots))
                slots.append(_Slot(Path(f"{slots_prefix}-slot{len(slots)}")))
            number = free.pop()
            slot = slots[number]
            slot.reset()
            batch = simulate(request, allocate=slot)
            data = pickle.dumps(batch, protocol=5, buffer_callback=slot.out_of_band)
            del batch
            reply: object = _Reply(data, number, slot.sent)
        except Exception:
            reply = traceback.format_exc()
        pickle.dump(reply, replies, protocol=pickle.HIGHEST_PROTOCOL)
        replies.flush()
        del reply


def _main() -> None:
    _keep_freed_memory()
    # Replies get the pipe; anything else writing to standard output goes to standard error.
    replies = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    serve(sys.stdin.buffer, replies, Path(sys.argv[1]) / sys.argv[2])


if __name__ == "__main__":
    # Run from the module imported under its own name, so that replies pickle as its classes.
    from jobs.simulation_workers import _main as main

    main()
