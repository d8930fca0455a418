"""Worker processes simulating batches of patients while ``mobility generate`` writes.

Each worker is a fresh interpreter (``python -m jobs.simulation_workers DIR``) that reads
requests (patient ranges) from its standard input and answers each with a pickle on its standard
output. The batch's sample columns do not go through the pipe (a few hundred MB/s here, slower
than the simulation): the worker builds each column in a file of its own in DIR, in memory
(``/dev/shm``) where there is one, and the parent maps those files and uses the arrays where
they lie (pickle protocol 5 out-of-band buffers), so no sample is copied on the way.

Not :mod:`multiprocessing`: its 'spawn' and 'forkserver' children import the parent's
``__main__`` script again, whatever that is (a Streamlit page, a test runner), and 'fork' would
copy this process's delta-rs and Polars thread pools in an unknown state.

Batches come back in request order. A worker is sent its next request only when the parent has
taken its previous batch, so at most two unread batches per worker exist however many patients
there are.
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
    try:
        processes += [_start(exchange) for _ in range(min(workers, len(requests)))]
        # Round robin, two requests queued per worker, so that it goes on with its next batch
        # while the parent takes the previous one.
        for number, request in enumerate(requests[: 2 * len(processes)]):
            _send(processes[number % len(processes)], request)
        for number in range(len(requests)):
            process = processes[number % len(processes)]
            batch = _receive(process)
            following = number + 2 * len(processes)
            if following < len(requests):
                _send(process, requests[following])
            yield batch
            del batch
    finally:
        _stop(processes)
        shutil.rmtree(exchange, ignore_errors=True)


def _exchange_parent() -> str | None:
    """``/dev/shm`` when it exists with room for a few batches, else the temporary directory."""
    shm = Path("/dev/shm")
    try:
        if shm.is_dir() and shutil.disk_usage(shm).free > 2 << 30:
            return str(shm)
    except OSError:
        pass
    return None


def _start(exchange: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "jobs.simulation_workers", str(exchange)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )


def _send(process: subprocess.Popen[bytes], request: BatchRequest) -> None:
    stdin = process.stdin
    assert stdin is not None
    pickle.dump(request, stdin, protocol=pickle.HIGHEST_PROTOCOL)
    stdin.flush()


def _receive(process: subprocess.Popen[bytes]) -> SimulatedBatch:
    stdout = process.stdout
    assert stdout is not None
    try:
        reply = pickle.load(stdout)
    except (EOFError, pickle.UnpicklingError) as err:
        code = process.wait()
        raise RuntimeError(f"a simulation worker exited (code {code})") from err
    if isinstance(reply, str):
        raise RuntimeError(f"a simulation worker failed:\n{reply}")
    data, paths = reply
    batch = pickle.loads(data, buffers=[_mapped(Path(path)) for path in paths])
    assert isinstance(batch, SimulatedBatch)
    return batch


def _mapped(path: Path) -> memoryview:
    """The content of ``path``, mapped (the file is deleted: the mapping keeps the memory)."""
    try:
        with path.open("rb") as file:
            return memoryview(mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ))
    finally:
        path.unlink(missing_ok=True)


class _SharedColumns:
    """Allocates a worker's sample columns each in a file of the exchange directory, mapped."""

    def __init__(self, exchange: Path, name: str) -> None:
        self._exchange = exchange
        self._name = name
        self._columns: dict[int, tuple[str, int]] = {}  # address -> file, size of each column
        self.sent: list[str] = []  # files of the columns pickled out of band, in order

    def __call__(self, size: int, dtype: np.dtype[Any]) -> NDArray[Any]:
        if size == 0:
            return np.empty(0, dtype=dtype)
        path = self._exchange / f"{self._name}-{len(self._columns)}.bin"
        with path.open("w+b") as file:
            file.truncate(size * dtype.itemsize)
            mapped = mmap.mmap(file.fileno(), 0)
        column = np.frombuffer(mapped, dtype=dtype)
        self._columns[column.ctypes.data] = (str(path), column.nbytes)
        return column

    def out_of_band(self, buffer: pickle.PickleBuffer) -> bool:
        """Pickle ``buffer_callback``: a whole column goes out of band (False: its file is
        named in the reply), anything else in band (True)."""
        with buffer.raw() as raw:
            address = np.frombuffer(raw, dtype=np.uint8).ctypes.data if raw.nbytes else 0
            path, size = self._columns.get(address, ("", -1))
            if size != raw.nbytes:
                return True
        self.sent.append(path)
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


def serve(requests: IO[bytes], replies: IO[bytes], exchange: Path) -> None:
    """The worker's loop: per request, the batch (its sample columns in files in ``exchange``)
    or the traceback of its failure."""
    while True:
        try:
            request = pickle.load(requests)
        except EOFError:
            return
        try:
            columns = _SharedColumns(exchange, f"batch-{request.first}")
            batch = simulate(request, allocate=columns)
            data = pickle.dumps(batch, protocol=5, buffer_callback=columns.out_of_band)
            reply: object = (data, columns.sent)
            del batch, columns
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
    serve(sys.stdin.buffer, replies, Path(sys.argv[1]))


if __name__ == "__main__":
    _main()
