"""Where tasks leave their results: in memory (the local engine) or in the lake's own storage
(distributed engines: a folder or an object-store prefix every worker and the driver reach,
``<lake>/_staging/<job>-<run>/task-<n>/<name>.arrow``).

Staged results are Arrow IPC files with LZ4 buffers: written once, read once by the driver, so
the format that costs least CPU both ways (a features batch: a quarter of Parquet's, whose
dictionary pages and statistics nobody reads here)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field

import polars as pl
import pyarrow as pa

from jobs.engine.base import task_lake
from lakehouse.errors import StorageError
from lakehouse.storage import Lake

STAGING_FOLDER = "_staging"


def _frame(rows: pl.DataFrame | pa.Table) -> pl.DataFrame:
    frame = rows if isinstance(rows, pl.DataFrame) else pl.from_arrow(rows)
    assert isinstance(frame, pl.DataFrame)
    return frame


@dataclass
class MemoryStaging:
    """One task's results kept as frames (the task ran in this process)."""

    frames: dict[str, pl.DataFrame] = field(default_factory=dict)

    def write(self, name: str, rows: pl.DataFrame | pa.Table) -> None:
        self.frames[name] = _frame(rows)

    def read(self, name: str) -> pl.DataFrame | None:
        return self.frames.get(name)


@dataclass(frozen=True)
class LakeStaging:
    """One task's results as files under the lake (picklable: a worker opens the lake's
    storage from the URI with its own credentials).

    Args:
        lake_uri: the lake.
        folder: the task's folder inside the lake (``_staging/<job>-<run>/task-<n>``).
    """

    lake_uri: str
    folder: str

    def _target(self, name: str) -> tuple[pa.fs.FileSystem, str]:
        filesystem, root = task_lake(self.lake_uri).filesystem()
        return filesystem, f"{root}/{self.folder}/{name}.arrow"

    def write(self, name: str, rows: pl.DataFrame | pa.Table) -> None:
        """Written under a temporary name and moved into place: a retried or speculative attempt
        of the same task replaces the file whole, and the driver never reads half of one."""
        filesystem, target = self._target(name)
        partial = f"{target}.partial-{uuid.uuid4().hex}"
        try:
            filesystem.create_dir(target.rsplit("/", 1)[0], recursive=True)
            table = _frame(rows).to_arrow()
            options = pa.ipc.IpcWriteOptions(compression="lz4")
            with (
                filesystem.open_output_stream(partial) as stream,
                pa.ipc.new_file(stream, table.schema, options=options) as writer,
            ):
                writer.write_table(table)
            filesystem.move(partial, target)
        except OSError as err:
            where = f"{self.lake_uri}/{self.folder}/{name}"
            raise StorageError(f"could not stage {where}: {err}") from err

    def read(self, name: str) -> pl.DataFrame | None:
        filesystem, target = self._target(name)
        if filesystem.get_file_info(target).type == pa.fs.FileType.NotFound:
            return None
        with filesystem.open_input_file(target) as source:
            frame = pl.from_arrow(pa.ipc.open_file(source).read_all())
        assert isinstance(frame, pl.DataFrame)
        return frame


@dataclass(frozen=True)
class LakeStagingArea:
    """A job run's staging folder in the lake: one :class:`LakeStaging` per task."""

    lake_uri: str
    folder: str

    def task(self, index: int) -> LakeStaging:
        return LakeStaging(self.lake_uri, f"{self.folder}/task-{index:06d}")


@contextmanager
def lake_staging(lake: Lake, job: str) -> Iterator[LakeStagingArea]:
    """A new staging folder for one run of ``job``, removed with everything in it when the block
    ends, whether it succeeded or not."""
    area = LakeStagingArea(lake.uri, f"{STAGING_FOLDER}/{job}-{uuid.uuid4().hex}")
    filesystem, root = lake.filesystem()
    try:
        yield area
    finally:
        with suppress(FileNotFoundError):  # no task wrote anything
            filesystem.delete_dir(f"{root}/{area.folder}")
        try:
            parent = f"{root}/{STAGING_FOLDER}"
            if not filesystem.get_file_info(pa.fs.FileSelector(parent, allow_not_found=True)):
                filesystem.delete_dir(parent)
        except OSError:
            pass  # another run's staging is there, or an object store without folders
