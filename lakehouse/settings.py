"""Configuration at the edge: the one place that reads the process environment.

Everything else receives a :class:`Settings` object (or values taken from it).
"""

from __future__ import annotations

import getpass
import os
from functools import lru_cache
from typing import Literal

from pydantic import Field, SecretStr, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from lakehouse.errors import InputError

# Environment variables delta-rs / object_store understand for S3-compatible storage. Credentials
# are never written in code or config files: they come from here or the AWS default chain.
_STORAGE_ENV_PREFIXES = ("AWS_", "AZURE_", "GOOGLE_")
# The lake's lease (lakehouse/lock.py): how long a holder waits for another, its time to live.
LOCK_WAIT_SECONDS = 4 * 3600.0
LOCK_TTL_SECONDS = 120.0
# Monitoring's data freshness (jobs/monitor/freshness.py): days without any data in the lake,
# counted before yesterday (the last complete day), from which an alert is raised. 2: an alert
# when neither yesterday nor the day before has data.
FRESHNESS_DAYS = 2


class Settings(BaseSettings):
    """Process-wide settings, built from environment variables."""

    model_config = SettingsConfigDict(extra="ignore", populate_by_name=True)

    lake_uri: str = Field(default="./lake", alias="LAKE_URI")
    engine: Literal["local", "spark"] = Field(default="local", alias="MOBILITY_ENGINE")
    spark_master: str = Field(default="local[*]", alias="SPARK_MASTER")
    # Rows per batch when aggregating bronze samples: bounds peak memory independent of lake size.
    aggregate_batch_samples: int = Field(default=4_000_000, alias="MOBILITY_AGGREGATE_BATCH", gt=0)
    # Patient-days whose features are computed at once: bounds the features job's peak memory.
    features_batch_days: int = Field(default=50_000, alias="MOBILITY_FEATURES_BATCH", gt=0)
    # Monitoring: where new alerts are posted (JSON), and the price table behind the cost figures.
    alert_webhook: str | None = Field(default=None, alias="MOBILITY_ALERT_WEBHOOK")
    prices_file: str | None = Field(default=None, alias="MOBILITY_PRICES")
    # Data freshness: an alert when the lake's newest data is this many days or more before
    # yesterday (FRESHNESS_DAYS).
    freshness_days: int = Field(default=FRESHNESS_DAYS, alias="MOBILITY_FRESHNESS_DAYS", ge=1)
    # The scheduler's landing folder: files waiting there are ingested daily.
    landing: str | None = Field(default=None, alias="MOBILITY_LANDING")
    # Security (README, "Security and privacy"). The key of the HMAC that turns source patient
    # identifiers into pseudonyms at ingestion; never written anywhere, never logged.
    pseudonym_key: SecretStr | None = Field(default=None, alias="MOBILITY_PSEUDONYM_KEY")
    # The local synthetic demo: no login (a banner says so), a published pseudonym key when none
    # is set; refused for a lake on object storage.
    demo: bool = Field(default=False, alias="MOBILITY_DEMO")
    # The key of the HMAC that authenticates model artifacts (lakehouse/artifacts.py): training
    # signs each artifact, forecasting refuses one whose signature does not match before it is
    # unpickled. Required outside demo mode; never written anywhere, never logged.
    artifact_key: SecretStr | None = Field(default=None, alias="MOBILITY_ARTIFACT_KEY")
    # Demo mode without MOBILITY_ARTIFACT_KEY: a random key kept in this file (created 0600 on
    # first use, outside the lake). Unset: $XDG_CONFIG_HOME/mobility/demo-artifact-key.
    demo_artifact_key_file: str | None = Field(
        default=None, alias="MOBILITY_DEMO_ARTIFACT_KEY_FILE"
    )
    # Who gets which role in the dashboard, from the identity's email or groups claim.
    roles_file: str = Field(default="config/roles.toml", alias="MOBILITY_ROLES_FILE")
    # A signed-in dashboard session that has been idle this long must sign in again.
    idle_minutes: float = Field(default=15.0, alias="MOBILITY_IDLE_MINUTES", gt=0)
    # Who runs `mobility sql`, for the audit log (default: the operating system's user name).
    user: str | None = Field(default=None, alias="MOBILITY_USER")
    # Who may read what the product's processes write (apply_file_mode): private = their own
    # user only (files 0600, folders 0700), group = their group too, read only (0640, 0750).
    file_mode: Literal["private", "group"] = Field(default="private", alias="MOBILITY_FILE_MODE")
    # Reliability (docs/reliability.md): how long a pipeline stage waits for another process's
    # lease on the lake, and the lease's time to live (renewed every third of it).
    lock_wait_seconds: float = Field(default=LOCK_WAIT_SECONDS, alias="MOBILITY_LOCK_WAIT", ge=0)
    lock_ttl_seconds: float = Field(default=LOCK_TTL_SECONDS, alias="MOBILITY_LOCK_TTL", gt=0)
    # Tests and demos: every training takes seconds (one backtest origin, short EBM boosting).
    quick_training: bool = Field(default=False, alias="MOBILITY_QUICK_TRAINING")
    # Object storage requests (docs/reliability.md): one without an answer for this many seconds
    # fails; failed requests are retried up to this many times within this many seconds. Unset:
    # the object store's defaults (30 s; 10 retries within 180 s).
    storage_timeout_seconds: float | None = Field(
        default=None, alias="MOBILITY_STORAGE_TIMEOUT", gt=0
    )
    storage_retries: int | None = Field(default=None, alias="MOBILITY_STORAGE_RETRIES", ge=0)
    storage_retry_seconds: float | None = Field(
        default=None, alias="MOBILITY_STORAGE_RETRY_SECONDS", gt=0
    )

    def storage_options(self) -> dict[str, str]:
        """Object-store options for delta-rs, taken only from the environment."""
        options = {
            key: value
            for key, value in os.environ.items()
            if key.startswith(_STORAGE_ENV_PREFIXES) and value
        }
        # the object store's client and retry settings (durations in milliseconds)
        if self.storage_timeout_seconds is not None:
            options["timeout"] = f"{round(self.storage_timeout_seconds * 1000)}ms"
        if self.storage_retries is not None:
            options["max_retries"] = str(self.storage_retries)
        if self.storage_retry_seconds is not None:
            options["retry_timeout"] = f"{round(self.storage_retry_seconds * 1000)}ms"
        return options

    def demo_artifact_key_path(self) -> str:
        """Where demo mode keeps its random artifact key: ``MOBILITY_DEMO_ARTIFACT_KEY_FILE``,
        else ``mobility/demo-artifact-key`` in the user's configuration folder."""
        if self.demo_artifact_key_file:
            return self.demo_artifact_key_file
        config = os.environ.get("XDG_CONFIG_HOME") or os.path.join(
            os.path.expanduser("~"), ".config"
        )
        return os.path.join(config, "mobility", "demo-artifact-key")

    def command_line_user(self) -> str:
        """The person running a command, for the audit log: ``MOBILITY_USER``, else the
        operating system's user name."""
        if self.user and self.user.strip():
            return self.user.strip()
        try:
            return getpass.getuser()
        except (KeyError, OSError):  # no name for this uid (some containers)
            return f"uid:{os.getuid()}"


# MOBILITY_FILE_MODE -> the process umask (the permission bits taken away from what it creates).
FILE_MODE_UMASKS = {"private": 0o077, "group": 0o027}


def apply_file_mode(settings: Settings) -> int:
    """Set this process's umask from ``MOBILITY_FILE_MODE``; the previous umask.

    Called once by each entry point (the CLI, hence the scheduler and its child commands; the
    dashboard) before it writes: Python, pyarrow and delta-rs all create files and folders
    through the operating system, which applies the umask, so the lake's Parquet files, Delta
    logs and checkpoints, model artifacts, the audit log and staging files all get the mode.
    """
    return os.umask(FILE_MODE_UMASKS[settings.file_mode])


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The settings of this process (read once).

    Raises:
        InputError: an environment variable has a value the product cannot use.
    """
    try:
        return Settings()
    except ValidationError as err:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in problem['loc'])}: {problem['msg']}"
            for problem in err.errors()
        )
        raise InputError(f"bad setting in the environment: {problems}") from err
