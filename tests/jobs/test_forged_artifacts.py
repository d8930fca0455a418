"""The end of issue 18's attack chain: whoever can write files into the lake forges a model
artifact and registry rows pointing at it (a Parquet file and a ``_delta_log`` commit written by
hand, as the SQL sandbox's write path allowed). ``mobility forecast`` must refuse it before
anything is unpickled, in one line, write no forecast, and record the failed run."""

from __future__ import annotations

import json
import os
import pickle
import shutil
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow.parquet as pq
import pytest

from jobs import aggregate, generate
from jobs import train as train_job
from jobs.features import run as features_job
from lakehouse.catalog import EXPLANATIONS, FORECASTS, JOB_RUNS, OUTLOOK, REGISTRY
from lakehouse.storage import Lake, conform
from synthetic.population import DEFAULT_END_DATE
from tests.test_cli import assert_one_line_error, mobility

NOW = datetime(2027, 1, 1, tzinfo=UTC)


class _Payload:
    """Unpickling this runs a shell command that creates ``marker``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A trained lake (``work``), and a copy of it (``copy``) to restore before each test: the
    registry names its artifacts by the lake's own path, so every test works at that path."""
    base = tmp_path_factory.mktemp("forged")
    work = base / "lake"
    lake = Lake(str(work))
    generate.run(lake, patients=24, seed=3, years=2.0, end_date=DEFAULT_END_DATE)
    aggregate.run(lake)
    features_job.run(lake)
    summary = train_job.run(
        lake, force=True, patients_per_cluster=4, now=NOW, **train_job.QUICK_TRAINING
    )
    assert summary.status == "trained" and summary.version == 1
    shutil.copytree(work, base / "copy")
    return work, base / "copy"


@pytest.fixture
def trained(pristine: tuple[Path, Path]) -> Iterator[Lake]:
    """The trained lake as training left it, never forecast."""
    work, copy = pristine
    shutil.rmtree(work)
    shutil.copytree(copy, work)
    yield Lake(str(work))


def forge_registry(lake: Lake, artifact_uris: dict[str, str], *, version: int) -> None:
    """Registry rows of ``version`` naming ``artifact_uris`` (model -> URI), committed the way an
    attacker who can only write files would: a Parquet file and the next ``_delta_log`` entry."""
    rows = (
        lake.read(REGISTRY)
        .filter(pl.col("version") == 1)
        .with_columns(
            version=pl.lit(version, pl.Int32),
            trained_at=pl.lit(NOW),
            model_id=pl.col("model_id").str.replace(":v1", f":v{version}", literal=True),
            artifact_uri=pl.col("model_id")
            .str.split(":")
            .list.first()
            .replace_strict(artifact_uris, default=None),
        )
    )
    table = Path(lake.table_uri(REGISTRY))
    data = table / "part-00000-forged.parquet"
    pq.write_table(conform(REGISTRY, rows), data)
    log = table / "_delta_log"
    nxt = max(int(p.name[:20]) for p in log.glob("*.json")) + 1
    add = {
        "add": {
            "path": data.name,
            "partitionValues": {},
            "size": data.stat().st_size,
            "modificationTime": 1_798_761_600_000,
            "dataChange": True,
        }
    }
    (log / f"{nxt:020d}.json").write_text(json.dumps(add) + "\n")
    assert lake.scan(REGISTRY).select(pl.col("version").max()).collect().item() == version


def assert_nothing_forecast(lake: Lake, fragment: str) -> None:
    """No forecast table was written, and the run was recorded as failed with ``fragment``."""
    for table in (FORECASTS, OUTLOOK, EXPLANATIONS):
        assert not lake.exists(table), table.path
    runs = lake.read(JOB_RUNS).filter(pl.col("job") == "forecast")
    assert runs["status"].to_list() == ["failed"]
    error = runs["error"][0]
    assert fragment in error and "\n" not in error


@pytest.mark.parametrize(
    ("where", "signed", "reason"),
    [
        # finding 1 as it was run: the pickle in a folder the sandbox could write
        ("models/registry/x.pkl", False, "not a file of this lake's models/artifacts folder"),
        # the artifact's own name, a plain pickle (today's unsigned format)
        ("models/artifacts/ebm_cluster-v2.pkl", False, "it has no signature"),
        # the artifact's own name, dressed as a signed artifact with a made-up signature
        ("models/artifacts/ebm_cluster-v2.pkl", True, "signature does not match"),
    ],
)
def test_a_forged_artifact_is_refused_before_it_is_unpickled(
    trained: Lake, tmp_path: Path, where: str, signed: bool, reason: str
) -> None:
    marker = tmp_path / "pwned"
    evil = pickle.dumps(_Payload(marker))
    if signed:
        evil = b"MOBILITY-SIGNED-ARTIFACT 1\n" + b"0" * 64 + b"\n" + evil
    target = Path(trained.uri) / where
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(evil)
    forge_registry(trained, {"ebm_cluster": f"{trained.uri}/{where}"}, version=2)
    done = mobility("--lake", trained.uri, "forecast", cwd=tmp_path)
    assert not marker.exists(), "the forged artifact was unpickled: its command ran"
    assert_one_line_error(done, reason)
    assert "ebm_cluster" in done.stderr
    assert_nothing_forecast(trained, reason)


def test_the_pickle_of_the_attack_runs_its_command_when_unpickled(tmp_path: Path) -> None:
    """The payload above is a real one: the refusal is what keeps the marker away."""
    marker = tmp_path / "pwned"
    pickle.loads(pickle.dumps(_Payload(marker)))
    assert marker.exists()


def test_a_valid_artifact_passed_off_as_the_next_version_is_refused(
    trained: Lake, tmp_path: Path
) -> None:
    """Version 1's genuine artifacts copied to version 2's names, registry rows of version 2
    naming them: the signature binds the version, so they are refused."""
    folder = Path(trained.uri) / "models/artifacts"
    uris = {}
    for model in ("ebm_cluster", "ebm_global"):
        shutil.copy(folder / f"{model}-v1.pkl", folder / f"{model}-v2.pkl")
        uris[model] = f"{trained.uri}/models/artifacts/{model}-v2.pkl"
    forge_registry(trained, uris, version=2)
    done = mobility("--lake", trained.uri, "forecast", cwd=tmp_path)
    assert_one_line_error(done, "signature does not match")
    assert_nothing_forecast(trained, "signature does not match")


def test_a_registry_row_naming_another_versions_artifact_is_refused(
    trained: Lake, tmp_path: Path
) -> None:
    """Registry rows of version 2 pointing at version 1's genuine files, unchanged."""
    uris = {m: f"{trained.uri}/models/artifacts/{m}-v1.pkl" for m in ("ebm_cluster", "ebm_global")}
    forge_registry(trained, uris, version=2)
    done = mobility("--lake", trained.uri, "forecast", cwd=tmp_path)
    assert_one_line_error(done, "whose artifact is models/artifacts/ebm_")
    assert_nothing_forecast(trained, "whose artifact is models/artifacts/ebm_")


@pytest.mark.parametrize(
    "uri", ["../../etc/passwd", "/etc/passwd", "s3://other/x", "file:///etc/passwd"]
)
def test_a_registry_row_naming_a_file_outside_the_artifacts_folder_is_refused(
    trained: Lake, tmp_path: Path, uri: str
) -> None:
    forge_registry(trained, {"ebm_cluster": uri}, version=2)
    done = mobility("--lake", trained.uri, "forecast", cwd=tmp_path)
    assert_one_line_error(done, "not a file of this lake's models/artifacts folder")
    assert_nothing_forecast(trained, "not a file of this lake's models/artifacts folder")


def test_an_artifact_from_before_signing_asks_for_a_new_training(
    trained: Lake, tmp_path: Path
) -> None:
    """A lake trained before artifacts were signed: its pickles are refused, and the error says
    what to do."""
    folder = Path(trained.uri) / "models/artifacts"
    for path in folder.glob("*.pkl"):
        stored = path.read_bytes()
        path.write_bytes(stored[stored.index(b"\n", 27) + 1 :])  # the bare pickle of before
    done = mobility("--lake", trained.uri, "forecast", cwd=tmp_path)
    assert_one_line_error(done, "run mobility train --force")
    assert_nothing_forecast(trained, "it has no signature")


def test_another_key_refuses_the_artifacts_and_a_forced_training_signs_new_ones(
    trained: Lake, tmp_path: Path
) -> None:
    other = {"MOBILITY_ARTIFACT_KEY": "another-deployments-key-0123456789abcdef"}
    done = mobility("--lake", trained.uri, "forecast", cwd=tmp_path, env=other)
    assert_one_line_error(done, "signature does not match")
    quick = {**other, "MOBILITY_QUICK_TRAINING": "1"}
    done = mobility("--lake", trained.uri, "train", "--force", cwd=tmp_path, env=quick)
    assert done.returncode == 0, done.stderr
    done = mobility("--lake", trained.uri, "forecast", cwd=tmp_path, env=other)
    assert done.returncode == 0, done.stderr
    assert set(trained.read(FORECASTS)["model"]) >= {"ebm_cluster", "ebm_global"}


def test_forecasting_needs_the_artifact_key_once_models_are_registered(
    trained: Lake, tmp_path: Path
) -> None:
    done = mobility(
        "--lake", trained.uri, "forecast", cwd=tmp_path, env={"MOBILITY_ARTIFACT_KEY": ""}
    )
    assert_one_line_error(done, "MOBILITY_ARTIFACT_KEY is not set")
    assert_nothing_forecast(trained, "MOBILITY_ARTIFACT_KEY is not set")
