"""Model artifacts that cannot be forged: signed by training, checked before anything loads them.

A fitted EBM is stored as a pickle (interpret has no supported loader from a format that cannot
run code: its JSON import is private and marked untested), and unpickling runs whatever the bytes
say. So each artifact carries an HMAC-SHA256 under the key ``MOBILITY_ARTIFACT_KEY``, over its
identity (the model's name, the registry version and its path in the lake) and its bytes, and
:meth:`ArtifactSigner.read` hands out the bytes only when that HMAC matches (compared with
:func:`hmac.compare_digest`). Whoever can write files into the lake but does not hold the key
cannot make an artifact this pipeline loads, nor pass one version's artifact off as another's.

A stored artifact is ``MAGIC``, the HMAC in hex and a newline, then the pickle. The HMAC sits in
the file: without the key nobody can compute a valid one, so it needs no safer place.

The key is never stored in the lake. Demo mode (``MOBILITY_DEMO=1``, local lakes only) without a
key uses a random one kept 0600 in the user's configuration folder
(:meth:`Settings.demo_artifact_key_path`), created on first use: not the published pseudonym
demo key, because a forged artifact runs code on the machine whether the data is synthetic or not.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import hmac
import json
import os
import secrets
import stat
from pathlib import Path

from lakehouse.errors import InputError, StorageError
from lakehouse.settings import Settings
from lakehouse.storage import ARTIFACTS_FOLDER, Lake

MAGIC = b"MOBILITY-SIGNED-ARTIFACT 1\n"
MIN_KEY_LENGTH = 32
# Separates these MACs from every other use of a key (a key reused elsewhere signs nothing here).
_DOMAIN = b"mobility model artifact 1\n"
_MAC_HEX = 64
# A demo key file is one line of about 44 characters: read no more than this of it.
_KEY_FILE_MAX_BYTES = 4096
KEY_HELP = (
    'set it to a long random secret, e.g. python -c "import secrets; '
    "print(secrets.token_urlsafe(32))\", kept with the lake's other credentials, outside the lake"
)
RETRAIN = "run mobility train --force to write artifacts signed under the current key"


def artifact_name(model: str, version: int) -> str:
    """The file name of ``model``'s artifact of registry ``version``."""
    return f"{model}-v{version}.pkl"


class ArtifactSigner:
    """Signs model artifacts and checks them under one key.

    Args:
        key: the secret key (at least :data:`MIN_KEY_LENGTH` characters).
        demo: the key is demo mode's own random key.
    """

    def __init__(self, key: str, *, demo: bool = False) -> None:
        if len(key) < MIN_KEY_LENGTH:
            raise InputError(
                f"MOBILITY_ARTIFACT_KEY is too short ({len(key)} characters, at least "
                f"{MIN_KEY_LENGTH}): {KEY_HELP}"
            )
        self._key = key.encode()
        self.demo = demo

    def _mac(self, *, path: str, model: str, version: int, payload: bytes) -> bytes:
        identity = json.dumps({"model": model, "path": path, "version": version}, sort_keys=True)
        message = _DOMAIN + identity.encode() + b"\n" + payload
        return hmac.new(self._key, message, hashlib.sha256).hexdigest().encode()

    def write(self, lake: Lake, *, model: str, version: int, payload: bytes) -> str:
        """Store ``payload`` as ``model``'s signed artifact of ``version``; returns its URI."""
        name = artifact_name(model, version)
        path = lake.artifact_path(f"{ARTIFACTS_FOLDER}/{name}")
        mac = self._mac(path=path, model=model, version=version, payload=payload)
        return lake.write_artifact(name, MAGIC + mac + b"\n" + payload)

    def read(self, lake: Lake, uri: str, *, model: str, version: int) -> bytes:
        """The payload of ``model``'s artifact of ``version`` at ``uri`` (a registry row's
        ``artifact_uri``), once its signature is checked; nothing of it is interpreted before.

        Raises:
            StorageError: ``uri`` is not ``model``'s artifact of ``version`` in this lake's
                artifacts folder, the file has no signature, or its signature does not match
                (one line each, naming the artifact and the reason).
        """
        expected = f"{ARTIFACTS_FOLDER}/{artifact_name(model, version)}"
        try:
            path = lake.artifact_path(uri)
        except StorageError as err:
            moved = uri.endswith("/" + expected)
            hint = f" (a lake copied or moved from there: {RETRAIN})" if moved else ""
            raise StorageError(f"{model!r} version {version}: {err}{hint}") from err
        named = f"{lake.uri}/{path}"
        if path != expected:
            raise StorageError(
                f"refused model artifact {named}: the registry names it for {model!r} version "
                f"{version}, whose artifact is {expected}"
            )
        stored = lake.read_artifact(path)
        header = len(MAGIC) + _MAC_HEX + 1
        if not stored.startswith(MAGIC) or stored[header - 1 : header] != b"\n":
            raise StorageError(
                f"refused model artifact {named}: it has no signature, so it was not written "
                f"by this pipeline's training (an artifact from before artifacts were signed: "
                f"{RETRAIN})"
            )
        mac, payload = stored[len(MAGIC) : header - 1], stored[header:]
        if not hmac.compare_digest(
            mac, self._mac(path=path, model=model, version=version, payload=payload)
        ):
            raise StorageError(
                f"refused model artifact {named}: signature does not match: the artifact was "
                f"not written by this pipeline's training (or under another "
                f"MOBILITY_ARTIFACT_KEY: {RETRAIN})"
            )
        return payload


def signer_from_settings(settings: Settings, *, lake_uri: str | None = None) -> ArtifactSigner:
    """The artifact signer of this process: the key from ``MOBILITY_ARTIFACT_KEY``; in demo mode
    on a local lake without one, demo mode's random key (created on first use).

    Raises:
        InputError: no key (and not the local demo), a key too short, demo mode against object
            storage, or a demo key file that is not this user's alone (one line each).
    """
    uri = lake_uri or settings.lake_uri
    if settings.artifact_key is not None and settings.artifact_key.get_secret_value():
        return ArtifactSigner(settings.artifact_key.get_secret_value())
    if settings.demo:
        lake = Lake(uri)
        if not lake.is_local:
            raise InputError(
                f"demo mode (MOBILITY_DEMO) is for the local synthetic demo only, not for {uri}: "
                "set MOBILITY_ARTIFACT_KEY"
            )
        return ArtifactSigner(_demo_key(Path(settings.demo_artifact_key_path()), lake), demo=True)
    raise InputError(f"MOBILITY_ARTIFACT_KEY is not set: {KEY_HELP}")


def _demo_key(path: Path, lake: Lake) -> str:
    """Demo mode's key from ``path``, created there (0600, random) when missing.

    Whoever may write in the key's folder could swap the key file between a check and the read,
    so the folder must be this user's own, not a link, with no write bit for group or others,
    and it is held open while the key is read or made: the key file is opened relative to it,
    never through a link (``O_NOFOLLOW``), and the open file itself (``fstat``) must be a
    regular file of this user that nobody else may read or write.
    """
    root = Path(lake.uri.removeprefix("file://")).resolve()
    where = path.expanduser().absolute()
    if where.resolve().is_relative_to(root):
        raise InputError(
            f"the demo artifact key file {where} is inside the lake: whoever can write the lake "
            "could replace it (set MOBILITY_DEMO_ARTIFACT_KEY_FILE to a path outside it)"
        )
    try:
        folder = _open_key_folder(where.parent)
        try:
            return _read_key(folder, where)
        finally:
            os.close(folder)
    except OSError as err:
        raise InputError(
            f"cannot keep the demo artifact key in {where}: {err.strerror or err}"
        ) from err


def _open_key_folder(folder: Path) -> int:
    """A descriptor of ``folder`` (made 0700 when missing), once it is checked: a folder, no
    link, this user's, no write bit for group or others."""
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    found = os.lstat(folder)
    if stat.S_ISLNK(found.st_mode):
        raise InputError(
            f"the folder of the demo artifact key file, {folder}: a symbolic link, not a folder "
            "(set MOBILITY_DEMO_ARTIFACT_KEY_FILE to a path in a folder of your own)"
        )
    descriptor = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    opened = os.fstat(descriptor)
    if (
        (opened.st_dev, opened.st_ino) != (found.st_dev, found.st_ino)
        or opened.st_uid != os.getuid()
        or opened.st_mode & 0o022
    ):
        os.close(descriptor)
        raise InputError(
            f"the folder of the demo artifact key file, {folder}, must be a folder of this user, "
            f"and nobody else may write in it (chmod 700 {folder}, or set "
            "MOBILITY_DEMO_ARTIFACT_KEY_FILE to a path in a folder of your own)"
        )
    return descriptor


def _read_key(folder: int, where: Path) -> str:
    """The key in ``where.name`` of the checked ``folder`` (a descriptor), made when missing."""
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    refused = InputError(
        f"the demo artifact key file {where} must be a plain file of this user that "
        "nobody else may read or write (chmod 600)"
    )
    try:
        descriptor = os.open(where.name, flags, dir_fd=folder)
    except FileNotFoundError:
        _make_key(folder, where.name)
        descriptor = os.open(where.name, flags, dir_fd=folder)
    except OSError as err:
        if err.errno == errno.ELOOP:  # a link
            raise refused from err
        raise
    with os.fdopen(descriptor, "rb") as stream:
        opened = os.fstat(stream.fileno())
        if (
            not stat.S_ISREG(opened.st_mode)
            or opened.st_uid != os.getuid()
            or opened.st_mode & 0o077
        ):
            raise refused
        text = stream.read(_KEY_FILE_MAX_BYTES)
    try:
        return text.decode().strip()
    except UnicodeDecodeError as err:
        raise InputError(f"the demo artifact key file {where} is not text") from err


def _make_key(folder: int, name: str) -> None:
    """A new random key as ``name`` in ``folder`` (a descriptor), whole or not at all: written
    0600 under another name, then linked into place; another process making it meanwhile wins."""
    partial = f".{name}.{secrets.token_hex(8)}"
    created = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    descriptor = os.open(partial, created, 0o600, dir_fd=folder)
    try:
        with os.fdopen(descriptor, "w") as stream:
            stream.write(secrets.token_urlsafe(32) + "\n")
        with contextlib.suppress(FileExistsError):
            os.link(partial, name, src_dir_fd=folder, dst_dir_fd=folder)
    finally:
        os.unlink(partial, dir_fd=folder)
