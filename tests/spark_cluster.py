"""A Spark standalone cluster on loopback for tests and benchmarks: a master and workers started
from pyspark's own launcher (``spark-class org.apache.spark.deploy.master.Master`` /
``...worker.Worker``), each worker in its own process group and working directory, sharing
nothing with the driver but what their environment gives them (an object store's endpoint and
credentials)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

STARTUP_SECONDS = 90


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def spark_home() -> Path:
    import pyspark

    return Path(pyspark.__file__).parent


@dataclass
class Worker:
    """One worker's process (its own process group: killing it kills its executors too)."""

    process: subprocess.Popen[bytes]
    folder: Path
    log: Path

    def kill(self) -> None:
        """SIGKILL the worker and everything it started (its executor and Python workers)."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=30)


@dataclass
class Cluster:
    master_url: str
    master_ui: str
    master: subprocess.Popen[bytes]
    folder: Path
    cores: int
    memory: str
    worker_env: dict[str, str]
    workers: list[Worker] = field(default_factory=list)

    def alive_workers(self) -> int:
        """Workers the master counts as ALIVE (its JSON status page)."""
        import json

        with urllib.request.urlopen(f"{self.master_ui}/json/", timeout=5) as page:
            status = json.load(page)
        return sum(1 for w in status.get("workers", []) if w.get("state") == "ALIVE")

    def add_worker(self) -> Worker:
        """Start one more worker (its own folder and process group) and wait until the master
        counts it."""
        expected = self.alive_workers() + 1
        folder = self.folder / f"worker-{len(self.workers)}"
        process, log = _launch(
            [
                "org.apache.spark.deploy.worker.Worker",
                self.master_url,
                "--host",
                "127.0.0.1",
                "--cores",
                str(self.cores),
                "--memory",
                self.memory,
                "--work-dir",
                str(folder / "work"),
                "--webui-port",
                str(free_port()),
            ],
            folder,
            _base_environment(self.worker_env),
            "worker",
        )
        worker = Worker(process, folder, log)
        self.workers.append(worker)
        _wait(lambda: self.alive_workers() >= expected, process, log, "a Spark worker")
        return worker


def _launch(
    args: list[str], folder: Path, env: Mapping[str, str], name: str
) -> tuple[subprocess.Popen[bytes], Path]:
    folder.mkdir(parents=True, exist_ok=True)
    log = folder / f"{name}.log"
    with log.open("wb") as output:  # the child keeps its own descriptor
        process = subprocess.Popen(
            [str(spark_home() / "bin" / "spark-class"), *args],
            cwd=folder,
            env=dict(env),
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # a process group of its own
        )
    return process, log


def _base_environment(extra: Mapping[str, str]) -> dict[str, str]:
    keep = ("PATH", "HOME", "JAVA_HOME", "LANG", "TMPDIR")
    env = {k: v for k, v in os.environ.items() if k in keep}
    env.update(
        SPARK_HOME=str(spark_home()),
        SPARK_LOCAL_IP="127.0.0.1",
        SPARK_LOCAL_HOSTNAME="localhost",
        PYSPARK_PYTHON=sys.executable,
        SPARK_NO_DAEMONIZE="1",
    )
    env.update(extra)
    return env


@contextmanager
def standalone_cluster(
    folder: Path,
    *,
    workers: int = 2,
    cores: int = 1,
    memory: str = "1g",
    worker_env: Mapping[str, str] | None = None,
) -> Iterator[Cluster]:
    """A master and ``workers`` workers on loopback, stopped (and their folders left for
    inspection) when the block ends.

    Args:
        folder: each process gets a folder of its own below this one.
        workers: how many workers.
        cores: task slots of each worker.
        memory: memory each worker offers its executors.
        worker_env: the workers' environment besides Spark's own (e.g. the object store's
            endpoint and credentials): they get nothing else of this process's environment.
    """
    port, ui = free_port(), free_port()
    env = _base_environment({})
    master, master_log = _launch(
        [
            "org.apache.spark.deploy.master.Master",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--webui-port",
            str(ui),
        ],
        folder / "master",
        env,
        "master",
    )
    cluster = Cluster(
        f"spark://127.0.0.1:{port}",
        f"http://127.0.0.1:{ui}",
        master,
        folder,
        cores,
        memory,
        dict(worker_env or {}),
    )
    try:
        _wait(lambda: _answers(cluster.master_ui), master, master_log, "the Spark master")
        for _ in range(workers):
            cluster.add_worker()
        yield cluster
    finally:
        for worker in cluster.workers:
            worker.kill()
        if master.poll() is None:
            os.killpg(master.pid, signal.SIGKILL)
            master.wait(timeout=30)


def _answers(url: str) -> bool:
    try:
        urllib.request.urlopen(url, timeout=1).close()
        return True
    except OSError:
        return False


def _wait(ready: object, process: subprocess.Popen[bytes], log: Path, what: str) -> None:
    deadline = time.monotonic() + STARTUP_SECONDS
    while True:
        try:
            if ready():  # type: ignore[operator]
                return
        except OSError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            raise RuntimeError(f"{what} did not start:\n{tail}")
        time.sleep(0.3)


def wait_until(ready: object, what: str, seconds: float = STARTUP_SECONDS) -> None:
    """Wait until ``ready()`` is true; raise when it never is."""
    deadline = time.monotonic() + seconds
    while not ready():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not start")
        time.sleep(0.2)
