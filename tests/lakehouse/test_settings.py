"""Settings come from the environment only, with the documented defaults."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from lakehouse import InputError, get_settings
from lakehouse.settings import apply_file_mode

_OUR_VARIABLES = ("LAKE_URI", "MOBILITY_ENGINE", "SPARK_MASTER", "MOBILITY_AGGREGATE_BATCH")


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in _OUR_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def test_defaults() -> None:
    settings = get_settings()
    assert settings.lake_uri == "./lake"
    assert settings.engine == "local"


def test_lake_uri_and_engine_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LAKE_URI", "s3://clinic-bucket/mobility")
    monkeypatch.setenv("MOBILITY_ENGINE", "spark")
    monkeypatch.setenv("MOBILITY_AGGREGATE_BATCH", "5000")
    settings = get_settings()
    assert settings.lake_uri == "s3://clinic-bucket/mobility"
    assert settings.engine == "spark"
    assert settings.aggregate_batch_samples == 5000


def test_settings_are_read_once_until_cache_cleared(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LAKE_URI", "/data/first")
    assert get_settings().lake_uri == "/data/first"
    monkeypatch.setenv("LAKE_URI", "/data/second")
    assert get_settings().lake_uri == "/data/first"
    get_settings.cache_clear()
    assert get_settings().lake_uri == "/data/second"


def test_unusable_engine_is_a_one_line_input_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MOBILITY_ENGINE", "hadoop")
    with pytest.raises(InputError, match="MOBILITY_ENGINE") as info:
        get_settings()
    assert "\n" not in str(info.value)


def test_storage_options_take_object_store_variables_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "example-secret")
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9000")
    monkeypatch.setenv("AWS_SESSION_TOKEN", "")  # empty: not passed on
    monkeypatch.setenv("LAKE_URI", "s3://clinic-bucket/mobility")
    monkeypatch.setenv("DATABASE_PASSWORD", "not-for-delta")
    monkeypatch.setenv("MY_AWS_THING", "not-a-prefix-match")
    options = get_settings().storage_options()
    assert options["AWS_ACCESS_KEY_ID"] == "AKIDEXAMPLE"
    assert options["AWS_SECRET_ACCESS_KEY"] == "example-secret"
    assert options["AWS_ENDPOINT_URL"] == "http://127.0.0.1:9000"
    assert "AWS_SESSION_TOKEN" not in options
    assert all(key.startswith(("AWS_", "AZURE_", "GOOGLE_")) for key in options)
    for name in ("LAKE_URI", "DATABASE_PASSWORD", "MY_AWS_THING", "PATH", "HOME"):
        assert name not in options


@pytest.mark.parametrize(("value", "umask"), [(None, 0o077), ("private", 0o077), ("group", 0o027)])
def test_the_file_mode_sets_the_process_umask(
    monkeypatch: pytest.MonkeyPatch, value: str | None, umask: int
) -> None:
    if value is None:
        monkeypatch.delenv("MOBILITY_FILE_MODE", raising=False)
    else:
        monkeypatch.setenv("MOBILITY_FILE_MODE", value)
    before = os.umask(0o022)
    try:
        assert apply_file_mode(get_settings()) == 0o022
        assert os.umask(0o022) == umask
    finally:
        os.umask(before)


def test_an_unknown_file_mode_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MOBILITY_FILE_MODE", "world")
    with pytest.raises(InputError, match="MOBILITY_FILE_MODE"):
        get_settings()
