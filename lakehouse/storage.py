"""The one I/O gateway to the Delta tables of the lake.

Only this module (and :mod:`lakehouse.query`) imports ``deltalake`` or knows where a table lives.
Writes are idempotent by construction (replace by predicate, merge on keys, app transactions) and
retry Delta commit conflicts with backoff.
"""

from __future__ import annotations

import errno
import os
import random
import re
import stat
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import unquote

import polars as pl
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.fs as pafs
from deltalake import (
    ColumnProperties,
    CommitProperties,
    DeltaTable,
    Transaction,
    WriterProperties,
    write_deltalake,
)
from deltalake.exceptions import CommitFailedError, DeltaError, TableNotFoundError
from deltalake.transaction import AddAction

from lakehouse.catalog import TableSpec
from lakehouse.errors import StorageError

T = TypeVar("T")

_MAX_COMMIT_ATTEMPTS = 8
# Commits run again after a storage failure the object store's own retries did not cover.
_MAX_STORAGE_ATTEMPTS = 3
# Custom commit metadata naming one append, to tell after a failure whether it landed.
_COMMIT_MARKER = "mobility.commit"
# Time columns are written as sorted runs (files are sorted by patient and time): delta encoding
# stores each value as a small difference from the previous one. Dictionary encoding, the
# default, suits them badly (nearly every timestamp distinct): measured on bronze/step_samples,
# 5.9 bytes per timestamp with a dictionary, 3.4 delta-encoded (ZSTD level 3 on both).
_DELTA_ENCODED_TYPES = (pa.timestamp("us", tz="UTC"), pa.date32())
_DELTA_ENCODED = ColumnProperties(dictionary_enabled=False, encoding="DELTA_BINARY_PACKED")


def _time_columns(table: TableSpec) -> dict[str, ColumnProperties]:
    """Delta encoding for the table's time columns (not partition columns: no data in files)."""
    return {
        f.name: _DELTA_ENCODED
        for f in table.schema
        if f.type in _DELTA_ENCODED_TYPES and f.name not in table.partition_by
    }


def _writer(table: TableSpec) -> WriterProperties:
    """Writer settings for compact files: ZSTD, row groups of a million rows, dictionaries for
    everything but the time columns (delta-encoded)."""
    return WriterProperties(
        compression="ZSTD",
        compression_level=3,
        max_row_group_size=1_048_576,
        column_properties=_time_columns(table),
    )


# Stored objects (model artifacts, the simulation's state) live at plain paths inside the lake:
# folders and a file name of letters, digits, '.', '_' and '-', none starting with a dot (so no
# '..'), never an absolute path or another URI. A path comes from a table the lake holds
# (models/registry's artifact_uri), and whoever could write the lake must not steer a read or a
# write elsewhere.
_OBJECT_SEGMENT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,199}")
# The one folder model artifacts are read from and written to.
ARTIFACTS_FOLDER = "models/artifacts"
# Far above a trained model's artifact (about 1 MB at 1,000 patients), far below a memory problem.
ARTIFACT_MAX_BYTES = 256_000_000


def _file_kind(mode: int) -> str:
    """What a file that is not a regular one is, for an error."""
    kinds = (
        (stat.S_ISLNK, "a symbolic link"),
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISDIR, "a folder"),
        (stat.S_ISCHR, "a device"),
        (stat.S_ISBLK, "a device"),
    )
    return next((kind for test, kind in kinds if test(mode)), "a special file")


def _read_regular_file(file: Path, named: str, max_bytes: int) -> bytes:
    """The bytes of ``file`` (``named`` in errors), a regular file and no link, read from the
    very file that was checked: ``lstat``, then an open that follows no link and cannot block
    (a FIFO swapped in opens at once), then ``fstat`` of the open file against the ``lstat``.
    Reads at most ``max_bytes`` + 1 bytes (before a signature is checked, a planted file must
    not fill the memory).

    Raises:
        StorageError: not a regular file, another file by the time it was opened, larger than
            ``max_bytes``, or it cannot be read (one line each).
    """
    try:
        found = os.lstat(file)
        if not stat.S_ISREG(found.st_mode):
            raise StorageError(
                f"refused model artifact {named}: {_file_kind(found.st_mode)}, not a regular file"
            )
        descriptor = os.open(file, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        with os.fdopen(descriptor, "rb") as stream:
            opened = os.fstat(stream.fileno())
            if not stat.S_ISREG(opened.st_mode) or (opened.st_dev, opened.st_ino) != (
                found.st_dev,
                found.st_ino,
            ):
                raise StorageError(
                    f"refused model artifact {named}: not the file that was checked (it was "
                    "replaced while it was opened)"
                )
            data = stream.read(max_bytes + 1)
    except OSError as err:
        if err.errno == errno.ELOOP:  # swapped for a link after the lstat
            raise StorageError(
                f"refused model artifact {named}: a symbolic link, not a regular file"
            ) from err
        raise StorageError(f"could not read {named}: {err.strerror or err}") from err
    if len(data) > max_bytes:
        raise StorageError(f"refused {named}: larger than {max_bytes / 1e6:,.0f} MB")
    return data


class _AppendHandles:
    """Open handles of append-only tables, brought up to date from their log before each append
    instead of loading the whole log again. The audit log gains a row with every dashboard view:
    loading its log took 40-60 ms per append once it had a few hundred commits. Appends to one
    table from this process take turns (a handle is not shared by two writes)."""

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._handles: dict[str, tuple[threading.Lock, list[DeltaTable]]] = {}

    @contextmanager
    def handle(self, uri: str, load: Callable[[], DeltaTable]) -> Iterator[DeltaTable]:
        """The table's handle, current, held for one write; dropped when the write fails (the
        next one loads the table afresh)."""
        with self._guard:
            lock, slot = self._handles.setdefault(uri, (threading.Lock(), []))
        with lock:
            try:
                if slot:
                    slot[0].update_incremental()
                else:
                    slot.append(load())
                yield slot[0]
            except BaseException:
                slot.clear()
                raise


_append_handles = _AppendHandles()


# Each open partition file of a stream holds its unfinished row group in memory; bounding the
# group by cells (rows x columns) keeps wide tables (silver/features) as cheap as narrow ones.
_STREAMING_ROW_GROUP_CELLS = 8 * 1_048_576
# ... and delta-rs holds each file in memory until it reaches this size.
_STREAMING_FILE_BYTES = 32 * 1024 * 1024


def _streaming_row_group_rows(table: TableSpec) -> int:
    return max(65_536, min(1_048_576, _STREAMING_ROW_GROUP_CELLS // len(table.columns)))


def _streaming_writer(table: TableSpec) -> WriterProperties:
    """Writer settings for a stream that may touch hundreds of partitions in one commit.

    delta-rs keeps one open file per partition until the stream ends, and each costs memory.
    Measured for 434k rows over 240 months: a dictionary encoder per column is most of it, so only
    string columns (patient, source: a handful of values per file) get one (64 MB less); LZ4
    instead of ZSTD saves the per-file compression contexts (37 MB less) for files about a third
    larger, until ``optimize`` compacts them with ZSTD.
    """
    strings = [f.name for f in table.schema if f.type in (pa.string(), pa.large_string())]
    return WriterProperties(
        compression="LZ4_RAW",
        max_row_group_size=_streaming_row_group_rows(table),
        default_column_properties=ColumnProperties(dictionary_enabled=False),
        column_properties={
            **{name: ColumnProperties(dictionary_enabled=True) for name in strings},
            **_time_columns(table),
        },
    )


@dataclass(frozen=True)
class TableInfo:
    """What ``mobility lake info`` shows for one table."""

    path: str
    exists: bool
    version: int | None
    rows: int
    files: int
    size_bytes: int


_ANSI_CODES = re.compile(r"\x1b\[[0-9;]*m")


def one_line(err: BaseException) -> str:
    """An error of delta-rs or the object store as one line: their messages span several lines
    (a chain of causes, with terminal colour codes)."""
    text = _ANSI_CODES.sub("", str(err))
    parts = (line.strip().lstrip("↳").strip() for line in text.splitlines())
    return " ".join(part for part in parts if part)[:600] or type(err).__name__


def _with_commit_retry(action: Callable[[], T], *, what: str) -> T:
    """Run a Delta commit, retrying conflicts with exponential backoff and jitter, and failed
    object-storage requests a few times more.

    The object store (delta-rs' client) retries failed requests itself (``max_retries`` within
    ``retry_timeout``, see lakehouse/settings.py) but not a write that stalled past its
    ``timeout``; such a failure reaches here as an ``OSError``, and the whole commit runs again.
    That is safe because every commit of :class:`Lake` is idempotent: replaces by predicate,
    merges on keys, appends that first check whether their earlier attempt landed.

    Raises:
        StorageError: the conflict or the storage failure persisted, or Delta refused the
            write (one line).
    """
    conflicts = failures = 0
    while True:
        try:
            return action()
        except CommitFailedError as err:
            conflicts += 1
            if conflicts == _MAX_COMMIT_ATTEMPTS:
                raise StorageError(
                    f"{what}: commit conflict persisted after "
                    f"{_MAX_COMMIT_ATTEMPTS} attempts ({one_line(err)})"
                ) from err
            delay = min(5.0, 0.05 * 2 ** (conflicts - 1))
        except DeltaError as err:
            raise StorageError(f"{what}: {one_line(err)}") from err
        except OSError as err:
            failures += 1
            if failures == _MAX_STORAGE_ATTEMPTS:
                raise StorageError(
                    f"{what}: object storage failed {failures} times ({one_line(err)})"
                ) from err
            delay = 0.5 * 2 ** (failures - 1)
        time.sleep(delay * (1 + random.random()))


def sql_literal(value: object) -> str:
    """A value as a SQL literal for Delta predicates (strings quoted and escaped)."""
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    return "'" + str(value).replace("'", "''") + "'"


class Lake:
    """A lakehouse rooted at a local folder or an ``s3://bucket/prefix`` URI.

    Args:
        uri: root of the lake.
        storage_options: object-store options (from the environment only, see Settings).
    """

    def __init__(self, uri: str, *, storage_options: Mapping[str, str] | None = None) -> None:
        if "://" not in uri:
            uri = str(Path(uri).expanduser().resolve())
        self.uri = uri.rstrip("/")
        self.storage_options = dict(storage_options or {})

    @property
    def is_local(self) -> bool:
        """Whether the lake is a folder on this machine."""
        return "://" not in self.uri or self.uri.startswith("file://")

    def table_uri(self, table: TableSpec) -> str:
        """Where ``table`` lives."""
        return f"{self.uri}/{table.path}"

    # ---------------------------------------------------------------- reading

    def exists(self, table: TableSpec) -> bool:
        """Whether the table has been created (on a local lake: its log names a version)."""
        if self.is_local:
            return self._local_log_version(table) is not None
        try:
            return DeltaTable.is_deltatable(self.table_uri(table), self.storage_options or None)
        except OSError as err:
            raise StorageError(f"cannot read {table.path}: {one_line(err)}") from err

    def delta(self, table: TableSpec, *, version: int | None = None) -> DeltaTable:
        """The Delta table handle (raises StorageError when it does not exist)."""
        try:
            return DeltaTable(
                self.table_uri(table), version=version, storage_options=self.storage_options or None
            )
        except TableNotFoundError as err:
            raise StorageError(f"table {table.path} does not exist in {self.uri}") from err
        except (DeltaError, OSError) as err:
            raise StorageError(f"cannot read {table.path}: {one_line(err)}") from err

    def version(self, table: TableSpec) -> int | None:
        """Current version of the table, None when it does not exist.

        On a local lake this is the newest commit or checkpoint named in the table's
        ``_delta_log`` folder (a commit file appears whole: delta-rs writes a temporary file and
        renames it), without reading the log; elsewhere the log is read.
        """
        if self.is_local:
            return self._local_log_version(table)
        if not self.exists(table):
            return None
        return self.delta(table).version()

    def _local_log_version(self, table: TableSpec) -> int | None:
        return _newest_logged_version(Path(self.table_uri(table).removeprefix("file://")))

    def table_id(self, table: TableSpec) -> str:
        """The table's Delta id: it changes when a table is dropped and created again."""
        return str(self.delta(table).metadata().id)

    def dataset(self, table: TableSpec, delta: DeltaTable | None = None) -> pads.Dataset:
        """The table as a pyarrow dataset (empty with the declared schema when missing); from
        ``delta`` when the caller has the table's handle already.

        A ``merge_written`` table's strings (outside partition columns) are read as
        ``string_view``, the type merged files hold: DuckDB then leaves filters to itself
        instead of handing pyarrow a comparison it cannot evaluate.
        """
        if delta is None:
            if not self.exists(table):
                return pads.dataset(table.schema.empty_table())
            delta = self.delta(table)
        dataset = delta.to_pyarrow_dataset()
        if not table.merge_written:
            return dataset
        assert isinstance(dataset, pads.FileSystemDataset)
        viewed = pa.schema(
            pa.field(f.name, pa.string_view(), f.nullable, f.metadata)
            if f.type == pa.string() and f.name not in table.partition_by
            else f
            for f in dataset.schema
        )
        return pads.FileSystemDataset(
            list(dataset.get_fragments()), viewed, dataset.format, dataset.filesystem
        )

    def scan(self, table: TableSpec, *, version: int | None = None) -> pl.LazyFrame:
        """The table as a Polars LazyFrame (empty with the declared schema when missing).

        Args:
            table: the table.
            version: read this version instead of the latest; the frame stays pinned to the
                snapshot it was created from however often it is collected.
        """
        if not self.exists(table):
            return empty_frame(table).lazy()
        return pl.scan_delta(
            self.table_uri(table), version=version, storage_options=self._polars_options()
        )

    def scan_files(self, table: TableSpec, paths: Sequence[str]) -> pl.LazyFrame:
        """The rows of some data files of ``table`` (``path`` values of :meth:`file_stats`, e.g.
        those of a pinned version a task was given) as a LazyFrame with the table's declared
        schema; columns a file predates are null, partition columns come from the catalog's
        types. delta-rs writes no deletion vectors, so a version's rows are exactly its files'
        rows. No Delta log is read: a task on a worker reads only the files it was handed."""
        schema = pl.DataFrame(table.schema.empty_table()).schema
        if not paths:
            return empty_frame(table).lazy()
        sources = [f"{self.table_uri(table)}/{unquote(path)}" for path in paths]
        return pl.scan_parquet(
            sources,
            schema={k: v for k, v in schema.items() if k not in table.partition_by},
            hive_partitioning=bool(table.partition_by),
            hive_schema={k: schema[k] for k in table.partition_by} or None,
            missing_columns="insert",
            extra_columns="ignore",
            storage_options=self._polars_options(),
        )

    def _polars_options(self) -> dict[str, Any] | None:
        """The storage options as Polars takes them: its retry count is a number."""
        if not self.storage_options:
            return None
        return {
            key: int(value) if key == "max_retries" else value
            for key, value in self.storage_options.items()
        }

    def read(self, table: TableSpec) -> pl.DataFrame:
        """The whole table (for small tables: patients, clinical data, ops)."""
        return self.scan(table).collect()

    def history(self, table: TableSpec, *, limit: int | None = None) -> list[dict[str, Any]]:
        """Commit history, newest first; empty when the table does not exist."""
        if not self.exists(table):
            return []
        return self.delta(table).history(limit)

    def file_stats(self, table: TableSpec, *, version: int | None = None) -> pl.DataFrame:
        """One row per data file: path, size, record count, partition values and min/max stats."""
        if not self.exists(table):
            return pl.DataFrame()
        actions = self.delta(table, version=version).get_add_actions(flatten=True)
        return pl.from_arrow(pa.table(actions))  # type: ignore[return-value]

    def info(self, table: TableSpec) -> TableInfo:
        """Version, rows, files and bytes of a table."""
        if not self.exists(table):
            return TableInfo(table.path, False, None, 0, 0, 0)
        stats = self.file_stats(table)
        files = stats.height
        rows = int(stats["num_records"].sum()) if files else 0
        size = int(stats["size_bytes"].sum()) if files else 0
        return TableInfo(table.path, True, self.delta(table).version(), rows, files, size)

    # ---------------------------------------------------------------- writing

    def append(
        self,
        table: TableSpec,
        data: pl.DataFrame | pa.Table,
        *,
        metadata: Mapping[str, str] | None = None,
        app_id: str | None = None,
        app_version: int | None = None,
    ) -> bool:
        """Append rows.

        With ``app_id`` and ``app_version`` the commit is recorded as that application transaction
        and skipped when the table has already seen that version or a later one, so a retried
        job never appends the same batch twice.

        Returns:
            True when rows were committed, False when the transaction was already applied.
        """
        if app_id is not None and app_version is not None and self.exists(table):
            done = self.delta(table).transaction_version(app_id)
            if done is not None and done >= app_version:
                return False
        arrow = conform(table, data)
        transactions = (
            [Transaction(app_id=app_id, version=app_version)]
            if app_id is not None and app_version is not None
            else None
        )

        def write(marker: str) -> None:
            if table.append_only and self.exists(table):
                with _append_handles.handle(
                    self.table_uri(table), lambda: self.delta(table)
                ) as handle:
                    commit(handle, marker)
            else:
                commit(self.table_uri(table), marker)

        def commit(target: str | DeltaTable, marker: str) -> None:
            # a table created before the catalog gave it more columns gains them (older rows
            # null); the rows hold exactly the catalog's columns (conform), so merging adds
            # nothing else
            write_deltalake(
                target,
                arrow,
                mode="append",
                schema_mode="merge",
                partition_by=list(table.partition_by) or None,
                storage_options=self.storage_options or None,
                writer_properties=_writer(table),
                commit_properties=CommitProperties(
                    custom_metadata={**dict(metadata or {}), _COMMIT_MARKER: marker},
                    app_transactions=transactions,
                ),
            )

        self._append_once(table, write, what=f"append to {table.path}")
        return True

    def _append_once(self, table: TableSpec, append: Callable[[str], None], *, what: str) -> None:
        """Run an append commit (``append(marker)``, the marker in its commit metadata) with
        retries, but never twice: after a storage failure the earlier attempt may have landed
        all the same (the answer to its commit was lost), and appending again would store the
        rows twice."""
        marker = uuid.uuid4().hex
        attempted = False

        def attempt() -> None:
            nonlocal attempted
            if attempted and self._landed(table, marker):
                return
            attempted = True
            append(marker)

        _with_commit_retry(attempt, what=what)

    def _landed(self, table: TableSpec, marker: str) -> bool:
        """Whether one of the table's latest commits is the append named ``marker``."""
        return any(entry.get(_COMMIT_MARKER) == marker for entry in self.history(table, limit=50))

    def replace(
        self,
        table: TableSpec,
        data: pl.DataFrame | pa.Table,
        *,
        predicate: str | None,
        metadata: Mapping[str, str] | None = None,
    ) -> None:
        """Atomically replace the rows matching ``predicate`` by ``data`` (all rows when None).

        Every row of ``data`` must satisfy the predicate. Re-running with the same data leaves the
        same table content.
        """
        _require_rewritable(table)
        arrow = conform(table, data)
        if not self.exists(table):
            predicate = None
        _with_commit_retry(
            lambda: write_deltalake(
                self.table_uri(table),
                arrow,
                mode="overwrite",
                predicate=predicate,
                # a table created before the catalog gave it more columns gains them (the
                # rows kept have them null), as appends and merges do
                schema_mode="merge",
                partition_by=list(table.partition_by) or None,
                storage_options=self.storage_options or None,
                writer_properties=_writer(table),
                commit_properties=CommitProperties(custom_metadata=dict(metadata or {})),
            ),
            what=f"replace in {table.path}",
        )

    def commit_files(
        self,
        table: TableSpec,
        files: Sequence[AddAction],
        *,
        metadata: Mapping[str, str] | None = None,
    ) -> None:
        """Append data files written outside delta-rs (:mod:`lakehouse.bulk`) in ONE commit.

        The files must be in the table's folder, with the table's columns and types (partition
        columns only in their paths), and their statistics filled in: stages prune by them.
        After a storage failure the commit is tried again only if the earlier attempt did not
        land, so the files are never added twice.
        """
        _require_rewritable(table)
        self._create_empty(table)

        def commit(marker: str) -> None:
            self.delta(table).create_write_transaction(
                list(files),
                mode="append",
                schema=table.schema,
                partition_by=list(table.partition_by) or None,
                commit_properties=CommitProperties(
                    custom_metadata={**dict(metadata or {}), _COMMIT_MARKER: marker}
                ),
            )

        self._append_once(table, commit, what=f"append files to {table.path}")

    def replace_stream(
        self,
        table: TableSpec,
        open_batches: Callable[[], pa.RecordBatchReader],
        *,
        predicate: str | None,
        metadata: Mapping[str, str] | None = None,
    ) -> int:
        """Stream rows in as ONE atomic replace of the rows matching ``predicate`` (all rows, and
        the table's schema, when None).

        Memory stays bounded by the reader's batches. When the reader raises while it is
        consumed, nothing is committed. Every streamed row must satisfy the predicate.

        Args:
            table: the table.
            open_batches: returns a fresh reader with exactly the table's schema; called again
                when a commit conflict forces a retry.
            predicate: the rows to replace; None replaces the whole table and takes the
                catalog's schema (e.g. after columns were added to the catalog).
            metadata: custom commit metadata.

        Returns:
            The number of rows written.
        """
        _require_rewritable(table)

        def write() -> int:
            rows = _CountedRows(open_batches())
            exists = self.exists(table)
            write_deltalake(
                self.table_uri(table),
                rows.reader(),
                mode="overwrite",
                predicate=predicate if exists else None,
                schema_mode="overwrite" if exists and predicate is None else None,
                partition_by=list(table.partition_by) or None,
                target_file_size=_STREAMING_FILE_BYTES,
                storage_options=self.storage_options or None,
                writer_properties=_streaming_writer(table),
                commit_properties=CommitProperties(custom_metadata=dict(metadata or {})),
            )
            return rows.count

        return _with_commit_retry(write, what=f"replace in {table.path}")

    def schema_matches(self, table: TableSpec) -> bool:
        """Whether the stored table has exactly the catalog's columns and types."""
        stored = pa.schema(self.delta(table).schema().to_arrow())
        return [(f.name, f.type) for f in stored] == [(f.name, f.type) for f in table.schema]

    def upsert(
        self,
        table: TableSpec,
        data: pl.DataFrame | pa.Table,
        *,
        metadata: Mapping[str, str] | None = None,
    ) -> None:
        """Insert rows or update the rows with the same keys (merge on the table's keys)."""
        _require_rewritable(table)
        _require_merge_written(table)
        arrow = conform(table, data)
        # Created empty first, then merged: two first upserts racing each other would both
        # append if they created the table with their rows (docs/reliability.md).
        self._create_empty(table)
        on = _keys_match(table)

        def merge() -> None:
            (
                self.delta(table)
                .merge(
                    arrow,
                    predicate=on,
                    source_alias="source",
                    target_alias="target",
                    # a table created before the catalog gave it more columns gains them
                    # (older rows null), as appends do
                    merge_schema=True,
                    writer_properties=_writer(table),
                    commit_properties=CommitProperties(custom_metadata=dict(metadata or {})),
                )
                .when_matched_update_all()
                .when_not_matched_insert_all()
                .execute()
            )

        _with_commit_retry(merge, what=f"merge into {table.path}")

    def insert_new(
        self,
        table: TableSpec,
        open_batches: Callable[[], pa.RecordBatchReader],
        *,
        within: Mapping[str, Iterable[object]] | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> int:
        """Stream rows in with ONE commit, inserting only rows whose keys the table lacks.

        An insert-only merge on the table's keys; while the table has no rows yet, they are
        written directly (and if another writer adds rows first, they are merged instead). Rows
        are streamed, so memory stays bounded by the reader's batch size. When the reader raises
        while it is consumed, nothing is committed.

        Args:
            table: the table.
            open_batches: returns a fresh reader with exactly the table's schema; called again
                when a commit conflict forces a retry (a reader can only be consumed once).
            within: for each named column, every value the streamed rows can have (for
                example their patients and months). The merge then reads only the table's rows
                with those values, not the whole table: pass it for anything but a small table.
            metadata: custom commit metadata.

        Returns:
            The number of rows inserted.
        """
        _require_rewritable(table)
        _require_merge_written(table)
        commit = CommitProperties(custom_metadata=dict(metadata or {}))

        def fill(snapshot: DeltaTable) -> int:
            rows = _CountedRows(open_batches())
            # The first rows of an empty table, written (fast, streamed) as a replace of every
            # row of that empty snapshot: if another writer added rows since, the commit
            # conflicts instead of appending rows the table may already hold, and the retry
            # merges. (A plain create with mode="error" does not: delta-rs turns the second of
            # two racing creations into an append.)
            write_deltalake(
                snapshot,
                rows.reader(),
                mode="overwrite",
                predicate="true",
                target_file_size=_STREAMING_FILE_BYTES,
                writer_properties=_streaming_writer(table),
                commit_properties=commit,
            )
            return rows.count

        on = _keys_match(table)
        for column, values in (within or {}).items():
            on += " AND " + in_list_predicate(f"target.{column}", sorted(set(values), key=str))

        def merge() -> int:
            metrics = (
                self.delta(table)
                .merge(
                    open_batches(),
                    predicate=on,
                    source_alias="source",
                    target_alias="target",
                    writer_properties=_streaming_writer(table),
                    commit_properties=commit,
                )
                .when_not_matched_insert_all()
                .execute()
            )
            return int(metrics.get("num_target_rows_inserted", 0))

        def insert() -> int:
            # Decided on every attempt: rows may have arrived since the last one.
            snapshot = self.delta(table)
            if snapshot.file_uris():
                return merge()
            return fill(snapshot)

        self._create_empty(table)
        return _with_commit_retry(insert, what=f"insert into {table.path}")

    def _create_empty(self, table: TableSpec) -> None:
        """Create the table without rows if it does not exist. Racing creators are harmless
        here (an empty commit more); rows then go in through commits that conflict."""
        if self.exists(table):
            return
        try:
            write_deltalake(
                self.table_uri(table),
                table.schema.empty_table(),
                mode="error",
                partition_by=list(table.partition_by) or None,
                storage_options=self.storage_options or None,
            )
        except (DeltaError, OSError, ValueError) as err:
            if not self.exists(table):
                raise StorageError(f"create {table.path}: {one_line(err)}") from err

    def delete(self, table: TableSpec, predicate: str) -> None:
        """Delete the rows matching ``predicate`` (no-op when the table does not exist).

        A replace of those rows by none: the rows a touched file keeps are written again with
        the declared types. (delta-rs' own delete writes them as ``string_view``, which SQL
        filters on a table read with pushdown cannot compare.)
        """
        _require_rewritable(table)
        if not self.exists(table):
            return
        self.replace(table, empty_frame(table), predicate=predicate)

    # ---------------------------------------------------------------- objects

    def filesystem(self) -> tuple[pafs.FileSystem, str]:
        """The lake's storage as a pyarrow filesystem (credentials from the environment, as
        for delta-rs) and the lake's root in it."""
        if self.is_local:
            return pafs.LocalFileSystem(), self.uri.removeprefix("file://")
        filesystem, root = pafs.FileSystem.from_uri(self.uri)
        return filesystem, root

    def _object_path(self, path: str) -> str:
        """``path`` when it is a plain path inside the lake (see ``_OBJECT_SEGMENT``).

        Raises:
            StorageError: anything else (``..``, an absolute path, a URI), in one line.
        """
        if not all(_OBJECT_SEGMENT.fullmatch(part) for part in path.split("/")):
            raise StorageError(
                f"refused object path {_shown(path)}: not a plain path inside the lake "
                "(folders and a file name of letters, digits, '.', '_', '-'; no '..', no "
                "absolute path, no URI)"
            )
        return path

    def artifact_path(self, uri: str) -> str:
        """The path in the lake (``models/artifacts/<name>``) of a model artifact named by
        ``uri``: that path, or the lake's own URI followed by it.

        Raises:
            StorageError: ``uri`` names anything else (another folder, ``..``, an absolute
                path, another lake or URI scheme), in one line.
        """
        prefix = self.uri + "/"
        relative = uri[len(prefix) :] if uri.startswith(prefix) else uri
        folder, _, name = relative.rpartition("/")
        if folder != ARTIFACTS_FOLDER or not _OBJECT_SEGMENT.fullmatch(name):
            raise StorageError(
                f"refused model artifact {_shown(uri)}: not a file of this lake's "
                f"{ARTIFACTS_FOLDER} folder ({self.uri}/{ARTIFACTS_FOLDER}/<name>)"
            )
        return relative

    def write_artifact(self, name: str, data: bytes) -> str:
        """Store a model artifact as ``models/artifacts/<name>``; returns its URI."""
        return self.write_object(self.artifact_path(f"{ARTIFACTS_FOLDER}/{name}"), data)

    def read_artifact(self, uri: str) -> bytes:
        """The bytes of the model artifact ``uri`` names (see :meth:`artifact_path`); on a local
        lake only a regular file of the artifacts folder: never a link, a FIFO (which would block
        the read for good), a socket or a device.

        Raises:
            StorageError: a path outside the artifacts folder, not a regular file, larger than
                :data:`ARTIFACT_MAX_BYTES`, or the file cannot be read (one line each).
        """
        path = self.artifact_path(uri)
        if not self.is_local:
            # read before its signature is checked: a planted file must not fill the memory
            return self.read_object(path, max_bytes=ARTIFACT_MAX_BYTES)
        root = Path(self.uri.removeprefix("file://"))
        if Path(root, path).resolve().parent != Path(root, ARTIFACTS_FOLDER).resolve():
            raise StorageError(
                f"refused model artifact {_shown(uri)}: a link out of this lake's "
                f"{ARTIFACTS_FOLDER} folder"
            )
        return _read_regular_file(Path(root, path), f"{self.uri}/{path}", ARTIFACT_MAX_BYTES)

    def write_object(self, path: str, data: bytes) -> str:
        """Store ``data`` at ``<lake>/<path>``; returns its URI.

        Written under a temporary name and moved into place, so a reader never sees half a file.

        Raises:
            StorageError: ``path`` is not a plain path inside the lake, or the write failed.
        """
        path = self._object_path(path)
        filesystem, root = self.filesystem()
        target = f"{root}/{path}"
        filesystem.create_dir(target.rsplit("/", 1)[0], recursive=True)
        partial = f"{target}.partial-{uuid.uuid4().hex}"
        try:
            with filesystem.open_output_stream(partial) as stream:
                stream.write(data)
            filesystem.move(partial, target)
        except OSError as err:
            raise StorageError(f"could not write {self.uri}/{path}: {err}") from err
        return f"{self.uri}/{path}"

    def read_object(self, path: str, *, max_bytes: int | None = None) -> bytes:
        """The bytes stored at ``<lake>/<path>``.

        Args:
            path: a plain path inside the lake.
            max_bytes: refuse an object larger than this (read no further than one byte past).

        Raises:
            StorageError: ``path`` is not a plain path inside the lake, the object is larger than
                ``max_bytes``, or the read failed.
        """
        path = self._object_path(path)
        filesystem, root = self.filesystem()
        try:
            with filesystem.open_input_stream(f"{root}/{path}") as stream:
                data = bytes(stream.read() if max_bytes is None else stream.read(max_bytes + 1))
        except (OSError, FileNotFoundError) as err:
            raise StorageError(f"could not read {self.uri}/{path}: {err}") from err
        if max_bytes is not None and len(data) > max_bytes:
            raise StorageError(f"refused {self.uri}/{path}: larger than {max_bytes / 1e6:,.0f} MB")
        return data

    # ---------------------------------------------------------------- upkeep

    def compact(self, table: TableSpec, *, min_files: int = 4, vacuum_hours: int = 168) -> int:
        """Merge the files of each partition that holds at least ``min_files`` of them (files
        already at delta-rs' target size are left as they are), then vacuum files unreferenced
        for ``vacuum_hours``. For the stages that write a table in many small commits: a
        per-patient query opens every file of the partitions it reads (gold/forecasts at 10,000
        patients: 83 files, 46 ms per patient; compacted to 3, 12 ms).

        Returns:
            The number of files merged away.
        """
        files = self.file_stats(table)
        if files.height < min_files:
            return 0
        if table.partition_by:
            (column,) = table.partition_by
            counts = files.group_by(f"partition.{column}").len()
            crowded = [
                [(column, "=", str(value))]
                for value, count in counts.iter_rows()
                if count >= min_files and value is not None
            ]
        else:
            crowded = [[]]
        removed = 0
        for partition in crowded:

            def merge(partition: list[tuple[str, str, str]] = partition) -> dict[str, Any]:
                return self.delta(table).optimize.compact(
                    partition_filters=partition or None, writer_properties=_writer(table)
                )

            metrics = _with_commit_retry(merge, what=f"compact {table.path}")
            removed += int(metrics["numFilesRemoved"]) - int(metrics["numFilesAdded"])
        if crowded:
            self.delta(table).vacuum(retention_hours=vacuum_hours, dry_run=False)
        return removed

    def optimize(self, table: TableSpec, *, vacuum_hours: int = 168) -> dict[str, Any]:
        """Compact small files (z-ordered where the table declares it) and vacuum old files.

        Args:
            table: the table.
            vacuum_hours: files no longer referenced for this many hours are deleted.
        """
        order = [c for c in table.z_order if c not in table.partition_by]

        def compact() -> dict[str, Any]:
            # A fresh handle per attempt: after a conflict, re-planning from the stale snapshot
            # would only hit the same conflict again.
            delta = self.delta(table)
            if order:
                return delta.optimize.z_order(order, writer_properties=_writer(table))
            return delta.optimize.compact(writer_properties=_writer(table))

        metrics = _with_commit_retry(compact, what=f"optimize {table.path}")
        removed = self.delta(table).vacuum(
            retention_hours=vacuum_hours,
            dry_run=False,
            enforce_retention_duration=vacuum_hours >= 168,
        )
        return {**metrics, "vacuumed_files": len(removed)}


class _CountedRows:
    """A record batch reader that counts the rows it hands to the writer."""

    def __init__(self, source: pa.RecordBatchReader) -> None:
        self._source = source
        self.count = 0

    def _batches(self) -> Iterator[pa.RecordBatch]:
        for batch in self._source:
            self.count += batch.num_rows
            yield batch

    def reader(self) -> pa.RecordBatchReader:
        return pa.RecordBatchReader.from_batches(self._source.schema, self._batches())


# a commit (00000000000000000012.json) or checkpoint (00000000000000000010.checkpoint.parquet,
# or a part of a multi-part one) in a table's _delta_log
_LOG_ENTRY = re.compile(r"^(\d{20})\.(?:json|checkpoint(?:\.\d{10}\.\d{10})?\.parquet)$")


def _newest_logged_version(table_dir: Path) -> int | None:
    """The newest version named in a local table's ``_delta_log`` (None: no log or no entry)."""
    try:
        names = [entry.name for entry in os.scandir(table_dir / "_delta_log")]
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as err:
        raise StorageError(f"cannot read {table_dir}: {err.strerror or err}") from err
    versions = [int(match[1]) for name in names if (match := _LOG_ENTRY.match(name))]
    return max(versions, default=None)


def _shown(path: str) -> str:
    """A path from a table, for an error line: quoted, escaped, cut short."""
    text = repr(path)
    return text if len(text) <= 120 else text[:117] + "..."


def _keys_match(table: TableSpec) -> str:
    """Merge predicate: a source row and a target row have the same keys."""
    return " AND ".join(f"target.{k} = source.{k}" for k in table.keys)


def empty_frame(table: TableSpec) -> pl.DataFrame:
    """An empty Polars frame with the table's schema."""
    return pl.from_arrow(table.schema.empty_table())  # type: ignore[return-value]


def conform(table: TableSpec, data: pl.DataFrame | pa.Table) -> pa.Table:
    """``data`` as Arrow with exactly the table's columns, order and types, sorted for writing."""
    frame = data if isinstance(data, pl.DataFrame) else pl.from_arrow(data)
    assert isinstance(frame, pl.DataFrame)
    missing = [c for c in table.columns if c not in frame.columns]
    if missing:
        raise StorageError(f"{table.path}: rows lack columns {missing}")
    if table.sort_by and frame.height > 1:
        frame = frame.sort(list(table.sort_by))
    arrow = frame.select(table.columns).to_arrow()
    try:
        return arrow.cast(table.schema)
    except (pa.ArrowInvalid, pa.ArrowTypeError, ValueError) as err:
        raise StorageError(f"{table.path}: rows do not fit the table schema ({err})") from err


def in_list_predicate(column: str, values: Iterable[object]) -> str:
    """``column IN (...)`` as a Delta predicate."""
    items = ", ".join(sql_literal(v) for v in values)
    return f"{column} IN ({items})" if items else "false"


def _require_merge_written(table: TableSpec) -> None:
    if not table.merge_written:
        raise StorageError(
            f"{table.path} is not declared merge_written: merged files would hold strings its "
            "SQL views cannot filter"
        )


def _require_rewritable(table: TableSpec) -> None:
    if table.append_only:
        raise StorageError(f"{table.path} is append-only: rows are never replaced or deleted")
