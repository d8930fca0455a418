"""Fixtures shared by every test package."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from lakehouse import Lake, get_settings
from tests.pseudonyms import TEST_PSEUDONYM_KEY

# The key the tests' trainings sign model artifacts with (lakehouse/artifacts.py).
TEST_ARTIFACT_KEY = "tests-artifact-key-not-a-secret-0123456789"


@pytest.fixture(scope="session", autouse=True)
def pseudonym_key() -> Iterator[None]:
    """The whole session (every test, module fixture and command it starts) runs with the tests'
    pseudonym and artifact keys and without demo mode; a test may change them with
    ``monkeypatch``."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MOBILITY_PSEUDONYM_KEY", TEST_PSEUDONYM_KEY)
        patch.setenv("MOBILITY_ARTIFACT_KEY", TEST_ARTIFACT_KEY)
        patch.delenv("MOBILITY_DEMO", raising=False)
        get_settings.cache_clear()
        yield
    get_settings.cache_clear()


@pytest.fixture(autouse=True)
def fresh_settings() -> Iterator[None]:
    """Settings read anew for each test: one that changed the environment leaves none behind."""
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


@pytest.fixture
def lake(tmp_path: Path) -> Lake:
    """An empty lake in a fresh temporary folder."""
    return Lake(str(tmp_path / "lake"))


# --- object storage: moto's S3 server on loopback (tests/lakehouse/test_s3.py) -------------------


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_for_http(url: str, process: subprocess.Popen[Any], what: str) -> None:
    """Wait until ``url`` answers (``process`` serves it); raise if it never does."""
    deadline = time.monotonic() + 30
    while True:
        try:
            urllib.request.urlopen(url, timeout=1).close()
            return
        except urllib.error.HTTPError:
            return  # it answered
        except OSError:
            if time.monotonic() > deadline or process.poll() is not None:
                raise RuntimeError(f"{what} did not start") from None
            time.sleep(0.1)


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """moto's S3 server on loopback, one for the session. A separate process: an in-process
    server thread would wait for the GIL while delta-rs blocks on its requests."""
    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        wait_for_http(endpoint, server, "moto server")
        yield endpoint
    finally:
        server.terminate()
        server.wait(timeout=10)


def s3_environment(endpoint: str, lake_uri: str) -> dict[str, str]:
    """The environment of a lake on S3 at ``endpoint``: credentials and endpoint only there."""
    return {
        "AWS_ACCESS_KEY_ID": "test-key",
        "AWS_SECRET_ACCESS_KEY": "test-secret",
        "AWS_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ALLOW_HTTP": "true",
        "LAKE_URI": lake_uri,
    }


def create_bucket(endpoint: str, bucket: str) -> None:
    """Create ``bucket`` on the S3 server at ``endpoint``."""
    import boto3

    client = boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="test-key",
        aws_secret_access_key="test-secret",
    )
    client.create_bucket(Bucket=bucket)


@pytest.fixture
def s3_lake(s3_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Lake]:
    """An empty lake ``s3://clinic-lake-<random>/prod`` on the session's S3 server, with the
    environment (credentials, endpoint, ``LAKE_URI``) set for this test."""
    bucket = f"clinic-lake-{uuid.uuid4().hex[:12]}"
    for name, value in s3_environment(s3_endpoint, f"s3://{bucket}/prod").items():
        monkeypatch.setenv(name, value)
    create_bucket(s3_endpoint, bucket)
    get_settings.cache_clear()
    settings = get_settings()
    yield Lake(settings.lake_uri, storage_options=settings.storage_options())
    get_settings.cache_clear()
