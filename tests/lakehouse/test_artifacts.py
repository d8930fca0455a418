"""Signed model artifacts (lakehouse/artifacts.py) and object paths confined to the lake
(lakehouse/storage.py): what the forecast's refusals in tests/jobs/test_forged_artifacts.py rest
on."""

from __future__ import annotations

import os
import socket
import stat
import threading
import time
from pathlib import Path

import pytest
from pydantic import SecretStr

from lakehouse.artifacts import MAGIC, ArtifactSigner, signer_from_settings
from lakehouse.errors import InputError, StorageError
from lakehouse.settings import Settings
from lakehouse.storage import Lake

KEY = "a-key-for-these-tests-only-0123456789"
PAYLOAD = b"the pickle of a fitted model"


def _escapes(lake: Lake) -> list[str]:
    """Paths that leave the lake, the first reaching /etc/passwd from the lake's own folder."""
    depth = len(Path(lake.uri).parts) - 1
    return [
        "../" * depth + "etc/passwd",
        "../../etc/passwd",
        "/etc/passwd",
        "s3://other/x",
        "file:///etc/passwd",
        "models/artifacts/../../../x",
        "models//artifacts/x",
        "models/artifacts/.hidden",
        "",
    ]


def test_stored_objects_are_read_and_written_inside_the_lake_only(
    lake: Lake, tmp_path: Path
) -> None:
    lake.write_object("synthetic/state.json", b"{}")
    assert lake.read_object("synthetic/state.json") == b"{}"
    for path in _escapes(lake):
        with pytest.raises(StorageError, match="not a plain path inside the lake") as refused:
            lake.read_object(path)
        assert "\n" not in str(refused.value)
    # writes aimed next to the lake (never at a system file, should the refusal ever break)
    outside = tmp_path / "outside"
    for path in ("../outside", str(outside), f"file://{outside}", "models/../../outside"):
        with pytest.raises(StorageError, match="not a plain path inside the lake"):
            lake.write_object(path, b"x")
    assert not outside.exists()


def test_the_artifact_reader_takes_files_of_the_artifacts_folder_only(
    lake: Lake, tmp_path: Path
) -> None:
    lake.write_artifact("ebm_cluster-v1.pkl", b"bytes")
    assert lake.read_artifact("models/artifacts/ebm_cluster-v1.pkl") == b"bytes"
    assert lake.read_artifact(f"{lake.uri}/models/artifacts/ebm_cluster-v1.pkl") == b"bytes"
    other_lake = str(tmp_path / "other" / "lake")
    refused = [
        *_escapes(lake),
        "models/registry/x.pkl",
        "models/artifacts",
        "models/artifacts/sub/x.pkl",
        f"{other_lake}/models/artifacts/ebm_cluster-v1.pkl",
        f"{lake.uri}/models/artifacts/../../../../etc/passwd",
        f"{lake.uri}x/models/artifacts/ebm_cluster-v1.pkl",
        f"file://{lake.uri}/models/artifacts/ebm_cluster-v1.pkl",
        "models/artifacts/x.pkl\nforged line",
    ]
    for uri in refused:
        with pytest.raises(StorageError, match="not a file of this lake's models/artifacts") as e:
            lake.read_artifact(uri)
        assert "\n" not in str(e.value)
    with pytest.raises(StorageError):
        lake.write_artifact("../x.pkl", b"x")


def test_the_artifact_reader_follows_no_link_out_of_the_artifacts_folder(
    lake: Lake, tmp_path: Path
) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("not for the lake")
    lake.write_artifact("real-v1.pkl", b"x")
    (Path(lake.uri) / "models/artifacts/ebm_cluster-v1.pkl").symlink_to(secret)
    with pytest.raises(StorageError, match="a link out of this lake's models/artifacts"):
        lake.read_artifact("models/artifacts/ebm_cluster-v1.pkl")


def _read_within_a_second(lake: Lake, uri: str, fifo: Path | None = None) -> BaseException:
    """What ``read_artifact(uri)`` raised, which it must do within a second (a FIFO must not
    block it: if it does, the FIFO is opened for writing here, to let the reader go)."""
    raised: list[BaseException] = []

    def read() -> None:
        try:
            lake.read_artifact(uri)
        except BaseException as err:
            raised.append(err)

    reader = threading.Thread(target=read, daemon=True)
    started = time.monotonic()
    reader.start()
    reader.join(timeout=1.0)
    if reader.is_alive() and fifo is not None:
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        reader.join(timeout=5)
    assert time.monotonic() - started < 1.0, f"reading {uri} blocked"
    assert raised, f"{uri} was read"
    return raised[0]


def test_a_fifo_or_a_socket_planted_as_an_artifact_is_refused_at_once(
    lake: Lake, monkeypatch: pytest.MonkeyPatch
) -> None:
    lake.write_artifact("real-v1.pkl", b"x")
    folder = Path(lake.uri) / "models/artifacts"
    fifo = folder / "ebm_cluster-v1.pkl"
    os.mkfifo(fifo)
    monkeypatch.chdir(folder)  # a socket's path is short, so bind it by its relative name
    with socket.socket(socket.AF_UNIX) as server:
        server.bind("ebm_cluster-v2.pkl")
        server.listen()
        for name, kind in (("ebm_cluster-v1.pkl", "a FIFO"), ("ebm_cluster-v2.pkl", "a socket")):
            err = _read_within_a_second(lake, f"models/artifacts/{name}", fifo)
            assert isinstance(err, StorageError), repr(err)
            assert str(err) == (
                f"refused model artifact {lake.uri}/models/artifacts/{name}: {kind}, not a "
                "regular file"
            )


def test_a_link_inside_the_artifacts_folder_is_refused_too(lake: Lake) -> None:
    lake.write_artifact("ebm_cluster-v1.pkl", b"genuine")
    folder = Path(lake.uri) / "models/artifacts"
    (folder / "ebm_cluster-v2.pkl").symlink_to(folder / "ebm_cluster-v1.pkl")
    (folder / "ebm_cluster-v3.pkl").symlink_to("ebm_cluster-v1.pkl")
    (folder / "ebm_cluster-v4.pkl").mkdir()
    for version, kind in ((2, "a symbolic link"), (3, "a symbolic link"), (4, "a folder")):
        with pytest.raises(StorageError) as refused:
            lake.read_artifact(f"models/artifacts/ebm_cluster-v{version}.pkl")
        assert str(refused.value) == (
            f"refused model artifact {lake.uri}/models/artifacts/ebm_cluster-v{version}.pkl: "
            f"{kind}, not a regular file"
        )
    with pytest.raises(StorageError, match=r"^could not read .*ebm_cluster-v5.pkl: "):
        lake.read_artifact("models/artifacts/ebm_cluster-v5.pkl")
    assert lake.read_artifact("models/artifacts/ebm_cluster-v1.pkl") == b"genuine"


@pytest.mark.parametrize(
    ("swap", "reason"),
    [
        ("file", "not the file that was checked (it was replaced while it was opened)"),
        ("link", "a symbolic link, not a regular file"),
    ],
)
def test_an_artifact_swapped_after_its_check_is_not_read(
    lake: Lake, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, swap: str, reason: str
) -> None:
    lake.write_artifact("ebm_cluster-v1.pkl", b"genuine")
    target = Path(lake.uri) / "models/artifacts/ebm_cluster-v1.pkl"
    planted = tmp_path / "planted"
    planted.write_bytes(b"planted")
    real_open = os.open

    def open_after_a_swap(path: object, flags: int, *args: object, **kwargs: object) -> int:
        if Path(str(path)) == target:  # between the lstat and the open
            target.unlink()
            if swap == "file":
                os.replace(planted, target)
            else:
                target.symlink_to(planted)
        return real_open(path, flags, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "open", open_after_a_swap)
    with pytest.raises(StorageError) as refused:
        lake.read_artifact("models/artifacts/ebm_cluster-v1.pkl")
    assert str(refused.value) == f"refused model artifact {target}: {reason}"


def test_a_planted_artifact_too_large_is_refused_unread(
    lake: Lake, monkeypatch: pytest.MonkeyPatch
) -> None:
    from lakehouse import storage

    monkeypatch.setattr(storage, "ARTIFACT_MAX_BYTES", 1000)
    lake.write_artifact("ebm_cluster-v1.pkl", b"x" * 1000)
    assert len(lake.read_artifact("models/artifacts/ebm_cluster-v1.pkl")) == 1000
    lake.write_artifact("ebm_cluster-v2.pkl", b"x" * 1001)
    with pytest.raises(StorageError, match=r"ebm_cluster-v2.pkl: larger than 0 MB"):
        lake.read_artifact("models/artifacts/ebm_cluster-v2.pkl")


def test_a_signed_artifact_reads_back_under_its_own_identity_only(lake: Lake) -> None:
    signer = ArtifactSigner(KEY)
    uri = signer.write(lake, model="ebm_cluster", version=3, payload=PAYLOAD)
    assert uri == f"{lake.uri}/models/artifacts/ebm_cluster-v3.pkl"
    assert signer.read(lake, uri, model="ebm_cluster", version=3) == PAYLOAD
    folder = Path(lake.uri) / "models/artifacts"
    stored = (folder / "ebm_cluster-v3.pkl").read_bytes()
    # the same bytes under another version's or model's name: refused
    for model, version in (("ebm_cluster", 4), ("ebm_global", 3)):
        (folder / f"{model}-v{version}.pkl").write_bytes(stored)
        with pytest.raises(StorageError, match="signature does not match"):
            signer.read(
                lake,
                f"models/artifacts/{model}-v{version}.pkl",
                model=model,
                version=version,
            )
    # the registry naming another version's file for this one: refused before reading
    with pytest.raises(StorageError, match="whose artifact is models/artifacts/ebm_cluster-v4"):
        signer.read(lake, uri, model="ebm_cluster", version=4)


def test_a_changed_unsigned_or_foreign_artifact_is_refused(lake: Lake) -> None:
    signer = ArtifactSigner(KEY)
    uri = signer.write(lake, model="ebm_global", version=1, payload=PAYLOAD)
    path = Path(lake.uri) / "models/artifacts/ebm_global-v1.pkl"
    stored = path.read_bytes()
    path.write_bytes(stored[:-1] + b"!")
    with pytest.raises(StorageError, match="signature does not match: the artifact was not wr"):
        signer.read(lake, uri, model="ebm_global", version=1)
    path.write_bytes(PAYLOAD)
    with pytest.raises(StorageError, match=r"no signature.*run mobility train --force"):
        signer.read(lake, uri, model="ebm_global", version=1)
    path.write_bytes(MAGIC + b"0" * 64 + PAYLOAD)  # no newline after the signature
    with pytest.raises(StorageError, match="no signature"):
        signer.read(lake, uri, model="ebm_global", version=1)
    path.write_bytes(stored)
    with pytest.raises(StorageError, match="signature does not match"):
        ArtifactSigner(KEY + "-other").read(lake, uri, model="ebm_global", version=1)
    assert signer.read(lake, uri, model="ebm_global", version=1) == PAYLOAD


def test_the_key_is_required_outside_demo_mode(lake: Lake) -> None:
    with pytest.raises(InputError, match=r"^MOBILITY_ARTIFACT_KEY is not set: set it to"):
        signer_from_settings(Settings(MOBILITY_ARTIFACT_KEY=None), lake_uri=lake.uri)
    with pytest.raises(InputError, match="MOBILITY_ARTIFACT_KEY is too short"):
        signer_from_settings(Settings(MOBILITY_ARTIFACT_KEY=SecretStr("short")), lake_uri=lake.uri)
    signer = signer_from_settings(Settings(MOBILITY_ARTIFACT_KEY=SecretStr(KEY)), lake_uri=lake.uri)
    assert not signer.demo


def test_demo_mode_keeps_a_random_key_of_its_own_outside_the_lake(
    lake: Lake, tmp_path: Path
) -> None:
    key_file = tmp_path / "config" / "mobility" / "demo-artifact-key"
    settings = Settings(
        MOBILITY_ARTIFACT_KEY=None,
        MOBILITY_DEMO=True,
        MOBILITY_DEMO_ARTIFACT_KEY_FILE=str(key_file),
    )
    first = signer_from_settings(settings, lake_uri=lake.uri)
    assert first.demo
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(key_file.parent.stat().st_mode) == 0o700
    assert len(key_file.read_text().strip()) >= 32
    uri = first.write(lake, model="ebm_cluster", version=1, payload=PAYLOAD)
    # the next process finds the same key; the published demo key of the pseudonyms signs nothing
    again = signer_from_settings(settings, lake_uri=lake.uri)
    assert again.read(lake, uri, model="ebm_cluster", version=1) == PAYLOAD
    from lakehouse.pseudonyms import DEMO_KEY

    with pytest.raises(StorageError, match="signature does not match"):
        ArtifactSigner(DEMO_KEY).read(lake, uri, model="ebm_cluster", version=1)
    assert [p.name for p in key_file.parent.iterdir()] == ["demo-artifact-key"]


def test_demo_mode_refuses_a_key_file_others_may_read_or_one_inside_the_lake(
    lake: Lake, tmp_path: Path
) -> None:
    shared = tmp_path / "shared-key"
    shared.write_text("x" * 40)
    os.chmod(shared, 0o644)
    settings = Settings(
        MOBILITY_ARTIFACT_KEY=None, MOBILITY_DEMO=True, MOBILITY_DEMO_ARTIFACT_KEY_FILE=str(shared)
    )
    with pytest.raises(InputError, match="nobody else may read or write"):
        signer_from_settings(settings, lake_uri=lake.uri)
    inside = Settings(
        MOBILITY_ARTIFACT_KEY=None,
        MOBILITY_DEMO=True,
        MOBILITY_DEMO_ARTIFACT_KEY_FILE=f"{lake.uri}/models/key",
    )
    with pytest.raises(InputError, match="is inside the lake"):
        signer_from_settings(inside, lake_uri=lake.uri)
    with pytest.raises(InputError, match="not for s3://bucket/lake: set MOBILITY_ARTIFACT_KEY"):
        signer_from_settings(
            Settings(MOBILITY_ARTIFACT_KEY=None, MOBILITY_DEMO=True), lake_uri="s3://bucket/lake"
        )


def _demo(key_file: Path) -> Settings:
    return Settings(
        MOBILITY_ARTIFACT_KEY=None,
        MOBILITY_DEMO=True,
        MOBILITY_DEMO_ARTIFACT_KEY_FILE=str(key_file),
    )


@pytest.mark.parametrize("mode", [0o777, 0o1777, 0o770, 0o702], ids=oct)
def test_demo_mode_refuses_a_key_folder_others_may_write_in(
    lake: Lake, tmp_path: Path, mode: int
) -> None:
    """Whoever may write in the key's folder could swap the key file for one of theirs between
    a check and the read (MOBILITY_DEMO_ARTIFACT_KEY_FILE=/tmp/x/shared/key in a 0777 folder)."""
    shared = tmp_path / "x" / "shared"
    shared.mkdir(parents=True)
    os.chmod(shared, mode)
    with pytest.raises(InputError, match="nobody else may write in it") as refused:
        signer_from_settings(_demo(shared / "key"), lake_uri=lake.uri)
    assert "\n" not in str(refused.value) and str(shared) in str(refused.value)
    assert list(shared.iterdir()) == []  # no key was made there either
    (shared / "key").write_text("k" * 40)
    os.chmod(shared / "key", 0o600)
    with pytest.raises(InputError, match="nobody else may write in it"):
        signer_from_settings(_demo(shared / "key"), lake_uri=lake.uri)


def test_demo_mode_refuses_a_linked_key_folder_or_key_file(lake: Lake, tmp_path: Path) -> None:
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    genuine = private / "demo-artifact-key"
    signer_from_settings(_demo(genuine), lake_uri=lake.uri)
    assert stat.S_IMODE(genuine.stat().st_mode) == 0o600
    linked_folder = tmp_path / "linked"
    linked_folder.symlink_to(private)
    with pytest.raises(InputError, match=r"linked: a symbolic link, not a folder") as refused:
        signer_from_settings(_demo(linked_folder / "demo-artifact-key"), lake_uri=lake.uri)
    assert "\n" not in str(refused.value)
    (private / "key-link").symlink_to(genuine)
    os.mkfifo(private / "fifo")
    for name in ("key-link", "fifo"):
        with pytest.raises(InputError, match="must be a plain file of this user") as refused:
            signer_from_settings(_demo(private / name), lake_uri=lake.uri)
        assert "\n" not in str(refused.value)


@pytest.mark.skipif(os.geteuid() != 0, reason="making files of another user needs root")
def test_demo_mode_refuses_a_key_folder_or_key_file_of_another_user(
    lake: Lake, tmp_path: Path
) -> None:
    nobody = 65534
    theirs = tmp_path / "theirs"
    theirs.mkdir(mode=0o700)
    os.chown(theirs, nobody, nobody)
    with pytest.raises(InputError, match="must be a folder of this user"):
        signer_from_settings(_demo(theirs / "key"), lake_uri=lake.uri)
    assert list(theirs.iterdir()) == []
    mine = tmp_path / "mine"
    mine.mkdir(mode=0o700)
    (mine / "key").write_text("k" * 40)
    os.chmod(mine / "key", 0o600)
    os.chown(mine / "key", nobody, nobody)
    with pytest.raises(InputError, match="must be a plain file of this user"):
        signer_from_settings(_demo(mine / "key"), lake_uri=lake.uri)


def test_the_demo_key_lives_in_the_users_configuration_folder(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    monkeypatch.delenv("MOBILITY_DEMO_ARTIFACT_KEY_FILE", raising=False)
    assert Settings().demo_artifact_key_path() == str(tmp_path / "mobility" / "demo-artifact-key")
