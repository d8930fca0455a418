"""Landing folders (issue 18, finding 6): symbolic links, hard links and special files are
refused with a one-line reason and never opened; ingest never reads outside the folder it was
given, also when a folder on a file's path is swapped for a link between the walk and the read.

The reproductions: ``apple-health/mallory/export.xml -> alice's export`` put alice's samples on
mallory's pseudonym; ``generic/steps.csv -> .streamlit/secrets.toml`` stored ``[auth]`` in an error
row; a link to /etc/passwd stored ``root:x:0:0``.
"""

from __future__ import annotations

import os
import shutil
import socket
import stat
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import polars as pl
import pytest

from jobs import schedule
from jobs.ingest import common
from jobs.ingest import run as ingest
from lakehouse.catalog import ALL_TABLES, JOB_RUNS, STEP_SAMPLES
from lakehouse.errors import InputError
from lakehouse.storage import Lake
from tests.pseudonyms import pseudonym
from tests.test_cli import assert_one_line_error, mobility

# a made-up secrets file the landing links point at (not a credential)
SECRET = '[auth]\nclient_secret = "landing-link-secret-0000"\n'  # secrets-scan: allow
SECRET_MARK = "landing-link-secret-0000"  # secrets-scan: allow
RECORD = (
    '<Record type="HKQuantityTypeIdentifierStepCount" sourceName="Watch" unit="count" '
    'startDate="2024-01-01 {h:02d}:00:00 +0100" endDate="2024-01-01 {h:02d}:30:00 +0100" '
    'value="{steps}"/>'
)


def _export(steps: int, records: int = 12) -> str:
    body = "".join(RECORD.format(h=h, steps=steps) for h in range(records))
    return f'<?xml version="1.0" encoding="UTF-8"?>\n<HealthData>{body}</HealthData>\n'


def _put(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def _stored_texts(lake: Lake) -> str:
    """Every string value of every table of the lake, as one text."""
    texts: list[str] = []
    for table in ALL_TABLES:
        if not lake.exists(table):
            continue
        frame = lake.read(table)
        for name, dtype in frame.schema.items():
            if dtype == pl.String:
                texts.extend(v for v in frame[name].to_list() if v)
    return "\n".join(texts)


@pytest.fixture
def opened(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """The real paths of every file this process opens with ``os.open`` (as every ingest reader
    does through jobs.ingest.common.open_input) or ``open``."""
    seen: list[str] = []
    real_os_open, real_open = os.open, open

    def os_open(path: object, *args: object, **kwargs: object) -> int:
        if isinstance(path, str | Path) and kwargs.get("dir_fd") is None:
            seen.append(os.path.realpath(path))
        return real_os_open(path, *args, **kwargs)  # type: ignore[arg-type]

    def builtin_open(file: object, *args: object, **kwargs: object) -> object:
        if isinstance(file, str | Path):
            seen.append(os.path.realpath(file))
        return real_open(file, *args, **kwargs)  # type: ignore[call-overload]

    monkeypatch.setattr(os, "open", os_open)
    monkeypatch.setattr("builtins.open", builtin_open)
    yield seen


def _failed_runs(lake: Lake) -> list[str]:
    runs = lake.read(JOB_RUNS).filter(pl.col("status") == "failed")
    return [str(e) for e in runs["error"].to_list()]


def test_a_linked_export_in_a_patient_folder_is_refused_and_not_read(
    lake: Lake, tmp_path: Path, opened: list[str]
) -> None:
    landing = tmp_path / "landing"
    alice = _put(landing / "apple-health" / "alice" / "export.xml", _export(75))
    mallory = landing / "apple-health" / "mallory" / "export.xml"
    mallory.parent.mkdir(parents=True)
    mallory.symlink_to(alice)

    results = {r.path: r for r in ingest.run_folder(lake, landing)}

    samples = lake.read(STEP_SAMPLES)
    assert set(samples["patient_id"]) == {pseudonym("alice")}  # nothing on mallory's pseudonym
    assert results[alice].summary is not None and results[alice].summary.accepted == 12
    refused = results[mallory]
    assert refused.summary is None and not refused.left
    assert refused.error == f"{mallory}: {common.LINK_REFUSED}"
    # alice's export was read once, through its own path only
    assert str(mallory) not in opened and os.path.realpath(alice) in opened
    # recorded as a failed ingest, naming mallory by pseudonym as every recorded path does
    (error,) = _failed_runs(lake)
    assert pseudonym("mallory") in error and "mallory" not in error
    assert "symbolic link" in error


def test_a_linked_patient_folder_is_refused(lake: Lake, tmp_path: Path) -> None:
    landing = tmp_path / "landing"
    _put(landing / "apple-health" / "alice" / "export.xml", _export(75))
    linked = landing / "apple-health" / "mallory"
    linked.symlink_to(landing / "apple-health" / "alice", target_is_directory=True)

    results = {r.path: r for r in ingest.run_folder(lake, landing)}

    assert set(lake.read(STEP_SAMPLES)["patient_id"]) == {pseudonym("alice")}
    assert results[linked].error == f"{linked}: {common.LINK_REFUSED}"
    assert len(results) == 2  # the folder is not entered: its export is not listed twice
    (error,) = _failed_runs(lake)
    assert "mallory" not in error and pseudonym("mallory") in error


def test_links_to_secrets_and_system_files_are_never_opened(
    lake: Lake, tmp_path: Path, opened: list[str]
) -> None:
    secrets = _put(tmp_path / "app" / ".streamlit" / "secrets.toml", SECRET)
    landing = tmp_path / "landing"
    (landing / "generic").mkdir(parents=True)
    (landing / "generic" / "steps.csv").symlink_to(secrets)
    (landing / "generic" / "passwd.csv").symlink_to("/etc/passwd")
    (landing / "patients.csv").symlink_to("../app/.streamlit/secrets.toml")  # relative
    outside = _put(tmp_path / "elsewhere" / "feed" / "steps.csv", "patient_id,start,steps\n")
    (landing / "feed").symlink_to(outside.parent, target_is_directory=True)  # a linked subfolder

    results = list(ingest.run_folder(lake, landing))

    stored = _stored_texts(lake)
    assert SECRET_MARK not in stored and "[auth]" not in stored and "root:x:0:0" not in stored
    for target in (secrets, Path("/etc/passwd"), outside):
        assert os.path.realpath(target) not in opened
    assert len(results) == 4
    assert all(r.summary is None and r.error and "symbolic link" in r.error for r in results)
    assert len(_failed_runs(lake)) == 4


def test_fifos_sockets_and_devices_are_refused_without_being_opened(
    lake: Lake, tmp_path: Path, opened: list[str]
) -> None:
    landing = tmp_path / "landing"
    landing.mkdir()
    fifo = landing / "steps.csv"
    os.mkfifo(fifo)  # opening it to read would block until a writer came
    sock = landing / "export.xml"
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(sock))
    special = [fifo, sock]
    device = landing / "device.csv"
    try:
        os.mknod(device, stat.S_IFCHR | 0o600, os.makedev(1, 3))  # /dev/null's numbers
        special.append(device)
    except PermissionError:
        pass  # no CAP_MKNOD here: FIFO and socket only
    results: list[ingest.FolderResult] = []
    walker = threading.Thread(target=lambda: results.extend(ingest.run_folder(lake, landing)))
    walker.start()
    walker.join(timeout=30)
    server.close()
    assert not walker.is_alive(), "the walk blocked: it opened the FIFO"

    reasons = {r.path: r.error for r in results}
    assert reasons[fifo] == f"{fifo}: a FIFO: refused (ingest reads regular files only)"
    assert reasons[sock] == f"{sock}: a socket: refused (ingest reads regular files only)"
    if device in special:
        assert reasons[device] == f"{device}: a device: refused (ingest reads regular files only)"
    assert not {str(p) for p in special} & set(opened)


def test_a_hard_link_in_a_landing_folder_is_refused(lake: Lake, tmp_path: Path) -> None:
    landing = tmp_path / "landing"
    alice = _put(landing / "apple-health" / "alice" / "export.xml", _export(75))
    mallory = landing / "apple-health" / "mallory" / "export.xml"
    mallory.parent.mkdir(parents=True)
    os.link(alice, mallory)

    results = {r.path: r.error for r in ingest.run_folder(lake, landing)}

    assert results[mallory] == f"{mallory}: a file with other hard links: refused " + (
        "(landing files must be copied in)"
    )
    assert results[alice] is not None  # the same file under two names: neither is trusted
    assert not lake.exists(STEP_SAMPLES) or lake.read(STEP_SAMPLES).is_empty()


def test_the_landing_folder_itself_may_be_a_link(lake: Lake, tmp_path: Path) -> None:
    real = tmp_path / "volume" / "landing"
    _put(real / "apple-health" / "alice" / "export.xml", _export(75))
    given = tmp_path / "landing"
    given.symlink_to(real, target_is_directory=True)

    (result,) = ingest.run_folder(lake, given)

    assert result.path == given / "apple-health" / "alice" / "export.xml"
    assert result.summary is not None and result.summary.accepted == 12


def test_a_folder_swapped_for_a_link_after_the_walk_is_not_read(lake: Lake, tmp_path: Path) -> None:
    """Between the walk and the read, mallory's folder becomes a link to alice's: the path now
    reaches another file than the walk found, and the read is refused (the walk's identity is
    pinned, and every open checks the opened file against it)."""
    landing = tmp_path / "landing"
    alice = _put(landing / "apple-health" / "alice" / "export.xml", _export(75))
    mallory = _put(landing / "apple-health" / "mallory" / "export.xml", _export(1))
    found = dict(ingest.landing_files(landing))
    file_id = found[mallory]
    assert isinstance(file_id, common.FileId)
    shutil.rmtree(mallory.parent)
    mallory.parent.symlink_to(alice.parent, target_is_directory=True)

    with common.pinned(mallory, file_id), pytest.raises(InputError) as refused:
        ingest.run(lake, mallory)

    assert str(refused.value) == f"{mallory}: not the file that was checked (it was replaced " + (
        "meanwhile): refused"
    )
    assert not lake.exists(STEP_SAMPLES)


def test_a_file_swapped_for_a_link_after_its_check_is_not_opened(tmp_path: Path) -> None:
    path = _put(tmp_path / "steps.csv", "patient_id,start,steps\n")
    file_id = common.checked_input(path)
    path.unlink()
    path.symlink_to(_put(tmp_path / "secret.txt", SECRET))
    with common.pinned(path, file_id), pytest.raises(InputError, match="symbolic link"):
        common.open_input(path)
    replaced = _put(tmp_path / "other.csv", "x\n")
    path.unlink()
    replaced.rename(path)  # another regular file under the same name
    with common.pinned(path, file_id), pytest.raises(InputError, match="not the file"):
        common.open_input(path)


def test_a_link_given_directly_is_refused_with_one_line(tmp_path: Path) -> None:
    real = _put(tmp_path / "data" / "steps.csv", "patient_id,start,steps\nP,2024-01-01,5\n")
    link = tmp_path / "steps.csv"
    link.symlink_to(real)

    done = mobility("--lake", str(tmp_path / "lake"), "ingest", str(link), cwd=tmp_path)

    assert_one_line_error(
        done,
        f"{link}: a symbolic link: refused (ingest reads regular files only, never a link); "
        "give the path of the file itself",
    )
    assert not (tmp_path / "lake" / "bronze").exists()


def test_a_linked_patient_folder_given_directly_is_refused(lake: Lake, tmp_path: Path) -> None:
    alice = _put(tmp_path / "apple-health" / "alice" / "export.xml", _export(75))
    (tmp_path / "apple-health" / "mallory").symlink_to(alice.parent, target_is_directory=True)
    with pytest.raises(InputError, match="its patient folder is a symbolic link"):
        ingest.run(lake, tmp_path / "apple-health" / "mallory" / "export.xml")
    assert not lake.exists(STEP_SAMPLES)


def test_the_scheduler_refuses_links_in_its_landing_folder(tmp_path: Path) -> None:
    lake = Lake(str(tmp_path / "lake"))
    landing = tmp_path / "landing"
    zoe = _put(landing / "apple-health" / "zoe" / "export.xml", _export(75))
    mallory = landing / "apple-health" / "mallory" / "export.xml"  # read before zoe's
    mallory.parent.mkdir(parents=True)
    mallory.symlink_to(zoe)
    secrets = _put(tmp_path / "secrets.toml", SECRET)
    (landing / "steps.csv").symlink_to(secrets)
    day = datetime(2026, 11, 26, tzinfo=UTC)

    assert schedule.ingest_landing(lake, landing, now=day) == (1, 2)

    assert mallory.is_symlink() and (landing / "steps.csv").is_symlink()  # left, not moved
    assert set(lake.read(STEP_SAMPLES)["patient_id"]) == {pseudonym("zoe")}
    assert "[auth]" not in _stored_texts(lake) and SECRET_MARK not in _stored_texts(lake)
    # a processed folder that is a link would move files elsewhere: the run stops
    other = tmp_path / "other"
    other.mkdir()
    (landing / "processed").rename(other / "processed")
    (landing / "processed").symlink_to(other / "processed", target_is_directory=True)
    assert schedule.ingest_landing(lake, landing, now=day) == (0, 1)
